"""``fashion-search catalog ...``: build the offline catalogue, download the real one, inspect files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from services.catalog.hub import HUB_REPO_ID, download_hub_catalog, verify_parquet_files
from services.catalog.offline import build_offline_catalog
from services.catalog.reader import iter_rows, open_parquet
from services.catalog.sources import offline_catalog_path, resolve_source
from services.catalog.validate import validate_rows
from services.config import get_settings


def _build_offline(args: argparse.Namespace) -> int:

    out = Path(args.out) if args.out else offline_catalog_path(args.size)
    started = time.perf_counter()
    build_offline_catalog(out, size=args.size, seed=args.seed)
    seconds = time.perf_counter() - started
    size_mb = out.stat().st_size / 1e6
    print(f"offline catalogue: {args.size} products (seed {args.seed}) -> {out}")
    print(f"{size_mb:.1f} MB in {seconds:.1f} s (metadata is synthetic; images are Fashion-MNIST)")
    return 0


def _download(args: argparse.Namespace) -> int:

    cache_dir = Path(args.cache_dir) if args.cache_dir else get_settings().catalog_dir / "hub"
    files = download_hub_catalog(cache_dir)
    info = verify_parquet_files(files)
    print(f"{HUB_REPO_ID}: {info.rows} rows in {len(files)} file(s) under {cache_dir}")
    for path in files:
        print(f"  {path}")
    return 0


def _inspect(args: argparse.Namespace) -> int:

    files = resolve_source(args.path, size=args.size)
    total = 0
    for path in files:
        parquet = open_parquet(path)
        total += parquet.metadata.num_rows
        print(
            f"{path}: {parquet.metadata.num_rows} rows, {parquet.metadata.num_row_groups} row groups"
        )
    print("schema:")
    for field in open_parquet(files[0]).schema_arrow:
        print(f"  {field.name}: {field.type}")
    report = validate_rows(iter_rows(files, limit=args.limit))
    checked = f"first {report.total}" if args.limit else f"all {report.total}"
    print(f"total rows: {total}; validated {checked}: {report.summary()}")
    for reason, count in report.counts_by_reason().items():
        print(f"  {reason}: {count}")
    for rejected in report.rejected[: args.show]:
        print(f"  e.g. {rejected}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    catalog = sub.add_parser(
        "catalog", help="product catalogues: offline build, hub download, inspect"
    )
    actions = catalog.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build-offline",
        help="build the offline catalogue (Fashion-MNIST images, synthetic metadata)",
    )
    build.add_argument(
        "--size", type=int, default=10_000, help="number of products (default 10000)"
    )
    build.add_argument("--seed", type=int, default=0, help="generation seed (default 0)")
    build.add_argument(
        "--out", help="output Parquet file (default: $FASHION_HOME/catalog/offline-<size>.parquet)"
    )
    build.set_defaults(func=_build_offline)

    download = actions.add_parser(
        "download", help="download ashraq/fashion-product-images-small from the Hugging Face hub"
    )
    download.add_argument("--cache-dir", help="default: $FASHION_HOME/catalog/hub")
    download.set_defaults(func=_download)

    inspect = actions.add_parser(
        "inspect", help="row count, schema and validation summary of a catalogue"
    )
    inspect.add_argument("path", help="a Parquet file or folder, or 'offline' / 'hub'")
    inspect.add_argument("--size", type=int, default=10_000, help="offline catalogue size")
    inspect.add_argument("--limit", type=int, help="validate only the first N rows")
    inspect.add_argument("--show", type=int, default=5, help="example rejections to print")
    inspect.set_defaults(func=_inspect)
