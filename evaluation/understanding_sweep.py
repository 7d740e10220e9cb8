"""Choose how strongly understanding moves a query, on the TUNING half (never the test half).

    fashion-search eval-sweep-understanding [--config split] [--seed 0]
    (or: python -m evaluation.understanding_sweep)

On the live index's stored vectors, every text query of the tuning half is understood once
(lexical step), its texts encoded once, and then composed and ranked exactly in memory
(the fused score of the exact path, at the service's default alpha) for every point of a
small grid of :class:`~services.understanding.query.UnderstandingSettings`: the rewrite's
weight on each side, the semantic labels' weights and acceptance thresholds. The objective
is the mean AP@10 over every text query, refused for a setting that lowers any
catalogue-word family by more than :data:`MAX_CATALOGUE_DROP` against literal search.
It prints the grid's best points and the chosen setting's figures per family beside
literal; the reported figures then come from ``fashion-search eval`` on the test half.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from evaluation.queries import CATALOGUE, FAMILY_KIND, generate_queries
from evaluation.sweep import _map_at_10, sparse_matrix
from evaluation.understanding import CachedEncoder, run_understanding, understand_all
from services.config import get_settings
from services.search import dense_vectors, sparse_vectors
from services.store.db import connect
from services.store.index_versions import live_version, product_metadata
from services.understanding.query import UnderstandingSettings

log = logging.getLogger(__name__)
MAX_CATALOGUE_DROP = 0.01
REWRITE_WEIGHTS = (0.0, 0.3, 0.5, 0.7, 0.9)
LABEL_WEIGHTS = (0.0, 0.25, 0.5, 1.0)
THRESHOLDS = (0.5, 0.6, 0.7)


@dataclass
class UnderstandingSweep:
    n_products: int
    n_queries: int
    alpha: float
    literal: dict[str, float]
    results: list[tuple[UnderstandingSettings, float, dict[str, float]]] = field(
        default_factory=list
    )
    chosen: UnderstandingSettings | None = None
    photo: dict[tuple[float, float], float] = field(default_factory=dict)
    seconds: float = 0.0


def _family_means(families: list[str], aps: list[float]) -> dict[str, float]:
    by: dict[str, list[float]] = defaultdict(list)
    for f, ap in zip(families, aps):
        by[f].append(ap)
    out = {f: float(np.mean(v)) for f, v in by.items()}
    out["all"] = float(np.mean(aps)) if aps else 0.0
    return out


TYPE_COLOUR = ("articleType", "baseColour")
# Each parameter of the settings, with the values tried (coordinate descent, two rounds).
PARAMETERS: dict[str, tuple[float, ...]] = {
    "rewrite_dense": (0.0, 0.3, 0.5, 0.7, 0.9),
    "rewrite_sparse": (0.0, 0.3, 0.5, 0.7, 0.9),
    "label_dense": (0.0, 0.25, 0.5, 1.0),
    "label_sparse": (0.0, 0.25, 0.5, 1.0, 1.5),
    "occasion_sparse": (0.0, 0.25, 0.5, 1.0, 1.5),
    "threshold": (0.4, 0.45, 0.5, 0.55, 0.6, 0.65),
    "margin": (0.0, 0.02, 0.04, 0.08),
    "occasion_threshold": (0.3, 0.35, 0.4, 0.45, 0.5),
    "occasion_margin": (0.0, 0.02, 0.05, 0.1),
    "top_k": (1, 2, 3),
}


PHOTO_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0)
PHOTO_TEMPERATURES = (0.02, 0.05)


def with_parameter(s: UnderstandingSettings, name: str, value: float) -> UnderstandingSettings:
    """``s`` with one parameter of :data:`PARAMETERS` set (type/colour or usage/season)."""
    if name in ("rewrite_dense", "rewrite_sparse"):
        return replace(s, **{name: value})
    if name == "label_dense":
        return replace(
            s, label_dense=tuple((f, value if f in TYPE_COLOUR else w) for f, w in s.label_dense)
        )
    if name in ("label_sparse", "occasion_sparse"):
        mine = (
            (lambda f: f in TYPE_COLOUR)
            if name == "label_sparse"
            else (lambda f: f not in TYPE_COLOUR)
        )
        return replace(
            s, label_sparse=tuple((f, value if mine(f) else w) for f, w in s.label_sparse)
        )
    if name == "top_k":
        return replace(s, semantic=replace(s.semantic, top_k=int(value)))
    occasion = name.startswith("occasion_")
    attr = name.removeprefix("occasion_")
    fields = tuple(
        (f, replace(fs, **{attr: value}) if (f in TYPE_COLOUR) != occasion else fs)
        for f, fs in s.semantic.fields
    )
    return replace(s, semantic=replace(s.semantic, fields=fields))


def run_understanding_sweep(
    *, config: str = "split", seed: int = 0, split: str = "tune", progress=log.info
) -> UnderstandingSweep:
    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    started = time.perf_counter()
    settings = get_settings()
    alpha = float(settings.default_alpha)
    with connect() as conn:
        version = live_version(conn)
        if version is None:
            raise LookupError("no live index version: build one first (fashion-search index)")
        products = product_metadata(conn, version.id)
        dense = dense_vectors(conn, version)
        sparse = sparse_vectors(conn, version)
        encode = CachedEncoder(load_clip(version.dense_model), load_splade(version.sparse_model))
        run = run_understanding(conn, version, config, encode)
    ids = np.array([int(p["id"]) for p in products], dtype=np.int64)
    columns: dict[int, int] = {}
    for vec in sparse.values():
        for i in vec.indices():
            columns.setdefault(i, len(columns))
    P_dense = np.stack([dense[int(i)] for i in ids])
    P_sparse = sparse_matrix([sparse[int(i)] for i in ids], columns)
    generated = generate_queries(products, seed=seed, split=split).queries
    multi = [q for q in generated if q.is_multimodal and q.relevant(products)]
    queries = [q for q in generated if not q.is_multimodal]
    relevant = [q.relevant(products) for q in queries]
    keep = [i for i, r in enumerate(relevant) if r]
    queries, relevant = [queries[i] for i in keep], [relevant[i] for i in keep]
    families = [q.family for q in queries]
    texts = [q.text for q in queries]
    progress(f"{len(queries)} {split} text queries on v{version.id} ({len(ids):,} products)")

    def score(dense_q: np.ndarray, sparse_q) -> dict[str, float]:
        S = sparse_matrix(sparse_q, columns) @ P_sparse.T
        D = dense_q @ P_dense.T
        return _family_means(families, _map_at_10(alpha * D + (1 - alpha) * S, ids, relevant))

    literal_enc = encode(texts)
    literal = score(np.stack([e.dense for e in literal_enc]), [e.sparse for e in literal_enc])
    result = UnderstandingSweep(len(ids), len(queries), alpha, literal)
    qu = run.understanding
    if qu is None:
        return result

    def evaluate(s: UnderstandingSettings) -> dict[str, float]:
        qu.settings = s
        und = understand_all(qu, texts, encode)
        return score(np.stack([und[t].dense for t in texts]), [und[t].sparse for t in texts])

    def acceptable(fam: dict[str, float]) -> bool:
        return all(
            fam[f] >= literal[f] - MAX_CATALOGUE_DROP
            for f in fam
            if f != "all" and FAMILY_KIND.get(f) == CATALOGUE
        )

    best = qu.settings
    best_fam = evaluate(best)
    result.results.append((best, best_fam["all"], best_fam))
    for round_ in (1, 2):
        for name, values in PARAMETERS.items():
            for value in values:
                s = with_parameter(best, name, value)
                if s == best:
                    continue
                fam = evaluate(s)
                result.results.append((s, fam["all"], fam))
                if acceptable(fam) and fam["all"] > best_fam["all"] + 1e-4:
                    best, best_fam = s, fam
        progress(f"  round {round_}: best all {best_fam['all']:.4f}")
    # photo + text: the weight (and softmax temperature) of what the photo shows
    if multi:
        from services.encoders.clip import combine_query_vectors  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
        from services.store.products import get_image  # noqa: PLC0415 - only the photo sweep reads images

        with connect() as conn:
            photos = encode.clip.encode_images(
                [get_image(conn, q.image_product_id)[0] for q in multi]
            )
        multi_rel = [q.relevant(products) for q in multi]
        alpha_m, tw = float(settings.default_alpha_multimodal), float(settings.query_text_weight)

        def photo_map(s: UnderstandingSettings) -> float:
            qu.settings = s
            und = understand_all(qu, [q.text for q in multi], encode)
            dq = np.stack(
                [
                    combine_query_vectors(und[q.text].dense, photos[j], tw)
                    for j, q in enumerate(multi)
                ]
            )
            sq = [qu.with_photo(und[q.text], photos[j]).sparse for j, q in enumerate(multi)]
            S = sparse_matrix(sq, columns) @ P_sparse.T
            return float(
                np.mean(_map_at_10(alpha_m * (dq @ P_dense.T) + (1 - alpha_m) * S, ids, multi_rel))
            )

        photo = {
            (w, t): photo_map(replace(best, photo_sparse=w, photo_temperature=t))
            for w in PHOTO_WEIGHTS
            for t in PHOTO_TEMPERATURES
        }
        result.photo = photo
        w, t = max(photo, key=lambda k: (photo[k], -k[0]))
        best = replace(best, photo_sparse=w, photo_temperature=t)
        progress(f"  photo + text: best {photo[(w, t)]:.4f} at weight {w}, temperature {t}")
    result.chosen = best
    qu.settings = best
    result.seconds = round(time.perf_counter() - started, 1)
    return result


def format_understanding_sweep(r: UnderstandingSweep) -> str:
    out = [
        (
            f"# understanding sweep (tuning half): {r.n_queries} text queries, "
            f"{r.n_products:,} products, alpha {r.alpha}, {r.seconds:.0f} s"
        ),
        "",
        (
            f"{len(r.results)} settings tried (coordinate descent over {', '.join(PARAMETERS)}); "
            "the best 12:"
        ),
        "",
        (
            "| rewrite dense | rewrite sparse | label dense | label sparse | occasion sparse "
            "| threshold | margin | occasion threshold | occasion margin | top k | MAP@10 all |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, m, _ in sorted(r.results, key=lambda x: -x[1])[:12]:
        ld, ls = dict(s.label_dense), dict(s.label_sparse)
        tc, oc = s.semantic.of("articleType"), s.semantic.of("usage")
        out.append(
            f"| {s.rewrite_dense} | {s.rewrite_sparse} | {ld['articleType']} | "
            f"{ls['articleType']} | {ls['usage']} | {tc.threshold} | {tc.margin} | "
            f"{oc.threshold} | {oc.margin} | {s.semantic.top_k} | {m:.4f} |"
        )
    if r.photo:
        out += [
            "",
            "Photo + text (default alpha), MAP@10 by photo weight and temperature:",
            "",
            "| photo weight | temperature | MAP@10 |",
            "|---:|---:|---:|",
        ]
        out += [f"| {w} | {t} | {m:.4f} |" for (w, t), m in sorted(r.photo.items())]
    if r.chosen is not None:
        chosen = next(
            fam
            for s, _, fam in r.results
            if replace(s, photo_sparse=0, photo_temperature=0)
            == replace(r.chosen, photo_sparse=0, photo_temperature=0)
        )
        out += [
            "",
            f"Chosen: {r.chosen}",
            "",
            "| family | kind | literal | understood |",
            "|---|---|---:|---:|",
        ]
        for f in sorted(chosen, key=lambda f: (FAMILY_KIND.get(f, "~"), f)):
            out.append(f"| {f} | {FAMILY_KIND.get(f, '')} | {r.literal[f]:.3f} | {chosen[f]:.3f} |")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse  # noqa: PLC0415 - only the script entry point parses arguments

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="split", choices=["split", "shipped"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    r = run_understanding_sweep(config=args.config, seed=args.seed, progress=print)
    print(format_understanding_sweep(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
