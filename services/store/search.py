"""How a query is ranked: ``score = alpha * dense_ip + (1 - alpha) * sparse_ip`` in ONE SQL statement.

Scales: both sides are unit vectors. CLIP embeddings are L2-normalised by the
encoder, and so are SPLADE vectors (``services.encoders.splade``), so each inner
product is a cosine in [-1, 1] (sparse: [0, 1]). Raw SPLADE dot products are tens
while CLIP cosines are below 1; without normalisation a convex weight is decided by
the sparse side alone (measured: see README "Score calibration"). Normalising both
sides keeps the blend linear, lets each side use its own HNSW index, and leaves
``alpha`` meaningful; the evaluation's alpha sweep picks the default.

One statement per query (``SEARCH_SQL`` below), in up to three stages:
- fast: candidates from the dense HNSW index and from the sparse HNSW index (each
  filtered; pgvector >= 0.8 iterative scans keep filtered scans full; on 0.7 a selective
  filter can return fewer than k rows there), their union re-ranked by the exact fused
  score, with a certificate: whether the top k is provably the exact one;
- deepened: the same with more candidates, when the first could not certify it;
- exact: every row that passes the filters (a sequential or B-tree scan): asked for, a
  selective filter, or the fallback for an uncertified answer over few rows.
Recall against exact and the certified share are measured in the benchmark, not assumed.

pgvector's ``<#>`` is the NEGATIVE inner product, hence the ``-(...)`` below.
Every value reaches SQL as a bound parameter; identifiers (the version's table,
filter columns from a fixed allow-list) are composed with ``psycopg.sql``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from pgvector import SparseVector
from psycopg import sql
from psycopg.rows import dict_row

from services.catalog.schema import (
    BY_COLUMN,
    FACET_FIELDS,
    FILTER_FIELDS,
    METADATA_FIELDS,
    RANGE_FILTER_FIELDS,
    VALUE_FILTER_FIELDS,
    range_keys,
)
from services.store.index_versions import MAX_SPARSE_NNZ, IndexVersion, live_version

# Limits of a query, for every caller (the API's request types declare the same ones).
MAX_K = 100
MAX_CANDIDATES = 10_000
MAX_FILTER_VALUES = 100
DEFAULT_CANDIDATES = 150  # per index, in fast mode (recall@10 >= 0.99 measured at 44k rows)
# Per index, when the first candidates cannot certify the answer (see SEARCH_SQL).
DEFAULT_BUDGET = 1000
# Routing a filtered query (see ``route_exact``): the exact scan costs ~ its filtered rows
# r, a filtered HNSW scan ~ the rows it visits to collect n that pass, n * total / r. On the
# 1M benchmark one filtered row scanned exactly cost ~8 us (10,000 rows: 79 ms) and one row
# visited by the filtered HNSW scans ~15 us (150 candidates at 1 %: 233 ms), so exact wins
# while r * 8 < (n * total / r) * 15, i.e. r^2 < ROUTE_FACTOR * n * total. The model's 2 was
# too low: ``bench_search.py --selectivity-sweep`` at 1M (150 candidates) put the crossover
# between 2 % (exact 327 ms, HNSW 1,296 ms) and 5 % (exact 1,900 ms, HNSW 329 ms), so ~3 %:
# (30,000)^2 = 6 * 150 * 1,000,000.
ROUTE_FACTOR = 6.0
# An answer still uncertified after deepening falls back to the exact scan when the
# filtered rows are at most this many (at ~2.5-8 us a row: 50-160 ms); 0: never.
EXACT_MAX_ROWS = 20_000
# A halfvec dense index orders candidates by half-precision scores: a row outside the list
# may beat the list's lowest by the rounding, at most 2 * 2^-11 * |q| * |d| for an inner
# product of unit vectors (each component rounded to 11 significant bits), so the bound
# adds this much to that side (see SEARCH_SQL).
HALFVEC_SLACK = 1e-3
# An alpha in (0, MIN_ALPHA) runs as 0: a weight that small cannot move a ranking (scores are
# cosines in [-1, 1]), and a subnormal one (5e-324) times a score underflows, which
# PostgreSQL refuses ("value out of range: underflow") instead of rounding to 0.
MIN_ALPHA = 1e-6


def effective_alpha(alpha: float) -> float:
    """The weight a query runs with: ``alpha``, or 0 below :data:`MIN_ALPHA`."""
    return 0.0 if alpha < MIN_ALPHA else float(alpha)


class SearchValidationError(ValueError):
    """A query the platform refuses before any SQL runs."""


class NoLiveIndex(LookupError):
    """No index version is live yet."""


# Request key -> schema field: a value filter answers to its dataset name and its column;
# a range filter to <name>_min / <name>_max (and the camelCase <name>Min / <name>Max).
_VALUE_KEYS = {k: f for f in VALUE_FILTER_FIELDS for k in (f.name, f.column)}
_RANGE_KEYS = {
    key: (f, end)
    for f in RANGE_FILTER_FIELDS
    for end, keys in zip(("min", "max"), zip(range_keys(f), (f"{f.name}Min", f"{f.name}Max")))
    for key in keys
}
# Every key a filter object may carry (documented in the API's OpenAPI).
VALUE_FILTER_KEYS = tuple(_VALUE_KEYS)
RANGE_FILTER_KEYS = tuple(_RANGE_KEYS)


@dataclass(frozen=True)
class Filters:
    """Metadata filters of the product schema's filter fields; each value filter matches any
    of its values (OR), fields are ANDed. ``values``: column -> values; ``ranges``: column ->
    (min, max), either None."""

    values: tuple[tuple[str, tuple[str, ...]], ...] = ()
    ranges: tuple[tuple[str, int | None, int | None], ...] = ()

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> Filters:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise SearchValidationError("filters must be an object of field -> value(s)")
        values: dict[str, tuple[str, ...]] = {}
        bounds: dict[str, dict[str, int]] = {}
        for key, value in data.items():
            if value is None or value == "" or value == []:
                continue
            if key in _RANGE_KEYS:
                f, end = _RANGE_KEYS[key]
                if isinstance(value, bool) or not isinstance(value, int):
                    raise SearchValidationError(f"filter {key} must be an integer {f.name}")
                bounds.setdefault(f.column, {})[end] = value
                continue
            f = _VALUE_KEYS.get(key)
            if f is None:
                allowed = [g.name for g in VALUE_FILTER_FIELDS]
                allowed += [k for g in RANGE_FILTER_FIELDS for k in range_keys(g)]
                raise SearchValidationError(
                    f"unknown filter '{key}'; allowed: {', '.join(allowed)}"
                )
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(
                isinstance(v, str) and v.strip() for v in items
            ):
                raise SearchValidationError(
                    f"filter {key} must be a non-empty string or a list of strings"
                )
            if any("\x00" in v for v in items):  # PostgreSQL text cannot hold one
                raise SearchValidationError(f"filter {key} contains a NUL character (U+0000)")
            if len(items) > MAX_FILTER_VALUES:
                raise SearchValidationError(
                    f"filter {key} has too many values (max {MAX_FILTER_VALUES})"
                )
            values[f.column] = tuple(v.strip() for v in items)
        ranges = []
        for column, b in bounds.items():
            low, high = b.get("min"), b.get("max")
            if low is not None and high is not None and low > high:
                name = BY_COLUMN[column].name
                raise SearchValidationError(f"{name}_min is greater than {name}_max")
            ranges.append((column, low, high))
        order = [f.column for f in FILTER_FIELDS]
        return cls(
            values=tuple(sorted(values.items(), key=lambda kv: order.index(kv[0]))),
            ranges=tuple(sorted(ranges, key=lambda r: order.index(r[0]))),
        )

    def where(self, alias: str = "") -> tuple[sql.Composable, dict[str, Any]]:
        """A WHERE condition over the version table's filter columns, and its parameters."""

        def col(column: str) -> sql.Composable:
            return sql.Identifier(alias, column) if alias else sql.Identifier(column)

        parts: list[sql.Composable] = []
        params: dict[str, Any] = {}
        for column, vals in self.values:
            parts.append(
                sql.SQL("{} = ANY({})").format(col(column), sql.Placeholder(f"f_{column}"))
            )
            params[f"f_{column}"] = list(vals)
        for column, low, high in self.ranges:
            for op, bound, end in ((">=", low, "min"), ("<=", high, "max")):
                if bound is not None:
                    parts.append(
                        sql.SQL("{} {} {}").format(
                            col(column), sql.SQL(op), sql.Placeholder(f"f_{column}_{end}")
                        )
                    )
                    params[f"f_{column}_{end}"] = bound
        if not parts:
            return sql.SQL("TRUE"), params
        return sql.SQL(" AND ").join(parts), params


