"""The dense side at scale (issue #25, item 3): recall of the dense HNSW list against the exact
dense ranking, by ef_search, candidates and graph, on the benchmark database's live version.

    fashion-search db start
    .venv/bin/python benchmarks/bench_search.py --realistic --rows 1000000   # builds the rows
    .venv/bin/python benchmarks/bench_dense_params.py --ef-search 150 300 600 1000
    .venv/bin/python benchmarks/bench_dense_params.py --rebuild 16 64 halfvec --ef-search 300
    .venv/bin/python benchmarks/bench_dense_params.py --ivfflat 1000 --probes 10 20 40 --ef-search

The rows are ``bench_search``'s (``fashion_bench``, its live version, built first by it); the
queries its realistic ones (the evaluation's text queries, encoded by the live index's models).
They are split in two halves, alternately: the *tune* half picks the setting, the *report* half
is measured with it (a setting is never chosen on the queries it is reported on).

Per setting, on both halves: p50/p95 of the service's statement at alpha 1 (dense only, plain:
no deepening, no exact fallback) and at alpha 0.5, recall@10 of each against the exact ranking
of the same alpha (the exact path, computed once per query), and the HNSW list's own recall:
the share of the exact dense top n that one HNSW scan of n rows returns (what the hybrid
ranking's dense side can hold at best).
Two readings of the misses (for ``--realistic`` rows, each a near-copy of catalogue product
``id % N``): *source recall@10*, the share of the exact top 10's source products that the answer
holds some copy of (a miss that is another copy of the same product is a near-tie, not a lost
product), and *10th score short*, how far the answer's 10th score falls below the exact 10th
score, relative to it.

``--sparse-side hnsw both postings`` measures each row with the statement's hybrid sparse
candidates taken three ways: ``hnsw``, the statement as it is (the sparse HNSW list of n);
``both``, that list and the postings' n (the top m postings of each query term, the n met
products of highest upper bound, as a sparse-only ranking reads them); ``postings``, the
postings' n alone, no sparse HNSW scan in a hybrid ranking (so ``hnsw.ef_search`` serves the
dense graph only). The two variants are search.sql with its gates changed here
(``statement_variant``), for this process only: a measure of what such a statement would do,
not a change of the service.

``--rebuild M EF_CONSTRUCTION KIND`` drops the version's dense HNSW index and builds it again
with those options (KIND: vector or halfvec) before measuring, and prints the build's time
and size; the version's params record what was built (``hnsw``, ``dense_index``).

``--ivfflat LISTS --probes P ...`` measures another dense side: pgvector's IVFFlat index on the
dense column (``vector_ip_ops``, LISTS k-means lists; built once, its time and size printed, and
kept beside the HNSW graph for later runs). Its rows read the dense candidates from LISTS' P
nearest lists (``ivfflat.probes``) with the same statement: in each row's transaction the
dense HNSW index is dropped, so the planner's only dense index is the IVF one, and the
transaction is rolled back (the graph is never lost). The service does not build this index;
these rows measure whether it should. ``--ef-search`` with no value measures IVF rows only.

``--database NAME`` reads another benchmark database than ``fashion_bench`` (the one
``bench_search.py --database NAME`` built).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import realistic
from benchmarks.bench_db import use_bench_database
from benchmarks.tables import pct, table
from services import search
from services.store import hnsw, search_sql
from services.store import index_versions as iv
from services.store.db import connect

TOP_K = 10


def exact_tops(conn, version, qs, alpha: float) -> list[list[tuple[int, float]]]:
    """The exact top 10 of each query at ``alpha`` (every row scored): (id, score) pairs."""
    out = []
    for dense, sparse in qs:
        q = search.SearchQuery(dense, sparse, alpha, TOP_K, exact=True, with_vectors=False)
        out.append(
            [(h.product_id, h.score) for h in search.certified_search(conn, q, version).hits]
        )
    return out


def near_miss(got: list, want: list[tuple[int, float]], sources: int) -> tuple[float, float]:
    """Two readings of a top 10 that is not the exact one, for realistic rows (row i is a
    near-copy of catalogue product i % ``sources``): the share of the exact top 10's source
    products that the answer holds a copy of, and the answer's 10th score short of the exact
    10th score, relative to it (0 when the answer's 10th scores as high)."""
    want_src = {pid % sources for pid, _ in want}
    got_src = {h.product_id % sources for h in got}
    tenth = want[-1][1]
    short = max(0.0, tenth - got[-1].score) / abs(tenth) if got and tenth else 0.0
    return len(want_src & got_src) / len(want_src), short


def exact_dense_top(conn, version, dense: np.ndarray, n: int) -> set[int]:
    """The exact dense top n (an ORDER BY of the inner product over every row, no index)."""
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        return dense_ids(conn, version, dense, n)


def dense_ids(conn, version, dense: np.ndarray, n: int) -> set[int]:
    """The n rows of highest float32 inner product with ``dense``, by whatever scan the
    session's settings leave the planner (the callers set them)."""
    rows = conn.execute(
        sql.SQL("SELECT product_id FROM {t} ORDER BY dense <#> %s::vector LIMIT %s").format(
            t=sql.Identifier(version.table)
        ),
        (dense, n),
    ).fetchall()
    return {r[0] for r in rows}


def hnsw_list(conn, version, dense: np.ndarray, n: int, ef: int) -> set[int]:
    """One HNSW scan of n rows at ef_search ``ef``, as the statement's dense list reads it."""
    key = (
        sql.SQL("dense::halfvec({d}) <#> %s::vector::halfvec({d})").format(
            d=sql.Literal(version.dense_dim)
        )
        if search.dense_index(version) == "halfvec"
        else sql.SQL("dense <#> %s::vector")
    )
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(sql.Literal(ef)))
        # At a large ef_search the planner may prefer a parallel scan of every row (exact,
        # ~0.5 s at 1M): this column measures the graph, so the graph it is.
        conn.execute("SET LOCAL enable_seqscan = off")
        rows = conn.execute(
            sql.SQL("SELECT product_id FROM {t} ORDER BY {k} LIMIT %s").format(
                t=sql.Identifier(version.table), k=key
            ),
            (dense, n),
        ).fetchall()
    return {r[0] for r in rows}


