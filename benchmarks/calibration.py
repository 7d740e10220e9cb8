"""Score calibration: why both sides are unit vectors before the convex blend.

    .venv/bin/python benchmarks/calibration.py     # needs a live index (make run / fashion-search index)

On the live index's products and the evaluation's text query set, compares two ways
of blending ``alpha * dense + (1 - alpha) * sparse``:
- raw: SPLADE weights as the model outputs them (pruned, not normalised);
  products are encoded from the same text the index uses (``document_text``);
- unit: SPLADE vectors L2-normalised (what the platform stores and queries with).
It prints each side's score scale (top-1 and median-of-top-10 scores per query) and
MAP@10 of the exact blended ranking for alpha 0.0..1.0, computed in memory with the
evaluation's own metric functions. The dense side is the stored CLIP vectors either way.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluation.metrics import average_precision_at_k
from evaluation.queries import TEXT_FAMILIES, generate_queries
from services.catalog.text import document_text
from services.encoders.clip import load_clip
from services.encoders.splade import load_splade
from services.search import dense_vectors
from services.store.db import connect
from services.store.index_versions import live_version, product_metadata, product_names


def splade_matrix(
    encoder, texts: list[str], normalise: bool, columns: dict[int, int], batch: int = 128
) -> np.ndarray:
    """(len(texts), len(columns)) SPLADE weights over a shared column map (grown as needed)."""
    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            weights = encoder._weights(texts[start : start + batch]).cpu()
            for row in weights:
                k = min(encoder.max_terms, int((row > 0).sum()))
                values, indices = row.topk(k) if k else (row[:0], row[:0].long())
                if normalise and k:
                    values = values / values.norm()
                rows.append(dict(zip(indices.tolist(), values.tolist())))
    for r in rows:
        for i in r:
            columns.setdefault(i, len(columns))
    out = np.zeros((len(rows), len(columns)), np.float32)
    for j, r in enumerate(rows):
        for i, v in r.items():
            out[j, columns[i]] = v
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(2)
    conn = connect()
    version = live_version(conn)
    if version is None:
        raise SystemExit("no live index: run `make run` or `fashion-search index` first")
    products = product_metadata(conn, version.id)
    ids = [int(p["id"]) for p in products]
    names = dict(product_names(conn, version.id))
    # The text the index encodes for a product (name + attributes the name does not say).
    docs = {
        int(p["id"]): document_text({**p, "productDisplayName": names[int(p["id"])]})
        for p in products
    }
    dense = dense_vectors(conn, version)
    D = np.stack([dense[i] for i in ids]).astype(np.float32)
    qs = generate_queries(products, seed=args.seed, families=TEXT_FAMILIES).queries
    relevant = []
    for q in qs:
        relevant.append(
            {
                int(p["id"])
                for p in products
                if all(p.get(f) in allowed for f, allowed in q.criteria)
            }
        )
    keep = [i for i, r in enumerate(relevant) if r]
    qs, relevant = [qs[i] for i in keep], [relevant[i] for i in keep]

    clip, splade = load_clip(version.dense_model), load_splade(version.sparse_model)
    t0 = time.perf_counter()
    QD = clip.encode_texts([q.text for q in qs])
    print(
        f"# calibration on index v{version.id} ({len(ids):,} products, {version.dense_model} + "
        f"{version.sparse_model}), {len(qs)} text queries with relevant products"
    )
    results = {}
    for label, normalise in (("raw", False), ("unit", True)):
        cols: dict[int, int] = {}
        P = splade_matrix(splade, [docs[i] for i in ids], normalise, cols)
        Q = splade_matrix(splade, [q.text for q in qs], normalise, cols)
        P = np.pad(P, ((0, 0), (0, len(cols) - P.shape[1])))
        S = Q @ P.T
        DS = QD @ D.T
        results[label] = (DS, S)
    print(f"(encoding {time.perf_counter() - t0:.0f} s)\n")
    print("| side | top-1 score p50 | top-1 p90 | 10th-best p50 |\n|---|---|---|---|")
    DS = results["unit"][0]
    for label, M in (
        ("dense (CLIP cosine)", DS),
        ("sparse raw SPLADE", results["raw"][1]),
        ("sparse unit SPLADE", results["unit"][1]),
    ):
        top = -np.sort(-M, axis=1)
        print(
            f"| {label} | {np.median(top[:, 0]):.3f} | {np.percentile(top[:, 0], 90):.3f} | "
            f"{np.median(top[:, 9]):.3f} |"
        )
    print("\n| alpha | MAP@10 raw sparse | MAP@10 unit sparse |\n|---|---|---|")
    for alpha in np.round(np.arange(0, 1.01, 0.1), 1):
        row = []
        for label in ("raw", "unit"):
            DS, S = results[label]
            F = alpha * DS + (1 - alpha) * S
            aps = []
            for qi in range(len(qs)):
                order = np.lexsort((np.array(ids), -F[qi]))[:10]
                aps.append(average_precision_at_k([ids[j] for j in order], relevant[qi], 10))
            row.append(np.mean([a for a in aps if a is not None]))
        print(f"| {alpha:.1f} | {row[0]:.3f} | {row[1]:.3f} |")


if __name__ == "__main__":
    main()