@dataclass(frozen=True)
class SearchQuery:
    dense: np.ndarray | None
    sparse: SparseVector | None
    alpha: float = 0.5
    k: int = 10
    filters: Filters = field(default_factory=Filters)
    exact: bool = False
    candidates: int | None = None  # per index in fast mode; default max(k, DEFAULT_CANDIDATES)
    # Per index when deepening; default max(candidates, DEFAULT_BUDGET); <= candidates: none.
    budget: int | None = None
    # hnsw.ef_search of both scans; default max(40, min(candidates, 1000)) (pgvector's range
    # is 1..1000). The certificate assumes each list is its side's true top n: a larger
    # ef_search makes that likelier (bench_search.py --ef-search measures it).
    ef_search: int | None = None
    # Fall back to the exact scan when uncertified and the filtered rows are at most this
    # many; 0 also turns off routing selective filters to it (see route_exact).
    exact_max_rows: int = EXACT_MAX_ROWS


@dataclass(frozen=True)
class SearchHit:
    """One ranked product: its scores, name and metadata (column -> value, the schema's
    metadata fields)."""

    product_id: int
    score: float
    dense_score: float | None
    sparse_score: float | None
    product_display_name: str
    metadata: dict[str, Any]
    sparse_vector: SparseVector | None = None  # the product's stored SPLADE vector


