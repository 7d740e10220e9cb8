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
from bench_search import COLOURS, GENDERS  # one synthetic vocabulary for both benchmarks
from PIL import Image, ImageDraw

from services.config import get_settings
from services.store import embedded, migrate, products
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
    os.environ["DATABASE_URL"] = get_settings().database_url_for(BENCH_DB)
    get_settings.cache_clear()  # settings are read once per process; this one changed its own
    return get_settings()


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

    base = get_settings()
    if base.embedded:
        embedded.start(base)
        embedded.ensure_database(base, BENCH_DB)
    settings = bench_settings()
    migrate.upgrade("head", url=settings.database_url)
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
        timings = iv.build_indexes(conn, vid)
        print(
            f"HNSW: dense {timings['dense']:.1f}s, sparse {timings['sparse']:.1f}s "
            f"(total {time.perf_counter() - t:.1f}s)"
        )
        iv.mark_ready(conn, vid, {"by": "bench_api"})
        iv.swap_live(conn, vid)
        iv.retire_old(conn, keep_previous=0)
        print(f"bench index v{vid} live")


def start_server(port: int, torch_threads: int, log_path: Path) -> subprocess.Popen:

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
        cwd=Path(__file__).resolve().parent.parent,
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


def make_requests(kind: str, cache: str, count: int, seed: int):
    """Request kwargs for httpx: distinct queries (cold) or 8 repeated ones (warm)."""
    rng = random.Random(seed)
    distinct = count if cache == "cold" else 8
    texts = [
        f"{rng.choice(COLOURS)} {rng.choice(STYLES)} {rng.choice(ARTICLES)[2]} for "
        f"{rng.choice(GENDERS)} {rng.choice(BRANDS)} {seed}-{i}"
        for i in range(distinct)
    ]
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
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t) * 1000)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
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
    args = p.parse_args(argv)

    if not args.skip_load:
        load(args.rows, args.reload, args.distinct_names)
    else:  # the bench index as it is, at this code's schema revision
        migrate.upgrade("head", bench_settings().database_url)
    log_path = get_settings().reports_dir / "bench_api_server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    proc = start_server(args.port, args.torch_threads, log_path)
    url = f"http://127.0.0.1:{args.port}"
    rows = []
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
