"""Type-ahead latency (``GET /v1/suggest``) on the live index: the service function, and HTTP.

    .venv/bin/python benchmarks/bench_suggest.py                    # service + HTTP (~1 min)
    .venv/bin/python benchmarks/bench_suggest.py --skip-http
    .venv/bin/python benchmarks/bench_suggest.py --rounds 5 --concurrency 8 --seed 3

What it measures (every number from this run; nothing is asserted):

1. **Building the index** of the live version (``services.api.suggest``): the database
   read (facet value counts + display names, ``services.store.suggest_sql``) and the build
   in Python (``services.search.suggest.build_index``), what the first request pays.
2. **Queries**: derived from the built vocabulary, seeded: the first 2 to 6 characters
   of entries (facet values and name phrases, weighted to the frequent ones), a word's
   prefix after a complete first word ("navy bl"), and typo'd variants of 4 to 9 letter
   prefixes (a swap, a deletion, an insertion or a substitution), so the typo path runs.
3. **The service function** (``services.api.suggest.suggest``, the request's validation
   + the cached index's answer, in this process, one thread): "first ask" = each query
   the first time (computed: prefix range, typo candidates), "repeated" = the same queries
   again (the index's answer cache). The index is already built (1.).
4. **HTTP**: the real server (``fashion-search serve`` in its own process, production
   logging) on a free loopback port, the queries sent ``--rounds`` times: one client
   (httpx, keep-alive), then ``--concurrency`` clients (closed loop). The client runs on
   the same machine and costs CPU of its own; latency includes it.

Run against the configured database (``DATABASE_URL``, default the embedded server on
FASHION_PG_PORT=54329) with a live index.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from bench_api import start_server  # the API process, as bench_api starts it
from tables import pct, table  # the benchmarks' printing

from services.api import suggest as svc
from services.api.runtime import Runtime
from services.catalog.schema import BY_NAME
from services.config import get_settings
from services.search.suggest import FACET_KINDS, TYPO_AFTER, SuggestIndex, build_index
from services.store.index_versions import live_version
from services.store.suggest_sql import display_names, facet_value_counts

LETTERS = "abcdefghijklmnopqrstuvwxyz"
COLUMNS = tuple(BY_NAME[kind].column for kind in FACET_KINDS)


def read_source(conn) -> tuple[dict, list[str]]:
    """What the index is built from: the live version's facet value counts and names."""
    version = live_version(conn)
    return facet_value_counts(conn, version, COLUMNS), display_names(conn, version)


def latency_row(name: str, seconds: Sequence[float], wall: float) -> list:
    ms = [s * 1000 for s in seconds]
    return [
        name,
        len(ms),
        f"{pct(ms, 50):.3f}",
        f"{pct(ms, 95):.3f}",
        f"{pct(ms, 99):.3f}",
        f"{max(ms):.3f}",
        f"{len(ms) / wall:,.0f}",
    ]