SPARSE_SIDES = ("hnsw", "both", "postings")
ORIGINAL_SQL = search_sql.SEARCH_SQL


def statement_variant(text: str, side: str) -> str:
    """search.sql with a hybrid ranking's sparse candidates taken as ``side`` says (module
    docstring); raises if the statement no longer has the gates this edits."""
    if side == "hnsw":
        return text
    gate = "WHERE %(use_sparse)s AND NOT %(use_dense)s AND NOT %(route_exact)s"
    if text.count(gate) != 1:
        raise SystemExit("search.sql's q_terms gate changed: update statement_variant")
    text = text.replace(gate, "WHERE %(use_sparse)s AND NOT %(route_exact)s")
    if side == "postings":
        scan = "WHERE {filters} AND %(use_sparse)s AND NOT %(route_exact)s"
        if text.count(scan) != 2:
            raise SystemExit("search.sql's sparse HNSW scans changed: update statement_variant")
        text = text.replace(scan, scan + " AND NOT %(use_dense)s")
    return text


def use_statement(side: str) -> None:
    """Make this process's searches run the ``side`` variant of search.sql."""
    search_sql.SEARCH_SQL = statement_variant(ORIGINAL_SQL, side)
    search_sql._STATEMENTS.clear()  # the filled texts of the previous variant


def ivf_name(version) -> str:
    return f"{version.table}_dense_ivf"