@dataclass(frozen=True)
class Certificate:
    """How a ranking was found and whether it is the exact fused top k.

    ``path``: "fast" (the first candidates), "deepened" (``budget`` candidates per index)
    or "exact" (every filtered row scored). ``certified``: the answer equals the exact
    one, up to the HNSW order (see SEARCH_SQL): always on the exact path. ``candidates``:
    per index at the stage that answered (None on the exact path). ``bound``: no row
    outside the candidate lists scores above it; ``kth_score``: the k-th fused score of
    the candidates (both None on the exact path). ``estimated_rows``: the rows the
    filters pass, estimated from per-value counts (the routing's input)."""

    path: str
    certified: bool
    candidates: int | None
    budget: int
    bound: float | None
    kth_score: float | None
    estimated_rows: int
    routed: bool = False


@dataclass(frozen=True)
class Ranking:
    hits: list[SearchHit]
    certificate: Certificate
    # The version's status when the statement ran ("live", "retired", ...): a caller that
    # cached the live version checks it in the same round trip (services.api.runtime).
    version_status: str | None = None


# --- the statement -------------------------------------------------------------------
# One statement answers every query (``SEARCH_SQL``), in up to three stages; a stage runs
# only when the one before could not certify its answer (its scans sit under a gating
# condition, which PostgreSQL evaluates once, before touching the index):
#   1. fast: n candidates from the dense HNSW index and n from the sparse one (each
#      filtered), their union re-ranked by the exact fused score;
#   2. deepened: the same with ``budget`` candidates per index (pgvector's iterative scans
#      go past ef_search), when budget > n;
#   3. exact: every row that passes the filters, when the query asked for it, when its
#      filter is selective (routed here at once, stages 1-2 skipped), or when stages 1-2
#      left the answer uncertified and the filtered rows are few enough to scan.
#
# The certificate (the threshold algorithm, Fagin et al. 2001): a row outside both
# candidate lists has a dense score <= d_N and a sparse score <= s_N, the lowest scores
# of the lists, so its fused score is <= bound = alpha * d_N + (1 - alpha) * s_N. If the
# union holds k rows and the k-th fused score is >= bound, no row outside can enter the
# top k: the answer equals the exact one, up to the HNSW order (each list being the true
# top n of its side; a row tying the bound may swap with the k-th). A side that returned
# fewer than n rows gives no such bound (its scan may have stopped early), so its bound is
# its score's maximum, 1 (both sides are unit vectors). A side the query does not use
# (weight 0) adds nothing to the bound. On a halfvec dense index ({dense_key}: the indexed
# expression) d_N is a half-precision score, so HALFVEC_SLACK is added to it; candidates
# are still re-ranked with the full-precision vectors.
#
# {t}: the version's table (alias e); {filters}: Filters.where("e"); every row returned
# carries the certificate (path, certified, candidates, bound, kth) and the version's
# status, and a query with no hit returns one row with a NULL product_id, so the
# certificate always comes back.

