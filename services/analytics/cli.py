"""``fashion-search experiments start | stop | status`` and ``fashion-search analytics
aggregate | partitions``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from services.analytics import jobs
from services.analytics.arms import check_arm
from services.analytics.interleave import sign_test, verdict
from services.config import get_settings
from services.store import analytics as store
from services.store.db import connect


def _describe(exp: store.Experiment, out: store.Outcome) -> list[str]:
    p = sign_test(out.wins, out.losses)
    said = verdict(out.wins, out.losses, out.impressions, exp.impressions)
    return [
        f"experiment {exp.name} ({exp.status}; started {exp.started_at:%Y-%m-%d %H:%M} UTC)",
        f"  A: {json.dumps(exp.arm_a)}   B: {json.dumps(exp.arm_b)}   traffic {exp.traffic:g}",
        (
            f"  impressions {out.impressions} of {exp.impressions} planned, {out.clicked} "
            f"with clicks: A won {out.wins}, B won {out.losses}, ties {out.ties}"
        ),
        f"  sign test p = {p:.4g} (two-sided); {said}",
    ]


def _experiments(args: argparse.Namespace) -> int:
    settings = get_settings()
    with connect(settings.database_url, autocommit=True) as conn:
        if args.experiments_command == "start":
            try:
                arm_a, arm_b = check_arm(args.a), check_arm(args.b)
            except ValueError as exc:
                print(f"error: {exc}")
                return 2
            if not 0 < args.traffic <= 1 or args.impressions < 1:
                print("error: --traffic is in (0, 1] and --impressions at least 1")
                return 2
            try:
                exp = store.start_experiment(
                    conn, args.name, arm_a, arm_b, args.traffic, args.impressions, args.note
                )
            except store.ExperimentConflict as exc:
                print(f"error: {exc}")
                return 1
            print(f"started experiment {exp.name} (id {exp.id}); the API takes it within 5 s")
            return 0
        if args.experiments_command == "stop":
            exp = store.stop_experiment(conn, args.name)
            if exp is None:
                print(f"error: no running experiment named {args.name!r}")
                return 1
            print(f"stopped experiment {exp.name}")
            return 0
        chosen = store.experiments(conn)
        if args.name:
            chosen = [e for e in chosen if e.name == args.name]
            if not chosen:
                print(f"error: no experiment named {args.name!r}")
                return 1
        if not chosen:
            print("no experiments yet: fashion-search experiments start NAME --a ... --b ...")
        for exp in chosen:
            out = store.total(store.experiment_outcomes(conn, exp.id))
            print("\n".join(_describe(exp, out)))
    return 0


def _analytics(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.analytics_command == "partitions":
        print(jobs.maintain_partitions(settings))
        return 0
    hour = datetime.fromisoformat(args.hour) if args.hour else datetime.now(UTC)
    if hour.tzinfo is None:
        hour = hour.replace(tzinfo=UTC)
    print(json.dumps(jobs.aggregate_hour(settings, hour), indent=1))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiments",
        help="online experiments: two rankings, team-draft interleaved (docs/analytics.md)",
    )
    cmds = p.add_subparsers(dest="experiments_command", required=True)
    start = cmds.add_parser("start", help="start an experiment (at most one runs)")
    start.add_argument("name", help="lower case letters, digits, . _ -")
    start.add_argument("--a", required=True, help="arm A as JSON, e.g. '{\"alpha\": 0.5}'")
    start.add_argument("--b", required=True, help="arm B, e.g. '{\"understanding\": false}'")
    start.add_argument("--traffic", type=float, default=0.5, help="share of sessions (0, 1]")
    start.add_argument(
        "--impressions",
        type=int,
        default=2000,
        help="planned sample size: the p-value is read once this many impressions are in",
    )
    start.add_argument("--note", default="")
    stop = cmds.add_parser("stop", help="stop a running experiment")
    stop.add_argument("name")
    status = cmds.add_parser("status", help="impressions, wins, losses, ties, p-value")
    status.add_argument("name", nargs="?")
    p.set_defaults(func=_experiments)

    a = sub.add_parser("analytics", help="search analytics: aggregate, partitions")
    acmds = a.add_subparsers(dest="analytics_command", required=True)
    agg = acmds.add_parser("aggregate", help="rebuild the hour's day (and the day before)")
    agg.add_argument("--hour", help="ISO time in the hour (default: now, UTC)")
    acmds.add_parser("partitions", help="make the days ahead, drop those past retention")
    a.set_defaults(func=_analytics)
