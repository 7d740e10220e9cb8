"""``fashion-search index`` (the pipeline without Airflow) and ``fashion-search sync`` (the
incremental catalogue sync); ``fashion-search airflow ...`` is ``services.ops.cli``."""

from __future__ import annotations

import argparse
import json
import os
import sys

from services.pipeline.reindex import format_timings, run_reindex
from services.pipeline.run_lock import BuildLockBusy


def _index(args: argparse.Namespace) -> int:
    try:
        report = run_reindex(
            source=args.source,
            size=args.size,
            limit=args.limit,
            shard_size=args.shard_size,
            dense_model=args.dense_model,
            sparse_model=args.sparse_model,
            min_recall=args.min_recall,
            dense_image_weight=args.dense_image_weight,
        )
    except BuildLockBusy as exc:  # a refusal, not a crash: one line, "try again later"
        print(f"error: {exc}", file=sys.stderr)
        return os.EX_TEMPFAIL
    v = report["validation"]
    print(
        f"validation: {v['read']} read, {v['valid']} valid, {v['rejected']} rejected"
        + (f" {v['rejected_by_reason']}" if v["rejected"] else "")
    )
    c = report["checks"]
    print(
        f"checks: rows {c['rows']}/{c['expected_rows']}, self-retrieval "
        f"{c['smoke_self_retrieval']}, recall@10 fast vs exact "
        f"{c['recall_at_10_fast_vs_exact']:.3f} ({c['recall_queries']} queries)"
    )
    print(
        f"live index version: v{report['swap']['live']} (previous: "
        f"{report['swap']['previous']}); retired: {report['retired'] or 'none'}"
    )
    print()
    print(format_timings(report))
    print(f"\nreport: {report.get('report_path')}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    # Deferred: the sync imports the encoders' modules only when it runs.
    from services.pipeline.checks import CheckFailed  # noqa: PLC0415
    from services.pipeline.sync import SyncRefused, format_report, sync_catalog  # noqa: PLC0415

    try:
        report = sync_catalog(
            source=args.source,
            size=args.size,
            limit=args.limit,
            wait_for_lock=args.wait,
            max_removed_fraction=args.max_removed_fraction,
        )
    except BuildLockBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return os.EX_TEMPFAIL
    except (SyncRefused, CheckFailed) as exc:
        print(f"sync refused: {exc}" if isinstance(exc, SyncRefused) else f"error: {exc}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(format_report(report))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    return 0


def add_pipeline_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--source",
        default="offline",
        help='catalogue: "offline" (default), "hub", or a local Parquet file/folder',
    )
    p.add_argument("--size", type=int, default=10_000, help="offline catalogue size (10000)")
    p.add_argument("--limit", type=int, default=None, help="read at most N rows")
    p.add_argument("--shard-size", type=int, default=2000, help="rows per shard (2000)")
    p.add_argument("--dense-model", default=None, help="CLIP model (default FASHION_DENSE_MODEL)")
    p.add_argument(
        "--sparse-model", default=None, help="SPLADE model (default FASHION_SPARSE_MODEL)"
    )
    p.add_argument(
        "--dense-image-weight",
        type=float,
        default=None,
        metavar="W",
        help="product dense vector = W * photo + (1 - W) * name, re-normalised "
        "(default FASHION_DENSE_IMAGE_WEIGHT; 1 = photo only)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    idx = sub.add_parser("index", help="build a new index version and swap it live (no Airflow)")
    add_pipeline_args(idx)
    idx.add_argument(
        "--min-recall",
        type=float,
        default=0.9,
        help="fast-vs-exact recall@10 a version needs to go live (0.9)",
    )
    idx.set_defaults(func=_index)

    syn = sub.add_parser(
        "sync",
        help="incremental catalogue sync: encode only new and changed products into the live "
        "version in place, delete removed ones (recorded in catalog_syncs)",
    )
    syn.add_argument(
        "--source",
        default="offline",
        help='catalogue: "offline" (default), "hub", or a local Parquet file/folder',
    )
    syn.add_argument("--size", type=int, default=10_000, help="offline catalogue size (10000)")
    syn.add_argument("--limit", type=int, default=None, help="read at most N rows")
    syn.add_argument(
        "--max-removed-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="refuse a sync that would remove more than this share of the live products (0.5)",
    )
    syn.add_argument(
        "--wait",
        action="store_true",
        help="wait for a running reindex's build lock (default: refuse at once)",
    )
    syn.add_argument("--json", action="store_true", help="also print the whole report as JSON")
    syn.set_defaults(func=_sync)