def build_ivf(conn, version, lists: int, memory: str) -> list:
    """The IVFFlat index of ``lists`` lists on the version's dense column (kept if one of that
    many lists exists): a row for the build table."""
    name = ivf_name(version)
    have = conn.execute(
        "SELECT reloptions FROM pg_class WHERE relname = %s AND relkind = 'i'", (name,)
    ).fetchone()
    seconds = None
    if have is None or f"lists={lists}" not in (have[0] or []):
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(memory)))
        conn.execute("SET max_parallel_maintenance_workers = 2")
        start = time.perf_counter()
        conn.execute(
            sql.SQL(
                "CREATE INDEX {i} ON {t} USING ivfflat (dense vector_ip_ops) WITH (lists = {n})"
            ).format(
                i=sql.Identifier(name),
                t=sql.Identifier(version.table),
                n=sql.Literal(lists),
            )
        )
        conn.commit()
        seconds = time.perf_counter() - start
    size = conn.execute("SELECT pg_relation_size(%s::regclass)", (name,)).fetchone()[0]
    conn.commit()
    built = f"{seconds:.1f} s" if seconds is not None else "kept from an earlier run"
    return [f"ivfflat lists={lists}", built, f"{size / 2**20:,.1f} MiB"]


@contextlib.contextmanager
def dense_scan(conn, version, kind: str, value: int) -> Iterator[None]:
    """Searches inside read the dense candidates as ``kind`` says: the HNSW graph (the
    statement's own settings), or the IVFFlat index at ``value`` probes: in a transaction that
    drops the dense HNSW index and is rolled back after."""
    if kind == "hnsw":
        yield
        return
    conn.commit()
    try:
        conn.execute(
            sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{version.table}_dense_hnsw"))
        )
        conn.execute(sql.SQL("SET LOCAL ivfflat.probes = {}").format(sql.Literal(value)))
        yield
    finally:
        conn.rollback()


def dense_list(conn, version, dense: np.ndarray, n: int, kind: str, value: int) -> set[int]:
    """One scan of the dense index for n rows, as the statement's dense list reads it."""
    if kind == "hnsw":
        return hnsw_list(conn, version, dense, n, value)
    with dense_scan(conn, version, kind, value):
        conn.execute("SET LOCAL enable_seqscan = off")
        return dense_ids(conn, version, dense, n)


