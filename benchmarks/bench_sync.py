"""Incremental catalogue sync under search load: 100 changed products on the 10k index.

    .venv/bin/python benchmarks/bench_sync.py                     # builds the 10k index once
    .venv/bin/python benchmarks/bench_sync.py --changes 100 --removed 10 --clients 4

What it does, on its own database (``fashion_bench_sync`` on the configured server; never the
main one), with its own ``FASHION_HOME`` (``.fashion/bench-sync``: catalogue, reports; the
models from the main cache):
1. unless a live version of --rows offline products is there, builds one with the real
   pipeline (``run_reindex``, the configured models);
2. takes the live version's products as the catalogue and writes a local Parquet copy with
   --changes products changed (in turn: renamed, new colour and season, new photo) and
   --removed products dropped (each run starts from what the last one left);
3. starts the API (``fashion-search serve``, its own process) and --clients closed-loop
   search clients (text queries, a fixed set: the query cache answers, the SQL runs);
4. runs ``sync_catalog`` on the copy, timing it end to end in this process (the encoders are
   loaded inside "encode", as an hourly run would), while the clients search;
5. prints the sync's phases and the requests answered during the sync (failed = anything but
   200, or no answer).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from bench_api import start_server
from bench_db import use_bench_database
from PIL import Image, ImageOps

from services.catalog.shards import write_parquet
from services.config import get_settings
from services.pipeline.reindex import format_timings, run_reindex
from services.pipeline.sync import format_report, sync_catalog
from services.store import index_versions as iv
from services.store.catalog_syncs import version_hashes
from services.store.db import connect
from services.store.products import iter_products

BENCH_DB = "fashion_bench_sync"


def bench_environment() -> None:
    """Point this process (and the API process it starts) at the bench database and home."""

    s = use_bench_database(BENCH_DB)
    home = s.home / "bench-sync"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(FASHION_HOME=str(home), FASHION_MODEL_CACHE=str(s.model_cache))
    get_settings.cache_clear()  # settings are read once per process; this one changed its own


def ensure_live_index(rows: int) -> int:

    with connect() as conn:
        live = iv.live_version(conn)
        if live is not None and live.row_count == rows and live.params.get("bench") == "sync":
            return live.id
        iv.drop_all_versions_and_products(conn, truncate=True)  # fashion_bench_sync only
    print(f"building the bench index: {rows:,} offline products (run_reindex) ...", flush=True)
    report = run_reindex(source="offline", size=rows, run_id=f"bench-sync-{int(time.time())}")
    print(format_timings(report))
    with connect() as conn:
        conn.execute(
            'UPDATE index_versions SET params = params || \'{"bench": "sync"}\' WHERE id = %s',
            (report["version"],),
        )
    return report["version"]


def edited_catalogue(version_id: int, changes: int, removed: int, out: Path) -> dict:
    """The live version's products with ``changes`` changed and ``removed`` dropped, as one
    Parquet file; returns the ids."""

    with connect() as conn:
        ids = sorted(version_hashes(conn, version_id))
        rows = list(iter_products(conn, ids=ids, with_image=True))
    step = max(1, len(rows) // (changes + removed))
    picked = [r["id"] for r in rows[::step]][: changes + removed]
    changed, gone = set(picked[:changes]), set(picked[changes:])
    stamp = int(time.time()) % 100_000
    for i, row in enumerate(r for r in rows if r["id"] in changed):
        if i % 3 == 0:
            row["productDisplayName"] = f"Quetzal Men Corduroy Parka {stamp}-{i}"
        elif i % 3 == 1:
            row["baseColour"] = f"Lavender {stamp}"
            row["season"] = "Winter" if row["season"] != "Winter" else "Summer"
        else:
            img = Image.open(io.BytesIO(row["image"])).convert("RGB")
            buf = io.BytesIO()
            ImageOps.invert(ImageOps.mirror(img)).save(buf, "PNG")
            row["image"] = buf.getvalue()
    write_parquet([r for r in rows if r["id"] not in gone], out)
    return {"changed": sorted(changed), "removed": sorted(gone), "catalogue": len(rows)}


class Load:
    """Closed-loop search clients against the API, recording every answer."""

    def __init__(self, url: str, clients: int, queries: list[str]):
        self.url, self.queries = url, queries
        self.stop = threading.Event()
        self.results: list[tuple[float, float, int]] = []  # (start, seconds, status)
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]

    def _client(self, i: int) -> None:

        with httpx.Client(base_url=self.url, timeout=60) as client:
            n = i
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    status = client.post(
                        "/v1/search", json={"text": self.queries[n % len(self.queries)], "k": 10}
                    ).status_code
                except httpx.HTTPError:
                    status = 0
                with self.lock:
                    self.results.append((start, time.perf_counter() - start, status))
                n += 1

    def __enter__(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def between(self, t0: float, t1: float) -> list[tuple[float, float, int]]:
        with self.lock:
            return [r for r in self.results if t0 <= r[0] < t1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000, help="offline products in the index")
    p.add_argument("--changes", type=int, default=100, help="products changed before the sync")
    p.add_argument("--removed", type=int, default=10, help="products dropped before the sync")
    p.add_argument("--clients", type=int, default=4, help="concurrent search clients")
    p.add_argument("--port", type=int, default=8765, help="the API's port")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds of load before the sync")
    args = p.parse_args()

    bench_environment()

    vid = ensure_live_index(args.rows)
    with connect() as conn:
        live = iv.get_version(conn, vid)
        queries = [name for _, name in iv.product_names(conn, vid)[:: max(1, args.rows // 40)]]
    folder = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    edits = edited_catalogue(vid, args.changes, args.removed, folder / "catalogue.parquet")
    server = start_server(args.port, 1, folder / "api.log")
    try:
        with Load(f"http://127.0.0.1:{args.port}", args.clients, queries) as load:
            time.sleep(args.warmup)
            t0 = time.perf_counter()
            report = sync_catalog(str(folder / "catalogue.parquet"))
            t1 = time.perf_counter()
            time.sleep(1.0)
        before = load.between(t0 - args.warmup, t0)
        during = load.between(t0, t1)
    finally:
        server.terminate()
        server.wait(30)

    assert report["changed_ids"] == edits["changed"], "the sync found other changes"
    failed = sum(1 for _, _, status in during if status != 200)
    lat = sorted(s * 1000 for _, s, _ in during)
    lat_before = sorted(s * 1000 for _, s, _ in before)

    def pct(values: list[float], q: float) -> str:
        return f"{values[min(len(values) - 1, int(q * len(values)))]:.0f}" if values else "-"

    sec = report["seconds"]
    print(
        f"\n# bench_sync: live v{vid} ({live.dense_model} + {live.sparse_model}), "
        f"{edits['catalogue']:,} products; {len(edits['changed'])} changed, "
        f"{len(edits['removed'])} removed; {args.clients} search clients; "
        f"machine CPUs: {os.cpu_count()}\n"
    )
    print("| phase | seconds |")
    print("|---|---:|")
    print(f"| read + validate + hash ({report['read']:,} rows) | {sec['read_hash']:.2f} |")
    print(f"| encode ({report['encoded']} products, incl. loading the encoders) | {sec['encode']:.2f} |")  # fmt: skip
    print(
        f"| write (upsert {report['encoded']}, delete {report['removed']}) | {sec['write']:.2f} |"
    )
    print(f"| checks (in the transaction) + commit | {sec['checks'] + sec['commit']:.2f} |")
    print(f"| **end to end** (sync_catalog, incl. lock and records) | **{t1 - t0:.2f}** |")
    print("\n| search load | requests | failed | p50 ms | p95 ms | QPS |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, rows, span in (("before the sync", before, args.warmup), ("during the sync", during, t1 - t0)):  # fmt: skip
        bad = sum(1 for _, _, status in rows if status != 200)
        ms = sorted(s * 1000 for _, s, _ in rows)
        print(
            f"| {label} | {len(rows)} | {bad} | {pct(ms, 0.5)} | {pct(ms, 0.95)} | "
            f"{len(rows) / span:.1f} |"
        )
    print(
        f"\nnew {report['new']}, changed {report['changed']}, removed {report['removed']}, "
        f"unchanged {report['unchanged']}; failed requests during the sync: {failed}; "
        f"median latency during/before: {statistics.median(lat) if lat else 0:.0f} / "
        f"{statistics.median(lat_before) if lat_before else 0:.0f} ms\n"
    )
    print(format_report(report))


if __name__ == "__main__":
    main()
