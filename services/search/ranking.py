"""How a query is ranked: the plan of the ONE statement and the certificate of its answer.

``score = alpha * dense_ip + (1 - alpha) * sparse_ip``, both sides unit vectors (CLIP is
L2-normalised by its encoder, SPLADE after pruning), so each inner product is a cosine and
``alpha`` means what it says. The statement is ``services/store/sql/search.sql``: up to three
stages (fast: the first candidates of the dense HNSW index and of the sparse postings; deep:
more of each; exact: every filtered row); the threshold bound decides whether a stage's answer
stands. What is proven is said (``Certificate.exact``): the exact path, and an answer whose
dense side carries no weight when the postings' bound is met (the sparse side's bound is
sound: impact-ordered postings, Fagin's threshold algorithm). An answer with dense HNSW
candidates is never called exact (HNSW can miss rows of its own top n): it says so and quotes
the dense side's recall measured at build. This module decides the statement's parameters
(:func:`plan`: candidates, postings depth, budget, routing a selective filter to the exact
scan, the fallback), runs it (:func:`certified_search`) and reads the certificate back.
Recall against exact is measured in the benchmarks, not assumed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from services.catalog.schema import FACET_FIELDS, FILTER_FIELDS, METADATA_FIELDS
from services.search.contract import (
    DEFAULT_BUDGET,
    DEFAULT_CANDIDATES,
    SORT_COLUMNS,
    Certificate,
    Filters,
    NoLiveIndex,
    Ranking,
    SearchHit,
    SearchQuery,
    validate,
)
from services.store.index_versions import IndexVersion, live_version
from services.store.search_sql import (
    dense_index,
    explain,
    filters_where,
    run_search,
    run_searches,
    scan_settings,
    search_session,
    search_statement,
    value_counts,
)

# Routing a filtered query (route_exact): the exact scan costs ~ its filtered rows r, a
# filtered HNSW scan ~ the rows it visits to collect n that pass, n * total / r; exact wins
# while r^2 < ROUTE_FACTOR * n * total. The factor is measured, not derived
# (docs/benchmarks.md, "selectivity sweep": the crossover at 1M rows lies near 3 %).
ROUTE_FACTOR = 6.0
# A halfvec dense index orders candidates by half-precision scores: a row outside the list may
# beat the list's lowest by the rounding, at most 2 * 2^-11 * |q| * |d| for unit vectors
# (each component rounded to 11 significant bits): the bound adds this much to that side.
HALFVEC_SLACK = 1e-3
# pgvector sums a sparse inner product in float4; the bound is summed in float8: a row's
# computed score may exceed its true value by float4 rounding (~1e-7 per term). The sparse
# bound adds this much so that rounding never makes an unproven answer look proven.
SPARSE_SLACK = 1e-5
# Postings read per query term, per candidate taken from them: index-only reads are cheap,
# and a deeper read lowers the bound on the products it did not meet (docs/benchmarks.md,
# "exact sparse side": at 10,000 rows, 4x proves 41 % of sparse answers at the first stage
# against 21 % at 1x, for ~5 ms).
POSTINGS_PER_CANDIDATE = 4
VERIFY_PER_CANDIDATE = 8


@dataclass(frozen=True)
class Plan:
    """The statement of a query against a version, its parameters, and the HNSW settings
    its scans need."""

    statement: str
    params: dict[str, Any]
    settings: dict[str, str]
    version: IndexVersion


def _total_rows(conn: psycopg.Connection, version: IndexVersion) -> int:
    if version.row_count is not None:
        return int(version.row_count)
    return sum(value_counts(conn, version, FILTER_FIELDS[0].column).values())


def estimated_rows(conn: psycopg.Connection, version: IndexVersion, filters: Filters) -> int:
    """How many rows of ``version`` pass ``filters``, estimated as the table's rows times
    each filtered column's share (columns taken as independent; exact for one column)."""
    total = _total_rows(conn, version)
    if total == 0:
        return 0
    estimate = float(total)
    for column, values in filters.values:
        counts = value_counts(conn, version, column)
        estimate *= sum(counts.get(v, 0) for v in set(values)) / total
    for column, low, high in filters.ranges:
        counts = value_counts(conn, version, column)
        passing = sum(
            c
            for v, c in counts.items()
            if v is not None and (low is None or v >= low) and (high is None or v <= high)
        )
        estimate *= passing / total
    return math.ceil(estimate)


def route_exact(rows: int, total: int, n: int) -> bool:
    """Whether a filter passing ``rows`` of ``total`` is cheaper to answer by the exact
    scan than by filtered HNSW scans of ``n`` candidates (see ROUTE_FACTOR)."""
    return rows * rows <= ROUTE_FACTOR * n * total