def rebuild(conn, version, m: int, ef_construction: int, kind: str, memory: str) -> list:
    conn.execute(
        sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{version.table}_dense_hnsw"))
    )
    conn.commit()
    start = time.perf_counter()
    hnsw.build_indexes(
        conn,
        version.id,
        dense_graph=(m, ef_construction),
        maintenance_work_mem=memory,
        dense_index=kind,
    )
    seconds = time.perf_counter() - start
    size = conn.execute(
        "SELECT pg_relation_size(%s::regclass)", (f"{version.table}_dense_hnsw",)
    ).fetchone()[0]
    return [
        f"m={m}, ef_construction={ef_construction}, {kind}",
        f"{seconds:.1f} s",
        f"{size / 2**20:,.1f} MiB",
    ]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--candidates", type=int, nargs="+", default=[search.DEFAULT_CANDIDATES])
    p.add_argument(
        "--ef-search",
        type=int,
        nargs="*",
        default=[150, 300, 600, 1000],
        help="HNSW rows at these ef_search values (none: IVF rows only)",
    )
    p.add_argument("--ivfflat", type=int, metavar="LISTS", help="also measure an IVFFlat index")
    p.add_argument("--probes", type=int, nargs="+", default=[10, 20, 40])
    p.add_argument("--database", default="fashion_bench")
    p.add_argument("--alpha", type=float, nargs="+", default=[1.0, 0.5])
    p.add_argument(
        "--rebuild",
        nargs=3,
        metavar=("M", "EF_CONSTRUCTION", "KIND"),
        help="rebuild the dense HNSW index with these options first",
    )
    p.add_argument("--maintenance-work-mem", default="8GB")
    p.add_argument(
        "--sparse-side",
        nargs="+",
        choices=SPARSE_SIDES,
        default=["hnsw"],
        help="a hybrid ranking's sparse candidates: the statement as it is (hnsw), or a "
        "variant (module docstring)",
    )
    args = p.parse_args()
    if not args.database.startswith("fashion_bench"):
        raise SystemExit("--database: a benchmark database's name starts with fashion_bench")

    main_conn = connect()
    try:
        cat = realistic.read_live(main_conn)
    finally:
        main_conn.close()
    conn = connect(use_bench_database(args.database).database_url)
    version = iv.live_version(conn)
    if version is None:
        raise SystemExit("no bench index: run bench_search.py --realistic first")
    print(
        f"# bench_dense_params: {args.database} v{version.id} ({version.row_count:,} rows, "
        f"{version.report.get('mode')}), graph {version.params.get('hnsw', 'not recorded')}, "
        f"dense index {search.dense_index(version)}; {args.queries} realistic queries"
    )
    if args.rebuild:
        m, efc, kind = int(args.rebuild[0]), int(args.rebuild[1]), args.rebuild[2]
        row = rebuild(conn, version, m, efc, kind, args.maintenance_work_mem)
        version = iv.get_version(conn, version.id)
        table("Dense HNSW rebuild", ["graph", "build", "size"], [row])
    scans = [("hnsw", ef) for ef in args.ef_search]
    if args.ivfflat:
        row = build_ivf(conn, version, args.ivfflat, args.maintenance_work_mem)
        table("Dense IVFFlat index", ["index", "build", "size"], [row])
        scans += [("ivfflat", p) for p in args.probes]
    qs = realistic.encoded_queries(cat.version, cat.metadata, args.queries)
    halves = {"tune": qs[0::2], "report": qs[1::2]}
    start = time.perf_counter()
    truth = {
        (alpha, half): exact_tops(conn, version, hq, alpha)
        for alpha in args.alpha
        for half, hq in halves.items()
    }
    tops = {
        (half, n): [exact_dense_top(conn, version, d, n) for d, _ in hq]
        for half, hq in halves.items()
        for n in args.candidates
    }
    print(f"\n(exact references: {time.perf_counter() - start:.0f} s)")

    columns = [
        "candidates n",
        "dense scan",
        "sparse side",
        "queries",
        "list recall of the dense top n",
    ]
    for alpha in args.alpha:
        columns += [
            f"alpha {alpha}: p50 / p95 ms",
            f"alpha {alpha}: recall@10",
            f"alpha {alpha}: source recall@10",
            f"alpha {alpha}: 10th score short",
        ]
    # Each row printed as it is measured (a large ef_search can take seconds a query).
    table(
        f"Dense side, {len(halves['tune'])} tune + {len(halves['report'])} report queries "
        "(plain policy: no deepening, no exact fallback)",
        columns,
        [],
        left=4,
    )
    list_recalls: dict[tuple, float] = {}  # the same for every sparse side
    for n, (kind, value), side, half in itertools.product(
        args.candidates, scans, args.sparse_side, halves
    ):
        use_statement(side)
        hq = halves[half]
        if (n, kind, value, half) not in list_recalls:
            lists = [dense_list(conn, version, d, n, kind, value) for d, _ in hq]
            list_recalls[n, kind, value, half] = np.mean(
                [len(got & want) / len(want) for got, want in zip(lists, tops[half, n])]
            )
        list_recall = list_recalls[n, kind, value, half]
        label = f"HNSW ef_search {value}" if kind == "hnsw" else f"IVF probes {value}"
        cells = [n, label, side, half, f"{list_recall:.3f}"]
        for alpha in args.alpha:
            lat, recalls, near = [], [], []
            with dense_scan(conn, version, kind, value):
                for (dense, sparse), want in zip(hq, truth[alpha, half]):
                    q = search.SearchQuery(
                        dense,
                        sparse,
                        alpha,
                        TOP_K,
                        candidates=n,
                        budget=n,
                        ef_search=value if kind == "hnsw" else None,
                        probes=value if kind == "ivfflat" else None,
                        exact_max_rows=0,
                        with_vectors=False,
                    )
                    t = time.perf_counter()
                    got = search.certified_search(conn, q, version).hits
                    lat.append((time.perf_counter() - t) * 1000)
                    want_ids = {pid for pid, _ in want}
                    recalls.append(len({h.product_id for h in got} & want_ids) / len(want))
                    near.append(near_miss(got, want, len(cat.metadata)))
            cells += [
                f"{statistics.median(lat):.1f} / {pct(lat, 95):.1f}",
                f"{np.mean(recalls):.3f}",
                f"{np.mean([a for a, _ in near]):.3f}",
                f"{100 * np.mean([b for _, b in near]):.2f} %",
            ]
        print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
    conn.close()


if __name__ == "__main__":
    main()
