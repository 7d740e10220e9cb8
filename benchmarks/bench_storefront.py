"""Storefront pages on the LIVE index: how long a next page takes, whether ten pages are one
ranking, and what sorting and facet counts cost.

    .venv/bin/python benchmarks/bench_storefront.py                 # 60 queries, alpha 0.5
    .venv/bin/python benchmarks/bench_storefront.py --queries 100 --alpha 0.3 --repeat 5

Queries: the evaluation's text queries (``benchmarks/realistic.encoded_queries``), encoded
once with the live version's models; what is timed is the ranking statement of each page,
as the API runs it (``services.search.certified_search`` with the API's SearchQuery: page
size 24, one more ranked to know whether a next page exists, the cursor's key of the page
before), one query at a time, on this process's own connection; each figure is a query's
median over ``--repeat`` runs, then percentiles over queries. Encoding is left out: the API
encodes a query once (its cache serves the next pages' requests).

Tables:
1. page latency by page number (1, 2, 5, 10), and page 2 / page 1 per query;
2. ten pages vs the exact ranking 240 deep (``exact: true``, every filtered row scored): the
   share of queries whose ten pages ARE the exact top 240 in order, the mean overlap of
   their products with it, products repeated (0 by construction: a cursor says what was
   shown), ``late`` ones (shown on a later page than the exact ranking puts them: an
   earlier page's candidates missed them) and the exact top 240's products ``not reached``
   in ten pages (late ones and the candidates' wrong picks took their places: page 11 and
   on show them, a cursor declaring shown only what a proven page showed);
3. the relevant set's cost: sort newest (page 1) and facet counts (no filter; one filter).
Nothing is asserted; the numbers go to docs/benchmarks.md with the command and date.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import realistic
from services import search
from services.api import paging
from services.store import index_versions as iv
from services.store.db import connect

PAGE = 24
KEY = b"bench-storefront-cursor-key-0123456789"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def timed(conn, version, query: search.SearchQuery, repeat: int) -> tuple[float, search.Ranking]:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = search.certified_search(conn, query, version)
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs), out


def row(name: str, xs: list[float]) -> str:
    return (
        f"| {name:<34} | {pct(xs, 50):7.1f} | {pct(xs, 95):7.1f} | {pct(xs, 99):7.1f} | "
        f"{1000 / statistics.mean(xs):8.0f} |"
    )


def depth_sweep(conn, version, qs, args) -> None:
    """Table 4: a page of 24 at depth d (offset d - 25) as the plan runs it, against the exact
    scan at once, p50 over queries of each query's best of ``--repeat`` runs, and the paths."""
    print(f"# bench_storefront --depth-sweep: index v{version.id} ({version.row_count:,} rows)")
    print("\n## 4. A page's statement by depth: as planned vs the exact scan (ms)\n")
    print("| depth | as planned p50 | exact p50 | paths as planned |")
    print("|------:|---------------:|----------:|------------------|")
    for depth in (25, 49, 73, 97, 145, 241):
        planned, exact, paths = [], [], []
        for dense, sparse in qs:
            for at_once, out in ((False, planned), (True, exact)):
                query = search.SearchQuery(
                    dense, sparse, args.alpha, k=PAGE, offset=depth - 25, peek=True, exact=at_once
                )
                runs = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    ranking = search.certified_search(conn, query, version)
                    runs.append((time.perf_counter() - t) * 1000)
                out.append(min(runs))
                if not at_once:
                    paths.append(ranking.certificate.path)
        counted = ", ".join(f"{p} {paths.count(p)}" for p in sorted(set(paths)))
        print(
            f"| {depth:5d} | {statistics.median(planned):14.1f} | "
            f"{statistics.median(exact):9.1f} | {counted} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--queries", type=int, default=60)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--depth-sweep",
        action="store_true",
        help="only table 4: a page's statement at depths 25..241, as planned vs the exact scan",
    )
    args = p.parse_args()

    conn = connect()
    version = iv.live_version(conn)
    if version is None:
        raise SystemExit("no live index: run `make run` or `fashion-search index` first")
    qs = realistic.encoded_queries(version, iv.product_metadata(conn, version.id), args.queries)
    if args.depth_sweep:
        depth_sweep(conn, version, qs, args)
        return
    print(
        f"# bench_storefront: index v{version.id} ({version.row_count:,} rows, "
        f"{version.dense_model} + {version.sparse_model}), {len(qs)} evaluation text queries, "
        f"alpha {args.alpha}, pages of {PAGE}, median of {args.repeat} runs per query"
    )
    lat: dict[str, list[float]] = {k: [] for k in ("1", "2", "5", "10")}
    ratio: list[float] = []
    same = repeated = late = 0
    overlap: list[float] = []
    lost = 0
    newest: list[float] = []
    facets_none: list[float] = []
    facets_one: list[float] = []
    for dense, sparse in qs:
        q = functools.partial(search.SearchQuery, dense, sparse, args.alpha)
        ids: list[int] = []
        cursor, offset = None, 0
        for n in range(1, 11):  # the API's pages: paging.page_state makes each next cursor
            query = q(
                k=PAGE,
                offset=offset,
                after=cursor.after if cursor else None,
                shown=cursor.shown if cursor else (),
                peek=True,
            )
            ms, ranking = timed(conn, version, query, args.repeat)
            if str(n) in lat:
                lat[str(n)].append(ms)
            state = paging.page_state(ranking, offset, "relevance", cursor, version.id, "", KEY)
            late += state.late
            ids += [h.product_id for h in ranking.hits]
            if not state.has_more:
                break
            cursor = paging.decode_cursor(state.next_cursor, KEY)
            offset = cursor.offset
        ratio.append(lat["2"][-1] / lat["1"][-1])
        repeated += len(ids) - len(set(ids))
        exact: list[int] = []
        for offset in range(0, len(ids), 100):
            r = search.certified_search(
                conn, q(k=min(100, len(ids) - offset), offset=offset, exact=True), version
            )
            exact += [h.product_id for h in r.hits]
        same += ids == exact
        lost += len(set(exact) - set(ids))
        overlap.append(len(set(ids) & set(exact)) / max(1, len(exact)))
        ms, _ = timed(conn, version, q(k=PAGE, sort="newest", peek=True), args.repeat)
        newest.append(ms)
        ms, top = timed(conn, version, q(k=PAGE, peek=True), 1)
        t = time.perf_counter()
        search.facet_counts(conn, q(k=PAGE), version)
        facets_none.append((time.perf_counter() - t) * 1000)
        gender = top.hits[0].metadata.get("gender") if top.hits else None
        if gender:
            one = q(k=PAGE, filters=search.Filters.from_mapping({"gender": gender}))
            t = time.perf_counter()
            search.facet_counts(conn, one, version)
            facets_one.append((time.perf_counter() - t) * 1000)

    print("\n## 1. Page latency (ms, the ranking statement; percentiles over queries)\n")
    print("| page                               |     p50 |     p95 |     p99 |    per s |")
    print("|------------------------------------|---------|---------|---------|----------|")
    for n, xs in lat.items():
        print(row(f"page {n} (offset {(int(n) - 1) * PAGE})", xs))
    print(
        f"\npage 2 / page 1, per query: p50 {pct(ratio, 50):.2f}, p95 {pct(ratio, 95):.2f} "
        f"(target: page 2 within 1.5x page 1)"
    )
    print("\n## 2. Ten pages of 24 vs the exact ranking 240 deep\n")
    print(
        "| queries | pages = exact top 240, in order | mean overlap | repeated | late | not reached |"
    )
    print(
        "|---------|---------------------------------|--------------|----------|------|-------------|"
    )
    print(
        f"| {len(qs):7d} | {same:4d} ({same / len(qs):6.1%})                  | "
        f"{statistics.mean(overlap):12.4f} | {repeated:8d} | {late:4d} | {lost:11d} |"
    )
    print("\n## 3. The relevant set (top 200): sort and facet counts (ms)\n")
    print("| what                               |     p50 |     p95 |     p99 |    per s |")
    print("|------------------------------------|---------|---------|---------|----------|")
    print(row("sort newest, page 1", newest))
    print(row("facet counts, no filter", facets_none))
    if facets_one:
        print(row("facet counts, gender filter", facets_one))
    conn.close()


if __name__ == "__main__":
    main()
