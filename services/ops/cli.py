"""``fashion-search airflow start | stop | status | trigger-reindex``: a real Airflow 3 on
loopback (``services.ops.airflow``) that runs the ``fashion_reindex`` DAG."""

from __future__ import annotations

import argparse
import json

from services.ops import airflow
from services.pipeline.cli import add_pipeline_args
from services.store.db import connect
from services.store.index_versions import live_version


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


def register(sub: argparse._SubParsersAction) -> None:
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
    add_pipeline_args(trig)
    trig.add_argument("--min-recall", type=float, default=None)
    trig.add_argument("--wait", action="store_true", help="poll until the run finishes")
    trig.add_argument("--timeout", type=float, default=1800, help="seconds to wait (1800)")
    trig.set_defaults(func=_airflow_trigger)
