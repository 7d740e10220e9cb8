"""Search analytics benchmark (issue #24): what recording searches and events costs, how
fast events are taken, that none is lost when PostgreSQL restarts, and how much traffic an
interleaving experiment needs.

    .venv/bin/python benchmarks/bench_analytics.py                 # every section (~10 min, 2 cores)
    .venv/bin/python benchmarks/bench_analytics.py --quick         # a smaller run
    .venv/bin/python benchmarks/bench_analytics.py --qps --restart # some sections only

Sections (all by default; each selected by its flag):

1. ``--qps``: search QPS with analytics on and off, same run. The API (``fashion-search
   serve``, its own process) is started with ``FASHION_ANALYTICS=1``, then ``=0``,
   alternating, ``--rounds`` rounds each, on the synthetic index of benchmarks/bench_api.py
   (``--rows``, default 10,000, in a database of this benchmark's own,
   ``fashion_bench_analytics``; reused when it matches). Each round: warm text searches
   (64 texts, the query-embedding cache answers; only the SQL runs) at ``--concurrency``
   (16) closed-loop clients over bench_api's lean HTTP client. Printed per round: QPS,
   p50/p95/p99 and where the CPU went; the ratio of the median QPS on / off (target
   >= 0.95); and the writer's counters after each "on" round (every search recorded:
   written == searches sent, dropped 0, and the rows found in PostgreSQL).
2. ``--ingest``: event ingestion. With analytics on, ``--ids`` searches (k 24) give search
   ids; batches of ``--batch`` events (positions and product ids of each page, at most 300
   events per search id: ``--per-id`` batches each) go to ``POST /v1/events`` from
   ``--ingest-clients`` closed-loop clients (a lean raw-socket client: it shares the cores
   with the server). Accepted events/s over HTTP and end to end (until
   ``GET /v1/events/stats`` shows nothing queued); written == accepted, dropped 0, and the
   rows in PostgreSQL for those search ids (counted as the pipeline role). Target:
   >= 2,000 events/s on 2 cores, 0 lost.
3. ``--restart``: PostgreSQL restarted under load. Events at a steady ``--rate`` (1,000/s)
   for ``--send-s`` seconds; after ``--restart-after`` seconds the server the bench database
   lives on is stopped and started (services.store.embedded: ``pg_ctl stop -m fast``, the
   data of ``make run`` lives on the same server: a restart is harmless). Then the writer
   drains. Printed: accepted, dropped, writer retries, written, rows found. Target: 0 lost.
4. ``--interleave``: interleaving power and A/A, on ``--real-rows`` (2,000) real offline
   products indexed by the pipeline (``run_reindex``) in ``fashion_bench_analytics_real``.
   Per seed an experiment alpha 0.5 (A) against alpha 0 (B), traffic 1.0, planned
   ``--searches`` impressions, fed by the traffic simulator (evaluation.traffic); the
   sign-test p after 250/500/750/1000 impressions in the order they were recorded (the stop
   rule reads it once, at the planned number), and the first count at which p < 0.01
   (informational), and, from the observed shares, about how many impressions a test at
   p < 0.01 with 80 % power would need (informational). Then A/A experiments (alpha 0.5 twice), the offline A/A rate of
   tests/test_experiments.py (200 seeded replays of real rankings), and what an experiment
   costs a search (two statements instead of one): p50 in vs out of it, interleaved.

Nothing is asserted; targets missed are printed as MISS.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_api
import httpx
from bench_api import ceiling_texts, cpu_seconds, run_lean, start_server
from bench_db import use_bench_database
from tables import pct, table

from evaluation.traffic import a_a_p_values, simulate, text_queries
from services.analytics.interleave import sign_test, verdict
from services.api import analytics as api_analytics
from services.config import get_settings
from services.store import analytics as store
from services.store import embedded
from services.store.db import connect
from services.store.index_versions import live_version
from services.store.products import iter_products

SYNTHETIC_DB = "fashion_bench_analytics"  # bench_api's synthetic index, a copy of our own
REAL_DB = "fashion_bench_analytics_real"  # offline products indexed by the pipeline
MAX_PER_SEARCH = api_analytics.MAX_EVENTS_PER_SEARCH
TTL_S = api_analytics.EXPERIMENT_TTL_S + 0.5  # the API re-reads the running experiment

FULL = {
    "rounds": 3,
    "requests": 1500,
    "ids": 300,
    "per_id": 4,
    "send_s": 20.0,
    "restart_after": 5.0,
    "searches": 2000,
    "seeds": "1,2,3",
    "aa_seeds": "1,2,3",
    "cost_searches": 200,
}
QUICK = {
    "rounds": 1,
    "requests": 500,
    "ids": 100,
    "per_id": 4,
    "send_s": 12.0,
    "restart_after": 4.0,
    "searches": 400,
    "seeds": "1",
    "aa_seeds": "1",
    "cost_searches": 60,
}

REPORT: list[Callable[[], None]] = []  # the tables, printed together at the end


def log(msg: str) -> None:
    print(f"  {msg}", flush=True)


def mark(ok: bool) -> str:
    return "met" if ok else "MISS"


# --- a lean HTTP/1.1 client (any method, headers, bodies kept) ------------------------------
def raw_request(
    method: str, path: str, port: int, body: bytes | None = None, headers: dict | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class LeanConnection:
    """One keep-alive connection; Content-Length framing (the API sends no chunks)."""

    def __init__(self, port: int):
        self.port = port
        self.reader = self.writer = None

    async def send(self, raw: bytes) -> tuple[int, dict, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(raw)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(head[0].split(" ")[1]), headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def lean(
    port: int,
    requests: list[bytes],
    concurrency: int,
    per_second: float | None = None,
) -> list[tuple[int, float, bytes, dict]]:
    """Sends ``requests`` over ``concurrency`` connections, closed loop (or each at its
    slot when ``per_second`` paces them); per request, in order: (status, ms, body,
    Server-Timing phases). A failed connection is status 0."""
    out: list = [None] * len(requests)
    nxt = 0
    start = time.perf_counter()

    async def worker() -> None:
        nonlocal nxt
        conn = LeanConnection(port)
        try:
            while nxt < len(requests):
                i = nxt
                nxt += 1
                if per_second:
                    await asyncio.sleep(max(0.0, start + i / per_second - time.perf_counter()))
                t = time.perf_counter()
                try:
                    status, headers, body = await conn.send(requests[i])
                except (OSError, asyncio.IncompleteReadError):
                    conn.close()
                    status, headers, body = 0, {}, b""
                phases = {}
                for part in headers.get("server-timing", "").split(","):
                    name, _, dur = part.strip().partition(";dur=")
                    if dur:
                        phases[name] = float(dur)
                out[i] = (status, (time.perf_counter() - t) * 1000, body, phases)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def writer_stats(port: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{port}/v1/events/stats", timeout=30).json()


def wait_drained(port: int, timeout: float = 180.0) -> tuple[dict, float]:
    """The writer's counters once nothing is queued, and the seconds it took."""
    t = time.perf_counter()
    while True:
        s = writer_stats(port)
        if s.get("queued", 0) == 0 or time.perf_counter() - t > timeout:
            return s, time.perf_counter() - t
        time.sleep(0.05)


