"""One evaluation run against the live index: query set -> encode once -> alpha sweep -> metrics -> tables.

Steps (``run_evaluation``):
1. read the metadata of the products in the live index version and generate the query
   set from it (``evaluation.queries``); judge relevance from metadata; queries with no
   relevant product are recorded in the run's details and skipped;
2. understand every query (``evaluation.understanding``: by default the held-out ``split``
   configuration, the lexicon reading only the reader half of each word source) and
   encode it ONCE with the live version's own models: CLIP text (or image + text, a
   re-normalised weighted sum) and SPLADE text, each of the query as sent (literal) and as
   understood;
3. for each alpha of the sweep run ``services.search.fused_search`` (fast mode: the
   first candidates only, ``PLAIN_FAST``; k=100 so that Recall@100 is measurable) with the
   understood vectors: alpha 1 is "dense", alpha 0 "sparse", every alpha is "hybrid";
   image + text queries are "multi" at every alpha; at the default alphas the literal
   vectors too ("literal", "multi_literal"), and each misspelt query's correct spelling
   (family ``misspelling_reference``, outside "all");
4. fast-mode recall@10 against the exact ranking on a fixed subset of text queries, for
   dense, sparse and hybrid at the service's default alpha, and the certificate of the
   service's own top 10 (default candidates): ``certified_fast@10``, the share whose
   threshold test the first candidates alone meet (exact IF the HNSW lists are; the key is
   kept for the history), ``certified@10``, the same after deepening and fallback, and
   ``exact@10``, the share proven exact (every filtered row scored);
5. the shoppers' ``clicks`` family (``evaluation.click_judgments``): on a full run of a
   reported split, when enough queries have clicks, its queries are searched like the text
   queries above and scored against the click judgments (a family of its own, never in
   "all"); otherwise the run says why not (``details.clicks``) and goes on;
6. store means per (mode, alpha, family, metric) in ``eval_metrics`` and write the
   markdown report under ``settings.reports_dir``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psycopg

from evaluation.click_judgments import CLICK_FAMILY, ClickConfig, load_click_family
from evaluation.metrics import METRICS, PRIMARY, mean, overlap_at_k, query_metrics
from evaluation.queries import FAMILIES, EvalQuery, QuerySet, generate_queries
from evaluation.report import write_report as _write
from evaluation.understanding import CachedEncoder, run_understanding, understand_all
from services.config import get_settings
from services.search import NoLiveIndex, SearchQuery, certified_search, fused_search
from services.store import evaluations as storage
from services.store.db import connect
from services.store.evaluations import ALL, MetricRow
from services.store.index_versions import live_version, product_metadata
from services.store.products import get_image

log = logging.getLogger(__name__)

DEFAULT_ALPHAS: tuple[float, ...] = tuple(round(i / 10, 1) for i in range(11))
# Families scored beside the others but never in "all": a reference, not a question; the
# shoppers' click family (other queries, other judgments: reported beside, never tuned on).
REFERENCE_FAMILIES = ("misspelling_reference", CLICK_FAMILY)
DEFAULT_K = 100
FAST_RECALL_QUERIES = 60
# The sweep's rankings: the first HNSW candidates re-ranked, nothing more (no deepening, no
# exact fallback), as every run before the certificate (issue #14) measured them, so runs
# stay comparable and a run stays cheap (k=100 is rarely certified by 150 candidates, and
# each uncertified ranking would fall back to the exact scan). The service's own answers
# are measured by certified_fast@10 and certified@10.
PLAIN_FAST = {"budget": 1, "exact_max_rows": 0}


@dataclass
class EvalOutcome:
    """What a run produced, beside the rows it stored."""

    run_id: int
    query_set: QuerySet
    rows: list[MetricRow]
    skipped: list[dict]
    per_query: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    diagnostics: dict = field(default_factory=dict)
    clicks: dict = field(default_factory=dict)  # the click family: details.clicks
    report_path: Path | None = None


def _alphas(alphas: Sequence[float] | None, default_alpha: float) -> list[float]:
    chosen = list(DEFAULT_ALPHAS if alphas is None else alphas)
    for a in chosen:
        if not 0.0 <= float(a) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {a}")
    # dense (1), sparse (0) and the service default are always measured.
    return sorted({round(float(a), 6) for a in chosen} | {0.0, 1.0, round(default_alpha, 6)})


def _aggregate(
    per_query: dict[tuple[str, str, float], dict[str, float]], families: dict[str, str]
) -> list[MetricRow]:
    """Mean of each metric per (mode, alpha, family) and overall (family 'all')."""
    groups: dict[tuple[str, float, str], list[dict[str, float]]] = defaultdict(list)
    for (mode, qid, alpha), m in per_query.items():
        groups[(mode, alpha, families[qid])].append(m)
        if families[qid] not in REFERENCE_FAMILIES:
            groups[(mode, alpha, ALL)].append(m)
    rows = []
    for (mode, alpha, family), ms in sorted(groups.items()):
        for metric in METRICS:
            v, n = mean(m[metric] for m in ms)
            if v is not None:
                rows.append(MetricRow(mode, alpha, family, metric, v, n))
    return rows


def run_evaluation(
    conn: psycopg.Connection | None = None,
    *,
    alphas: Sequence[float] | None = None,
    families: Sequence[str] | None = None,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    k: int = DEFAULT_K,
    text_weight: float | None = None,
    split: str | None = "test",
    fast_recall_queries: int = FAST_RECALL_QUERIES,
    notes: str | None = None,
    write_report: bool = True,
    settings=None,
    progress: Callable[[str], None] | None = None,
    understanding: str = "split",
    clicks: ClickConfig | bool | None = None,
) -> int:
    """Evaluate the live index, store the run, return its id (see :func:`evaluate`)."""
    return evaluate(
        conn,
        alphas=alphas,
        families=families,
        seed=seed,
        sizes=sizes,
        k=k,
        text_weight=text_weight,
        split=split,
        fast_recall_queries=fast_recall_queries,
        notes=notes,
        write_report=write_report,
        settings=settings,
        progress=progress,
        understanding=understanding,
        clicks=clicks,
    ).run_id


def evaluate(
    conn: psycopg.Connection | None = None,
    *,
    alphas=None,
    families=None,
    seed=0,
    sizes=None,
    k=DEFAULT_K,
    text_weight=None,
    split="test",
    fast_recall_queries=FAST_RECALL_QUERIES,
    notes=None,
    write_report=True,
    settings=None,
    progress=None,
    understanding="split",
    clicks=None,
) -> EvalOutcome:
    """Evaluate the live index (module docstring); ``understanding``: the configuration of
    query understanding, "split" (held-out: the default), "shipped" or "off"; ``clicks``:
    the click family's :class:`ClickConfig`, True (the default configuration) or False (not
    asked); None asks it with the default configuration on a full run (no ``families``) of
    a reported split (not "tune")."""
    settings = settings or get_settings()
    own = conn is None
    if own:
        conn = connect(settings.database_url)
    try:
        return _evaluate(
            conn,
            settings,
            alphas=alphas,
            families=families,
            seed=seed,
            sizes=sizes,
            k=k,
            split=split,
            text_weight=settings.query_text_weight if text_weight is None else text_weight,
            fast_recall_queries=fast_recall_queries,
            notes=notes,
            write_report=write_report,
            progress=progress or log.info,
            understanding=understanding,
            clicks=_click_config(clicks, families, split),
        )
    finally:
        if own:
            conn.close()


def _evaluate(
    conn,
    settings,
    *,
    alphas,
    families,
    seed,
    sizes,
    k,
    text_weight,
    split,
    fast_recall_queries,
    notes,
    write_report,
    progress,
    understanding,
    clicks,
) -> EvalOutcome:

    if families:
        unknown = [f for f in families if f not in FAMILIES]
        if unknown:
            raise ValueError(f"unknown query families {unknown}; known: {', '.join(FAMILIES)}")
    if not 1 <= k <= 1000:
        raise ValueError(f"k must be in 1..1000, got {k}")
    default_alpha = float(settings.default_alpha)
    default_alpha_multi = float(settings.default_alpha_multimodal)
    sweep = sorted(set(_alphas(alphas, default_alpha)) | {round(default_alpha_multi, 6)})
    version = live_version(conn)
    if version is None:
        raise NoLiveIndex(
            "no index version is live; build one first (fashion-search index --source offline)"
        )
    t0 = time.perf_counter()
    products = product_metadata(conn, version.id)
    qs = generate_queries(products, seed=seed, families=families, sizes=sizes, split=split)
    conn.commit()
    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    encode = CachedEncoder(load_clip(version.dense_model), load_splade(version.sparse_model))
    run_u = run_understanding(conn, version, understanding, encode)
    details = {
        "default_alpha": default_alpha,
        "default_alpha_multi": default_alpha_multi,
        "alphas": sweep,
        "seed": seed,
        "k": k,
        "families": list(families or FAMILIES),
        "text_weight": text_weight,
        "split": split or "all",
        "dense_image_weight": version.dense_image_weight,
        "n_products": len(products),
        "n_queries_generated": len(qs.queries),
        "understanding": run_u.details(),
        "query_runtime": encode.runtime,
    }
    run_id = storage.start_run(
        conn,
        index_version_id=version.id,
        dense_model=version.dense_model,
        sparse_model=version.sparse_model,
        query_set_version=qs.version,
        notes=notes,
        details=details,
    )
    progress(
        f"eval run {run_id}: index v{version.id} ({len(products)} products), "
        f"{len(qs.queries)} queries ({qs.version}), alphas {sweep}"
    )
    try:
        outcome = _measure(
            conn,
            version,
            products,
            qs,
            sweep,
            k=k,
            text_weight=text_weight,
            default_alpha=default_alpha,
            default_alpha_multi=default_alpha_multi,
            fast_recall_queries=fast_recall_queries,
            progress=progress,
            encode=encode,
            run_understanding=run_u,
        )
        outcome.run_id = run_id
        t = time.perf_counter()
        outcome.clicks = _click_family(
            conn,
            clicks,
            version,
            products,
            sweep,
            outcome,
            k=k,
            default_alpha=default_alpha,
            text_weight=text_weight,
            encode=encode,
            run_understanding=run_u,
            progress=progress,
        )
        outcome.timings["clicks_s"] = round(time.perf_counter() - t, 2)
        outcome.timings["total_s"] = round(time.perf_counter() - t0, 2)
        storage.store_metrics(conn, run_id, outcome.rows)
        storage.finish_run(
            conn,
            run_id,
            status="succeeded",
            details={
                "skipped": outcome.skipped,
                "timings": outcome.timings,
                "n_queries_scored": len(qs.queries) - len(outcome.skipped),
                "per_query": outcome.per_query,
                "diagnostics": outcome.diagnostics,
                "clicks": outcome.clicks,
            },
        )
    except BaseException as exc:
        storage.finish_run(
            conn, run_id, status="failed", notes=f"{type(exc).__name__}: {exc}"[:4000]
        )
        raise
    if write_report:
        outcome.report_path = _write(conn, run_id, settings.reports_dir)
        progress(f"report: {outcome.report_path}")
    return outcome


def _click_config(clicks, families, split) -> ClickConfig | None:
    """What ``evaluate(clicks=...)`` asks for (see there); None: the family is not asked."""
    if isinstance(clicks, ClickConfig):
        return clicks
    if clicks is None:
        clicks = not families and split != "tune"
    return ClickConfig() if clicks else None


def _click_family(
    conn,
    config: ClickConfig | None,
    version,
    products,
    sweep: list[float],
    outcome: EvalOutcome,
    *,
    k: int,
    default_alpha: float,
    text_weight: float,
    encode: CachedEncoder,
    run_understanding,
    progress,
) -> dict:
    """The shoppers' ``clicks`` family (``evaluation.click_judgments``), searched like the
    text queries (understood, every alpha; literal at the default alpha) and scored against
    the click judgments; its rows are added to ``outcome.rows``. Returns ``details.clicks``.
    Never fails the run for want of clicks: it says why there is no family."""
    if config is None:
        return {
            "evaluated": False,
            "message": "no click family: not asked (a --families subset or tuning-split run)",
        }
    try:
        family = load_click_family(conn, config, {int(p["id"]) for p in products})
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege) as exc:
        conn.rollback()
        message = f"no click family: the analytics tables cannot be read ({exc})".strip()
        progress(message)
        return {"evaluated": False, "message": message[:500]}
    conn.commit()
    progress(family.message())
    details = family.details()
    if not family.qualifies:
        return details
    queries = family.queries
    vecs = _encode(encode, run_understanding, queries, [], {}, text_weight)
    per_query: dict[tuple[str, str, float], dict[str, float]] = {}
    ap: dict[str, float] = {}

    def search(qd, qs_, alpha: float) -> list[int]:
        query = SearchQuery(dense=qd, sparse=qs_, alpha=alpha, k=k, **PLAIN_FAST)
        return [h.product_id for h in fused_search(conn, query, version)]

    for q in queries:
        relevant = set(q.judged)
        for alpha in sweep:
            m = query_metrics(search(vecs.dense[q.qid], vecs.sparse[q.qid], alpha), relevant)
            per_query[("hybrid", q.qid, alpha)] = m
            if alpha == 1.0:
                per_query[("dense", q.qid, alpha)] = m
            if alpha == 0.0:
                per_query[("sparse", q.qid, alpha)] = m
            if abs(alpha - default_alpha) < 1e-9:
                ap[q.qid] = round(m[PRIMARY], 4)
        literal = search(vecs.literal_dense[q.qid], vecs.literal_sparse[q.qid], default_alpha)
        per_query[("literal", q.qid, default_alpha)] = query_metrics(literal, relevant)
    conn.commit()
    outcome.rows.extend(_aggregate(per_query, {q.qid: CLICK_FAMILY for q in queries}))
    for entry in details["queries"]:
        entry["ap_default_alpha"] = ap.get(entry["qid"])
    return details


@dataclass
class QueryVectorSet:
    """Every scored query's vectors: understood (what the modes search) and literal."""

    dense: dict[str, np.ndarray] = field(default_factory=dict)
    sparse: dict[str, object] = field(default_factory=dict)
    literal_dense: dict[str, np.ndarray] = field(default_factory=dict)
    literal_sparse: dict[str, object] = field(default_factory=dict)
    image_only: dict[str, np.ndarray] = field(default_factory=dict)
    reference: dict[str, tuple[np.ndarray, object]] = field(default_factory=dict)
    understood: dict[str, dict] = field(default_factory=dict)