LATENCY_COLUMNS = ["path", "requests", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s"]


# --- the queries ------------------------------------------------------------------------------
def typo(word: str, rng: random.Random) -> str:
    """One edit of ``word`` (a swap of neighbours, a deletion, an insertion, a substitution)."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "delete", "insert", "substitute"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "delete":
        return word[:i] + word[i + 1 :]
    if kind == "insert":
        return word[:i] + rng.choice(LETTERS) + word[i:]
    return word[:i] + rng.choice(LETTERS.replace(word[i], "")) + word[i + 1 :]


def queries_of(index: SuggestIndex, n: int, seed: int) -> dict[str, list[str]]:
    """Seeded queries of the index's vocabulary: ``{"prefix": [...], "two words": [...],
    "typo": [...]}`` (entries drawn weighted by their product counts)."""
    rng = random.Random(seed)
    entries = list(index.entries)
    weights = [e.count for e in entries]
    prefixes: set[str] = set()
    two: set[str] = set()
    typos: set[str] = set()
    for _ in range(n * 20):
        if len(prefixes) >= n and len(two) >= n // 2 and len(typos) >= n // 2:
            break
        e = rng.choices(entries, weights)[0]
        text = e.text.lower()
        words = text.split()
        if len(prefixes) < n:
            prefixes.add(text[: rng.randint(2, 6)].rstrip())
        if len(words) > 1 and len(two) < n // 2:
            two.add(words[0] + " " + words[1][: rng.randint(1, 4)])
        word = rng.choice(words)
        if len(word) > TYPO_AFTER + 1 and len(typos) < n // 2:
            cut = word[: rng.randint(TYPO_AFTER + 1, min(9, len(word)))]
            typos.add(typo(cut, rng))
    return {"prefix": sorted(prefixes), "two words": sorted(two), "typo": sorted(typos)}


# --- the service function -------------------------------------------------------------------
def bench_service(runtime: Runtime, groups: dict[str, list[str]]) -> list[list]:
    rows = []
    every = [q for qs in groups.values() for q in qs]
    first: list[float] = []
    start = time.perf_counter()
    for q in every:
        t = time.perf_counter()
        svc.suggest(runtime, q)
        first.append(time.perf_counter() - t)
    rows.append(latency_row("service, first ask", first, time.perf_counter() - start))
    for label, qs in groups.items():
        again: list[float] = []
        start = time.perf_counter()
        for _ in range(5):
            for q in qs:
                t = time.perf_counter()
                svc.suggest(runtime, q)
                again.append(time.perf_counter() - t)
        rows.append(latency_row(f"service, repeated ({label})", again, time.perf_counter() - start))
    return rows


def coverage(runtime: Runtime, groups: dict[str, list[str]]) -> list[list]:
    rows = []
    for label, qs in groups.items():
        answers = [svc.suggest(runtime, q).suggestions for q in qs]
        rows.append(
            [
                label,
                len(qs),
                f"{100 * sum(bool(a) for a in answers) / len(qs):.1f}%",
                f"{100 * sum(any(s.typo for s in a) for a in answers) / len(qs):.1f}%",
                f"{statistics.mean(len(a) for a in answers):.1f}",
                ", ".join(repr(q) for q in qs[:3]),
            ]
        )
    return rows


# --- HTTP -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_client(url: str, qs: list[str], rounds: int) -> tuple[list[float], float]:
    lat = []
    with httpx.Client(base_url=url, timeout=30) as client:
        first = client.get("/v1/suggest", params={"q": qs[0]})  # builds the index
        first.raise_for_status()
        start = time.perf_counter()
        for _ in range(rounds):
            for q in qs:
                t = time.perf_counter()
                r = client.get("/v1/suggest", params={"q": q})
                lat.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"{q!r}: {r.status_code} {r.text[:200]}")
        return lat, time.perf_counter() - start


async def many_clients(
    url: str, qs: list[str], rounds: int, concurrency: int
) -> tuple[list[float], float]:
    work = [q for _ in range(rounds) for q in qs]
    lat: list[float] = []

    async def client(i: int, c: httpx.AsyncClient) -> None:
        for q in work[i::concurrency]:
            t = time.perf_counter()
            r = await c.get("/v1/suggest", params={"q": q})
            lat.append(time.perf_counter() - t)
            if r.status_code != 200:
                raise RuntimeError(f"{q!r}: {r.status_code} {r.text[:200]}")

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as c:
        start = time.perf_counter()
        await asyncio.gather(*(client(i, c) for i in range(concurrency)))
        return lat, time.perf_counter() - start


# --- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queries", type=int, default=300, help="prefix queries (+ half as many "
                    "two-word and typo'd ones; default 300)")  # fmt: skip
    ap.add_argument("--rounds", type=int, default=3, help="HTTP passes over the queries")
    ap.add_argument("--concurrency", type=int, default=8, help="clients of the closed loop")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--skip-http", action="store_true", help="the service function only")
    ap.add_argument("--port", type=int, default=0, help="the server's port (default: free)")
    args = ap.parse_args(argv)

    settings = get_settings()
    print(f"database: {settings.database_url.split('?')[0]}")
    print(f"cores: {os.cpu_count()}, load average (1, 5, 15 min): "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))  # fmt: skip
    runtime = Runtime(settings, load_models=False)
    runtime.start()
    try:
        start = time.perf_counter()
        cache = svc.cache_of(runtime)
        built = cache.get(runtime)
        first_ms = (time.perf_counter() - start) * 1000
        index = built.index
        kinds: dict[str, int] = {}
        for e in index.entries:
            kinds[e.kind] = kinds.get(e.kind, 0) + 1
        rebuild = []
        for _ in range(3):  # the read and the build apart (what a refresh that finds a change does)
            t = time.perf_counter()
            counts, names = runtime.read(read_source)
            read = time.perf_counter() - t
            t = time.perf_counter()
            build_index({kind: counts[column] for kind, column in zip(FACET_KINDS, COLUMNS)}, names)
            rebuild.append((read, time.perf_counter() - t))
        table(
            f"the index of v{built.version_id} ({len(names):,} products): {len(index):,} entries "
            f"({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})",
            ["step", "ms (first request)", "ms (median of 3 more)"],
            [
                ["first request, all in (read + build)", f"{first_ms:.1f}", ""],
                ["database read", "", f"{statistics.median(r for r, _ in rebuild) * 1000:.1f}"],
                ["build in Python", "", f"{statistics.median(b for _, b in rebuild) * 1000:.1f}"],
            ],
        )
        groups = queries_of(index, args.queries, args.seed)
        table(
            "the queries (what the index answers)",
            ["queries", "n", "answered", "with typo matches", "suggestions (mean)", "e.g."],
            coverage(runtime, groups),
        )
        index._cache.clear()  # "first ask" computes every answer
        rows = bench_service(runtime, groups)
    finally:
        runtime.stop()
    if not args.skip_http:
        every = [q for qs in groups.values() for q in qs]
        port = args.port or free_port()
        log_path = settings.reports_dir / "bench_suggest_server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = start_server(port, 1, log_path)  # one torch thread, as `serve` runs
        try:
            url = f"http://127.0.0.1:{port}"
            lat, wall = one_client(url, every, args.rounds)
            rows.append(latency_row("HTTP GET /v1/suggest, 1 client", lat, wall))
            lat, wall = asyncio.run(many_clients(url, every, args.rounds, args.concurrency))
            rows.append(latency_row(f"HTTP GET /v1/suggest, {args.concurrency} clients", lat, wall))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    table(
        f"latency ({sum(len(q) for q in groups.values())} distinct queries; HTTP: "
        f"{args.rounds} rounds)",
        LATENCY_COLUMNS,
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
