"""A version's indexes: both HNSW graphs (dense, sparse; or an IVFFlat index on the dense side),
the filter columns' B-trees and the sparse postings (services.store.postings).

HNSW builds fast only while the graph fits in ``maintenance_work_mem`` (``FASHION_BUILD_MEMORY``;
docs/capacity.md); the parallel workers, the halfvec variant and their measured effect are in
docs/benchmarks.md (``bench_build.py``).
"""

from __future__ import annotations

import math
import os
import time

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from services.store.index_versions import METADATA_COLUMNS, get_version, table_name
from services.store.postings import build_postings, postings_exist

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
# The dense index's kinds (build_indexes) and their operator classes: an HNSW graph of the
# float32 column or of its halfvec copy, or IVFFlat lists of the float32 column.
DENSE_INDEXES = {"vector": "vector_ip_ops", "halfvec": "halfvec_ip_ops", "ivfflat": "vector_ip_ops"}


def ivf_lists(rows: int) -> int:
    """IVFFlat lists for ``rows`` rows, pgvector's documented starting point: rows / 1000 up to
    1M rows, sqrt(rows) above (at least 1)."""
    return max(1, rows // 1000 if rows <= 1_000_000 else math.isqrt(rows))


def ivf_probes(lists: int) -> int:
    """Lists a search reads (``ivfflat.probes``), pgvector's documented starting point:
    sqrt(lists), rounded up. Not tuned on this project's queries; docs/benchmarks.md measures
    it against others ("An IVFFlat dense side")."""
    return max(1, math.ceil(math.sqrt(lists)))


def dense_index_name(version_id: int, kind: str) -> str:
    """The dense index's name: ``index_vN_dense_hnsw`` or, for IVFFlat, ``index_vN_dense_ivf``."""
    return f"{table_name(version_id)}_dense_{'ivf' if kind == 'ivfflat' else 'hnsw'}"


# The catalogue's hierarchy, broadest first (the schema's attribute order): a version's rows are
# written in this order before its indexes are built, so that the rows a storefront filter
# passes (a gender, a category, a type, a colour within them) lie on few adjacent pages.
CLUSTER_COLUMNS = ("gender", "master_category", "sub_category", "article_type", "base_colour")


def cluster_rows(conn: psycopg.Connection, version_id: int) -> float:
    """Rewrite the version's table in CLUSTER_COLUMNS order (then product id); seconds taken.
    Only before its HNSW graphs exist: a version that has them (maybe live) is never
    rewritten (CLUSTER locks the table). Rows the sync adds later go where there is room."""
    t = table_name(version_id)
    graphs = conn.execute(
        "SELECT count(*) FROM pg_indexes WHERE tablename = %s "
        "AND (indexdef ILIKE '%%USING hnsw%%' OR indexdef ILIKE '%%USING ivfflat%%')",
        (t,),
    ).fetchone()[0]
    if graphs:
        return 0.0
    start = time.perf_counter()
    order = sql.Identifier(f"{t}_cluster_order")
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} ({cols}, product_id)").format(
            i=order,
            t=sql.Identifier(t),
            cols=sql.SQL(", ").join(map(sql.Identifier, CLUSTER_COLUMNS)),
        )
    )
    conn.execute(sql.SQL("CLUSTER {t} USING {i}").format(t=sql.Identifier(t), i=order))
    conn.execute(sql.SQL("DROP INDEX {i}").format(i=order))
    conn.commit()
    return time.perf_counter() - start


def _is_kind(indexdef: str, kind: str) -> bool:
    """Whether a dense index's definition is of ``kind`` (a DENSE_INDEXES key)."""
    marker = {"ivfflat": "USING ivfflat", "halfvec": "halfvec_ip_ops"}.get(kind)
    return marker is None or marker in indexdef