def plan(conn: psycopg.Connection, query: SearchQuery, version: IndexVersion | None) -> Plan:
    """The plan of ``query`` against ``version`` (default: the live one)."""
    version = version or live_version(conn)
    if version is None:
        raise NoLiveIndex("no index version is live yet; run the indexing pipeline first")
    alpha, dense = validate(query, version)
    where, params = filters_where(query.filters.values, query.filters.ranges, "e")
    depth = query.depth  # deeper pages deepen the candidate lists
    n = query.candidates or max(depth, DEFAULT_CANDIDATES)
    budget = query.budget or max(n, DEFAULT_BUDGET)

    use_dense = dense is not None and alpha > 0.0
    rows = estimated_rows(conn, version, query.filters)
    total = _total_rows(conn, version)
    filtered = bool(query.filters.values or query.filters.ranges)
    fallback = rows <= query.exact_max_rows
    params.update(
        alpha=alpha,
        qd=dense,
        qs=query.sparse,
        k=depth,
        n=n,
        budget=budget,
        # Postings read per query term (the deep stage reads down to its share of the fast
        # answer's k-th sparse score, at most m_deep).
        m=POSTINGS_PER_CANDIDATE * n,
        m_deep=POSTINGS_PER_CANDIDATE * budget,
        # Products met there that the fast stage scores on the sparse side alone, its n
        # candidates the best of them: on the live 10,000 rows 63 of 100 sparse answers are
        # proven at the first stage against 41 taking the n of highest upper bound
        # (docs/benchmarks.md, "a verified first stage").
        verify_fast=VERIFY_PER_CANDIDATE * n,
        # Products the deep stage met that it scores on the sparse side alone (cheap: the
        # dense vector stays in TOAST), to bound those it leaves by their exact score.
        verify=VERIFY_PER_CANDIDATE * budget,
        # Where the exact scan is the fallback (few filtered rows), an uncertified answer
        # goes straight to it: there it costs less than the deep stage (docs/benchmarks.md,
        # "storefront pages": 14-18 ms vs 30-45 ms at 10,000 rows), and its answer is proven.
        # A ranking by the sparse side alone deepens only when the query sets a budget: its
        # deep stage (every term's postings down to its share of the first answer's k-th
        # score) cost 220-270 ms at 100,000 rows against 92 ms for the exact scan, for
        # recall 0.988 -> 1.000 (docs/benchmarks.md, "exact sparse side").
        deepen=budget > n and not fallback and (use_dense or query.budget is not None),
        use_dense=use_dense,
        use_sparse=query.sparse is not None and alpha < 1.0,
        route_exact=query.exact
        or (filtered and query.exact_max_rows > 0 and route_exact(rows, total, n)),
        fallback_exact=fallback,
        estimated_rows=rows,
        dense_slack=HALFVEC_SLACK if dense_index(version) == "halfvec" else 0.0,
        sparse_slack=SPARSE_SLACK,
        version_id=version.id,
        has_after=query.after is not None,
        **{f"after_{i}": v for i, v in enumerate(query.after or (None,) * 3)},
        shown=list(query.shown),
        skip=0 if query.after is not None or query.shown else query.offset,
        k_page=query.page_size,
        with_vectors=query.with_vectors,
    )
    settings: dict[str, str] = {}
    if not params["route_exact"]:
        settings = scan_settings(conn, version, n, ef_search=query.ef_search, probes=query.probes)
    statement = search_statement(conn, version, where, SORT_COLUMNS.get(query.sort))
    return Plan(statement, params, settings, version)


def certified_search(
    conn: psycopg.Connection, query: SearchQuery, version: IndexVersion | None = None
) -> Ranking:
    """Rank products for ``query`` against ``version`` (default: the live one), with the
    certificate of the ranking; one statement, one round trip."""
    with search_session(conn) as apply_settings:
        p = plan(conn, query, version)
        apply_settings(p.settings)
        rows = run_search(conn, p.statement, p.params)
    first = rows[0]
    n, budget = p.params["n"], p.params["budget"]
    scanned = first["path"] == "exact"
    met = bool(first["threshold_met"])
    # Proven: every filtered row scored, or the threshold met with the sparse side alone
    # (its bound comes from the postings; a dense HNSW list proves nothing).
    exact = scanned or (met and not p.params["use_dense"])
    certificate = Certificate(
        path=first["path"],
        exact=exact,
        reason=None if exact else _unproven(p.params, p.version),
        threshold_met=met,
        candidates={"fast": n, "deepened": budget}.get(first["path"]),
        budget=budget,
        bound=None if scanned else first["bound"],
        kth_score=None if scanned else first["kth"],
        estimated_rows=p.params["estimated_rows"],
        routed=p.params["route_exact"],
        hnsw_recall=_hnsw_recall(p.version) if p.params["use_dense"] and not exact else None,
    )
    return Ranking(
        [_hit(row) for row in rows if row["product_id"] is not None],
        certificate,
        alpha=p.params["alpha"],
        version_status=first["version_status"],
        ranked=int(first["ranked"]),
        remaining=int(first["remaining"]),
    )


