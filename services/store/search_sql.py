"""The search's SQL: the fused statement (``sql/search.sql``), its session settings, and the
lookups a search needs (stored vectors, facet values, per-value counts).

How a query is ranked is ``services/store/sql/search.sql``, one statement a reader can open
whole; ``services.search.ranking`` decides its parameters. This module only fills the
statement's identifier slots (the version's table, the filters' condition, the metadata
columns, the dense index's expression), runs it, and keeps the HNSW settings where the
search's connection needs them. Every value reaches SQL as a bound parameter; identifiers
(the version's table, filter columns from the schema's allow-list) are composed with
``psycopg.sql``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector import SparseVector
from psycopg import sql
from psycopg.rows import dict_row

from services.catalog.schema import FACET_FIELDS, METADATA_FIELDS
from services.store.index_versions import IndexVersion, postings_name

SEARCH_SQL_PATH = Path(__file__).with_name("sql") / "search.sql"
SEARCH_SQL = SEARCH_SQL_PATH.read_text(encoding="utf-8")

# The metadata columns every hit carries: p.<column> AS m_<column>.
HIT_METADATA = sql.SQL(", ").join(
    sql.SQL("p.{c} AS {a}").format(c=sql.Identifier(f.column), a=sql.Identifier("m_" + f.column))
    for f in METADATA_FIELDS
)

# The same columns as the page returns them (search.sql's {hit_metadata}).
PAGE_METADATA = sql.SQL(", ").join(
    sql.SQL("h.{a}").format(a=sql.Identifier("m_" + f.column)) for f in METADATA_FIELDS
)

ValueFilters = Sequence[tuple[str, Sequence[str]]]  # (column, values: any of them)
RangeFilters = Sequence[tuple[str, int | None, int | None]]  # (column, min, max)


def filters_where(
    values: ValueFilters, ranges: RangeFilters, alias: str = ""
) -> tuple[sql.Composable, dict[str, Any]]:
    """The WHERE condition of filters over a version table's columns, and its parameters:
    a value filter matches any of its values (``= ANY``), a range its bounds; ANDed."""

    def col(column: str) -> sql.Composable:
        return sql.Identifier(alias, column) if alias else sql.Identifier(column)

    parts: list[sql.Composable] = []
    params: dict[str, Any] = {}
    for column, vals in values:
        parts.append(sql.SQL("{} = ANY({})").format(col(column), sql.Placeholder(f"f_{column}")))
        params[f"f_{column}"] = list(vals)
    for column, low, high in ranges:
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


def dense_index(version: IndexVersion) -> str:
    """The kind of the version's dense index: "vector" or "halfvec" (an HNSW graph) or
    "ivfflat" (build_indexes)."""
    return (version.params or {}).get("dense_index", "vector")


def scan_settings(
    conn: psycopg.Connection,
    version: IndexVersion,
    n: int,
    *,
    ef_search: int | None = None,
    probes: int | None = None,
) -> dict[str, str]:
    """The settings of a search's index scans for ``n`` candidates per side. HNSW:
    ``hnsw.ef_search`` caps what one scan returns (default max(40, min(n, 1000))); iterative
    scans keep a scan going past it until its LIMIT is met (filtered scans, the deep stage;
    pgvector >= 0.8). An IVFFlat dense index: ``ivfflat.probes`` lists read (default the
    version's, recorded at its build), iteratively more while a filter leaves the LIMIT unmet."""
    settings = {"hnsw.ef_search": str(ef_search or max(40, min(n, 1000)))}
    iterative = has_iterative_scan(conn)
    if iterative:
        settings["hnsw.iterative_scan"] = "relaxed_order"
    if dense_index(version) == "ivfflat":
        recorded = ((version.params or {}).get("ivfflat") or {}).get("probes", 1)
        settings["ivfflat.probes"] = str(probes or recorded)
        if iterative:
            settings["ivfflat.iterative_scan"] = "relaxed_order"
    return settings


# search.sql with its slots filled for a table and a filter condition, as text: psycopg
# caches how it converts a text query (a composed one it parses again on every execution).
# Keyed by everything the text holds: the same table name in another database (a test's,
# the benchmark's) may be a version of another dimension.
_STATEMENTS: dict[tuple[str, bool, int, str, str | None], str] = {}
_STATEMENTS_MAX = 256


def _page_key(sort_column: str | None) -> tuple[sql.Composable, sql.Composable]:
    """search.sql's {sort_key} and {after}: the page's sort key (relevance, or a field's
    value descending before it) and a cursor's key as a row of the same types."""
    if sort_column is None:
        return (
            sql.SQL("ROW(-h.score, h.product_id)"),
            sql.SQL("ROW(%(after_0)s::float8, %(after_1)s::bigint)"),
        )
    return (
        sql.SQL("ROW(-coalesce(p.{}, 0)::bigint, -h.score, h.product_id)").format(
            sql.Identifier(sort_column)
        ),
        sql.SQL("ROW(%(after_0)s::bigint, %(after_1)s::float8, %(after_2)s::bigint)"),
    )


def search_statement(
    conn: psycopg.Connection,
    version: IndexVersion,
    where: sql.Composable,
    sort_column: str | None = None,
) -> str:
    """``search.sql`` for ``version``, a filter condition and a page order (None: relevance;
    else a column, larger first), its identifier slots filled."""
    halfvec = dense_index(version) == "halfvec"
    key = (version.table, halfvec, int(version.dense_dim), where.as_string(conn), sort_column)
    text = _STATEMENTS.get(key)
    if text is None:
        if len(_STATEMENTS) >= _STATEMENTS_MAX:
            _STATEMENTS.clear()
        dim = sql.Literal(int(version.dense_dim))
        text = (
            sql.SQL(SEARCH_SQL)
            .format(
                t=sql.Identifier(version.table),
                postings=sql.Identifier(postings_name(version.id)),
                filters=where,
                metadata=HIT_METADATA,
                hit_metadata=PAGE_METADATA,
                sort_key=_page_key(sort_column)[0],
                after=_page_key(sort_column)[1],
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


def run_search(conn: psycopg.Connection, statement: str, params: dict[str, Any]) -> list[dict]:
    """The statement's rows (binary results: the hits' sparse vectors parse several times
    faster than as text)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(statement, params, binary=True).fetchall()


def run_searches(
    conn: psycopg.Connection, statements: Sequence[tuple[str, dict[str, Any]]]
) -> list[list[dict]]:
    """Several statements' rows, sent together in one pipeline (one round trip)."""
    cursors = []
    with conn.pipeline():
        for statement, params in statements:
            cur = conn.cursor(row_factory=dict_row)
            cur.execute(statement, params, binary=True)
            cursors.append(cur)
    try:
        return [cur.fetchall() for cur in cursors]
    finally:
        for cur in cursors:
            cur.close()


def explain(
    conn: psycopg.Connection, statement: str, params: dict[str, Any], *, analyze: bool
) -> list[str]:
    """The statement's plan, one line per row (``EXPLAIN (ANALYZE, BUFFERS)`` with analyze)."""
    prefix = sql.SQL("EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN ")
    return [line for (line,) in conn.execute(prefix + sql.SQL(statement), params).fetchall()]


# --- the HNSW settings of a search --------------------------------------------------------------
_ITERATIVE_SCAN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Connections whose searches keep their HNSW settings in the session (use_session_settings):
# connection -> {setting: value} as last SET on it.
_SESSION_SETTINGS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def has_iterative_scan(conn: psycopg.Connection) -> bool:
    """pgvector >= 0.8 has iterative HNSW scans; 0.7 (still supported) does not."""
    known = _ITERATIVE_SCAN.get(conn)
    if known is None:
        version = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]
        known = tuple(int(p) for p in version.split(".")[:2]) >= (0, 8)
        _ITERATIVE_SCAN[conn] = known
    return known


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


def _set_local(conn: psycopg.Connection, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        conn.execute(sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(value)))


@contextmanager
def search_session(conn: psycopg.Connection) -> Iterator[Callable[[dict[str, str]], None]]:
    """Where a search's queries run, yielding how to apply its HNSW settings there: in the
    session of a connection given to ``use_session_settings``, else in one transaction of
    ``SET LOCAL``s. Every query of a search (live version, per-value counts, the settings,
    the statement) runs inside: on a connection outside autocommit, a query before it would
    open an outer transaction and the SET LOCALs would outlive the search."""
    if conn.autocommit and conn in _SESSION_SETTINGS:
        yield lambda settings: _apply_session_settings(conn, settings)
        return
    with conn.transaction():
        yield lambda settings: _set_local(conn, settings)


# --- lookups ------------------------------------------------------------------------------------
# Per-value row counts of the filter columns, per (server, database, version, column): the
# selectivity estimate's input. Counted once per process and version (a GROUP BY over the
# column's B-tree); a version's rows do not change once it is built.
_VALUE_COUNTS: dict[tuple, dict[Any, int]] = {}
_VALUE_COUNTS_MAX = 512


def value_counts(conn: psycopg.Connection, version: IndexVersion, column: str) -> dict[Any, int]:
    """How many rows of ``version`` hold each value of ``column`` (cached per version)."""
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


def stored_vectors(
    conn: psycopg.Connection, product_id: int, version: IndexVersion
) -> tuple[np.ndarray, SparseVector] | None:
    """A product's own vectors in ``version`` (for "more like this"); None if not there."""
    row = conn.execute(
        sql.SQL("SELECT dense, sparse FROM {t} WHERE product_id = %s").format(
            t=sql.Identifier(version.table)
        ),
        (product_id,),
    ).fetchone()
    if row is None:
        return None
    return _float32(row[0]), row[1]


def _float32(vec: Any) -> np.ndarray:
    return np.asarray(vec.to_numpy() if hasattr(vec, "to_numpy") else vec, dtype=np.float32)


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


def dense_vectors(
    conn: psycopg.Connection, version: IndexVersion, product_ids: list[int] | None = None
) -> dict[int, np.ndarray]:
    """The stored CLIP vectors (float32) of ``product_ids`` (default: every product) in
    ``version``; the dense counterpart of ``sparse_vectors``."""
    return {int(pid): _float32(vec) for pid, vec in _stored(conn, version, "dense", product_ids)}


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


def count_matching(
    conn: psycopg.Connection, version: IndexVersion, values: ValueFilters, ranges: RangeFilters
) -> int:
    """How many products of ``version`` pass the filters (all of them with none)."""
    where, params = filters_where(values, ranges)
    return conn.execute(
        sql.SQL("SELECT count(*) FROM {t} WHERE {w}").format(
            t=sql.Identifier(version.table), w=where
        ),
        params,
    ).fetchone()[0]


def side_top_ids(
    conn: psycopg.Connection, version: IndexVersion, side: str, query: Any, n: int, *, exact: bool
) -> list[int]:
    """The top ``n`` product ids of ONE side of ``version`` ("dense" or "sparse") for its
    query vector: by the side's index (HNSW or IVFFlat, set as the fused statement sets them
    for n candidates) or, with ``exact``, by scoring every row. The build check's measure of
    how often an index's list misses rows of its side's true top n."""
    if side == "dense":
        dim = sql.Literal(int(version.dense_dim))
        halfvec = dense_index(version) == "halfvec" and not exact
        key = (
            sql.SQL("e.dense::halfvec({d}) <#> %(q)s::vector::halfvec({d})").format(d=dim)
            if halfvec
            else sql.SQL("e.dense <#> %(q)s::vector")
        )
    elif side == "sparse":
        key = sql.SQL("e.sparse <#> %(q)s::sparsevec")
    else:
        raise ValueError(f"unknown side {side!r}")
    # ``+ 0`` hides the expression from the planner: the exact order scans every row.
    order = sql.SQL("({}) + 0").format(key) if exact else key
    statement = sql.SQL(
        "SELECT product_id FROM {t} e ORDER BY {order}, product_id LIMIT %(n)s"
        if exact
        else "SELECT product_id FROM {t} e ORDER BY {order} LIMIT %(n)s"
    ).format(t=sql.Identifier(version.table), order=order)
    with search_session(conn) as apply_settings:
        if not exact:
            apply_settings(scan_settings(conn, version, n))
        rows = conn.execute(statement, {"q": query, "n": n}).fetchall()
    return [r[0] for r in rows]
