"""Load and fault benchmark: 64 clients of mixed traffic for 60 s, PostgreSQL restarted midway.

    .venv/bin/python benchmarks/bench_load_fault.py                     # start the API, full run
    .venv/bin/python benchmarks/bench_load_fault.py --clients 16 --duration 20
    .venv/bin/python benchmarks/bench_load_fault.py --url http://127.0.0.1:8000  # running API
    .venv/bin/python benchmarks/bench_load_fault.py --no-restart        # the same load, no fault

What it does:
1. Reads query material from the LIVE index of the configured database (through
   services.store): the evaluation's text queries and the catalogue's product names give the
   words, real catalogue photos give the image queries (synthetic JPEGs if it has none).
2. Starts the API (``fashion-search serve``, as bench_api does) unless ``--url`` names a
   running one, and warms the repeated queries and the photos into its caches.
3. ``--clients`` closed-loop clients (asyncio + httpx, one event loop: 64 coroutines cost
   little CPU next to the server's) send for ``--duration`` seconds a fixed mix of
   ``--mix`` (default 45 % unseen text, 35 % repeated text, 10 % image, 10 % image + text):
   unseen texts are catalogue / evaluation words with a colour and a serial number, so none
   repeats and both encoders run; repeated texts are 8 evaluation queries (embedding cache
   hits); image queries upload one of 32 real photos (multipart), image + text adds an
   unseen text to the photo.
4. At ``duration / 2`` it runs ``fashion-search db stop`` then ``fashion-search db start``
   (embedded server only; skipped with a message when DATABASE_URL names an external one)
   and records the outage: commands issued / returned, the PostgreSQL port closed / open
   again (polled every 50 ms), the first 200 after the database is back. The two ``db``
   processes load the CLI before the load starts and wait for a line on stdin (loading it
   takes seconds of CPU on loaded cores), so each command runs the moment it is due. The
   load goes on past ``--duration`` (60 s at most) until that 200 arrives.
5. Prints requests per kind, responses by status, p50/p95/p99 latency per kind outside the
   outage window and over all requests, recovery time, API RSS (psutil, the server's pid;
   found from the port when the server is external) and the live index's row count before
   and after (read through services.store).

Fails (exit 1) on: any 5xx other than 503, a transport error (connection reset, timeout), a
503 without Retry-After, rows lost from the live index, no 200 after the database is back,
or a failed ``db`` command. The load generator shares the machine's cores with the API and
PostgreSQL; its own CPU use is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import random
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psutil
from bench_api import jpeg, start_server  # the API process and synthetic JPEGs, as bench_api
from bench_search import COLOURS, pct

from evaluation.queries import TEXT_FAMILIES, generate_queries
from services.config import get_settings
from services.store import embedded
from services.store import index_versions as iv
from services.store import products as store_products
from services.store.db import connect

KINDS = ("unseen", "repeated", "image", "image_text")
DEFAULT_MIX = "unseen=45,repeated=35,image=10,image_text=10"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    kind: str
    start: float  # seconds since the load began
    end: float
    status: int  # 0: transport error
    retry_after: bool = False
    error: str = ""

    @property
    def outcome(self) -> str:
        """The status code, or the transport error's class."""
        return str(self.status) if self.status else f"transport error ({self.error.split(':')[0]})"


@dataclass
class Outage:
    stop_issued: float | None = None
    stop_returned: float | None = None
    start_issued: float | None = None
    start_returned: float | None = None  # "the database is back up"
    port_closed: float | None = None
    port_open: float | None = None
    failed: str = ""
    log: list[str] = field(default_factory=list)

    @property
    def back(self) -> float | None:
        """When the database is back: its port reopened (or, unseen, `db start` returned)."""
        return self.port_open if self.port_open is not None else self.start_returned


# --- query material ---------------------------------------------------------------------


@dataclass
class Material:
    version_id: int
    rows: int
    words: list[str]
    repeated: list[str]
    images: list[bytes]
    real_images: bool


