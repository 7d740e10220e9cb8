"""Load benchmark of the HTTP API: concurrent clients on loopback, QPS and p50/p95/p99.

    .venv/bin/python benchmarks/bench_api.py                  # load 44,072 rows, then measure
    .venv/bin/python benchmarks/bench_api.py --skip-load      # reuse the loaded bench index
    .venv/bin/python benchmarks/bench_api.py --rows 5000 --requests 200 --concurrency 8

What it does:
1. ``--rows N`` (default 44,072, the real catalogue's size) synthetic products go into a
   dedicated database (``fashion_bench_api`` on the configured server), never the main one:
   generated product names (brand x colour x gender x article x style), SPLADE vectors from
   the REAL offline SPLADE encoder run on those names (timed and printed), and random unit
   dense vectors of the serving CLIP's dimension. One index version is built and made live.
2. The API runs in its own process (``fashion-search serve``) against that database.
3. Closed-loop clients (httpx.AsyncClient, ``--concurrency`` at once) send text, image and
   multimodal queries: "cold" = every query distinct (encoders run), "warm" = a few queries
   repeated (the query-embedding LRU cache answers; only the SQL runs).
Closed loop: latency ~= concurrency / QPS (Little's law), so p50 at 16 clients is bounded
below by 16 / throughput. The client shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from bench_db import use_bench_database
from bench_search import COLOURS, GENDERS  # one synthetic vocabulary for both benchmarks
from PIL import Image, ImageDraw

from services.config import get_settings
from services.store import hnsw, products
from services.store import index_versions as iv
from services.store.db import connect

BENCH_DB = "fashion_bench_api"
BRANDS = [
    "Nike",
    "Puma",
    "Adidas",
    "Roadster",
    "Wrangler",
    "Levis",
    "Fila",
    "Reebok",
    "Catwalk",
    "Baggit",
    "Fossil",
    "Titan",
    "Bata",
    "Crocs",
    "Gini and Jony",
    "United Colors of Benetton",
    "Peter England",
    "Allen Solly",
    "Jealous 21",
    "Mango",
]
ARTICLES = [
    ("Apparel", "Topwear", "Tshirts"),
    ("Apparel", "Topwear", "Shirts"),
    ("Apparel", "Topwear", "Jackets"),
    ("Apparel", "Bottomwear", "Trousers"),
    ("Apparel", "Bottomwear", "Jeans"),
    ("Apparel", "Dress", "Dresses"),
    ("Footwear", "Sandal", "Sandals"),
    ("Footwear", "Shoes", "Sports Shoes"),
    ("Footwear", "Shoes", "Casual Shoes"),
    ("Accessories", "Bags", "Handbags"),
    ("Accessories", "Watches", "Watches"),
    ("Apparel", "Innerwear", "Socks"),
]
STYLES = [
    "Solid",
    "Printed",
    "Striped",
    "Checked",
    "Slim Fit",
    "Casual",
    "Formal",
    "Sporty",
    "Textured",
    "Floral",
]
SEASONS = ["Summer", "Winter", "Fall", "Spring"]
USAGES = ["Casual", "Formal", "Sports", "Ethnic", "Party"]


def bench_settings():
    """Settings pointing at the bench database (also for the API process it starts)."""
    return use_bench_database(BENCH_DB)


def synthetic_rows(n: int, distinct_names: int, seed: int = 3) -> list[dict]:
    """``n`` products whose names come from a pool of ``distinct_names`` (metadata matches
    the name), so SPLADE encodes the pool once."""
    rng = random.Random(seed)
    pool = []
    for _ in range(min(n, distinct_names)):
        master, sub, article = rng.choice(ARTICLES)
        gender, colour = rng.choice(GENDERS), rng.choice(COLOURS)
        name = f"{rng.choice(BRANDS)} {gender} {rng.choice(STYLES)} {colour} {article}"
        pool.append((name, gender, master, sub, article, colour))
    rows = []
    for i in range(n):
        name, gender, master, sub, article, colour = pool[i % len(pool)]
        rows.append(
            {
                "id": 1_000_000 + i,
                "gender": gender,
                "masterCategory": master,
                "subCategory": sub,
                "articleType": article,
                "baseColour": colour,
                "season": rng.choice(SEASONS),
                "year": rng.randint(2010, 2019),
                "usage": rng.choice(USAGES),
                "productDisplayName": name,
                "image": None,
            }
        )
    return rows


def load(n: int, reload: bool, distinct_names: int) -> None:
    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    settings = bench_settings()
    clip, splade = load_clip(settings.dense_model), load_splade(settings.sparse_model)
    with connect(settings.database_url) as conn:
        live = iv.live_version(conn)
        if (
            live
            and not reload
            and live.row_count == n
            and (live.dense_model, live.sparse_model) == (clip.name, splade.name)
        ):
            print(f"reusing live bench index v{live.id} ({n:,} rows)")
            return
        rows = synthetic_rows(n, distinct_names)
        t = time.perf_counter()
        products.upsert_products(conn, rows, source="bench")
        print(f"products: {n:,} rows upserted in {time.perf_counter() - t:.1f}s")
        names = sorted({r["productDisplayName"] for r in rows})
        t = time.perf_counter()
        encoded = dict(zip(names, splade.encode(names, batch_size=128)))
        sec = time.perf_counter() - t
        print(
            f"SPLADE ({splade.name}): {len(names):,} distinct names encoded in {sec:.1f}s "
            f"({len(names) / sec:,.0f} names/s; all {n:,} rows distinct would take "
            f"~{n / (len(names) / sec):,.0f}s at that rate)"
        )
        rng = np.random.default_rng(0)
        dense = rng.normal(size=(n, clip.dim)).astype(np.float32)
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        vid = iv.create_version(
            conn,
            dense_model=clip.name,
            dense_dim=clip.dim,
            sparse_model=splade.name,
            sparse_dim=splade.vocab_size,
            params={"source": "bench_api synthetic", "rows": n},
        )
        t = time.perf_counter()
        for start in range(0, n, 5000):
            chunk = rows[start : start + 5000]
            iv.load_embeddings(
                conn,
                vid,
                [r["id"] for r in chunk],
                dense[start : start + 5000],
                [encoded[r["productDisplayName"]] for r in chunk],
            )
        print(f"embeddings: COPY {n:,} rows in {time.perf_counter() - t:.1f}s")
        t = time.perf_counter()
        timings = hnsw.build_indexes(conn, vid)
        print(
            f"HNSW: dense {timings['dense']:.1f}s, sparse {timings['sparse']:.1f}s "
            f"(total {time.perf_counter() - t:.1f}s)"
        )
        iv.mark_ready(conn, vid, {"by": "bench_api"})
        iv.swap_live(conn, vid)
        iv.retire_old(conn, keep_previous=0)
        print(f"bench index v{vid} live")


def start_server(
    port: int, torch_threads: int, log_path: Path, root: Path | None = None
) -> subprocess.Popen:

    env = dict(os.environ)  # DATABASE_URL / FASHION_DENSE_MODEL set by bench_settings()
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "serve",
            "--port",
            str(port),
            "--torch-threads",
            str(torch_threads),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root or Path(__file__).resolve().parent.parent,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"server not ready in time; see {log_path}")


def jpeg(seed: int) -> bytes:

    rng = random.Random(seed)
    img = Image.new("RGB", (60, 80), (245, 245, 245))
    ImageDraw.Draw(img).rectangle(
        [rng.randint(5, 20), rng.randint(5, 20), rng.randint(35, 55), rng.randint(50, 75)],
        fill=tuple(rng.randint(0, 255) for _ in range(3)),
    )
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def query_texts(count: int, seed: int, tag: str = "") -> list[str]:
    """``count`` distinct shopper-like texts (colour, style, article, gender, brand and a
    serial number, so none repeats), seeded."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(COLOURS)} {rng.choice(STYLES)} {rng.choice(ARTICLES)[2]} for "
        f"{rng.choice(GENDERS)} {rng.choice(BRANDS)} {tag}{i}"
        for i in range(count)
    ]


