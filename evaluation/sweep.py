"""Choose the blend weights on the TUNING half of the query set (never on the reported test half).

    fashion-search eval-sweep [--dense-model NAME] [--seed 0]

Three weights decide what a shopper gets, and none has a closed form:

- ``dense_image_weight`` (w): a product's dense vector is ``normalise(w * CLIP(photo) +
  (1 - w) * CLIP_text(name))`` (a property of an index version);
- ``alpha``: ``alpha * dense + (1 - alpha) * sparse``, one default for text queries and one
  for photo + text queries;
- ``query_text_weight`` (t): a photo + text query's dense vector is ``normalise(t *
  CLIP_text(text) + (1 - t) * CLIP(photo))``.

On the live index's products, the sweep encodes every photo and name once with the dense
model, takes the stored SPLADE vectors of the live version, and ranks exactly in memory
(the same fused score and tie-break as the exact path of ``SEARCH_SQL``) for every grid
point, scoring MAP@10 on the tuning split (``evaluation.queries.split_of``). It prints the tables and the chosen
weights; the reported figures then come from ``fashion-search eval`` on the test split.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from evaluation.metrics import average_precision_at_k
from evaluation.queries import generate_queries
from services.catalog.text import dense_name_text, document_text
from services.search import sparse_vectors
from services.store.db import connect
from services.store.index_versions import live_version, product_metadata
from services.store.products import names_and_images

log = logging.getLogger(__name__)

IMAGE_WEIGHTS: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.0)
ALPHAS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))
QUERY_TEXT_WEIGHTS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass
class SweepResult:
    """MAP@10 on the tuning split at every grid point, and the choice made from it."""

    dense_model: str
    n_products: int
    n_text: int
    n_multi: int
    product_text: str = "name"
    # (image_weight, alpha) -> text MAP@10; (image_weight, text_weight, alpha) -> multi MAP@10
    text: dict[tuple[float, float], float] = field(default_factory=dict)
    multi: dict[tuple[float, float, float], float] = field(default_factory=dict)
    text_by_family: dict[tuple[float, float], dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def best_text(self, image_weight: float) -> tuple[float, float]:
        """(alpha, MAP@10) of the best text alpha at ``image_weight``."""
        return max(
            ((a, m) for (w, a), m in self.text.items() if w == image_weight),
            key=lambda x: (x[1], -abs(x[0] - 0.5)),
        )

    def best_multi(self, image_weight: float) -> tuple[float, float, float]:
        """(text_weight, alpha, MAP@10) of the best photo + text setting at ``image_weight``."""
        if not self.multi:
            return (float("nan"), float("nan"), float("nan"))
        return max(
            ((t, a, m) for (w, t, a), m in self.multi.items() if w == image_weight),
            key=lambda x: x[2],
        )

    def choice(self) -> dict:
        """The image weight with the best mean of (best text MAP, best multi MAP), its settings."""

        def objective(w: float) -> float:
            text = self.best_text(w)[1]
            return (text + self.best_multi(w)[2]) / 2 if self.multi else text

        w = max(sorted({w for w, _ in self.text}), key=objective)
        alpha_text, map_text = self.best_text(w)
        t, alpha_multi, map_multi = self.best_multi(w)
        return {
            "dense_image_weight": w,
            "default_alpha": alpha_text,
            "text_map@10": map_text,
            "query_text_weight": t,
            "default_alpha_multi": alpha_multi,
            "multi_map@10": map_multi,
            "dense_map@10": self.text[(w, 1.0)],
        }


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def sparse_matrix(rows: Sequence, columns: dict[int, int]) -> np.ndarray:
    """(len(rows), len(columns)) dense array of pgvector SparseVectors over a column map;
    terms outside the map are dropped (they cannot match any product)."""
    out = np.zeros((len(rows), len(columns)), np.float32)
    for j, vec in enumerate(rows):
        if vec is None:
            continue
        for i, v in zip(vec.indices(), vec.values()):
            c = columns.get(i)
            if c is not None:
                out[j, c] = v
    return out


def _map_at_10(scores: np.ndarray, ids: np.ndarray, relevant: list[set[int]]) -> list[float]:
    """AP@10 per query row of ``scores`` (ties by product id, as in the SQL)."""
    aps = []
    for qi in range(scores.shape[0]):
        row = scores[qi]
        cand = np.argpartition(-row, 10)[:20] if row.shape[0] > 20 else np.arange(row.shape[0])
        order = cand[np.lexsort((ids[cand], -row[cand]))][:10]
        aps.append(average_precision_at_k([int(ids[j]) for j in order], relevant[qi], 10))
    return aps


def run_sweep(
    conn=None,
    *,
    dense_model: str | None = None,
    seed: int = 0,
    split: str = "tune",
    families: Sequence[str] | None = None,
    image_weights: Sequence[float] = IMAGE_WEIGHTS,
    alphas: Sequence[float] = ALPHAS,
    text_weights: Sequence[float] = QUERY_TEXT_WEIGHTS,
    product_text: str = "name",
    progress=log.info,
) -> SweepResult:
    """Sweep on the live index (see the module docstring); returns every grid point's MAP@10.

    ``product_text``: what the text half of a product's dense vector encodes: "name" (what the
    pipeline encodes: ``text.dense_name_text``) or "document" (name + attributes,
    ``text.document_text``: the ablation that lost on the tuning split).
    """
    if product_text not in ("document", "name"):
        raise ValueError(f"product_text must be 'document' or 'name', got {product_text!r}")
    # Deferred: the encoders import torch (seconds), not needed to import this module.
    from services.encoders.clip import combine_query_vectors, load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    started = time.perf_counter()
    own = conn is None
    conn = conn or connect()
    try:
        version = live_version(conn)
        if version is None:
            raise LookupError("no live index version: build one first (fashion-search index)")
        products = product_metadata(conn, version.id)
        ids = np.array([int(p["id"]) for p in products], dtype=np.int64)
        rows = names_and_images(conn, ids.tolist())
        meta = {int(p["id"]): p for p in products}
        stored = sparse_vectors(conn, version)
    finally:
        if own:
            conn.close()
    dense_model = dense_model or version.dense_model
    clip, splade = load_clip(dense_model), load_splade(version.sparse_model)
    progress(
        f"sweep on index v{version.id} ({len(ids):,} products): dense {dense_model}, "
        f"sparse {version.sparse_model} (stored vectors), split {split}"
    )

    t = time.perf_counter()
    image = clip.encode_images([rows[int(i)][1] for i in ids])
    texts = [
        document_text({**meta[int(i)], "productDisplayName": rows[int(i)][0]})
        if product_text == "document"
        else dense_name_text(rows[int(i)][0])
        for i in ids
    ]
    name = clip.encode_texts(texts)
    progress(f"encoded {len(ids):,} photos and names in {time.perf_counter() - t:.0f} s")
    columns: dict[int, int] = {}
    for vec in stored.values():
        for i in vec.indices():
            columns.setdefault(i, len(columns))
    sparse_products = sparse_matrix([stored[int(i)] for i in ids], columns)

    qs = generate_queries(products, seed=seed, families=families, split=split).queries
    relevant_all = [q.relevant(products) for q in qs]
    keep = [i for i, r in enumerate(relevant_all) if r]
    qs = [qs[i] for i in keep]
    relevant_all = [relevant_all[i] for i in keep]
    text_idx = [i for i, q in enumerate(qs) if not q.is_multimodal]
    multi_idx = [i for i, q in enumerate(qs) if q.is_multimodal]
    row_of = {int(pid): j for j, pid in enumerate(ids)}
    q_text = clip.encode_texts([q.text for q in qs])
    q_sparse = sparse_matrix(splade.encode([q.text for q in qs]), columns)
    S = q_sparse @ sparse_products.T  # (queries, products) sparse side, fixed across the grid

    result = SweepResult(dense_model, len(ids), len(text_idx), len(multi_idx), product_text)
    fam = [qs[i].family for i in text_idx]
    for w in image_weights:
        P = _unit_rows(w * image + (1.0 - w) * name)
        D = q_text[text_idx] @ P.T
        for a in alphas:
            aps = _map_at_10(
                a * D + (1 - a) * S[text_idx], ids, [relevant_all[i] for i in text_idx]
            )
            result.text[(w, a)] = float(np.mean(aps))
            by: dict[str, list[float]] = defaultdict(list)
            for f, ap in zip(fam, aps):
                by[f].append(ap)
            result.text_by_family[(w, a)] = {f: float(np.mean(v)) for f, v in by.items()}
        if multi_idx:
            photos = image[[row_of[qs[i].image_product_id] for i in multi_idx]]
            for tw in text_weights:
                QD = np.stack(
                    [
                        combine_query_vectors(q_text[i], photos[j], tw)
                        for j, i in enumerate(multi_idx)
                    ]
                )
                D = QD @ P.T
                for a in alphas:
                    aps = _map_at_10(
                        a * D + (1 - a) * S[multi_idx], ids, [relevant_all[i] for i in multi_idx]
                    )
                    result.multi[(w, tw, a)] = float(np.mean(aps))
        progress(
            f"  image weight {w}: best text alpha {result.best_text(w)}, "
            f"best multi {result.best_multi(w)}"
        )
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def format_sweep(result: SweepResult) -> str:
    """Markdown tables: text MAP@10 per (image weight, alpha), photo + text best per image
    weight, the choice and its per-family figures."""
    weights = sorted({w for w, _ in result.text}, reverse=True)
    alphas = sorted({a for _, a in result.text})
    out = [
        (
            f"# weight sweep (tuning split): {result.n_products:,} products, dense {result.dense_model}, "
            f"{result.n_text} text + {result.n_multi} photo + text queries, product text: "
            f"{result.product_text}, {result.seconds:.0f} s"
        ),
        "",
        (
            "Text queries, MAP@10 by product image weight (rows) and alpha (columns; 1.0 = dense only, "
            "0.0 = sparse only):"
        ),
        "",
        "| image weight | " + " | ".join(f"{a:.1f}" for a in alphas) + " |",
        "|---:|" + "---:|" * len(alphas),
    ]
    for w in weights:
        out.append(
            f"| {w:.1f} | " + " | ".join(f"{result.text[(w, a)]:.3f}" for a in alphas) + " |"
        )
    if result.multi:
        out += [
            "",
            "Photo + text queries, best (query text weight, alpha) per image weight:",
            "",
            "| image weight | text weight | alpha | MAP@10 |",
            "|---:|---:|---:|---:|",
        ]
        for w in weights:
            t, a, m = result.best_multi(w)
            out.append(f"| {w:.1f} | {t:.1f} | {a:.1f} | {m:.3f} |")
    c = result.choice()
    out += [
        "",
        "Chosen (best mean of text and photo + text MAP@10 on the tuning split):",
        "",
        f"- FASHION_DENSE_IMAGE_WEIGHT={c['dense_image_weight']:g}",
        (
            f"- FASHION_DEFAULT_ALPHA={c['default_alpha']:g} (text MAP@10 {c['text_map@10']:.3f}; "
            f"dense only {c['dense_map@10']:.3f})"
        ),
        (
            f"- FASHION_QUERY_TEXT_WEIGHT={c['query_text_weight']:g}, FASHION_DEFAULT_ALPHA_MULTI="
            f"{c['default_alpha_multi']:g} (photo + text MAP@10 {c['multi_map@10']:.3f})"
        ),
        "",
        "Per family at the chosen text setting:",
        "",
        "| family | MAP@10 |",
        "|---|---:|",
    ]
    for f, m in sorted(
        result.text_by_family[(c["dense_image_weight"], c["default_alpha"])].items()
    ):
        out.append(f"| {f} | {m:.3f} |")
    return "\n".join(out)