def record_dense_index(conn: psycopg.Connection, version_id: int) -> None:
    """Record in the version's params what its dense index is (an existing one is kept as it
    was built), for the search: ``dense_index``, ``maintenance_work_mem``, the graphs'
    options under ``hnsw`` and an IVFFlat index's ``lists`` and ``probes`` under ``ivfflat``."""
    names = [dense_index_name(version_id, kind) for kind in ("vector", "ivfflat")]
    built, options = conn.execute(
        "SELECT i.indexdef, c.reloptions FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.indexname WHERE i.indexname = ANY(%s)",
        (names,),
    ).fetchone()
    kind = next(k for k in ("ivfflat", "halfvec", "vector") if _is_kind(built, k))
    ivf = None
    if kind == "ivfflat":
        lists = int(dict(o.split("=", 1) for o in options or [])["lists"])
        ivf = {"lists": lists, "probes": ivf_probes(lists)}
    memory = conn.execute("SHOW maintenance_work_mem").fetchone()[0]
    conn.execute(
        "UPDATE index_versions SET params = params || jsonb_build_object("
        "'dense_index', %s::text, 'maintenance_work_mem', %s::text, 'hnsw', %s::jsonb, "
        "'ivfflat', %s::jsonb) WHERE id = %s",
        (kind, memory, Jsonb(graph_options(conn, version_id)), Jsonb(ivf), version_id),
    )
    conn.commit()


def graph_options(conn: psycopg.Connection, version_id: int) -> dict[str, dict[str, int]]:
    """The build options of the version's HNSW graphs as PostgreSQL holds them (an index kept
    from an earlier build keeps its own): {"dense": {"m": 16, "ef_construction": 64}, ...}."""
    t = table_name(version_id)
    rows = conn.execute(
        "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)",
        ([f"{t}_{col}_hnsw" for col in ("dense", "sparse")],),
    ).fetchall()
    options: dict[str, dict[str, int]] = {}
    for name, reloptions in rows:
        pairs = (o.split("=", 1) for o in reloptions or [])
        side = name.removeprefix(f"{t}_").removesuffix("_hnsw")
        options[side] = {k: int(v) for k, v in pairs if k in ("m", "ef_construction")}
    return options


