"""The analysts' MAP dashboard: its numbers (:func:`load_data`), its charts and its page.

Read-only, from ``eval_runs`` / ``eval_metrics``. The API serves it at ``/dashboard``
(``services.api.controllers.dashboard``: the routes, the database connection from the API's
pool); this module knows no HTTP. The page is the Jinja2 template
``evaluation/templates/dashboard.html.j2`` (autoescaped, :data:`TEMPLATES`): the latest
run's headline numbers and targets, the previous-run comparison with regressions
highlighted, the per-family table (labelled catalogue / in-lexicon / held-out, literal
beside), recent alerts, and three charts (MAP@10 per mode across runs, the alpha curve
with the service's default alpha, MAP@10 per family).

The charts are rendered once per distinct input (``evaluation.charts`` caches the PNG bytes,
keyed by the numbers drawn): the numbers are still read per request (a few small queries),
but matplotlib (~0.5 s of CPU a chart) runs only when they change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2
import psycopg

from evaluation import charts
from evaluation.click_judgments import CLICK_FAMILY, CLICK_KIND
from evaluation.metrics import PRIMARY
from evaluation.queries import FAMILIES, FAMILY_KIND
from evaluation.report import TARGETS, family_table, held_out_mean, overall_table, target_lines
from evaluation.summary import (
    DEFAULT_MARGIN,
    Comparison,
    Headline,
    alpha_curve,
    best_alpha,
    compare,
    headline,
    margin_from_env,
    value,
)
from services.store import evaluations as storage
from services.store.evaluations import ALL

HISTORY_RUNS = 60
log = logging.getLogger(__name__)


@dataclass
class DashboardData:
    runs: list[storage.EvalRun]
    history: dict[str, list[float | None]]
    run: storage.EvalRun | None
    rows: list[storage.MetricRow]
    head: Headline | None
    previous: storage.EvalRun | None
    comparison: list[Comparison]
    alerts: list[storage.Alert]
    current_default_alpha: float | None
    margin: float


def load_data(
    conn: psycopg.Connection, run_id: int | None = None, current_default_alpha: float | None = None
) -> DashboardData:
    runs = storage.list_runs(conn, limit=HISTORY_RUNS)
    by_run = storage.metrics_for_runs(conn, [r.id for r in runs])
    history: dict[str, list[float | None]] = {
        m: [] for m in ("dense", "sparse", "hybrid", "hybrid_default", "multi")
    }
    for r in runs:
        h = headline(
            by_run[r.id], r.details.get("default_alpha"), r.details.get("default_alpha_multi")
        )
        history["dense"].append(h.dense)
        history["sparse"].append(h.sparse)
        history["hybrid"].append(h.hybrid)
        history["hybrid_default"].append(h.hybrid_default)
        history["multi"].append(h.multi)
    if run_id is not None:
        run = storage.get_run(conn, run_id)
        if run is None:
            raise LookupError(f"evaluation run {run_id} does not exist")
    else:
        run = runs[-1] if runs else None
    rows = storage.metrics_for(conn, run.id) if run else []
    head = (
        headline(rows, run.details.get("default_alpha"), run.details.get("default_alpha_multi"))
        if run
        else None
    )
    previous = storage.previous_run(conn, run.id) if run else None
    prev_head = (
        headline(
            storage.metrics_for(conn, previous.id),
            previous.details.get("default_alpha"),
            previous.details.get("default_alpha_multi"),
        )
        if previous
        else None
    )
    try:
        margin = margin_from_env()
    except ValueError:
        margin = DEFAULT_MARGIN
    comparison = compare(head, prev_head, margin) if head else []
    alerts = storage.list_alerts(conn, limit=10)
    conn.commit()
    return DashboardData(
        runs,
        history,
        run,
        rows,
        head,
        previous,
        comparison,
        alerts,
        current_default_alpha,
        margin,
    )


# --- pictures ----------------------------------------------------------------------------
def history_png(data: DashboardData) -> bytes:
    labels = [f"#{r.id}\n{(r.finished_at or r.started_at):%m-%d %H:%M}" for r in data.runs]
    return charts.history_chart([r.id for r in data.runs], data.history, labels)


def alpha_png(data: DashboardData) -> bytes:
    if data.run is None:
        return charts.alpha_chart({}, {}, data.current_default_alpha, "no run")
    curves = {m: alpha_curve(data.rows, m) for m in ("hybrid", "multi")}
    best = {m: best_alpha(data.rows, m) for m in ("hybrid", "multi")}
    return charts.alpha_chart(curves, best, data.current_default_alpha, f"run #{data.run.id}")


def families_png(data: DashboardData) -> bytes:
    """Per family: dense, sparse, hybrid at the default alpha, the same queries searched
    literally (understanding off), and image + text; each label says where its words come
    from (catalogue, in-lexicon, held-out)."""
    if data.run is None or data.head is None:
        return charts.family_chart([], {}, "no run")
    fams = [f for f in (*FAMILIES, CLICK_FAMILY) if any(r.family == f for r in data.rows)]
    h = data.head

    def at(mode: str, alpha: float | None) -> list[float | None]:
        return [value(data.rows, mode, alpha, family=f) for f in fams]

    series = {
        "dense": at("dense", None),
        "sparse": at("sparse", None),
        "hybrid_default": at("hybrid", h.default_alpha) if h.default_alpha is not None else [],
        "literal": [
            value(data.rows, "literal", family=f) or value(data.rows, "multi_literal", family=f)
            for f in fams
        ],
        "multi": at("multi", h.multi_alpha) if h.multi_alpha is not None else [],
    }
    n_clicks = max(
        (r.n_queries for r in data.rows if r.family == CLICK_FAMILY and r.metric == PRIMARY),
        default=0,
    )
    labels = [
        f"{f} ({FAMILY_KIND[f]})" if f != CLICK_FAMILY else f"{f} ({CLICK_KIND}, n={n_clicks})"
        for f in fams
    ]
    return charts.family_chart(labels, series, f"run #{data.run.id}")


# --- the page ----------------------------------------------------------------------------
def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def templates(**filters: Callable) -> jinja2.Environment:
    """The analysts' pages' templates (this dashboard, evaluation.analytics_page), with the
    ``num`` filter and ``filters``. Plain Jinja2 rather than Litestar's TemplateConfig: the
    controllers are mounted in apps that configure no template engine (the API, the tests'
    bare Litestar apps), and the pages must also render outside a request."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=_f, **filters)
    return env