_SCORES = """
       %(alpha)s * coalesce(-(dense <#> %(qd)s::vector), 0)
         + (1 - %(alpha)s) * coalesce(-(sparse <#> %(qs)s::sparsevec), 0) AS score,
       -(dense <#> %(qd)s::vector)     AS dense_score,
       -(sparse <#> %(qs)s::sparsevec) AS sparse_score
"""


def _stage(name: str, limit: str, gate: str) -> str:
    """The CTEs of one HNSW stage: {name}_d and {name}_s (the candidate lists), {name}_r
    (their union's fused top k) and {name}_c (its bound, k-th score and certificate)."""
    return f"""
{name}_d AS MATERIALIZED (
    SELECT product_id, dense, sparse, -({{dense_key}} <#> {{dense_query}}) AS side FROM {{t}} e
    WHERE {{filters}} AND %(use_dense)s AND NOT %(route_exact)s AND {gate}
    ORDER BY {{dense_key}} <#> {{dense_query}}
    LIMIT {limit}
), {name}_s AS MATERIALIZED (
    SELECT product_id, dense, sparse, -(e.sparse <#> %(qs)s::sparsevec) AS side FROM {{t}} e
    WHERE {{filters}} AND %(use_sparse)s AND NOT %(route_exact)s AND {gate}
    ORDER BY e.sparse <#> %(qs)s::sparsevec
    LIMIT {limit}
), {name}_r AS MATERIALIZED (
    SELECT product_id, sparse, {_SCORES}
    FROM (SELECT DISTINCT ON (product_id) product_id, dense, sparse
          FROM (SELECT * FROM {name}_d UNION ALL SELECT * FROM {name}_s) u) c
    ORDER BY score DESC, product_id
    LIMIT %(k)s
), {name}_c AS MATERIALIZED (
    SELECT b.bound, r.kth, r.found = %(k)s AND r.kth >= b.bound AS ok
    FROM (SELECT
            %(alpha)s * CASE WHEN NOT %(use_dense)s THEN 0
                             WHEN (SELECT count(*) FROM {name}_d) < {limit} THEN 1
                             ELSE (SELECT min(side) FROM {name}_d) + %(dense_slack)s END
          + (1 - %(alpha)s) * CASE WHEN NOT %(use_sparse)s THEN 0
                             WHEN (SELECT count(*) FROM {name}_s) < {limit} THEN 1
                             ELSE (SELECT min(side) FROM {name}_s) END AS bound) b,
         (SELECT count(*) AS found, min(score) AS kth FROM {name}_r) r
)"""


