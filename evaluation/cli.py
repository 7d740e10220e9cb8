"""``fashion-search eval``: evaluate the live index, store the run, print its table, write a report.

``fashion-search eval-report [RUN]`` prints a stored run again (default: the latest).
``fashion-search eval-sweep`` chooses the blend weights on the tuning split (evaluation/sweep.py).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

from evaluation.click_judgments import ClickConfig
from evaluation.queries import FAMILIES, SPLITS
from evaluation.report import text_report
from evaluation.summary import check_regression, margin_from_env
from services.store import evaluations as storage
from services.store.db import connect


def _alphas(text: str) -> list[float]:
    try:
        values = [float(a) for a in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"alphas must be numbers, got {text!r}") from None
    if not values or any(not 0.0 <= a <= 1.0 for a in values):
        raise argparse.ArgumentTypeError("alphas must be numbers in [0, 1]")
    return values


def _families(text: str) -> list[str]:
    names = [f for f in text.replace(",", " ").split() if f]
    unknown = [f for f in names if f not in FAMILIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown families {unknown}; choose from {', '.join(FAMILIES)}"
        )
    return names


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="measure MAP@10 & co. of dense/sparse/hybrid/multi on the live index",
        description="Generate the query set from the live index's catalogue metadata, encode "
        "each query once, sweep alpha with the fused search, store the run in PostgreSQL "
        "(eval_runs, eval_metrics), print the table and write a markdown report under "
        "FASHION_HOME/reports. Protocol: docs/evaluation/protocol.md.",
    )
    p.add_argument(
        "--alphas",
        type=_alphas,
        default=None,
        help="alphas to sweep, e.g. '0,0.3,0.5,1' (default 0.0..1.0 step 0.1; "
        "0, 1 and the service default are always added)",
    )
    p.add_argument(
        "--families",
        type=_families,
        default=None,
        help=f"query families (default all): {', '.join(FAMILIES)}",
    )
    p.add_argument("--seed", type=int, default=0, help="query-set seed (default 0)")
    p.add_argument(
        "--split",
        choices=[*SPLITS, "all"],
        default="test",
        help="which half of every family to ask: test (default; what is reported), "
        "tune (what weights are chosen on), or all",
    )
    p.add_argument(
        "--understanding",
        choices=["split", "shipped", "off"],
        default="split",
        help="query understanding: split (default; its lexicon reads only the reader half of "
        "each word source, so the held-out families measure generalisation), shipped (every "
        "source, as the API), off (literal)",
    )
    p.add_argument(
        "--click-min-searches",
        type=int,
        default=None,
        help="the shoppers' clicks family: a query qualifies with this many first-page "
        "searches with a click (default 10); giving this or --click-days asks the family "
        "even in a --families run",
    )
    p.add_argument(
        "--click-days",
        type=int,
        default=None,
        help="the clicks family's window in days (default 28)",
    )
    p.add_argument(
        "--no-clicks", action="store_true", help="do not evaluate the shoppers' clicks family"
    )
    p.add_argument("--notes", default=None, help="free text stored with the run")
    p.add_argument(
        "--check-regression",
        action="store_true",
        help="exit 4 when hybrid MAP@10 dropped by more than --margin vs the previous run",
    )
    p.add_argument(
        "--margin",
        type=float,
        default=None,
        help="allowed hybrid MAP@10 drop (default env FASHION_EVAL_MAP_MARGIN or 0.02)",
    )
    p.set_defaults(func=_eval)

    w = subparsers.add_parser(
        "eval-sweep",
        help="choose image weight, alphas and query text weight on the tuning split",
        description="Exact in-memory ranking of the live index's products for a grid of product "
        "image weights, alphas and photo + text query weights, scored on the TUNING half of the "
        "query set (the reported test half is never used). Prints the tables and the choice.",
    )
    w.add_argument("--dense-model", default=None, help="CLIP model (default: the live version's)")
    w.add_argument("--seed", type=int, default=0, help="query-set seed (default 0)")
    w.add_argument(
        "--split",
        choices=SPLITS,
        default="tune",
        help="split to score (default tune; 'test' only to show what tuning would do)",
    )
    w.add_argument(
        "--product-text",
        choices=["name", "document"],
        default="name",
        help="text half of a product's dense vector: the name (what indexing encodes) "
        "or name + attributes (ablation)",
    )
    w.set_defaults(func=_sweep)

    u = subparsers.add_parser(
        "eval-sweep-understanding",
        help="choose query understanding's weights and thresholds on the tuning split",
        description="Exact in-memory ranking of the live index's stored vectors for a grid of "
        "query-understanding settings (rewrite weights, semantic labels' weights and "
        "thresholds, the photo's weight), scored on the TUNING half (evaluation/"
        "understanding_sweep.py). Prints the best settings and their figures per family.",
    )
    u.add_argument("--config", choices=["split", "shipped"], default="split")
    u.add_argument("--seed", type=int, default=0, help="query-set seed (default 0)")
    u.set_defaults(func=_sweep_understanding)

    r = subparsers.add_parser("eval-report", help="print a stored evaluation run")
    r.add_argument("run", type=int, nargs="?", default=None, help="run id (default: latest)")
    r.set_defaults(func=_report)


def _clicks(args) -> ClickConfig | bool | None:
    """``evaluate(clicks=...)`` from the flags: off, a configuration, or None (the default:
    asked on a full run of a reported split)."""
    if args.no_clicks:
        return False
    if args.click_min_searches is None and args.click_days is None:
        return None
    default = ClickConfig()
    return replace(
        default,
        min_clicked_searches=args.click_min_searches or default.min_clicked_searches,
        days=args.click_days or default.days,
    )


def _eval(args) -> int:
    from evaluation.run import evaluate  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    clicks = _clicks(args)
    margin = args.margin if args.margin is not None else margin_from_env()
    conn = connect()
    try:
        outcome = evaluate(
            conn,
            alphas=args.alphas,
            families=args.families,
            seed=args.seed,
            split=None if args.split == "all" else args.split,
            notes=args.notes,
            progress=lambda m: print(m, flush=True),
            understanding=args.understanding,
            clicks=clicks,
        )
        print()
        print(text_report(conn, outcome.run_id))
        if outcome.report_path:
            print(f"\nreport written to {outcome.report_path}")
        check = check_regression(conn, outcome.run_id, margin)
        print(check.message())
        if args.check_regression and check.regressed:
            return 4
    finally:
        conn.close()
    return 0


def _sweep(args) -> int:
    from evaluation.sweep import format_sweep, run_sweep  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    result = run_sweep(
        dense_model=args.dense_model,
        seed=args.seed,
        split=args.split,
        product_text=args.product_text,
        progress=lambda m: print(m, flush=True),
    )
    print()
    print(format_sweep(result))
    return 0


def _sweep_understanding(args) -> int:
    from evaluation.understanding_sweep import (  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
        format_understanding_sweep,
        run_understanding_sweep,
    )

    result = run_understanding_sweep(
        config=args.config, seed=args.seed, progress=lambda m: print(m, flush=True)
    )
    print()
    print(format_understanding_sweep(result))
    return 0


def _report(args) -> int:

    with connect() as conn:
        run_id = args.run
        if run_id is None:
            latest = storage.latest_run(conn)
            if latest is None:
                raise LookupError("no succeeded evaluation run yet; run `fashion-search eval`")
            run_id = latest.id
        print(text_report(conn, run_id))
    return 0