async def watch_queue(port: int, stop: asyncio.Event, every: float = 0.25) -> dict:
    """Peak ``queued`` (and the counters last seen) while ``stop`` is not set."""
    conn = LeanConnection(port)
    raw = raw_request("GET", "/v1/events/stats", port)
    peak = 0
    last: dict = {}
    try:
        while not stop.is_set():
            try:
                _, _, body = await conn.send(raw)
                last = json.loads(body)
                peak = max(peak, last.get("queued", 0))
            except (OSError, asyncio.IncompleteReadError, ValueError):
                conn.close()
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass
    finally:
        conn.close()
    return {"peak": peak, "last": last}


def delta(after: dict, before: dict) -> dict:
    keys = ("offered", "written", "dropped", "rejected", "retries")
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys}


def search_uuid(token: str) -> uuid.UUID:
    """The stored search id in a response's ``search_id`` (services.analytics.ids)."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return uuid.UUID(bytes=raw[1:17])


# --- processes and CPU --------------------------------------------------------------------
def server_pids(settings) -> list[int]:
    """The bench PostgreSQL server's processes: its postmaster and its children (other
    PostgreSQL servers on the machine, the tests', are left out)."""
    root = embedded.status(settings).pid
    if root is None:
        return []
    pids = [root]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == root:
                pids.append(int(d.name))
    return pids


def cpu_snapshot(api_pid: int, settings) -> tuple[float, float, float]:
    import resource  # noqa: PLC0415 - Unix only, only here

    me = resource.getrusage(resource.RUSAGE_SELF)
    return cpu_seconds([api_pid]), cpu_seconds(server_pids(settings)), me.ru_utime + me.ru_stime


def serve(port: int, torch_threads: int, analytics: bool, name: str) -> subprocess.Popen:
    os.environ["FASHION_ANALYTICS"] = "1" if analytics else "0"
    log_path = get_settings().reports_dir / f"bench_analytics_{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    return start_server(port, torch_threads, log_path)


def halt(proc: subprocess.Popen) -> None:
    proc.terminate()  # SIGTERM: graceful shutdown (the writer writes what is queued)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_LOADED: list = []


def synthetic(args):
    """The bench_api synthetic index in this benchmark's database (loaded once, reused)."""
    bench_api.BENCH_DB = SYNTHETIC_DB  # bench_api.load() and bench_settings() read it
    if not _LOADED:
        bench_api.load(args.rows, False, args.distinct_names)
        _LOADED.append(True)
    return bench_api.bench_settings()


