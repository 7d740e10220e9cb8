"""The API's memory under concurrent hostile image uploads (issue #12: RSS < 3 GB with 16).

Starts ``fashion-search serve`` on the live index of FASHION_HOME (or ``--url`` for a running
API), then ``--clients`` clients each upload the hostile mix ``--rounds`` times as photo
queries (multipart): a small-file 6320x6320 RGBA PNG (the tester's; ~730 MB per decode
before issue #12), an RGBA PNG just under the decode budget, a 6000x8000 phone JPEG and an
animated GIF of large frames. Each upload is a new image (one pixel changes), so the
embedding cache never answers. The server's RSS is sampled every 20 ms; the script prints
statuses per image and RSS before / peak / after, and exits non-zero on any 5xx other than
a 503 with Retry-After, or a peak over ``--ceiling-mib``.

    .venv/bin/python benchmarks/bench_hostile_uploads.py [--clients 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import io
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psutil
from bench_api import start_server  # the API process, as bench_api starts it
from PIL import Image

from services.config import get_settings
from services.encoders.images import MAX_DECODE_BYTES


def _save(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def hostile_mix() -> dict[str, Image.Image]:
    side = int((MAX_DECODE_BYTES // 4) ** 0.5) - 8  # RGBA raster just under the budget
    return {
        "6320x6320 RGBA PNG": Image.new("RGBA", (6320, 6320), (10, 200, 30, 128)),
        f"{side}x{side} RGBA PNG (under budget)": Image.new(
            "RGBA", (side, side), (200, 30, 10, 255)
        ),
        "6000x8000 JPEG": Image.new("RGB", (6000, 8000), (120, 80, 40)),
        "4000x4000 GIF, 20 frames": Image.new("P", (4000, 4000), 0),
    }


def encode(name: str, image: Image.Image, serial: int) -> tuple[bytes, str]:
    image.putpixel((0, 0), serial % 256 if image.mode == "P" else (serial % 256,) * len(image.mode))
    if "PNG" in name:
        return _save(image, "PNG", compress_level=1), "image/png"
    if "JPEG" in name:
        return _save(image, "JPEG", quality=80), "image/jpeg"
    frames = [image] + [Image.new("P", image.size, 1) for _ in range(19)]
    return _save(image, "GIF", save_all=True, append_images=frames[1:]), "image/gif"


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = self.proc.memory_info().rss
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.02)


async def upload_all(url: str, payloads: list[tuple[str, bytes, str]], clients: int) -> list:
    queue: asyncio.Queue = asyncio.Queue()
    for p in payloads:
        queue.put_nowait(p)
    results = []

    async def client() -> None:
        async with httpx.AsyncClient(timeout=120) as http:
            while not queue.empty():
                name, data, mime = queue.get_nowait()
                r = await http.post(
                    f"{url}/v1/search", files={"image": ("q", data, mime)}, data={"k": "5"}
                )
                results.append((name, r.status_code, r.headers.get("retry-after"), r.text[:120]))

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


def server_pid(port: int) -> int:
    for c in psutil.net_connections("tcp"):
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid:
            return c.pid
    raise RuntimeError(f"no process listens on port {port}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="uploads of each image per client")
    p.add_argument("--url", help="a running API (default: start one)")
    p.add_argument("--port", type=int, default=8767)
    p.add_argument("--ceiling-mib", type=int, default=3072)
    args = p.parse_args(argv)

    print("building the hostile images ...", flush=True)
    mix = hostile_mix()
    payloads = []
    serial = 0
    for _ in range(args.rounds * args.clients):
        for name, image in mix.items():
            serial += 1
            payloads.append((name, *encode(name, image, serial)))
    sizes = {name: len(data) for name, data, _ in payloads}
    proc = None
    url = args.url
    if url is None:
        log = get_settings().reports_dir / "bench_hostile_uploads_server.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = start_server(args.port, 0, log)
        url = f"http://127.0.0.1:{args.port}"
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    try:
        sampler = RssSampler(proc.pid if proc else server_pid(port))
        before = sampler.proc.memory_info().rss
        sampler.start()
        start = time.perf_counter()
        results = asyncio.run(upload_all(url.rstrip("/"), payloads, args.clients))
        elapsed = time.perf_counter() - start
        time.sleep(1.0)
        after = sampler.proc.memory_info().rss
        sampler.running = False
        sampler.join()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)

    mib = 1024 * 1024
    print(
        f"\n{len(results)} uploads by {args.clients} concurrent clients in {elapsed:.1f} s "
        f"(decode budget {MAX_DECODE_BYTES // mib} MiB)\n"
    )
    print("| image | bytes on the wire | statuses | example answer |")
    print("|---|---:|---|---|")
    bad = 0
    by_image: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    example = {}
    for name, status, retry_after, body in results:
        by_image[name][status] += 1
        example.setdefault(name, body)
        if status >= 500 and not (status == 503 and retry_after):
            bad += 1
    for name in mix:
        statuses = ", ".join(f"{s} x{n}" for s, n in sorted(by_image[name].items()))
        print(f"| {name} | {sizes[name]:,} | {statuses} | `{example.get(name, '')[:90]}` |")
    peak = sampler.peak
    print(
        f"\nAPI RSS, MiB: before {before / mib:,.0f}, peak {peak / mib:,.0f}, "
        f"after {after / mib:,.0f} (ceiling {args.ceiling_mib:,})"
    )
    ok = bad == 0 and peak < args.ceiling_mib * mib
    print("PASS" if ok else f"FAIL: {bad} bad 5xx, peak {peak / mib:,.0f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