def build_indexes(
    conn: psycopg.Connection,
    version_id: int,
    *,
    m: int = HNSW_M,
    ef_construction: int = HNSW_EF_CONSTRUCTION,
    maintenance_work_mem: str = "1GB",
    parallel_workers: int | None = None,
    dense_index: str = "vector",
    dense_graph: tuple[int, int] | None = None,
    lists: int | None = None,
) -> dict[str, float]:
    """Create both HNSW indexes and the filter columns' B-trees, then the sparse postings
    (services.store.postings), each unless it exists (idempotent); returns seconds per index (``dense``,
    ``sparse``, ``filters``, ``postings``).

    HNSW builds fast only while the graph fits in ``maintenance_work_mem``; give large
    indexes more (a 1M x 512-d graph needs several GB). ``parallel_workers``: processes
    helping the leader build each index (default: one per other CPU core, at most 7).
    ``dense_index``: "vector" (float32 graph), "halfvec" (the dense column's half-precision
    copy, ``(dense::halfvec(D)) halfvec_ip_ops``: half the index; the search adds the
    rounding error to its bound) or "ivfflat" (k-means lists of the float32 column,
    ``ivf_lists`` of them; the search reads ``ivf_probes`` of them, exact scores within).
    What was built is recorded in the version's params (``dense_index``, which the search
    reads, the ``maintenance_work_mem`` it had, each graph's ``m`` and ``ef_construction``
    under ``hnsw``, and an IVFFlat index's ``lists`` and ``probes`` under ``ivfflat``).
    ``dense_graph``: the dense graph's own (m, ef_construction), when it should differ from
    the sparse one's (``m``, ``ef_construction``): a denser dense graph buys recall for build
    time
    (docs/benchmarks.md, "The dense graph at 100k rows"). ``lists``: an IVFFlat index's
    lists (default ``ivf_lists`` of the version's rows)."""
    if dense_index not in DENSE_INDEXES:
        raise ValueError(f"dense_index must be one of {sorted(DENSE_INDEXES)}, got {dense_index!r}")
    t = table_name(version_id)
    dim = get_version(conn, version_id).dense_dim
    timings = {}
    if parallel_workers is None:
        parallel_workers = min(7, max(0, (os.cpu_count() or 1) - 1))
    conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(maintenance_work_mem)))
    conn.execute(
        sql.SQL("SET max_parallel_maintenance_workers = {}").format(
            sql.Literal(int(parallel_workers))
        )
    )
    timings["cluster"] = cluster_rows(conn, version_id)
    # A version keeps the dense index it has (a retried build never adds a second kind).
    kept = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = ANY(%s)",
        ([dense_index_name(version_id, kind) for kind in ("vector", "ivfflat")],),
    ).fetchone()
    if kept is not None:
        dense_index = next(k for k in ("ivfflat", "halfvec", "vector") if _is_kind(kept[0], k))
    dense_target = (
        sql.SQL("(dense::halfvec({}))").format(sql.Literal(int(dim)))
        if dense_index == "halfvec"
        else sql.Identifier("dense")
    )
    dense_m, dense_ef = dense_graph or (m, ef_construction)
    ivf = dense_index == "ivfflat"
    if ivf and lists is None:
        count = sql.SQL("SELECT count(*) FROM {t}").format(t=sql.Identifier(t))
        lists = ivf_lists(conn.execute(count).fetchone()[0])
    with_options = sql.SQL("WITH (m = {m}, ef_construction = {ef})")
    for col, method, target, opclass, options in (
        (
            "dense",
            sql.SQL("ivfflat" if ivf else "hnsw"),
            dense_target,
            DENSE_INDEXES[dense_index],
            sql.SQL("WITH (lists = {})").format(sql.Literal(int(lists or 1)))
            if ivf
            else with_options.format(m=sql.Literal(int(dense_m)), ef=sql.Literal(int(dense_ef))),
        ),
        (
            "sparse",
            sql.SQL("hnsw"),
            sql.Identifier("sparse"),
            "sparsevec_ip_ops",
            with_options.format(m=sql.Literal(int(m)), ef=sql.Literal(int(ef_construction))),
        ),
    ):
        start = time.perf_counter()
        name = dense_index_name(version_id, dense_index) if col == "dense" else f"{t}_{col}_hnsw"
        conn.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {name} ON {t} USING {method} ({target} {opclass}) "
                "{options}"
            ).format(
                name=sql.Identifier(name),
                t=sql.Identifier(t),
                method=method,
                target=target,
                opclass=sql.SQL(opclass),
                options=options,
            )
        )
        conn.commit()
        timings[col] = time.perf_counter() - start
    record_dense_index(conn, version_id)
    # B-tree indexes on the filter columns: with a selective filter the planner can take the
    # few matching rows by bitmap scan and score them exactly, instead of walking the HNSW
    # graph past thousands of non-matching rows.
    start = time.perf_counter()
    for col in METADATA_COLUMNS:
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {t} ({col})").format(
                name=sql.Identifier(f"{t}_{col}"), t=sql.Identifier(t), col=sql.Identifier(col)
            )
        )
    # A BRIN over the hierarchy the rows were written in (cluster_rows): a filter on its
    # columns reads a few ranges of 16 pages instead of ANDing large B-tree bitmaps (a gender
    # is 40 % of the rows). At 1M rows a 1 % gender + colour filter's exact scan took 125 ms
    # in load order, 61 ms clustered, 26 ms with this (docs/benchmarks.md); the index is
    # ~1.4 MB. Lossy by design: PostgreSQL rechecks every row, so ranges the sync changes
    # later stay correct, only less selective.
    conn.execute(
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {name} ON {t} USING brin ({cols}) "
            "WITH (pages_per_range = 16)"
        ).format(
            name=sql.Identifier(f"{t}_hierarchy_brin"),
            t=sql.Identifier(t),
            cols=sql.SQL(", ").join(map(sql.Identifier, CLUSTER_COLUMNS)),
        )
    )
    conn.commit()
    timings["filters"] = time.perf_counter() - start
    conn.execute(sql.SQL("ANALYZE {t}").format(t=sql.Identifier(t)))
    conn.commit()
    # The postings as the table holds them now; once built, the trigger keeps them so.
    exists = postings_exist(conn, version_id)
    timings["postings"] = 0.0 if exists else build_postings(conn, version_id)
    return timings