def count_rows(settings, table_name: str, ids: list[uuid.UUID]) -> int:
    with connect(settings.database_url) as conn:
        return conn.execute(
            f"SELECT count(*) FROM {table_name} WHERE search_id = ANY(%s)", (ids,)
        ).fetchone()[0]


# --- 1. search QPS, analytics on vs off ---------------------------------------------------
def section_qps(args) -> None:
    settings = synthetic(args)
    texts = ceiling_texts(64)
    bodies = [json.dumps({"text": t, "k": 10}).encode() for t in texts]
    load = [bodies[i % len(bodies)] for i in range(args.requests)]
    rounds: list[tuple[int, bool, dict]] = []
    writer_rows = []
    for r in range(1, args.rounds + 1):
        for on in (True, False):
            started = datetime.now(UTC)
            proc = serve(args.port, args.torch_threads, on, "qps")
            try:
                asyncio.run(run_lean(args.port, bodies, 1))  # the embedding cache
                asyncio.run(run_lean(args.port, bodies * 4, args.concurrency))  # pools, JIT
                warm = len(bodies) * 5
                before = cpu_snapshot(proc.pid, settings)
                res = asyncio.run(run_lean(args.port, load, args.concurrency))
                after = cpu_snapshot(proc.pid, settings)
                res["cpu"] = [(b - a) * 1000 / max(1, res["n"]) for a, b in zip(before, after)]
                rounds.append((r, on, res))
                log(
                    f"round {r} analytics {'on ' if on else 'off'}: {res['qps']:.0f} QPS, "
                    f"p50 {res['p50']:.1f} ms"
                )
                if on:
                    s, drain = wait_drained(args.port)
                    with connect(settings.database_url) as conn:
                        rows = conn.execute(
                            "SELECT count(*) FROM analytics_searches WHERE at >= %s",
                            (started,),
                        ).fetchone()[0]
                    writer_rows.append((r, warm + res["n"], s, rows, drain))
            finally:
                halt(proc)

    def show() -> None:
        table(
            f"Search QPS, analytics on vs off: {args.requests:,} warm text searches a round "
            f"(64 texts, k 10, embeddings cached) at {args.concurrency} clients, "
            f"{args.rows:,} synthetic rows; the API restarted for each round with "
            f"FASHION_ANALYTICS=1 / 0, alternating; {os.cpu_count()} CPUs shared by the API, "
            "PostgreSQL and the load generator",
            [
                "round",
                "analytics",
                "searches",
                "QPS",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "errors",
                "CPU ms/search: API",
                "PostgreSQL",
                "load generator",
            ],
            [
                (
                    r,
                    "on" if on else "off",
                    f"{res['n']:,}",
                    f"{res['qps']:.0f}",
                    f"{res['p50']:.1f}",
                    f"{res['p95']:.1f}",
                    f"{res['p99']:.1f}",
                    res["errors"],
                    f"{res['cpu'][0]:.2f}",
                    f"{res['cpu'][1]:.2f}",
                    f"{res['cpu'][2]:.2f}",
                )
                for r, on, res in rounds
            ],
            left=2,
        )
        on = statistics.median(res["qps"] for _, o, res in rounds if o)
        off = statistics.median(res["qps"] for _, o, res in rounds if not o)
        api_on = statistics.median(res["cpu"][0] for _, o, res in rounds if o)
        api_off = statistics.median(res["cpu"][0] for _, o, res in rounds if not o)
        print(
            f"\nmedian QPS: on {on:.0f}, off {off:.0f}; on / off = {on / off:.3f} "
            f"(target >= 0.95: {mark(on / off >= 0.95)}); API CPU ms a search (median): "
            f"on {api_on:.2f}, off {api_off:.2f}"
        )
        table(
            "The analytics writer after each 'on' round (searches sent = warm-up + measured; "
            "every one must be written)",
            [
                "round",
                "searches sent",
                "offered",
                "written",
                "dropped",
                "rejected",
                "retries",
                "rows in PostgreSQL",
                "drained in s",
                "all recorded",
            ],
            [
                (
                    r,
                    f"{sent:,}",
                    f"{s['offered']:,}",
                    f"{s['written']:,}",
                    s["dropped"],
                    s["rejected"],
                    s["retries"],
                    f"{rows:,}",
                    f"{drain:.2f}",
                    mark(s["written"] == sent == rows and s["dropped"] == 0),
                )
                for r, sent, s, rows, drain in writer_rows
            ],
        )

    REPORT.append(show)


# --- 2 and 3: events --------------------------------------------------------------------
def search_ids(port: int, count: int, seed: int) -> list[tuple[str, list[int]]]:
    """``count`` searches of k 24: (search_id token, the page's product ids)."""
    texts = bench_api.query_texts(64, seed, tag=f"ids{seed}-")
    raws = [
        raw_request(
            "POST", "/v1/search", port, json.dumps({"text": texts[i % 64], "k": 24}).encode()
        )
        for i in range(count)
    ]
    out = []
    for status, _, body, _ in asyncio.run(lean(port, raws, 8)):
        if status == 200:
            data = json.loads(body)
            page = [r["id"] for r in data["results"]]
            if page and data.get("search_id"):
                out.append((data["search_id"], page))
    return out


