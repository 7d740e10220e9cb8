"""``fashion-search index`` (the pipeline without Airflow), ``fashion-search sync`` (the
incremental catalogue sync) and ``fashion-search airflow ...`` (a real Airflow 3 on loopback
that runs the ``fashion_reindex`` DAG)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from services.ops import airflow
from services.pipeline.reindex import format_timings, run_reindex
from services.pipeline.run_lock import BuildLockBusy
from services.store.db import connect
from services.store.index_versions import live_version


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


def _conf(args: argparse.Namespace) -> dict:
    conf = {"source": args.source, "size": args.size, "shard_size": args.shard_size}
    for key in ("limit", "dense_model", "sparse_model", "min_recall", "dense_image_weight"):
        if getattr(args, key) is not None:
            conf[key] = getattr(args, key)
    return conf


def _login_hint(login: airflow.AdminLogin) -> str:
    """How to log in, without the password itself (printed only once, when generated)."""
    return f"login: {login.user}, the password in {login.source}"


def _airflow_start(args: argparse.Namespace) -> int:
    info = airflow.start(executor=args.executor)
    print(f"Airflow is up: {info['url']} ({info['executor']})")
    for worker in info["workers"]:
        print(f"  Celery worker {worker} answers")
    if info["password_created"]:
        print(
            f"Airflow login (shown this once): user {info['user']}, password "
            f"{info['password']}  at {info['url']}\n"
            f"  kept in {info['password_source']} (mode 0600); "
            "FASHION_AIRFLOW_PASSWORD sets your own instead"
        )
    else:
        print(f"  login: {info['user']}, the password in {info['password_source']}")
    print(f"AIRFLOW_HOME {info['home']}; component logs in {info['logs']}")
    print("trigger the reindex DAG: fashion-search airflow trigger-reindex --wait")
    return 0


def _airflow_stop(args: argparse.Namespace) -> int:
    stopped = airflow.stop()
    print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return 0


def _airflow_status(args: argparse.Namespace) -> int:
    comps = airflow.status()
    for c in comps:
        print(f"{c.name:<14} {c.state:<8} pid={c.pid} log={c.log}")
    up = all(c.running for c in comps)
    if up:
        print(f"UI: {airflow.base_url()}  ({_login_hint(airflow.admin_login())})")
    return 0 if up else 1


def _airflow_trigger(args: argparse.Namespace) -> int:
    client = airflow.AirflowClient()
    run = client.trigger(airflow.DAG_ID, _conf(args))
    run_id = run["dag_run_id"]
    url = f"{airflow.base_url()}/dags/{airflow.DAG_ID}/runs/{run_id}"
    print(
        f"triggered {airflow.DAG_ID} run {run_id}\n  {url}  ({_login_hint(airflow.admin_login())})"
    )
    if not args.wait:
        return 0
    final = client.wait(airflow.DAG_ID, run_id, timeout=args.timeout, echo=print)
    print(
        f"run {run_id}: {final['state']} "
        f"(start {final.get('start_date')}, end {final.get('end_date')})"
    )
    if final["state"] == "success":
        with connect() as conn:
            live = live_version(conn)
        if live:
            print(f"live index version: {live.describe()}")
            checks = (live.report or {}).get("checks", {})
            val = (live.report or {}).get("validation", {})
            if val:
                print(
                    f"validation: {json.dumps(val.get('rejected_by_reason', {}))} rejected "
                    f"of {val.get('read')} read"
                )
            if checks:
                print(f"recall@10 fast vs exact: {checks.get('recall_at_10_fast_vs_exact')}")
    return 0 if final["state"] == "success" else 1


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
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
    _add_pipeline_args(idx)
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

    af = sub.add_parser("airflow", help="a local Airflow 3 (127.0.0.1) running the reindex DAG")
    afsub = af.add_subparsers(dest="airflow_command", metavar="ACTION", required=True)
    start = afsub.add_parser(
        "start",
        help="set up (metadata DB, gpu pool) and start api-server, "
        "scheduler, dag-processor under supervisord",
    )
    start.add_argument(
        "--executor",
        choices=tuple(airflow.EXECUTORS),
        default="local",
        help="local (default): LocalExecutor; celery: CeleryExecutor with a redis-server "
        "broker and two Celery workers of their own FASHION_HOME (queues default and gpu)",
    )
    start.set_defaults(func=_airflow_start)
    afsub.add_parser("stop", help="stop every component and supervisord").set_defaults(
        func=_airflow_stop
    )
    afsub.add_parser("status", help="components, pids, logs, UI address").set_defaults(
        func=_airflow_status
    )
    trig = afsub.add_parser("trigger-reindex", help="trigger the fashion_reindex DAG via REST")
    _add_pipeline_args(trig)
    trig.add_argument("--min-recall", type=float, default=None)
    trig.add_argument("--wait", action="store_true", help="poll until the run finishes")
    trig.add_argument("--timeout", type=float, default=1800, help="seconds to wait (1800)")
    trig.set_defaults(func=_airflow_trigger)