def facet_counts(
    conn: psycopg.Connection, query: SearchQuery, version: IndexVersion | None = None
) -> dict[str, dict[str, int]]:
    """For each facet field (by API name), how many of the query's relevant set carry each
    value: the filtered top RELEVANT_POOL by fused score, a field's own filter left off
    (disjunctive faceting: the counts of a field say what picking another of its values
    would give). The field without a filter count the set under all the filters. One
    statement per distinct filter set (the query's, and one per filtered facet field),
    sent together: one round trip."""
    version = version or live_version(conn)
    if version is None:
        raise NoLiveIndex("no index version is live yet; run the indexing pipeline first")
    filtered = {column for column, _ in query.filters.values}
    variants: dict[str, Filters] = {}  # facet column -> the filters its counts run under
    for f in FACET_FIELDS:
        own = f.column in filtered
        values = tuple(v for v in query.filters.values if v[0] != f.column)
        variants[f.column] = Filters(values, query.filters.ranges) if own else query.filters
    pool = replace(
        query, offset=0, after=None, sort="relevance", peek=False, with_vectors=False,
        whole_pool=True,
    )  # fmt: skip
    distinct = list(dict.fromkeys(variants.values()))
    with search_session(conn) as apply_settings:
        plans = [plan(conn, replace(pool, filters=f), version) for f in distinct]
        for p in plans:
            apply_settings(p.settings)  # the same n for each: the same settings
        results = run_searches(conn, [(p.statement, p.params) for p in plans])
    rows_of = dict(zip(distinct, results))
    counts = {}
    for f in FACET_FIELDS:
        rows = rows_of[variants[f.column]]
        tally = Counter(
            r["m_" + f.column]
            for r in rows
            if r["product_id"] is not None and r["m_" + f.column] is not None
        )
        counts[f.name] = dict(sorted(tally.items(), key=lambda kv: (-kv[1], kv[0])))
    return counts


def _unproven(params: dict[str, Any], version: IndexVersion) -> str:
    """Why an answer from candidates is not proven exact: its dense side came from HNSW (or
    IVFFlat lists), or (sparse alone) the postings' bound was not met at the depth read."""
    if params["use_dense"]:
        return "dense side from " + ("IVFFlat" if dense_index(version) == "ivfflat" else "HNSW")
    return f"sparse bound not met at {params['m_deep'] if params['deepen'] else params['m']} postings per term"


def _hnsw_recall(version: IndexVersion) -> dict | None:
    """The version's measured recall of each HNSW side (its build check), if recorded."""
    recall = ((version.report or {}).get("checks") or {}).get("hnsw_recall")
    return dict(recall) if isinstance(recall, dict) else None


def fused_search(
    conn: psycopg.Connection, query: SearchQuery, version: IndexVersion | None = None
) -> list[SearchHit]:
    """Rank products for ``query`` against ``version`` (default: the live one)."""
    return certified_search(conn, query, version).hits


def explain_search(
    conn: psycopg.Connection,
    query: SearchQuery,
    version: IndexVersion | None = None,
    *,
    analyze: bool = True,
) -> list[str]:
    """The query plan of ``fused_search(conn, query, version)``: the same statement, the same
    parameters and the same session settings, one line per plan row. ``analyze`` runs the
    statement (``EXPLAIN (ANALYZE, BUFFERS)``) for actual times and buffer counts."""
    with search_session(conn) as apply_settings:
        p = plan(conn, query, version)
        apply_settings(p.settings)
        return explain(conn, p.statement, p.params, analyze=analyze)


def _hit(row: dict) -> SearchHit:
    return SearchHit(
        product_id=row["product_id"],
        score=row["score"],
        dense_score=row["dense_score"],
        sparse_score=row["sparse_score"],
        product_display_name=row["product_display_name"],
        metadata={f.column: row["m_" + f.column] for f in METADATA_FIELDS},
        sparse_vector=row["sparse"],
    )