KINDS = ["click"] * 7 + ["add_to_cart"] * 2 + ["purchase"]


def event_batches(
    port: int, searches: list[tuple[str, list[int]]], per_id: int, batch: int
) -> list[bytes]:
    """``per_id`` batches of ``batch`` events for each search (round-robin over the
    searches), each event a product of the page at its position."""
    out = []
    for round_ in range(per_id):
        for j, (token, page) in enumerate(searches):
            events = []
            for e in range(batch):
                pos = 1 + (round_ * batch + e) % len(page)
                events.append(
                    {
                        "search_id": token,
                        "product_id": page[pos - 1],
                        "position": pos,
                        "type": KINDS[(j + e) % len(KINDS)],
                    }
                )
            body = json.dumps({"events": events, "session_id": f"bench-session-{j:06d}"})
            out.append(raw_request("POST", "/v1/events", port, body.encode()))
    return out


def responses(results: list) -> tuple[int, int, Counter]:
    accepted = dropped = 0
    errors: Counter = Counter()
    for status, _, body, _ in results:
        if status == 202:
            data = json.loads(body)
            accepted += data["accepted"]
            dropped += data["dropped"]
        else:
            errors[status] += 1
    return accepted, dropped, errors


def section_ingest(args, settings, proc) -> None:
    per_id = min(args.per_id, MAX_PER_SEARCH // args.batch)
    searches = search_ids(args.port, args.ids, seed=1)
    raws = event_batches(args.port, searches, per_id, args.batch)
    ids = [search_uuid(t) for t, _ in searches]
    before, _ = wait_drained(args.port)  # the searches' own rows written first
    cpu0 = cpu_snapshot(proc.pid, settings)

    async def run() -> tuple[list, float, dict, float]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_queue(args.port, stop))
        t = time.perf_counter()
        results = await lean(args.port, raws, args.ingest_clients)
        http_s = time.perf_counter() - t
        stop.set()
        watched = await watcher
        return results, http_s, watched, t

    results, http_s, watched, t0 = asyncio.run(run())
    after, _ = wait_drained(args.port)
    e2e_s = time.perf_counter() - t0
    cpu1 = cpu_snapshot(proc.pid, settings)
    accepted, dropped, errors = responses(results)
    d = delta(after, before)
    rows = count_rows(settings, "analytics_events", ids)
    lat = [ms for status, ms, _, _ in results if status == 202]
    sent = len(raws) * args.batch
    cpu = [(b - a) * 1000 / max(1, accepted) * 1000 for a, b in zip(cpu0, cpu1)]
    log(f"ingest: {accepted:,} accepted in {http_s:.1f}s ({accepted / http_s:,.0f}/s)")

    def show() -> None:
        table(
            f"Event ingestion: {len(raws):,} batches of {args.batch} events ({sent:,} events) "
            f"for {len(searches)} search ids (k 24, {per_id * args.batch} events each), "
            f"{args.ingest_clients} closed-loop clients (lean HTTP/1.1); writer queue "
            f"{after.get('capacity', 0):,} rows; {os.cpu_count()} CPUs shared",
            [
                "events sent",
                "accepted",
                "dropped (queue full)",
                "HTTP errors",
                "HTTP s",
                "accepted events/s (HTTP)",
                "batch p50 ms",
                "batch p99 ms",
                "end-to-end s",
                "events/s end to end",
                "peak queued",
                "target >= 2,000/s",
            ],
            [
                (
                    f"{sent:,}",
                    f"{accepted:,}",
                    dropped,
                    sum(errors.values()),
                    f"{http_s:.2f}",
                    f"{accepted / http_s:,.0f}",
                    f"{pct(lat, 50):.1f}",
                    f"{pct(lat, 99):.1f}",
                    f"{e2e_s:.2f}",
                    f"{accepted / e2e_s:,.0f}",
                    f"{watched['peak']:,}",
                    mark(accepted / e2e_s >= 2000 and accepted / http_s >= 2000),
                )
            ],
            left=0,
        )
        table(
            "Event ingestion, nothing lost: the writer's counters over the run, and the rows "
            "in PostgreSQL for those search ids (counted as the pipeline role); CPU ms per "
            "1,000 events accepted",
            [
                "accepted",
                "offered",
                "written",
                "dropped",
                "rejected",
                "retries",
                "rows in PostgreSQL",
                "lost",
                "CPU: API",
                "PostgreSQL",
                "load generator",
            ],
            [
                (
                    f"{accepted:,}",
                    f"{d['offered']:,}",
                    f"{d['written']:,}",
                    d["dropped"],
                    d["rejected"],
                    d["retries"],
                    f"{rows:,}",
                    accepted - rows,
                    f"{cpu[0]:.0f}",
                    f"{cpu[1]:.0f}",
                    f"{cpu[2]:.0f}",
                )
            ],
            left=0,
        )
        if errors:
            print(f"\nHTTP errors by status: {dict(errors)}")

    REPORT.append(show)