def _encode(
    encode: CachedEncoder,
    run_u,
    text_qs: list[EvalQuery],
    multi_qs: list[EvalQuery],
    images: dict[int, bytes],
    text_weight: float,
) -> QueryVectorSet:
    from services.encoders.clip import combine_query_vectors  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    texts = [q.text for q in text_qs + multi_qs]
    refs = [q.reference for q in text_qs if q.reference]
    literal = dict(zip(texts + refs, encode(texts + refs)))
    qu = run_u.understanding
    understood = understand_all(qu, texts + refs, encode) if qu is not None else {}
    out = QueryVectorSet()

    def vectors(text: str):
        u = understood.get(text)
        return (u.dense, u.sparse) if u is not None else (literal[text].dense, literal[text].sparse)

    for q in text_qs:
        out.dense[q.qid], out.sparse[q.qid] = vectors(q.text)
        out.literal_dense[q.qid], out.literal_sparse[q.qid] = (
            literal[q.text].dense,
            literal[q.text].sparse,
        )
        if q.reference:
            out.reference[q.qid] = vectors(q.reference)
        u = understood.get(q.text)
        if u is not None and u.understood.changed:
            out.understood[q.qid] = {
                "encoded": u.understood.text,
                "rewrite": u.understood.rewrite,
                "attributes": [a.key for a in u.understood.attributes if a.source != "catalogue"],
            }
    if multi_qs:
        img_vecs = encode.clip.encode_images([images[q.image_product_id] for q in multi_qs])
        for j, q in enumerate(multi_qs):
            dense_text, sparse = vectors(q.text)
            if q.text in understood:  # what the photo shows, for the text side
                sparse = qu.with_photo(understood[q.text], img_vecs[j]).sparse
            out.dense[q.qid] = combine_query_vectors(dense_text, img_vecs[j], text_weight)
            out.sparse[q.qid] = sparse
            out.literal_dense[q.qid] = combine_query_vectors(
                literal[q.text].dense, img_vecs[j], text_weight
            )
            out.literal_sparse[q.qid] = literal[q.text].sparse
            out.image_only[q.qid] = img_vecs[j]
    return out


