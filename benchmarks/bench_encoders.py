"""Encoder throughput (images/s and texts/s per encoder, bare forward vs the full pipeline) and
the latency of one uncached text query (CLIP text + SPLADE, as the API encodes it).

Pipeline = decode JPEG bytes + preprocess + forward (what indexing pays); bare = forward on
already preprocessed tensors. Overhead % = how much slower the pipeline is than the model.

    python benchmarks/bench_encoders.py --images 512 --texts 1024
    python benchmarks/bench_encoders.py --gpu-synthetic --images 4096   # ViT-B-32, random weights
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image


def synthetic_jpegs(count: int, size: tuple[int, int] = (60, 80), seed: int = 0) -> list[bytes]:
    """Product-like JPEGs: a coloured block with noise on a light background."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        pixels = np.full((size[1], size[0], 3), 245, dtype=np.uint8)
        h0, w0 = rng.integers(0, size[1] // 3), rng.integers(0, size[0] // 3)
        pixels[h0 : h0 + size[1] // 2, w0 : w0 + size[0] // 2] = rng.integers(0, 255, 3)
        pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def product_texts(count: int) -> list[str]:
    colours = ["Black", "Navy Blue", "Red", "White", "Green", "Grey"]
    articles = ["Tshirt", "Jeans", "Sports Shoes", "Handbag", "Dress", "Jacket"]
    return [
        f"Brand{i % 17} Men {colours[i % 6]} {articles[(i // 6) % 6]} style {i}"
        for i in range(count)
    ]


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_clip(encoder, jpegs: list[bytes], texts: list[str], batch: int) -> dict:
    device = encoder.device
    encoder.encode_images(jpegs[:batch], batch_size=batch)  # warm-up
    pixels = encoder.preprocess_images(jpegs)
    _sync(device)
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        encoder.forward_images(pixels[i : i + batch])
    _sync(device)
    bare = time.perf_counter() - start
    start = time.perf_counter()
    encoder.encode_images(jpegs, batch_size=batch)
    _sync(device)
    pipeline = time.perf_counter() - start
    encoder.encode_texts(texts[:batch])
    start = time.perf_counter()
    encoder.encode_texts(texts, batch_size=256)
    _sync(device)
    text_s = time.perf_counter() - start
    return {
        "images/s bare": _rate(len(jpegs), bare),
        "images/s pipeline": _rate(len(jpegs), pipeline),
        "overhead %": 100 * (pipeline - bare) / bare,
        "texts/s": _rate(len(texts), text_s),
    }


def bench_splade(encoder, texts: list[str]) -> dict:
    encoder.encode(texts[:64])
    start = time.perf_counter()
    encoder.encode(texts, batch_size=64)
    return {"texts/s": _rate(len(texts), time.perf_counter() - start)}


SHOPPER_QUERIES = (
    "red dress",
    "navy jumper for men",
    "black leather handbag",
    "summer sandals",
    "kicks",
    "white trainers women",
    "formal shirts",
    "olive trousers",
    "warm winter jacket",
    "wmns top",
    "grey hoodie",
    "ankle boots brown",
    "party dress in burgundy",
    "casual shoes for boys",
    "crimson cardigan",
    "sports shoes",
    "beige chinos",
    "something for a wedding",
)


def query_texts(count: int) -> list[str]:
    """``count`` distinct short queries (a suffix keeps each one unseen, i.e. uncached)."""
    return [
        f"{SHOPPER_QUERIES[i % len(SHOPPER_QUERIES)]} {i}"
        if i >= len(SHOPPER_QUERIES)
        else SHOPPER_QUERIES[i]
        for i in range(count)
    ]


def bench_query_latency(clip, splade, queries: list[str]) -> dict:
    """One uncached text query at a time, as the API encodes it: CLIP text + SPLADE."""
    clip.encode_texts(queries[:4])
    splade.encode(queries[:4])
    dense_ms, sparse_ms, total_ms = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        clip.encode_texts([q])
        t1 = time.perf_counter()
        splade.encode([q])
        t2 = time.perf_counter()
        dense_ms.append(1000 * (t1 - t0))
        sparse_ms.append(1000 * (t2 - t1))
        total_ms.append(1000 * (t2 - t0))
    pct = lambda xs, p: float(np.percentile(xs, p))
    return {
        "clip p50": pct(dense_ms, 50),
        "splade p50": pct(sparse_ms, 50),
        "total p50": pct(total_ms, 50),
        "total p95": pct(total_ms, 95),
        "total p99": pct(total_ms, 99),
    }


def print_latency_table(results: dict[str, dict], n: int) -> None:
    columns = ["clip p50", "splade p50", "total p50", "total p95", "total p99"]
    print(f"\nOne uncached text query (CLIP text + SPLADE), {n} queries, ms:\n")
    print(f"| {'dense + sparse':<44} | " + " | ".join(f"{c:>10}" for c in columns) + " |")
    print("| " + "-" * 44 + " | " + " | ".join("-" * 9 + ":" for _ in columns) + " |")
    for name, row in results.items():
        print(f"| {name:<44} | " + " | ".join(f"{row[c]:>10.2f}" for c in columns) + " |")


def gpu_synthetic_encoder(device: str):
    """ViT-B-32 with random weights (pretrained=None): real GPU cost without a download."""
    import open_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    from services.encoders.clip import ClipEncoder  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    model, _, preprocess = open_clip.create_model_and_transforms(
        "ViT-B-32", pretrained=None, device=device
    )
    return ClipEncoder(
        "ViT-B-32 (random)", model, preprocess, open_clip.get_tokenizer("ViT-B-32"), device, 512
    )


def print_table(results: dict[str, dict]) -> None:
    columns = ["images/s bare", "images/s pipeline", "overhead %", "texts/s"]
    print(f"| {'encoder':<28} | " + " | ".join(f"{c:>17}" for c in columns) + " |")
    print("| " + "-" * 28 + " | " + " | ".join("-" * 16 + ":" for _ in columns) + " |")
    for name, row in results.items():
        cells = [f"{row[c]:>17.1f}" if c in row else f"{'-':>17}" for c in columns]
        print(f"| {name:<28} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--texts", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--workers", type=int, default=None, help="image decode workers (DataLoader)"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument(
        "--gpu-synthetic", action="store_true", help="ViT-B-32 random weights, batch 256"
    )
    parser.add_argument(
        "--dense",
        nargs="*",
        default=["fashion-lit-minilm", "fashion-clip-offline", "clip-tiny-untrained"],
    )
    parser.add_argument("--queries", type=int, default=200, help="single-query latency samples")
    parser.add_argument("--sparse", nargs="*", default=["splade-tiny-offline"])
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from services.encoders.clip import load_clip, pick_device  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    device = pick_device(args.device)
    jpegs, texts = synthetic_jpegs(args.images), product_texts(args.texts)
    print(
        f"device={device} torch_threads={torch.get_num_threads()} images={len(jpegs)} texts={len(texts)}"
    )
    results: dict[str, dict] = {}
    if args.gpu_synthetic:
        encoder = gpu_synthetic_encoder(device)
        if args.workers is not None:
            encoder.num_workers = args.workers
        results[encoder.name] = bench_clip(encoder, jpegs, texts, batch=256)
    else:
        for name in args.dense:
            encoder = load_clip(name, device=device)
            if args.workers is not None:
                encoder.num_workers = args.workers
            results[name] = bench_clip(encoder, jpegs, texts, args.batch)
        for name in args.sparse:
            results[name] = bench_splade(load_splade(name, device=device), texts)
    print_table(results)
    if not args.gpu_synthetic and args.sparse and args.queries:
        splade = load_splade(args.sparse[0], device=device)
        latency = {
            f"{name} + {args.sparse[0]}": bench_query_latency(
                load_clip(name, device=device), splade, query_texts(args.queries)
            )
            for name in args.dense
        }
        print_latency_table(latency, args.queries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