SEARCH_SQL = (
    "WITH"
    + _stage("fast", "%(n)s", "TRUE")
    + ","
    + _stage("deep", "%(budget)s", "%(deepen)s AND NOT (SELECT ok FROM fast_c)")
    + f""", exact_r AS MATERIALIZED (
    SELECT product_id, sparse, {_SCORES}
    FROM {{t}} e
    WHERE {{filters}}
      AND (%(route_exact)s OR (%(fallback_exact)s AND NOT (SELECT ok FROM fast_c)
                                                  AND NOT (SELECT ok FROM deep_c)))
    ORDER BY score DESC, product_id
    LIMIT %(k)s
), cert AS MATERIALIZED (
    SELECT CASE WHEN %(route_exact)s THEN 'exact'
                WHEN f.ok THEN 'fast'
                WHEN d.ok THEN 'deepened'
                WHEN %(fallback_exact)s THEN 'exact'
                WHEN %(deepen)s THEN 'deepened'
                ELSE 'fast' END AS path,
           %(route_exact)s OR f.ok OR d.ok OR %(fallback_exact)s AS certified,
           CASE WHEN %(route_exact)s THEN NULL WHEN f.ok OR NOT %(deepen)s THEN f.bound
                ELSE d.bound END AS bound,
           CASE WHEN %(route_exact)s THEN NULL WHEN f.ok OR NOT %(deepen)s THEN f.kth
                ELSE d.kth END AS kth
    FROM fast_c f, deep_c d
), hits AS (
    SELECT * FROM fast_r WHERE (SELECT path FROM cert) = 'fast'
    UNION ALL SELECT * FROM deep_r WHERE (SELECT path FROM cert) = 'deepened'
    UNION ALL SELECT * FROM exact_r WHERE (SELECT path FROM cert) = 'exact'
)
SELECT c.path, c.certified, c.bound, c.kth,
       (SELECT status FROM index_versions WHERE id = %(version_id)s) AS version_status,
       h.product_id, h.score, h.dense_score, h.sparse_score, h.sparse,
       p.product_display_name, {{metadata}}
FROM cert c
LEFT JOIN (hits h JOIN products p ON p.id = h.product_id) ON TRUE
ORDER BY h.score DESC, h.product_id
"""
)


def _validate(query: SearchQuery, version: IndexVersion) -> tuple[float, np.ndarray | None]:
    if query.dense is None and query.sparse is None:
        raise SearchValidationError("a query needs text, an image, or both")
    alpha = query.alpha
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not math.isfinite(alpha)
        or not 0.0 <= alpha <= 1.0
    ):
        raise SearchValidationError(f"alpha must be a number in [0, 1], got {alpha!r}")
    alpha = effective_alpha(alpha)
    if isinstance(query.k, bool) or not isinstance(query.k, int) or not 1 <= query.k <= MAX_K:
        raise SearchValidationError(f"k must be an integer in 1..{MAX_K}, got {query.k!r}")
    if query.candidates is not None and not 1 <= query.candidates <= MAX_CANDIDATES:
        raise SearchValidationError(f"candidates must be in 1..{MAX_CANDIDATES}")
    if query.budget is not None and not 1 <= query.budget <= MAX_CANDIDATES:
        raise SearchValidationError(f"budget must be in 1..{MAX_CANDIDATES}")
    if query.ef_search is not None and not 1 <= query.ef_search <= 1000:
        raise SearchValidationError("ef_search must be in 1..1000")
    dense = None
    if query.dense is not None:
        dense = np.asarray(query.dense, dtype=np.float32).reshape(-1)
        if dense.shape[0] != version.dense_dim:
            raise SearchValidationError(
                f"dense vector has {dense.shape[0]} dimensions, the live index expects "
                f"{version.dense_dim}"
            )
        if not np.all(np.isfinite(dense)):
            raise SearchValidationError("dense vector has non-finite values")
    if query.sparse is not None:
        if query.sparse.dimensions() != version.sparse_dim:
            raise SearchValidationError(
                f"sparse vector has {query.sparse.dimensions()} dimensions, the live index "
                f"expects {version.sparse_dim}"
            )
        if len(query.sparse.indices()) > MAX_SPARSE_NNZ:
            raise SearchValidationError(
                f"sparse vector has {len(query.sparse.indices())} non-zeros (max {MAX_SPARSE_NNZ})"
            )
    # A side without a query vector cannot carry weight.
    if query.sparse is None:
        alpha = 1.0
    elif query.dense is None:
        alpha = 0.0
    return float(alpha), dense


_ITERATIVE_SCAN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _has_iterative_scan(conn: psycopg.Connection) -> bool:
    """pgvector >= 0.8 has iterative HNSW scans; 0.7 (still supported) does not."""
    known = _ITERATIVE_SCAN.get(conn)
    if known is None:
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]
        known = tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)
        _ITERATIVE_SCAN[conn] = known
    return known


def fused_search(
    conn: psycopg.Connection, query: SearchQuery, version: IndexVersion | None = None
) -> list[SearchHit]:
    """Rank products for ``query`` against ``version`` (default: the live one)."""
    return certified_search(conn, query, version).hits