def _measure(
    conn,
    version,
    products,
    qs: QuerySet,
    sweep: list[float],
    *,
    k: int,
    text_weight: float,
    default_alpha: float,
    default_alpha_multi: float,
    fast_recall_queries: int,
    progress,
    encode: CachedEncoder,
    run_understanding,
) -> EvalOutcome:

    timings: dict[str, float] = {}
    skipped: list[dict] = []
    relevant: dict[str, set[int]] = {}
    images: dict[int, bytes] = {}
    for q in qs.queries:
        rel = q.relevant(products)
        if not rel:
            skipped.append(
                {
                    "qid": q.qid,
                    "family": q.family,
                    "text": q.text,
                    "reason": f"no relevant product ({q.describe_relevance()})",
                }
            )
            continue
        if q.is_multimodal:
            img = get_image(conn, q.image_product_id)
            if img is None:
                skipped.append(
                    {
                        "qid": q.qid,
                        "family": q.family,
                        "text": q.text,
                        "reason": f"product {q.image_product_id} has no image",
                    }
                )
                continue
            images[q.image_product_id] = img[0]
        relevant[q.qid] = rel
    conn.commit()
    scored = [q for q in qs.queries if q.qid in relevant]
    text_qs = [q for q in scored if not q.is_multimodal]
    multi_qs = [q for q in scored if q.is_multimodal]
    for s in skipped:
        progress(f"skipped {s['qid']} {s['text']!r}: {s['reason']}")

    t = time.perf_counter()
    vecs = _encode(encode, run_understanding, text_qs, multi_qs, images, text_weight)
    dense, sparse, image_only = vecs.dense, vecs.sparse, vecs.image_only
    timings["encode_s"] = round(time.perf_counter() - t, 2)

    t = time.perf_counter()
    per_query: dict[tuple[str, str, float], dict[str, float]] = {}
    rankings: dict[tuple[str, float], list[int]] = {}
    n_search = 0

    def search(qd, qs_, alpha: float) -> list[int]:
        nonlocal n_search
        n_search += 1
        query = SearchQuery(dense=qd, sparse=qs_, alpha=alpha, k=k, **PLAIN_FAST)
        return [h.product_id for h in fused_search(conn, query, version)]

    families = {q.qid: q.family for q in scored}
    for i, q in enumerate(scored):
        for alpha in sweep:
            ranking = search(dense[q.qid], sparse[q.qid], alpha)
            rankings[(q.qid, alpha)] = ranking
            m = query_metrics(ranking, relevant[q.qid])
            if q.is_multimodal:
                per_query[("multi", q.qid, alpha)] = m
            else:
                per_query[("hybrid", q.qid, alpha)] = m
                if alpha == 1.0:
                    per_query[("dense", q.qid, alpha)] = m
                if alpha == 0.0:
                    per_query[("sparse", q.qid, alpha)] = m
        # the same query as sent, at its default alpha; a misspelt one also spelt correctly
        literal_alpha = default_alpha_multi if q.is_multimodal else default_alpha
        mode = "multi_literal" if q.is_multimodal else "literal"
        ranking = search(vecs.literal_dense[q.qid], vecs.literal_sparse[q.qid], literal_alpha)
        per_query[(mode, q.qid, literal_alpha)] = query_metrics(ranking, relevant[q.qid])
        if q.qid in vecs.reference:
            ref_qid = f"{q.qid}~reference"
            families[ref_qid] = "misspelling_reference"
            ranking = search(*vecs.reference[q.qid], default_alpha)
            per_query[("hybrid", ref_qid, default_alpha)] = query_metrics(ranking, relevant[q.qid])
        if (i + 1) % 100 == 0:
            progress(f"  searched {i + 1}/{len(scored)} queries")
    timings["search_s"] = round(time.perf_counter() - t, 2)
    timings["searches"] = n_search
    timings["ms_per_search"] = round(1000 * timings["search_s"] / max(1, n_search), 2)

    rows = _aggregate(per_query, families)

    # Fast (two HNSW candidate lists + exact re-rank) vs exact scan, top 10.
    t = time.perf_counter()
    step = max(1, len(text_qs) // max(1, fast_recall_queries))
    subset = text_qs[::step][:fast_recall_queries]
    for mode, alpha in (("dense", 1.0), ("sparse", 0.0), ("hybrid", default_alpha)):
        overlaps, first_stage, certified, proven = [], [], [], []
        for q in subset:
            top10 = certified_search(
                conn,
                SearchQuery(dense=dense[q.qid], sparse=sparse[q.qid], alpha=alpha, k=10),
                version,
            ).certificate
            first_stage.append(float(top10.threshold_met and top10.path == "fast"))
            certified.append(float(top10.threshold_met))
            proven.append(float(top10.exact))
            exact = fused_search(
                conn,
                SearchQuery(
                    dense=dense[q.qid], sparse=sparse[q.qid], alpha=alpha, k=10, exact=True
                ),
                version,
            )
            overlaps.append(
                overlap_at_k(rankings[(q.qid, round(alpha, 6))], [h.product_id for h in exact], 10)
            )
        for metric, values in (
            ("fast_recall@10", overlaps),
            ("certified_fast@10", first_stage),
            ("certified@10", certified),
            ("exact@10", proven),
        ):
            v, n = mean(values)
            if v is not None:
                rows.append(MetricRow(mode, alpha, ALL, metric, v, n))
    timings["fast_recall_s"] = round(time.perf_counter() - t, 2)

    diagnostics = _diagnostics(
        conn, version, products, scored, sweep, rankings, relevant, image_only, k
    )

    # Per-query primary metric for the report's "where it falls short" section.
    pq: dict[str, dict] = {}
    for q in scored:
        entry = {
            "family": q.family,
            "text": q.text,
            "n_relevant": len(relevant[q.qid]),
            "relevance": q.describe_relevance(),
        }
        if q.image_product_id is not None:
            entry["image_product_id"] = q.image_product_id
        if q.qid in vecs.understood:
            entry["understood"] = vecs.understood[q.qid]
        mode = "multi" if q.is_multimodal else "hybrid"
        entry["ap"] = {str(a): round(per_query[(mode, q.qid, a)][PRIMARY], 4) for a in sweep}
        literal_alpha = default_alpha_multi if q.is_multimodal else default_alpha
        literal = per_query[
            (f"{mode}_literal" if q.is_multimodal else "literal", q.qid, literal_alpha)
        ]
        entry["literal_ap"] = round(literal[PRIMARY], 4)
        pq[q.qid] = entry
    return EvalOutcome(
        run_id=0,
        query_set=qs,
        rows=rows,
        skipped=skipped,
        per_query=pq,
        timings=timings,
        diagnostics=diagnostics,
    )


def _diagnostics(
    conn,
    version,
    products,
    scored: list[EvalQuery],
    sweep: list[float],
    rankings: dict[tuple[str, float], list[int]],
    relevant: dict[str, set[int]],
    image_only: dict[str, np.ndarray],
    k: int,
) -> dict:
    """Why numbers fall short: per-criterion precision@10 and an image-only baseline.

    ``criterion_precision[mode][alpha][family][field]``: the share of the top 10 that
    satisfies that one criterion (e.g. right article type but wrong colour shows as
    articleType 0.95, baseColour 0.30). ``multi_image_only``: MAP@10 of the multimodal
    queries searched with the photo alone (dense, alpha 1): what the text adds.
    """

    meta = {int(p["id"]): p for p in products}
    sums: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for q in scored:
        mode = "multi" if q.is_multimodal else "hybrid"
        for alpha in sweep:
            top = rankings[(q.qid, alpha)][:10]
            if not top:
                continue
            for fld, allowed in q.criteria:
                share = sum(meta[pid].get(fld) in allowed for pid in top) / len(top)
                sums[(mode, str(alpha), q.family, fld)].append(share)
                sums[(mode, str(alpha), ALL, fld)].append(share)
    crit: dict = {}
    for (mode, alpha, family, fld), vals in sums.items():
        crit.setdefault(mode, {}).setdefault(alpha, {}).setdefault(family, {})[fld] = round(
            sum(vals) / len(vals), 4
        )
    aps = []
    for q in scored:
        if q.qid in image_only:
            hits = fused_search(
                conn,
                SearchQuery(dense=image_only[q.qid], sparse=None, alpha=1.0, k=min(k, 100)),
                version,
            )
            aps.append(query_metrics([h.product_id for h in hits], relevant[q.qid])[PRIMARY])
    image_map, n = mean(aps)
    return {"criterion_precision": crit, "multi_image_only": {"map@10": image_map, "n": n}}