TEMPLATES = templates()
SKIPPED_SHOWN = 50


def render_page(data: DashboardData, base: str) -> str:
    """The dashboard's HTML; ``base`` is the page's URL path (escaped by the template)."""
    run, h = data.run, data.head
    context: dict[str, Any] = {"base": base, "run": run, "head": h}
    if run is not None and h is not None:
        context |= {
            "q": f"?run={run.id}",
            "cards": [
                ("dense MAP@10", h.dense, TARGETS["dense"]),
                ("sparse MAP@10", h.sparse, None),
                (
                    f"hybrid at default alpha {_f(h.default_alpha, 2)}",
                    h.hybrid_default,
                    TARGETS["hybrid"],
                ),
                (f"hybrid MAP@10 (best alpha {_f(h.hybrid_alpha, 1)})", h.hybrid, None),
                ("image + text MAP@10 (default alpha)", h.multi_default, TARGETS["multi"]),
                (f"image + text (best alpha {_f(h.multi_alpha, 1)})", h.multi, None),
                (
                    "held-out families, hybrid at default alpha",
                    held_out_mean(data.rows, h),
                    None,
                ),
                ("literal text (understanding off)", value(data.rows, "literal"), None),
                ("fast recall@10 vs exact", h.fast_recall, None),
                ("threshold met (top 10), first candidates", h.certified_fast, None),
            ],
            "target_notes": target_lines(h, data.rows),
            "understanding": run.details.get("understanding", {}),
            "current_default_alpha": data.current_default_alpha,
            "previous": data.previous,
            "comparison": data.comparison,
            "margin": data.margin,
            "family_rows": family_table(data.rows, h),
            "overall_rows": overall_table(data.rows),
            "alerts": data.alerts,
            "skipped": run.details.get("skipped", []),
            "clicks": run.details.get("clicks", {}),
            "skipped_shown": SKIPPED_SHOWN,
        }
    return TEMPLATES.get_template("dashboard.html.j2").render(context)


def data_json(d: DashboardData) -> dict[str, Any]:
    """The dashboard's numbers as JSON (``/dashboard/data.json``)."""
    return {
        "runs": [
            {"id": r.id, "finished_at": str(r.finished_at), "index_version_id": r.index_version_id}
            for r in d.runs
        ],
        "history": d.history,
        "run": d.run.id if d.run else None,
        "headline": d.head.__dict__ if d.head else None,
        "comparison": [c.__dict__ for c in d.comparison],
        "current_default_alpha": d.current_default_alpha,
        "metrics": [r.__dict__ for r in d.rows if r.family == ALL or r.metric == PRIMARY],
    }