def certified_search(
    conn: psycopg.Connection, query: SearchQuery, version: IndexVersion | None = None
) -> Ranking:
    """Rank products for ``query`` against ``version`` (default: the live one), with the
    certificate of the ranking; one statement, one round trip."""
    with (
        _prepared(conn, query, version) as (statement, params),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        # Binary results: the hits' sparse vectors parse several times faster than as text.
        rows = cur.execute(statement, params, binary=True).fetchall()
    first = rows[0]
    n, budget = params["n"], params["budget"]
    hnsw = first["path"] != "exact"
    certificate = Certificate(
        path=first["path"],
        certified=bool(first["certified"]),
        candidates={"fast": n, "deepened": budget}.get(first["path"]),
        budget=budget,
        bound=first["bound"] if hnsw else None,
        kth_score=first["kth"] if hnsw else None,
        estimated_rows=params["estimated_rows"],
        routed=params["route_exact"],
    )
    return Ranking(
        [_hit(row) for row in rows if row["product_id"] is not None],
        certificate,
        version_status=first["version_status"],
    )


# Per-value row counts of the filter columns, per (server, database, version, column): the
# selectivity estimate's input. Counted once per process and version (a GROUP BY over the
# column's B-tree); a version's rows do not change once it is built.
_VALUE_COUNTS: dict[tuple, dict[Any, int]] = {}
_VALUE_COUNTS_MAX = 512


def _value_counts(conn: psycopg.Connection, version: IndexVersion, column: str) -> dict[Any, int]:
    info = conn.info
    key = (info.host, info.port, info.dbname, version.id, version.created_at, column)
    counts = _VALUE_COUNTS.get(key)
    if counts is None:
        rows = conn.execute(
            sql.SQL("SELECT {c}, count(*) FROM {t} GROUP BY {c}").format(
                c=sql.Identifier(column), t=sql.Identifier(version.table)
            )
        ).fetchall()
        counts = {value: int(count) for value, count in rows}
        if len(_VALUE_COUNTS) >= _VALUE_COUNTS_MAX:
            _VALUE_COUNTS.clear()
        _VALUE_COUNTS[key] = counts
    return counts


def _total_rows(conn: psycopg.Connection, version: IndexVersion) -> int:
    if version.row_count is not None:
        return int(version.row_count)
    return sum(_value_counts(conn, version, FILTER_FIELDS[0].column).values())


def estimated_rows(conn: psycopg.Connection, version: IndexVersion, filters: Filters) -> int:
    """How many rows of ``version`` pass ``filters``, estimated as the table's rows times
    each filtered column's share (columns taken as independent; exact for one column)."""
    total = _total_rows(conn, version)
    if total == 0:
        return 0
    estimate = float(total)
    for column, values in filters.values:
        counts = _value_counts(conn, version, column)
        estimate *= sum(counts.get(v, 0) for v in set(values)) / total
    for column, low, high in filters.ranges:
        counts = _value_counts(conn, version, column)
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


# Connections whose searches keep their HNSW settings in the session (see
# ``use_session_settings``): connection -> {setting: value} as last SET on it.
_SESSION_SETTINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def use_session_settings(conn: psycopg.Connection) -> None:
    """Let searches on ``conn`` (autocommit) keep their HNSW settings in its session: a
    ``SET`` when a setting changes (one round trip, then none while it stays), instead of
    a transaction of ``SET LOCAL``s around every search (BEGIN, two SETs, the statement,
    COMMIT: five round trips). The settings then outlive a search on that connection, so
    this is for connections that only searches use the HNSW indexes on (the API's pool)."""
    _SESSION_SETTINGS.setdefault(conn, {})


def _apply_session_settings(conn: psycopg.Connection, wanted: dict[str, str]) -> None:
    current = _SESSION_SETTINGS[conn]
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    if not changed:
        return
    known = dict(current)
    current.clear()  # unknown until the SET below has succeeded
    conn.execute(
        sql.SQL("SELECT {}").format(
            sql.SQL(", ").join(
                sql.SQL("set_config({}, {}, false)").format(sql.Literal(k), sql.Literal(v))
                for k, v in changed.items()
            )
        )
    )
    current.update(known | changed)


@contextmanager
def _prepared(
    conn: psycopg.Connection, query: SearchQuery, version: IndexVersion | None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The statement of ``query`` against ``version`` (default: the live one) and its
    parameters, yielded where the query's HNSW settings hold: inside a transaction of
    ``SET LOCAL``s, or in the session of a connection given to ``use_session_settings``.
    Shared by ``certified_search`` and ``explain_search``."""
    if conn.autocommit and conn in _SESSION_SETTINGS:
        statement, params, settings = _plan(conn, query, version)
        _apply_session_settings(conn, settings)
        yield statement, params
        return
    # Every query of a search (live version, per-value counts, SET LOCALs, the statement)
    # runs in this one transaction: on a connection outside autocommit, a query before it
    # would open an outer transaction and the SET LOCALs would outlive the search.
    with conn.transaction():
        statement, params, settings = _plan(conn, query, version)
        for name, value in settings.items():
            conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(value)))
        yield statement, params


# SEARCH_SQL composed for a table and a filter clause, as text: psycopg caches how it
# converts a text query (a composed one it parses again on every execution).
_STATEMENTS: dict[tuple[str, str], str] = {}
_STATEMENTS_MAX = 256


def _statement(conn: psycopg.Connection, version: IndexVersion, where: sql.Composable) -> str:
    halfvec = dense_index(version) == "halfvec"
    key = (version.table, halfvec, where.as_string(conn))
    text = _STATEMENTS.get(key)
    if text is None:
        if len(_STATEMENTS) >= _STATEMENTS_MAX:
            _STATEMENTS.clear()
        dim = sql.Literal(int(version.dense_dim))
        text = (
            sql.SQL(SEARCH_SQL)
            .format(
                t=sql.Identifier(version.table),
                filters=where,
                metadata=_HIT_METADATA,
                # The dense scan orders by the indexed expression (the planner matches it).
                dense_key=sql.SQL("e.dense::halfvec({})").format(dim)
                if halfvec
                else sql.SQL("e.dense"),
                dense_query=sql.SQL("%(qd)s::vector::halfvec({})").format(dim)
                if halfvec
                else sql.SQL("%(qd)s::vector"),
            )
            .as_string(conn)
        )
        _STATEMENTS[key] = text
    return text


def dense_index(version: IndexVersion) -> str:
    """The kind of the version's dense HNSW index: "vector" or "halfvec" (build_indexes)."""
    return (version.params or {}).get("dense_index", "vector")


def _plan(
    conn: psycopg.Connection, query: SearchQuery, version: IndexVersion | None
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(statement, parameters, the HNSW settings it needs) of ``query`` against ``version``."""
    version = version or live_version(conn)
    if version is None:
        raise NoLiveIndex("no index version is live yet; run the indexing pipeline first")
    alpha, dense = _validate(query, version)
    where, params = query.filters.where("e")
    n = query.candidates or max(query.k, DEFAULT_CANDIDATES)
    budget = query.budget or max(n, DEFAULT_BUDGET)
    rows = estimated_rows(conn, version, query.filters)
    total = _total_rows(conn, version)
    filtered = bool(query.filters.values or query.filters.ranges)
    params.update(
        alpha=alpha,
        qd=dense,
        qs=query.sparse,
        k=query.k,
        n=n,
        budget=budget,
        deepen=budget > n,
        use_dense=dense is not None and alpha > 0.0,
        use_sparse=query.sparse is not None and alpha < 1.0,
        route_exact=query.exact
        or (filtered and query.exact_max_rows > 0 and route_exact(rows, total, n)),
        fallback_exact=rows <= query.exact_max_rows,
        estimated_rows=rows,
        dense_slack=HALFVEC_SLACK if dense_index(version) == "halfvec" else 0.0,
        version_id=version.id,
    )
    statement = _statement(conn, version, where)
    settings: dict[str, str] = {}
    if not params["route_exact"]:
        # ef_search caps what one HNSW scan returns; iterative scans keep a scan going
        # past it, until its LIMIT is met (filtered scans, the deepened stage;
        # pgvector >= 0.8).
        settings["hnsw.ef_search"] = str(query.ef_search or max(40, min(n, 1000)))
        if _has_iterative_scan(conn):
            settings["hnsw.iterative_scan"] = "relaxed_order"
    return statement, params, settings


_HIT_METADATA = sql.SQL(", ").join(
    sql.SQL("p.{c} AS {a}").format(c=sql.Identifier(f.column), a=sql.Identifier("m_" + f.column))
    for f in METADATA_FIELDS
)


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


def stored_vectors(
    conn: psycopg.Connection, product_id: int, version: IndexVersion | None = None
) -> tuple[np.ndarray, SparseVector] | None:
    """A product's own vectors in ``version`` (for "more like this")."""
    version = version or live_version(conn)
    if version is None:
        raise NoLiveIndex("no index version is live yet; run the indexing pipeline first")
    row = conn.execute(
        sql.SQL("SELECT dense, sparse FROM {t} WHERE product_id = %s").format(
            t=sql.Identifier(version.table)
        ),
        (product_id,),
    ).fetchone()
    if row is None:
        return None
    return np.asarray(
        row[0].to_numpy() if hasattr(row[0], "to_numpy") else row[0], dtype=np.float32
    ), row[1]


def _stored(
    conn: psycopg.Connection, version: IndexVersion, column: str, product_ids: list[int] | None
) -> list[tuple[int, Any]]:
    """``(product id, stored vector)`` of one vector column, for ``product_ids`` or all."""
    query = sql.SQL("SELECT product_id, {c} FROM {t}").format(
        c=sql.Identifier(column), t=sql.Identifier(version.table)
    )
    if product_ids is None:
        return conn.execute(query).fetchall()
    if not product_ids:
        return []
    return conn.execute(
        query + sql.SQL(" WHERE product_id = ANY(%s)"), ([int(p) for p in product_ids],)
    ).fetchall()


def sparse_vectors(
    conn: psycopg.Connection, version: IndexVersion, product_ids: list[int] | None = None
) -> dict[int, SparseVector]:
    """The stored SPLADE vectors of ``product_ids`` (default: every product) in ``version``."""
    return {int(pid): vec for pid, vec in _stored(conn, version, "sparse", product_ids)}


def facet_values(conn: psycopg.Connection, version: IndexVersion) -> dict[str, list]:
    """Distinct values of each facet field (dataset spelling -> sorted values) in ``version``."""
    columns = sql.SQL(", ").join(
        sql.SQL("array_agg(DISTINCT {c} ORDER BY {c}) FILTER (WHERE {c} IS NOT NULL)").format(
            c=sql.Identifier(f.column)
        )
        for f in FACET_FIELDS
    )
    row = conn.execute(
        sql.SQL("SELECT {cols} FROM {t}").format(cols=columns, t=sql.Identifier(version.table))
    ).fetchone()
    return {f.name: list(values or []) for f, values in zip(FACET_FIELDS, row)}


def dense_vectors(
    conn: psycopg.Connection, version: IndexVersion, product_ids: list[int] | None = None
) -> dict[int, np.ndarray]:
    """The stored CLIP vectors (float32) of ``product_ids`` (default: every product) in
    ``version``; the dense counterpart of ``sparse_vectors``."""
    return {
        int(pid): np.asarray(vec.to_numpy() if hasattr(vec, "to_numpy") else vec, dtype=np.float32)
        for pid, vec in _stored(conn, version, "dense", product_ids)
    }


def count_matching(conn: psycopg.Connection, version: IndexVersion, filters: Filters) -> int:
    """How many products of ``version`` pass ``filters`` (all of them with no filter)."""
    where, params = filters.where()
    return conn.execute(
        sql.SQL("SELECT count(*) FROM {t} WHERE {w}").format(
            t=sql.Identifier(version.table), w=where
        ),
        params,
    ).fetchone()[0]


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
    explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN ")
    with _prepared(conn, query, version) as (statement, params):
        rows = conn.execute(explain + sql.SQL(statement), params).fetchall()
    return [line for (line,) in rows]