def make_requests(kind: str, cache: str, count: int, seed: int):
    """Request kwargs for httpx: distinct queries (cold) or 8 repeated ones (warm)."""
    distinct = count if cache == "cold" else 8
    texts = query_texts(distinct, seed, tag=f"{seed}-")
    images = [jpeg(seed * 100_000 + i) for i in range(distinct)] if kind != "text" else []
    out = []
    for i in range(count):
        j = i % distinct
        if kind == "text":
            out.append({"json": {"text": texts[j], "k": 10}})
        elif kind == "image":
            out.append(
                {"files": {"image": ("q.jpg", images[j], "image/jpeg")}, "data": {"k": "10"}}
            )
        else:
            out.append(
                {
                    "files": {"image": ("q.jpg", images[j], "image/jpeg")},
                    "data": {"text": texts[j], "k": "10"},
                }
            )
    return out


async def run_load(url: str, requests: list[dict], concurrency: int) -> dict:

    latencies: list[float] = []
    phases: dict[str, float] = {}
    errors = 0
    it = iter(requests)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def worker() -> None:
            nonlocal errors
            for kwargs in it:
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/search", **kwargs)
                    ok = r.status_code == 200
                    for part in r.headers.get("server-timing", "").split(","):
                        name, _, dur = part.strip().partition(";dur=")
                        if dur:
                            phases[name] = phases.get(name, 0.0) + float(dur)
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t) * 1000)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return summarise(latencies, wall, errors) | {
        "phases": {k: v / max(1, len(latencies)) for k, v in phases.items()}
    }