def live_version(conn) -> iv.IndexVersion:
    version = iv.live_version(conn)
    if version is None:
        raise SystemExit("no live index: run `make run` or `fashion-search index` first")
    return version


def live_rows() -> tuple[int, int]:
    """(live version id, rows in its table), counted through services.store."""
    with connect() as conn:
        version = live_version(conn)
        return version.id, iv.row_count(conn, version.id)


def load_material(seed: int, n_images: int = 32, n_repeated: int = 8) -> Material:
    """Words, repeated texts and photos from the live index (see the module docstring)."""
    rng = random.Random(seed)
    with connect() as conn:
        version = live_version(conn)
        meta = iv.product_metadata(conn, version.id)
        names = [name for _, name in iv.product_names(conn, version.id) if name]
        with_image = [int(p["id"]) for p in meta if p.get("has_image")]
        ids = rng.sample(with_image, min(n_images, len(with_image)))
        found = store_products.names_and_images(conn, ids) if ids else {}
        rows = iv.row_count(conn, version.id)
    queries = [q.text for q in generate_queries(meta, seed=0, families=TEXT_FAMILIES).queries]
    words = sorted(
        {w for text in queries + names for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3}
    )
    images = [img for _, img in found.values() if img]
    real = bool(images)
    if not real:  # a catalogue without photos: bench_api's synthetic JPEGs
        images = [jpeg(seed * 1000 + i) for i in range(n_images)]
    return Material(
        version_id=version.id,
        rows=rows,
        words=words,
        repeated=rng.sample(queries, min(n_repeated, len(queries))),
        images=images,
        real_images=real,
    )


