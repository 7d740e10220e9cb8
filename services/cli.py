"""The ``fashion-search`` command line: one entry point, subcommands contributed by each area.

Each area module exposes ``register(subparsers)``, adding its subcommands with a
``func`` default that takes the parsed args and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from services.store.db import DatabaseUnavailable

# Areas that contribute subcommands, in --help order.
AREAS = [
    "services.store.cli",
    "services.encoders.cli",
    "services.catalog.cli",
    "services.pipeline.cli",
    "services.ops.cli",
    "services.training.cli",
    "services.understanding.cli",
    "services.analytics.cli",
    "services.api.cli",
    "evaluation.cli",
    "evaluation.traffic_cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fashion-search",
        description=(
            "Hybrid fashion product search: CLIP dense + SPLADE sparse, fused in PostgreSQL/pgvector. "
            "Configuration comes from the environment (FASHION_HOME, DATABASE_URL, "
            "FASHION_DENSE_MODEL, FASHION_SPARSE_MODEL, ...); see docs/operations/configuration.md."
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # area not present in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.INFO
    # Libraries that log on the root logger (open_clip does) are quiet unless -v;
    # the project's own loggers keep INFO.
    logging.basicConfig(
        level=level if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in ("services", "evaluation", "dags"):
        logging.getLogger(name).setLevel(level)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2

    try:
        return int(args.func(args) or 0)
    except DatabaseUnavailable as exc:
        print(f"error: database unavailable: {exc}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, LookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl+C: a stop the user asked for, not a crash to trace back
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
