"""HNSW builds at scale: parallel maintenance workers, and halfvec for the dense side.

    .venv/bin/python benchmarks/bench_build.py --rows 100000            # after bench_search.py
    .venv/bin/python benchmarks/bench_build.py --rows 300000 --workers 0 2 --queries 100

What it does, on the benchmark database (``fashion_bench``; its live version must hold at
least --rows rows, e.g. ``bench_search.py --rows 1000000``):
1. copies the first --rows rows' vectors into a scratch table (``build_bench``, dropped at
   the end; the bench index itself is only read);
2. builds the dense (``vector_ip_ops``) and sparse (``sparsevec_ip_ops``) HNSW indexes with
   each --workers value of ``max_parallel_maintenance_workers`` (the leader process works
   too: 0 = one process), with the service's m / ef_construction and
   --maintenance-work-mem, and prints seconds, rows/s and the index size;
3. builds a ``halfvec`` expression index on the dense column
   (``(dense::halfvec(D)) halfvec_ip_ops``: half the bytes a dimension) and measures the
   dense top-10 recall of both dense indexes against the exact inner-product order, for
   --queries queries (a row's vector plus noise), at the service's ef_search (150);
   and the p50 of one index scan each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from psycopg import sql

from services.config import PIPELINE_ROLE, get_settings
from services.search import DEFAULT_CANDIDATES
from services.store import embedded, hnsw
from services.store import index_versions as iv
from services.store.db import connect

TABLE = "build_bench"


def build(conn, column: str, opclass: str, workers: int, args, expr: str | None = None) -> tuple:
    """(seconds, index bytes) of one HNSW build on the scratch table."""
    name = f"{TABLE}_{column}_{'half' if expr else 'hnsw'}"
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute(
        sql.SQL("SET max_parallel_maintenance_workers = {}").format(sql.Literal(int(workers)))
    )
    conn.execute(
        sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(args.maintenance_work_mem))
    )
    target = sql.SQL(expr) if expr else sql.Identifier(column)
    start = time.perf_counter()
    conn.execute(
        sql.SQL(
            "CREATE INDEX {name} ON {t} USING hnsw (({target}) {opclass}) "
            "WITH (m = {m}, ef_construction = {ef})"
        ).format(
            name=sql.Identifier(name),
            t=sql.Identifier(TABLE),
            target=target,
            opclass=sql.SQL(opclass),
            m=sql.Literal(hnsw.HNSW_M),
            ef=sql.Literal(hnsw.HNSW_EF_CONSTRUCTION),
        )
    )
    seconds = time.perf_counter() - start
    size = conn.execute("SELECT pg_relation_size(%s::regclass)", (name,)).fetchone()[0]
    return seconds, size


def dense_recall(conn, dim: int, args) -> list[tuple[str, float, float]]:
    """(index, recall@10 vs exact, p50 ms) of the dense HNSW scans, vector and halfvec."""
    rng = np.random.default_rng(5)
    ids = [
        r[0]
        for r in conn.execute(
            sql.SQL("SELECT product_id FROM {} ORDER BY random() LIMIT %s").format(
                sql.Identifier(TABLE)
            ),
            (args.queries,),
        ).fetchall()
    ]
    qs = []
    for pid in ids:
        v = np.asarray(
            conn.execute(
                sql.SQL("SELECT dense FROM {} WHERE product_id = %s").format(sql.Identifier(TABLE)),
                (pid,),
            )
            .fetchone()[0]
            .to_numpy(),
            dtype=np.float32,
        )
        q = v + rng.normal(size=dim).astype(np.float32) * (args.noise / np.sqrt(dim))
        qs.append(q / np.linalg.norm(q))
    conn.execute(sql.SQL("SET hnsw.ef_search = {}").format(sql.Literal(DEFAULT_CANDIDATES)))
    t = sql.Identifier(TABLE)
    exact_sql = sql.SQL(
        "SELECT product_id FROM (SELECT product_id, dense <#> %s::vector AS d FROM {t}) x "
        "ORDER BY d LIMIT 10"
    ).format(t=t)
    ways = {
        "vector": sql.SQL("SELECT product_id FROM {t} ORDER BY dense <#> %s::vector LIMIT 10"),
        "halfvec": sql.SQL(
            "SELECT product_id FROM {t} ORDER BY dense::halfvec({d}) <#> %s::halfvec({d}) LIMIT 10"
        ),
    }
    out = []
    conn.execute("SET enable_indexscan = off")
    exact = [{r[0] for r in conn.execute(exact_sql, (q,)).fetchall()} for q in qs]
    conn.execute("SET enable_indexscan = on")
    conn.execute("SET enable_seqscan = off")  # small tables: the planner would sort instead
    for name, query in ways.items():
        stmt = query.format(t=t, d=sql.Literal(dim))
        plan = "\n".join(r[0] for r in conn.execute(sql.SQL("EXPLAIN ") + stmt, (qs[0],)))
        index = f"{TABLE}_dense_{'half' if name == 'halfvec' else 'hnsw'}"
        if f"Index Scan using {index} " not in plan:
            raise RuntimeError(f"the {name} query does not use {index}: {plan[:200]}")
        hits, lat = 0, []
        for q, truth in zip(qs, exact):
            start = time.perf_counter()
            got = {r[0] for r in conn.execute(stmt, (q,)).fetchall()}
            lat.append((time.perf_counter() - start) * 1000)
            hits += len(got & truth)
        out.append((name, hits / (10 * len(qs)), statistics.median(lat)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--maintenance-work-mem", default="2GB")
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--noise", type=float, default=1.0, help="query noise norm (as bench_search)")
    args = p.parse_args()

    s = get_settings()
    if s.embedded:
        embedded.start(s)
    bench = s.role_url(PIPELINE_ROLE, "fashion_bench") if s.embedded else None
    conn = connect(bench or s.database_url_for("fashion_bench"), autocommit=True)
    live = iv.live_version(conn)
    if live is None or (live.row_count or 0) < args.rows:
        sys.exit(f"fashion_bench needs a live index of >= {args.rows:,} rows (bench_search.py)")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
    start = time.perf_counter()
    conn.execute(
        sql.SQL(
            "CREATE TABLE {t} AS SELECT product_id, dense, sparse FROM {src} "
            "ORDER BY product_id LIMIT %s"
        ).format(t=sql.Identifier(TABLE), src=sql.Identifier(live.table)),
        (args.rows,),
    )
    conn.execute(
        sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (product_id)").format(sql.Identifier(TABLE))
    )
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(TABLE)))
    heap = conn.execute("SELECT pg_table_size(%s::regclass)", (TABLE,)).fetchone()[0]
    cores = conn.execute("SHOW max_worker_processes").fetchone()[0]
    print(
        f"# bench_build: {args.rows:,} rows of {live.table} ({live.report.get('mode')}), "
        f"copied in {time.perf_counter() - start:.1f} s; table {heap / 2**20:,.0f} MiB; "
        f"m={hnsw.HNSW_M}, ef_construction={hnsw.HNSW_EF_CONSTRUCTION}, "
        f"maintenance_work_mem={args.maintenance_work_mem}; max_worker_processes={cores}; "
        f"machine CPUs: {os.cpu_count()}"
    )
    try:
        print("\n| index | parallel workers | build s | rows/s | index MiB |")
        print("|---|---:|---:|---:|---:|")
        for workers in args.workers:
            for column, opclass in (("dense", "vector_ip_ops"), ("sparse", "sparsevec_ip_ops")):
                seconds, size = build(conn, column, opclass, workers, args)
                print(
                    f"| {column} ({opclass}) | {workers} | {seconds:.1f} | "
                    f"{args.rows / seconds:,.0f} | {size / 2**20:,.0f} |",
                    flush=True,
                )
        seconds, size = build(
            conn,
            "dense",
            "halfvec_ip_ops",
            max(args.workers),
            args,
            expr=f"dense::halfvec({live.dense_dim})",
        )
        print(
            f"| dense as halfvec (halfvec_ip_ops) | {max(args.workers)} | {seconds:.1f} | "
            f"{args.rows / seconds:,.0f} | {size / 2**20:,.0f} |"
        )
        # the vector index is rebuilt last with the most workers: both exist for recall
        build(conn, "dense", "vector_ip_ops", max(args.workers), args)
        print(
            f"\n| dense HNSW scan (ef_search {DEFAULT_CANDIDATES}) | recall@10 vs exact | p50 ms |"
        )
        print("|---|---:|---:|")
        for name, rec, p50 in dense_recall(conn, live.dense_dim, args):
            print(f"| {name} | {rec:.3f} | {p50:.1f} |")
    finally:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
        conn.close()


if __name__ == "__main__":
    main()