def parse_mix(text: str) -> list[str]:
    """``unseen=45,...`` -> one cycle of kinds in those exact proportions (shuffled)."""
    weights = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        if kind.strip() not in KINDS:
            raise SystemExit(f"unknown kind {kind!r} in --mix; known: {', '.join(KINDS)}")
        weights[kind.strip()] = int(weight)
    g = math.gcd(*(w for w in weights.values() if w))
    cycle = [k for k, w in weights.items() for _ in range(w // g)]
    random.Random(0).shuffle(cycle)
    return cycle


class Traffic:
    """Request kwargs for each kind; unseen texts never repeat (a serial number in each)."""

    def __init__(self, material: Material, mix: list[str], seed: int):
        self.m = material
        self.rng = random.Random(seed)
        self.serial = itertools.count(1)
        self.slots = itertools.cycle(mix)

    def unseen_text(self) -> str:
        w1, w2 = self.rng.sample(self.m.words, 2)
        return f"{self.rng.choice(COLOURS).lower()} {w1} {w2} {next(self.serial)}"

    def next(self) -> tuple[str, dict]:
        kind = next(self.slots)
        if kind == "unseen":
            return kind, {"json": {"text": self.unseen_text(), "k": 10}}
        if kind == "repeated":
            return kind, {"json": {"text": self.rng.choice(self.m.repeated), "k": 10}}
        files = {"image": ("q.jpg", self.rng.choice(self.m.images), "image/jpeg")}
        data = {"k": "10"}
        if kind == "image_text":
            data["text"] = self.unseen_text()
        return kind, {"files": files, "data": data}


# --- the server process ---------------------------------------------------------------


def server_pid(port: int) -> int | None:
    """The pid listening on 127.0.0.1:``port`` (an API this script did not start)."""
    for c in psutil.net_connections(kind="tcp"):
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return c.pid
    return None


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of the server and its children, MiB."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs) / 2**20
    except psutil.Error:
        return None


def db_command(action: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "db", action],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=180,
    )


# --- the load ---------------------------------------------------------------------------


def port_open(port: int) -> bool:
    """Whether 127.0.0.1:``port`` accepts a TCP connection (a plain blocking socket)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


async def port_watch(port: int, t0: float, outage: Outage) -> None:
    """Record when the PostgreSQL port closes and opens again (polled every 50 ms from the
    moment ``db stop`` is issued, from a thread, outside the clients' event loop; an empty
    connection leaves nothing in the server's log)."""
    while outage.port_open is None:
        up = await asyncio.to_thread(port_open, port)
        now = time.perf_counter() - t0
        if not up and outage.port_closed is None:
            outage.port_closed = now
        elif up and outage.port_closed is not None:
            outage.port_open = now
        await asyncio.sleep(0.05)


# `fashion-search db <action>` with its imports done ahead: the process loads the CLI (seconds
# of CPU on loaded cores), says "ready", and runs the command when a line arrives on stdin.
_ARMED = (
    "import sys; from services.cli import build_parser, main; build_parser(); "
    "print('ready', flush=True); sys.stdin.readline(); sys.exit(main(sys.argv[1:]))"
)


async def arm_db_command(action: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", _ARMED, "db", action),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    if (await proc.stdout.readline()).strip() != b"ready":
        _, err = await proc.communicate()
        raise RuntimeError(f"`fashion-search db {action}` could not start:\n{err.decode()}")
    return proc


async def restart_db(
    at: float, t0: float, outage: Outage, armed: dict[str, asyncio.subprocess.Process]
) -> None:
    """``db stop`` then ``db start`` (armed processes) at ``at`` seconds, timing each step."""
    await asyncio.sleep(max(0.0, at - (time.perf_counter() - t0)))
    watch = asyncio.create_task(port_watch(get_settings().pg_port, t0, outage))
    try:
        for action in ("stop", "start"):
            setattr(outage, f"{action}_issued", time.perf_counter() - t0)
            out, err = await armed[action].communicate(b"go\n")
            setattr(outage, f"{action}_returned", time.perf_counter() - t0)
            rc = armed[action].returncode
            first = (out or err).decode().strip().splitlines()
            outage.log.append(f"db {action} (exit {rc}): {first[0] if first else ''}")
            if rc != 0:
                outage.failed = f"`fashion-search db {action}` exited {rc}: {err.decode()}"
                return
        await asyncio.wait_for(watch, 5)
    except TimeoutError:
        pass
    finally:
        watch.cancel()


async def sample_rss(pid: int | None, peak: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        mb = await asyncio.to_thread(rss_mb, pid)
        if mb is not None:
            peak[0] = max(peak[0], mb)
        await asyncio.sleep(1.0)


async def run_load(
    url: str, traffic: Traffic, clients: int, duration: float, restart: bool, pid: int | None
) -> tuple[list[Result], Outage, float, float, float]:
    """The load (with the database restart if ``restart``): results, outage, wall seconds,
    this process's CPU seconds, peak server RSS (MiB)."""
    armed: dict[str, asyncio.subprocess.Process] = {}
    try:
        if restart:
            for action in ("stop", "start"):
                armed[action] = await arm_db_command(action)
        return await closed_loop(url, traffic, clients, duration, pid, armed)
    finally:
        for proc in armed.values():
            if proc.returncode is None:  # the load failed before the restart ran
                proc.kill()
                await proc.wait()


async def closed_loop(
    url: str,
    traffic: Traffic,
    clients: int,
    duration: float,
    pid: int | None,
    armed: dict[str, asyncio.subprocess.Process],
    grace: float = 60.0,
) -> tuple[list[Result], Outage, float, float, float]:
    """``clients`` workers, each sending its next request when the last one answered. With a
    restart (``armed``), the load goes on past ``duration`` (at most ``grace`` seconds) until
    a 200 arrives after the database is back."""
    results: list[Result] = []
    outage = Outage()
    peak = [0.0]
    recovered = [not armed]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        t0 = time.perf_counter()
        deadline = t0 + duration

        def go_on() -> bool:
            now = time.perf_counter()
            if now < deadline:
                return True
            return not (recovered[0] or outage.failed) and now < deadline + grace

        async def worker() -> None:
            while go_on():
                kind, kwargs = traffic.next()
                start = time.perf_counter() - t0
                try:
                    r = await client.post("/v1/search", **kwargs)
                    res = Result(kind, start, 0, r.status_code, "retry-after" in r.headers)
                except httpx.HTTPError as exc:
                    res = Result(kind, start, 0, 0, error=f"{type(exc).__name__}: {exc}")
                res.end = time.perf_counter() - t0
                results.append(res)
                if res.status == 200 and outage.back is not None and res.end >= outage.back:
                    recovered[0] = True

        stop = asyncio.Event()
        side = [asyncio.create_task(sample_rss(pid, peak, stop))]
        if armed:
            side.append(asyncio.create_task(restart_db(duration / 2, t0, outage, armed)))
        cpu = time.process_time()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu
        stop.set()
        await asyncio.gather(*side)  # the restart finishes even if the load ended first
    return results, outage, wall, cpu, peak[0]


def warm_up(url: str, material: Material) -> None:
    """Repeated texts and the photos into the API's embedding caches."""
    with httpx.Client(base_url=url, timeout=120) as client:
        for text in material.repeated:
            client.post("/v1/search", json={"text": text, "k": 10})
        for img in material.images:
            client.post(
                "/v1/search", files={"image": ("q.jpg", img, "image/jpeg")}, data={"k": "10"}
            )


def index_info(url: str, patience: float = 30.0) -> dict:
    """``/v1/index``; a 503 is retried for ``patience`` seconds (the pool reconnecting)."""
    deadline = time.monotonic() + patience
    while True:
        r = httpx.get(f"{url}/v1/index", timeout=30)
        if r.status_code != 503 or time.monotonic() > deadline:
            r.raise_for_status()
            return r.json()
        time.sleep(float(r.headers.get("retry-after", 1)))


# --- the report -------------------------------------------------------------------------


def quantiles(xs: list[float]) -> str:
    if not xs:
        return "      - |      - |      -"
    return f"{pct(xs, 50):>7.1f} | {pct(xs, 95):>6.1f} | {pct(xs, 99):>6.1f}"


def report(
    args,
    results: list[Result],
    outage: Outage,
    wall: float,
    cpu: float,
    restart: bool,
    rss: tuple[float | None, float | None, float | None],
    rows: tuple[tuple[int, int], tuple[int, int]],
) -> list[str]:
    """Print the tables; returns the failures."""
    failures: list[str] = []
    # The database is back when its port reopens (or, unseen, when `db start` returns); the
    # outage window runs from the first sign of the stop (the port closing or a failed
    # response) to the first 200 after the database is back.
    back = outage.back
    first_ok = min(
        (r.end for r in results if r.status == 200 and back is not None and r.end >= back),
        default=None,
    )
    opens = None
    if restart and outage.stop_issued is not None:
        signs = [r.end for r in results if r.status != 200 and r.end >= outage.stop_issued]
        if outage.port_closed is not None:
            signs.append(outage.port_closed)
        opens = min(signs, default=outage.stop_returned or outage.stop_issued)
    win = (opens, first_ok if first_ok is not None else wall) if opens is not None else None

    def in_window(r: Result) -> bool:
        return win is not None and r.start < win[1] and r.end >= win[0]

    print(
        f"\nLoad and fault benchmark: {args.clients} closed-loop clients for {wall:.1f} s, "
        f"mix {args.mix}, {os.cpu_count()} CPUs shared by the API, PostgreSQL and this load "
        f"generator (it used {cpu:.1f} s of CPU, {100 * cpu / wall:.0f} % of one core)"
    )
    last_sent = max((r.start for r in results), default=0.0)
    if restart and last_sent > args.duration:
        print(
            f"(--duration {args.duration:.0f} s: requests went on until {last_sent:.1f} s, "
            "the first 200 after the database restart)"
        )
    print("\n| kind | requests | share | 200 | 503 | 503 without Retry-After | other |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    statuses: dict[str, int] = {}
    for kind in (*KINDS, "all"):
        rs = [r for r in results if kind in ("all", r.kind)]
        ok = sum(r.status == 200 for r in rs)
        s503 = [r for r in rs if r.status == 503]
        no_ra = sum(not r.retry_after for r in s503)
        other = len(rs) - ok - len(s503)
        share = 100 * len(rs) / max(1, len(results))
        print(f"| {kind} | {len(rs)} | {share:.0f} % | {ok} | {len(s503)} | {no_ra} | {other} |")
    for r in results:
        key = r.outcome
        statuses[key] = statuses.get(key, 0) + 1
    print("\n| status | responses | in the outage window | outside it |\n|---|---:|---:|---:|")
    for key in sorted(statuses):
        inside = sum(1 for r in results if r.outcome == key and in_window(r))
        print(f"| {key} | {statuses[key]} | {inside} | {statuses[key] - inside} |")
        code = int(key) if key.isdigit() else 0
        if code == 0:
            failures.append(f"{statuses[key]} transport errors ({key})")
        elif code >= 500 and code != 503:
            failures.append(f"{statuses[key]} responses with status {code}")
    for r in [r for r in results if not r.status][:5]:
        print(f"  transport error: {r.kind} sent {r.start:.2f} s, failed {r.end:.2f} s: {r.error}")
    no_ra = sum(r.status == 503 and not r.retry_after for r in results)
    if no_ra:
        failures.append(f"{no_ra} responses 503 without Retry-After")

    print(
        "\nLatency, ms (every response, whatever its status; outside = requests that do not "
        "overlap the outage window)\n"
    )
    print(
        "| kind | outside: n | p50 | p95 | p99 | all: n | p50 | p95 | p99 | 200/s outside |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    outside_s = wall - ((win[1] - win[0]) if win else 0.0)
    for kind in (*KINDS, "all"):
        rs = [r for r in results if kind in ("all", r.kind)]
        out = [r for r in rs if not in_window(r)]
        ok_rate = sum(r.status == 200 for r in out) / max(outside_s, 1e-9)
        print(
            f"| {kind} | {len(out)} | {quantiles([1000 * (r.end - r.start) for r in out])} "
            f"| {len(rs)} | {quantiles([1000 * (r.end - r.start) for r in rs])} "
            f"| {ok_rate:.1f} |"
        )

    print("\n| event | seconds into the run |\n|---|---:|")
    if not restart:
        print("| database restart | not done |")
    else:
        events = [
            ("`db stop` issued", outage.stop_issued),
            ("outage window opens (first failed response or port closed)", opens),
            ("PostgreSQL port closed", outage.port_closed),
            ("`db stop` returned", outage.stop_returned),
            ("`db start` issued", outage.start_issued),
            ("PostgreSQL port open again: database back up", outage.port_open),
            ("`db start` returned", outage.start_returned),
            ("first 200 after the database is back (outage window closes)", first_ok),
        ]
        for name, t in events:
            print(f"| {name} | {'-' if t is None else f'{t:.2f}'} |")
        last_503 = max((r.end for r in results if r.status == 503), default=None)
        if outage.port_closed is not None and outage.port_open is not None:
            print(f"\nPostgreSQL down (port closed): {outage.port_open - outage.port_closed:.2f} s")
        if win is not None and first_ok is not None:
            print(
                f"Outage seen by clients: {win[1] - win[0]:.2f} s; first 200 {first_ok - back:.2f} s "
                f"after the database was back"
                + (
                    f" ({first_ok - outage.start_returned:+.2f} s from `db start` returning)"
                    if outage.start_returned is not None
                    else ""
                )
                + (f"; last 503 at {last_503:.2f} s" if last_503 is not None else "")
            )
        print(
            "(each `db` command's process loaded the CLI before the load began, so the "
            "issued-to-returned times are the commands' own work)"
        )
        if outage.failed:
            failures.append(outage.failed)
        elif outage.start_returned is None:
            failures.append("the database restart did not finish")
        elif first_ok is None:
            failures.append("no 200 after the database came back")

    before, peak, after = rss

    def fmt(mb: float | None) -> str:
        return "n/a" if mb is None else f"{mb:.0f}"

    print(
        f"\nAPI RSS, MiB: before {fmt(before)}, peak {fmt(peak)}, after {fmt(after)}"
        + (f" ({after - before:+.0f})" if before is not None and after is not None else "")
    )
    (v0, n0), (v1, n1) = rows
    print(
        f"Live index rows (services.store count): before v{v0} {n0:,}, after v{v1} {n1:,}: "
        f"{n0 - n1 if v0 == v1 else 'n/a'} rows lost"
    )
    if (v0, n0) != (v1, n1):
        failures.append(f"live index changed: v{v0} {n0} rows -> v{v1} {n1} rows")
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--url", help="a running API (default: start one on --port)")
    p.add_argument("--port", type=int, default=8765, help="port of the API this script starts")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--no-restart", action="store_true", help="no database restart")
    p.add_argument("--mix", default=DEFAULT_MIX, help=f"kind=weight,... (default {DEFAULT_MIX})")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    mix = parse_mix(args.mix)

    settings = get_settings()
    restart = not args.no_restart
    if restart and not settings.embedded:
        print("DATABASE_URL names an external server: the database restart is skipped")
        restart = False
    was_running = not settings.embedded or embedded.status(settings).running
    if not was_running:
        res = db_command("start")
        if res.returncode != 0:
            raise SystemExit(f"`fashion-search db start` failed: {res.stderr}")
    proc = None
    try:
        material = load_material(args.seed)
        print(
            f"live index v{material.version_id}: {material.rows:,} rows; "
            f"{len(material.words):,} words for unseen texts, {len(material.repeated)} repeated "
            f"texts, {len(material.images)} {'catalogue' if material.real_images else 'synthetic'}"
            " photos"
        )
        if args.url:
            url = args.url.rstrip("/")
            host, port = urlsplit(url).hostname, urlsplit(url).port or 80
            local = host in ("127.0.0.1", "localhost", "::1", socket.gethostname())
            pid = server_pid(port) if local else None
        else:
            log_path = settings.reports_dir / "bench_load_fault_server.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            proc = start_server(args.port, args.torch_threads, log_path)
            url, pid = f"http://127.0.0.1:{args.port}", proc.pid
        print(f"API {url} (pid {pid or 'unknown'}); warming the repeated queries and photos")
        warm_up(url, material)
        info0, rows0 = index_info(url), live_rows()
        rss0 = rss_mb(pid)
        print(
            f"load: {args.clients} clients, {args.duration:.0f} s"
            + (f", database restart at {args.duration / 2:.0f} s" if restart else "")
            + " ...",
            flush=True,
        )
        traffic = Traffic(material, mix, args.seed)
        results, outage, wall, cpu, peak = asyncio.run(
            run_load(url, traffic, args.clients, args.duration, restart, pid)
        )
        for line in outage.log:
            print(f"  {line}")
        rows1, info1 = live_rows(), index_info(url)
        rss1 = rss_mb(pid)
        failures = report(
            args, results, outage, wall, cpu, restart, (rss0, peak or None, rss1), (rows0, rows1)
        )
        if (info0["version"], info0["row_count"]) != (info1["version"], info1["row_count"]):
            failures.append(f"/v1/index changed: {info0} -> {info1}")
    finally:
        if proc is not None:
            proc.terminate()  # SIGTERM: graceful shutdown
            proc.wait(timeout=30)
        if not was_running:
            db_command("stop")  # as it was found
        elif settings.embedded and not embedded.status(settings).running:
            db_command("start")  # a restart that failed halfway
    for f in failures:
        print(f"FAIL: {f}")
    print("PASS" if not failures else "FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