def section_restart(args, settings) -> None:
    batches = int(args.rate * args.send_s / args.batch)
    per_id = MAX_PER_SEARCH // args.batch
    searches = search_ids(args.port, -(-batches // per_id), seed=2)
    raws = event_batches(args.port, searches, per_id, args.batch)[:batches]
    ids = [search_uuid(t) for t, _ in searches]
    before, _ = wait_drained(args.port)
    timings: dict[str, float] = {}

    def restart() -> None:
        t = time.perf_counter()
        embedded.stop(settings)
        timings["stop"] = time.perf_counter() - t
        t2 = time.perf_counter()
        embedded.start(settings)
        timings["start"] = time.perf_counter() - t2
        timings["down"] = time.perf_counter() - t

    async def run() -> tuple[list, dict]:
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_queue(args.port, stop, every=0.1))

        async def restarter() -> None:
            await asyncio.sleep(args.restart_after)
            log("restarting PostgreSQL")
            await asyncio.to_thread(restart)
            log(f"PostgreSQL back after {timings['down']:.1f}s")

        results, _ = await asyncio.gather(
            lean(args.port, raws, 4, per_second=args.rate / args.batch), restarter()
        )
        stop.set()
        return results, await watcher

    t0 = time.perf_counter()
    results, watched = asyncio.run(run())
    send_s = time.perf_counter() - t0
    after, drain_s = wait_drained(args.port, timeout=300)
    accepted, dropped, errors = responses(results)
    d = delta(after, before)
    rows = count_rows(settings, "analytics_events", ids)
    log(f"restart: {accepted:,} accepted, {rows:,} rows found")

    def show() -> None:
        table(
            f"PostgreSQL restarted under load: {len(raws) * args.batch:,} events in batches of "
            f"{args.batch} at {args.rate:,.0f}/s for {send_s:.1f}s ({len(searches)} search ids); "
            f"the server (pg_ctl stop -m fast, then start) restarted {args.restart_after:.0f}s "
            f"in: stopped in {timings.get('stop', 0):.1f}s, started in "
            f"{timings.get('start', 0):.1f}s; then the writer drains",
            [
                "accepted",
                "dropped",
                "HTTP errors",
                "peak queued",
                "writer retries",
                "written",
                "rejected",
                "rows in PostgreSQL",
                "drained after sending, s",
                "lost",
                "0 lost",
            ],
            [
                (
                    f"{accepted:,}",
                    dropped,
                    sum(errors.values()),
                    f"{watched['peak']:,}",
                    d["retries"],
                    f"{d['written']:,}",
                    d["rejected"],
                    f"{rows:,}",
                    f"{drain_s:.1f}",
                    accepted - rows,
                    mark(d["written"] == rows == accepted and dropped == 0),
                )
            ],
            left=0,
        )
        print(f"\nwriter's last error: {after.get('last_error')}")

    REPORT.append(show)


# --- 4. interleaving --------------------------------------------------------------------------
def prepare_real(rows: int):
    """The real-products bench database with a live index of ``rows`` offline products
    (reused when it matches), as benchmarks/bench_fuzz.py prepares its own."""
    from services.pipeline.reindex import run_reindex  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    settings = use_bench_database(REAL_DB)
    with connect(settings.database_url) as conn:
        live = live_version(conn)
    if live is None or live.row_count != rows:
        t = time.perf_counter()
        report = run_reindex(source="offline", size=rows, shard_size=rows)
        if report["status"] != "success":
            raise RuntimeError(f"indexing failed: {report.get('error')}")
        log(
            f"live index v{report['version']}: {rows} offline products ({time.perf_counter() - t:.0f}s)"
        )
    else:
        log(f"reusing live index v{live.id} ({rows} offline products)")
    return settings


def checkpoints(planned: int) -> list[int]:
    """Where p is shown: a quarter, half, three quarters of the planned impressions, and
    the planned number (250, 500, 750, 1000 for 1,000)."""
    return sorted({max(1, planned * q // 4) for q in (1, 2, 3, 4)})


def impressions_needed(wins: int, losses: int, impressions: int) -> float:
    """Informational: the impressions a fixed-horizon sign test at p < 0.01 needs for 80 %
    power if A's share of the decided impressions and the share decided were as observed
    (normal approximation)."""
    decided = wins + losses
    if not decided or wins == losses:
        return float("inf")
    q = wins / decided
    z_alpha, z_power = 2.5758, 0.8416  # two-sided 0.01; power 0.80
    n = ((z_alpha * 0.5 + z_power * (q * (1 - q)) ** 0.5) / (q - 0.5)) ** 2
    return n * impressions / decided


def run_experiment(settings, client, port, queries, name, arm_a, arm_b, seed, args) -> dict:
    with connect(settings.database_url, autocommit=True) as conn:
        exp = store.start_experiment(conn, name, arm_a, arm_b, 1.0, args.searches)
    try:
        time.sleep(TTL_S)  # the API takes a started experiment within its TTL
        t = time.perf_counter()
        rep = simulate(
            client,
            queries,
            searches=args.searches,
            seed=seed,
            sessions=args.sessions,
            k=args.sim_k,
            clients=args.sim_clients,
        )
        sim_s = time.perf_counter() - t
        wait_drained(port)
        with connect(settings.database_url) as conn:
            per = store.impression_credits(conn, exp.id)
            out = store.total(store.experiment_outcomes(conn, exp.id))
    finally:
        with connect(settings.database_url, autocommit=True) as conn:
            store.stop_experiment(conn, name)
    wins = losses = 0
    marks = checkpoints(args.searches)
    at: dict[int, float] = {}
    first = None
    history = []
    for n, (a, b) in enumerate(per, start=1):
        wins += a > b
        losses += b > a
        p = sign_test(wins, losses)
        history.append(p)
        if first is None and p < 0.01:
            first = n
        if n in marks:
            at[n] = p
    held = None  # the count from which p stayed below 0.01 to the end
    for n in range(len(history), 0, -1):
        if history[n - 1] >= 0.01:
            break
        held = n
    log(
        f"{name}: {out.impressions} impressions, {out.wins}/{out.losses}/{out.ties}, "
        f"p {sign_test(out.wins, out.losses):.2g} ({sim_s:.0f}s)"
    )
    return {
        "seed": seed,
        "out": out,
        "p": sign_test(out.wins, out.losses),
        "at": at,
        "first": first,
        "held": held,
        "report": rep,
        "sim_s": sim_s,
        "replayed": (wins, losses, len(per)),
        "verdict": verdict(out.wins, out.losses, out.impressions, args.searches),
    }


def offline_aa(client, queries, runs: int) -> tuple[int, int]:
    """As tests/test_experiments.py: 150 real rankings (k 10) interleaved with themselves
    and clicked by the simulator's shopper, ``runs`` seeds; how many stay at p > 0.05."""
    rng = random.Random(5)
    pages = []
    for _ in range(150):
        q, relevant = queries[rng.randrange(len(queries))]
        resp = client.post("/v1/search", json={"text": q.text, "k": 10})
        resp.raise_for_status()
        pages.append(([r["id"] for r in resp.json()["results"]], relevant))
    quiet = sum(p > 0.05 for p in a_a_p_values(pages, range(runs)))
    return quiet, runs


def experiment_cost(settings, port, queries, stamp: str, args) -> dict:
    """Warm searches (the same texts, k ``--sim-k``) in the experiment (an X-Session-Id:
    traffic 1.0 takes every session) and out of it (no session id), alternating, one at a
    time."""
    texts = [q.text for q, _ in queries[:40]]
    name = f"bench-cost-{stamp}"
    inside = {"X-Session-Id": "bench-cost-session"}

    def raw(text: str, headers: dict | None) -> bytes:
        body = json.dumps({"text": text, "k": args.sim_k}).encode()
        return raw_request("POST", "/v1/search", port, body, headers)

    with connect(settings.database_url, autocommit=True) as conn:
        store.start_experiment(conn, name, {"alpha": 0.5}, {"alpha": 0.0}, 1.0, 10**6)
    try:
        time.sleep(TTL_S)
        asyncio.run(lean(port, [raw(t, h) for t in texts for h in (inside, None)], 1))  # warm
        reqs = []
        for i in range(args.cost_searches):
            t = texts[i % len(texts)]
            reqs += [raw(t, inside), raw(t, None)] if i % 2 == 0 else [raw(t, None), raw(t, inside)]
        results = asyncio.run(lean(port, reqs, 1))
    finally:
        with connect(settings.database_url, autocommit=True) as conn:
            store.stop_experiment(conn, name)
    groups: dict[str, list] = {"in": [], "out": []}
    for i, res in enumerate(results):
        j = i // 2
        first_in = j % 2 == 0
        is_in = (i % 2 == 0) == first_in
        groups["in" if is_in else "out"].append(res)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r[0] == 200]
        lat = [r[1] for r in ok]
        out[key] = {
            "n": len(rs),
            "errors": len(rs) - len(ok),
            "p50": pct(lat, 50),
            "p95": pct(lat, 95),
            "db": pct([r[3].get("db", float("nan")) for r in ok], 50),
            "interleaved": sum(b"interleaved" in r[2] for r in ok),
        }
    return out


def section_interleave(args) -> None:
    settings = prepare_real(args.real_rows)
    with connect(settings.database_url) as conn:
        products = list(iter_products(conn))
        running = store.running_experiment(conn)
    if running is not None:  # left by an interrupted run
        with connect(settings.database_url, autocommit=True) as conn:
            store.stop_experiment(conn, running.name)
    queries = text_queries(products, seed=0)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")  # names: ^[a-z0-9][a-z0-9_.-]{0,63}$
    proc = serve(args.port, args.torch_threads, True, "interleave")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{args.port}", timeout=120) as client:
            ab = [
                run_experiment(
                    settings,
                    client,
                    args.port,
                    queries,
                    f"bench-ab-{stamp}-s{seed}",
                    {"alpha": 0.5},
                    {"alpha": 0.0},
                    seed,
                    args,
                )
                for seed in args.seed_list
            ]
            aa = [
                run_experiment(
                    settings,
                    client,
                    args.port,
                    queries,
                    f"bench-aa-{stamp}-s{seed}",
                    {"alpha": 0.5},
                    {"alpha": 0.5},
                    seed,
                    args,
                )
                for seed in args.aa_seed_list
            ]
            quiet, runs = offline_aa(client, queries, args.offline_runs)
            log(f"offline A/A: {quiet} of {runs} at p > 0.05")
            cost = experiment_cost(settings, args.port, queries, stamp, args)
    finally:
        halt(proc)

    def p_at(res: dict, n: int) -> str:
        return f"{res['at'][n]:.2g}" if n in res["at"] else "-"

    def show() -> None:
        common = (
            f"{args.real_rows:,} real offline products, the simulator's generated text queries "
            f"({len(queries)} with a relevant product), k {args.sim_k}, {args.sessions} "
            f"sessions, {args.sim_clients} client threads, position-biased clicks (eta 1, "
            "attractiveness 0.8) on products relevant by catalogue metadata; traffic 1.0, "
            f"planned {args.searches} impressions (the stop rule reads p once, there)"
        )
        table(
            f"Interleaving power, A = alpha 0.5 against B = alpha 0: {common}. p = two-sided "
            "sign test over the impressions recorded so far, in the order they were recorded; "
            "decided = wins + losses; the impressions a fixed-horizon test at p < 0.01 would "
            "need for 80 % power at the observed shares (normal approximation) are "
            "informational",
            [
                "seed",
                "impressions",
                "clicked",
                "wins A",
                "losses A",
                "ties",
                *(f"p @ {n}" for n in checkpoints(args.searches)),
                "verdict (stop rule)",
                "first n with p < 0.01",
                "p < 0.01 from n on",
                "A's share of decided",
                "impressions for 80 % power (est.)",
                "sim s",
            ],
            [
                (
                    r["seed"],
                    r["out"].impressions,
                    r["out"].clicked,
                    r["out"].wins,
                    r["out"].losses,
                    r["out"].ties,
                    *(p_at(r, n) for n in checkpoints(args.searches)),
                    r["verdict"],
                    r["first"] or "-",
                    r["held"] or "-",
                    f"{r['out'].wins / max(1, r['out'].wins + r['out'].losses):.3f}",
                    f"{impressions_needed(r['out'].wins, r['out'].losses, r['out'].impressions):,.0f}",
                    f"{r['sim_s']:.0f}",
                )
                for r in ab
            ],
            left=1,
        )
        detected = all(r["p"] < 0.01 and r["out"].wins > r["out"].losses for r in ab)
        print(
            f"\nA (alpha 0.5) detected at p < 0.01 at {args.searches} impressions in "
            f"{sum(r['p'] < 0.01 and r['out'].wins > r['out'].losses for r in ab)} of {len(ab)} "
            f"seeds: {mark(detected)}"
        )
        if not aa:
            print("\nA/A experiments: none run (--aa-seeds empty)")
        else:
            table(
                f"A/A (alpha 0.5 twice): {common}",
                ["seed", "impressions", "clicked", "wins A", "losses A", "ties", "p", "verdict"],
                [
                    (
                        r["seed"],
                        r["out"].impressions,
                        r["out"].clicked,
                        r["out"].wins,
                        r["out"].losses,
                        r["out"].ties,
                        f"{r['p']:.2g}",
                        r["verdict"],
                    )
                    for r in aa
                ],
                left=1,
            )
        print(
            f"\nA/A, offline replays (tests/test_experiments.py: 150 real rankings of k 10 "
            f"interleaved with themselves, {runs} seeds): {quiet} of {runs} at p > 0.05 = "
            f"{quiet / runs:.1%} (target >= 95 %: {mark(quiet / runs >= 0.95)}); experiments "
            f"above at p > 0.05: {sum(r['p'] > 0.05 for r in aa)} of {len(aa)}"
        )
        errors = sum(sum(r["report"].errors.values()) for r in ab + aa)
        interleaved = sum(r["report"].interleaved for r in ab + aa)
        print(
            f"simulator: {interleaved:,} of {sum(r['report'].searches for r in ab + aa):,} "
            f"searches interleaved, HTTP errors {errors}"
        )
        table(
            f"What an experiment costs a search (two fused statements instead of one): "
            f"{args.cost_searches} warm text searches (k {args.sim_k}) in an experiment "
            "(alpha 0.5 vs 0, X-Session-Id sent) and as many out of it (no session id), "
            "alternating, one client",
            [
                "searches",
                "n",
                "interleaved",
                "errors",
                "p50 ms",
                "p95 ms",
                "Server-Timing db p50 ms",
            ],
            [
                (
                    key,
                    c["n"],
                    c["interleaved"],
                    c["errors"],
                    f"{c['p50']:.2f}",
                    f"{c['p95']:.2f}",
                    f"{c['db']:.2f}",
                )
                for key, c in cost.items()
            ],
        )
        print(
            f"\nin / out: p50 x{cost['in']['p50'] / cost['out']['p50']:.2f}, "
            f"database time x{cost['in']['db'] / cost['out']['db']:.2f}"
        )

    REPORT.append(show)


# --- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qps", action="store_true", help="1. search QPS, analytics on vs off")
    p.add_argument("--ingest", action="store_true", help="2. event ingestion")
    p.add_argument("--restart", action="store_true", help="3. PostgreSQL restarted under load")
    p.add_argument("--interleave", action="store_true", help="4. interleaving power and A/A")
    p.add_argument("--quick", action="store_true", help="a smaller run (fewer requests, seeds)")
    p.add_argument("--rows", type=int, default=10_000, help="synthetic rows (sections 1-3)")
    p.add_argument("--distinct-names", type=int, default=4000)
    p.add_argument("--rounds", type=int, help="on/off rounds (3; quick 1)")
    p.add_argument("--requests", type=int, help="searches a round (1,500; quick 500)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--ids", type=int, help="search ids for ingestion (300; quick 100)")
    p.add_argument("--per-id", type=int, help="batches per search id (4; at most 300 events)")
    p.add_argument("--batch", type=int, default=50, help="events a batch (50)")
    p.add_argument("--ingest-clients", type=int, default=8)
    p.add_argument("--rate", type=float, default=1000.0, help="events/s during the restart")
    p.add_argument("--send-s", type=float, help="seconds of events around the restart (20)")
    p.add_argument("--restart-after", type=float, help="seconds before the restart (5)")
    p.add_argument("--real-rows", type=int, default=2000, help="offline products (section 4)")
    p.add_argument("--searches", type=int, help="simulated searches an experiment (2,000)")
    p.add_argument("--seeds", help="A/B seeds (1,2,3; quick 1)")
    p.add_argument("--aa-seeds", help="A/A seeds (1,2,3; quick 1)")
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--sim-k", type=int, default=10)
    p.add_argument("--sim-clients", type=int, default=4)
    p.add_argument("--offline-runs", type=int, default=200)
    p.add_argument("--cost-searches", type=int, help="searches in / out of an experiment (200)")
    p.add_argument("--port", type=int, default=8767)
    p.add_argument("--torch-threads", type=int, default=1)
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.seed_list = [int(s) for s in args.seeds.split(",") if s]
    args.aa_seed_list = [int(s) for s in args.aa_seeds.split(",") if s]
    chosen = {k for k in ("qps", "ingest", "restart", "interleave") if getattr(args, k)}
    chosen = chosen or {"qps", "ingest", "restart", "interleave"}

    command = shlex.join(
        ["python", "benchmarks/bench_analytics.py", *(sys.argv[1:] if argv is None else argv)]
    )
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = "?"
    started = datetime.now(UTC)
    t_all = time.perf_counter()
    print(f"bench_analytics: sections {', '.join(sorted(chosen))}", flush=True)
    try:
        if "qps" in chosen:
            print("1. search QPS, analytics on vs off", flush=True)
            section_qps(args)
        if chosen & {"ingest", "restart"}:
            settings = synthetic(args)
            proc = serve(args.port, args.torch_threads, True, "events")
            try:
                if "ingest" in chosen:
                    print("2. event ingestion", flush=True)
                    section_ingest(args, settings, proc)
                if "restart" in chosen:
                    print("3. PostgreSQL restarted under load", flush=True)
                    section_restart(args, settings)
            finally:
                halt(proc)
        if "interleave" in chosen:
            print("4. interleaving power and A/A", flush=True)
            section_interleave(args)
    finally:
        print(
            f"\n`{command}` — {started:%Y-%m-%d %H:%M} UTC, commit {commit}, "
            f"{os.cpu_count()} CPUs (shared by the API, PostgreSQL and the load generator), "
            f"{time.perf_counter() - t_all:.0f}s in all"
        )
        for show in REPORT:
            show()
    return 0


if __name__ == "__main__":
    sys.exit(main())