async def run_lean(port: int, bodies: list[bytes], concurrency: int) -> dict:
    """Closed-loop JSON POSTs to /v1/search over ``concurrency`` keep-alive connections,
    with a minimal HTTP/1.1 client (pre-encoded requests, Content-Length framing). The load
    generator shares the cores with the API and PostgreSQL: httpx spends ~3.7 ms of CPU a
    request here (measured with --ceiling), more than the API's own work, so the ceiling
    run uses this one, ~10x leaner, to measure the API rather than its client."""
    latencies: list[float] = []
    phases: dict[str, float] = {}
    errors = 0
    it = iter(bodies)

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for body in it:
                head = (
                    f"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                t = time.perf_counter()
                writer.write(head + body)
                status_line, *header_lines = (
                    (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                )
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", 0)))
                latencies.append((time.perf_counter() - t) * 1000)
                errors += status_line.split(" ")[1] != "200"
                for part in headers.get("server-timing", "").split(","):
                    name, _, dur = part.strip().partition(";dur=")
                    if dur:
                        phases[name] = phases.get(name, 0.0) + float(dur)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return summarise(latencies, wall, errors) | {
        "phases": {k: v / max(1, len(latencies)) for k, v in phases.items()}
    }


def summarise(latencies: list[float], wall: float, errors: int) -> dict:
    lat = sorted(latencies)
    q = statistics.quantiles(lat, n=100, method="inclusive")
    return {
        "n": len(lat),
        "qps": len(lat) / wall,
        "p50": q[49],
        "p95": q[94],
        "p99": q[98],
        "errors": errors,
    }


# --- --ceiling: the API against its own database, the same queries, one run ------------
def ceiling_texts(count: int, seed: int = 77) -> list[str]:
    return query_texts(count, seed)


def ceiling_queries(texts: list[str]) -> tuple[list, object]:
    """The SearchQuery the API runs for each text (same encoders, alpha, k, candidates)
    and the live version; encoded here, one text at a time as the API does."""
    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.search import SearchQuery  # noqa: PLC0415 - only this mode

    settings = get_settings()
    clip, splade = load_clip(settings.dense_model), load_splade(settings.sparse_model)
    with connect(settings.database_url) as conn:
        version = iv.live_version(conn)
    queries = [
        SearchQuery(
            dense=clip.encode_texts([t])[0],
            sparse=splade.encode([t])[0],
            alpha=settings.default_alpha,
            k=10,
        )
        for t in texts
    ]
    return queries, version


def run_threads(count: int, conns: list, call) -> dict:
    """``count`` calls of ``call(conn, i)`` from one thread per connection in ``conns``."""
    import threading  # noqa: PLC0415 - only this mode

    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    it = iter(range(count))

    def worker(conn) -> None:
        nonlocal errors
        while True:
            with lock:
                i = next(it, None)
            if i is None:
                return
            t = time.perf_counter()
            try:
                call(conn, i)
                ok = True
            except Exception:  # noqa: BLE001 - counted as an error, like a non-200
                ok = False
            ms = (time.perf_counter() - t) * 1000
            with lock:
                latencies.append(ms)
                errors += not ok

    threads = [threading.Thread(target=worker, args=(c,)) for c in conns]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return summarise(latencies, wall, errors)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes (postmaster and backends) on this machine."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() in ("postgres", "postmaster"):
                    out.append(int(d.name))
            except OSError:
                pass
    return out


def with_cpu(fn, server_pid: int) -> dict:
    """``fn()``'s result plus the CPU ms a request of the API process, PostgreSQL and this
    client (load generator) took: where the machine's cores went."""
    import resource  # noqa: PLC0415 - only this mode

    def snap():
        me = resource.getrusage(resource.RUSAGE_SELF)
        return (
            cpu_seconds([server_pid]),
            cpu_seconds(postgres_pids()),  # backends come and go: read both ends
            me.ru_utime + me.ru_stime,
        )

    before = snap()
    res = fn()
    after = snap()
    n = max(1, res["n"])
    res["cpu"] = {
        name: (b - a) * 1000 / n for name, a, b in zip(("api", "postgres", "client"), before, after)
    }
    return res


def ceiling(args, url: str, server_pid: int) -> list[tuple[str, int, dict]]:
    """Interleaved rounds of the three ways to run the same warm text queries."""
    from psycopg.rows import dict_row  # noqa: PLC0415 - only this mode

    from services import search  # noqa: PLC0415 - only this mode

    texts = ceiling_texts(args.ceiling_queries)
    queries, version = ceiling_queries(texts)
    db_url = get_settings().database_url

    def session_conn():
        conn = connect(db_url, autocommit=True)
        search.use_session_settings(conn)
        return conn

    # The statements, composed once by the store: the database's ceiling runs only these.
    with session_conn() as conn:
        statements = []
        for q in queries:
            with search.search_session(conn) as apply_settings:
                p = search.plan(conn, q, version)
                apply_settings(p.settings)
                statements.append((p.statement, p.params))

    def psycopg_call(conn, i: int) -> None:
        statement, params = statements[i % len(statements)]
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(statement, params, binary=True).fetchall()

    def store_call(conn, i: int) -> None:
        search.certified_search(conn, queries[i % len(queries)], version)

    http = [{"json": {"text": t, "k": 10}} for t in texts]
    bodies = [json.dumps(h["json"]).encode() for h in http]
    asyncio.run(run_load(url, http, 1))  # fill the API's embedding cache
    n = args.requests
    out = []
    # Connections open for the whole run (as the API's pool's are): a backend's CPU time
    # is read from its process, which must still exist when the counters are read.
    conns = [session_conn() for _ in range(args.concurrency)]
    for r in range(1, args.rounds + 1):
        for way, fn in (
            ("psycopg", lambda: run_threads(n, conns, psycopg_call)),
            ("store", lambda: run_threads(n, conns, store_call)),
            (
                "api",
                lambda: asyncio.run(
                    run_lean(
                        args.port, [bodies[i % len(bodies)] for i in range(n)], args.concurrency
                    )
                ),
            ),
        ):
            out.append((way, r, with_cpu(fn, server_pid)))
        print(f"  round {r} done", flush=True)
    for c in conns:
        c.close()
    return out


def print_ceiling(args, rows: list[tuple[str, int, dict]]) -> None:
    print(
        f"\nAPI vs its database: {args.ceiling_queries} warm text queries (embeddings cached), "
        f"{args.concurrency} concurrent clients, {args.requests} requests a way a round, "
        f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs shared by all"
    )
    print(
        "| way | round | QPS | p50 ms | p95 ms | p99 ms | errors "
        "| CPU ms/request: API process | PostgreSQL | load generator |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for way, r, res in rows:
        cpu = res["cpu"]
        print(
            f"| {way} | {r} | {res['qps']:.0f} | {res['p50']:.1f} | {res['p95']:.1f} "
            f"| {res['p99']:.1f} | {res['errors']} | {cpu['api']:.2f} | {cpu['postgres']:.2f} "
            f"| {cpu['client']:.2f} |"
        )
    qps = {
        w: statistics.median(res["qps"] for way, _, res in rows if way == w)
        for w in ("psycopg", "store", "api")
    }
    print(
        f"\nmedian QPS: psycopg {qps['psycopg']:.0f}, store {qps['store']:.0f}, "
        f"API {qps['api']:.0f}; API / psycopg = {qps['api'] / qps['psycopg']:.2f}"
    )
    phases: dict[str, list[float]] = {}
    for way, _, res in rows:
        for name, ms in res.get("phases", {}).items():
            phases.setdefault(name, []).append(ms)
    if phases:
        print(
            "API Server-Timing, mean ms a request (median over rounds): "
            + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in phases.items())
        )


def one_client(url: str, texts: list[str], unseen_seed: int) -> dict[str, dict]:
    """One client, one request at a time: repeated (cached) and unseen texts."""
    warm = [{"json": {"text": t, "k": 10}} for t in texts]
    cold = [{"json": {"text": f"{t} {unseen_seed}-{i}", "k": 10}} for i, t in enumerate(texts)]
    return {
        "repeated": asyncio.run(run_load(url, warm * 3, 1)),
        "unseen": asyncio.run(run_load(url, cold, 1)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=44_072)
    p.add_argument("--skip-load", action="store_true", help="use the bench index as it is")
    p.add_argument("--reload", action="store_true", help="rebuild the bench index even if present")
    p.add_argument(
        "--distinct-names",
        type=int,
        default=4000,
        help="size of the product-name pool SPLADE encodes (default 4000)",
    )
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--requests", type=int, default=400, help="per scenario")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--kinds", default="text,image,multimodal")
    p.add_argument(
        "--ceiling",
        action="store_true",
        help="the API against the same queries sent straight to PostgreSQL (psycopg, and "
        "the store's certified_search), interleaved; plus one client's p50",
    )
    p.add_argument("--ceiling-queries", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--api-root",
        type=Path,
        help="serve the API from this checkout instead (e.g. a git worktree of an older "
        "commit, to compare API versions against the same database)",
    )
    args = p.parse_args(argv)

    if not args.skip_load:
        load(args.rows, args.reload, args.distinct_names)
    else:  # the bench index as it is, at this code's schema revision
        bench_settings()
    log_path = get_settings().reports_dir / "bench_api_server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = start_server(args.port, args.torch_threads, log_path, args.api_root)
    url = f"http://127.0.0.1:{args.port}"
    rows = []
    if args.ceiling:
        try:
            results = ceiling(args, url, proc.pid)
            single = one_client(url, ceiling_texts(args.ceiling_queries), 991)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        print_ceiling(args, results)
        print("\none client, one request at a time:")
        for name, res in single.items():
            print(
                f"  {name:<8} {res['n']} requests: p50 {res['p50']:.1f} ms, p95 {res['p95']:.1f}, "
                f"p99 {res['p99']:.1f}, errors {res['errors']}; Server-Timing "
                + ", ".join(f"{k} {v:.2f}" for k, v in res["phases"].items())
            )
        return 0
    try:
        seeds = itertools.count(1)
        for kind in args.kinds.split(","):
            for cache in ("cold", "warm"):
                reqs = make_requests(kind, cache, args.requests, next(seeds))
                if cache == "warm":  # fill the cache first
                    asyncio.run(run_load(url, reqs[:8], 1))
                res = asyncio.run(run_load(url, reqs, args.concurrency))
                rows.append((kind, cache, res))
                print(f"  {kind:<10} {cache:<4} done: {res['qps']:.0f} QPS", flush=True)
    finally:
        proc.terminate()  # SIGTERM: graceful shutdown
        proc.wait(timeout=30)

    print(
        f"\nAPI load benchmark: {args.rows:,} rows, {args.concurrency} concurrent clients, "
        f"{args.requests} requests per scenario, {os.cpu_count()} CPUs (shared), "
        f"torch threads {args.torch_threads}"
    )
    print("| query      | cache | requests |   QPS | p50 ms | p95 ms | p99 ms | errors |")
    print("|------------|-------|---------:|------:|-------:|-------:|-------:|-------:|")
    for kind, cache, r in rows:
        print(
            f"| {kind:<10} | {cache:<5} | {r['n']:>8} | {r['qps']:>5.0f} | {r['p50']:>6.1f} "
            f"| {r['p95']:>6.1f} | {r['p99']:>6.1f} | {r['errors']:>6} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
