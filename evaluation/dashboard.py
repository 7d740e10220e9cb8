"""The analysts' MAP dashboard: a Litestar controller mounted by the API at ``/dashboard``.

Routes (all read-only, rendered from ``eval_runs`` / ``eval_metrics``):

- ``GET /dashboard``              HTML page: latest run's headline numbers and targets,
  the previous-run comparison with regressions highlighted, the per-family table,
  recent alerts, and the three charts below;
- ``GET /dashboard/history.png``  MAP@10 per mode across runs;
- ``GET /dashboard/alpha.png``    the latest run's alpha curve, best alpha starred, the
  service's current ``settings.default_alpha`` as a dashed line;
- ``GET /dashboard/families.png`` MAP@10 per query family and mode;
- ``GET /dashboard/data.json``    the same numbers as JSON.

``?run=<id>`` selects another run than the latest (an id >= 1; Litestar answers 400 to
anything else). The page is the Jinja2 template ``evaluation/templates/dashboard.html.j2``
(autoescaped). The controller takes a database connection from the API's pool
(``app.state.runtime.pool``, or ``app.state.db_pool``) when mounted in ``services.api``, else
opens one per request (a bare Litestar app in tests); an unreachable database answers 503
"the database is unavailable" with ``Retry-After`` (the reason goes to the log only).

The charts are rendered once per distinct input (``evaluation.charts`` caches the PNG bytes,
keyed by the numbers drawn): the numbers are still read per request (a few small queries),
but matplotlib (~0.5 s of CPU a chart) runs only when they change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import jinja2
import psycopg
from litestar import Controller, MediaType, Request, Response, get
from litestar.exceptions import NotFoundException, ServiceUnavailableException
from litestar.params import QueryParameter
from psycopg_pool import PoolTimeout

from evaluation import charts
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
from services.api.schemas import DocumentedOperation, error_responses
from services.config import get_settings
from services.store import evaluations as storage
from services.store.db import DatabaseUnavailable, connect
from services.store.evaluations import ALL

HISTORY_RUNS = 60
RETRY_AFTER_S = 2
UNAVAILABLE = "the database is unavailable; retry shortly"
log = logging.getLogger(__name__)


def _app_pool(request: Request):
    """The API's pool: ``app.state.runtime.pool`` (services.api) or ``app.state.db_pool``."""
    state = request.app.state
    runtime = getattr(state, "runtime", None)
    for candidate in (
        getattr(runtime, "pool", None),
        getattr(state, "db_pool", None),
        getattr(state, "pool", None),
    ):
        if candidate is not None and hasattr(candidate, "connection"):
            return candidate
    return None


def _unavailable(exc: Exception) -> ServiceUnavailableException:
    """503 with Retry-After; the reason (host, port...) goes to the log, not to the client."""
    reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    log.warning("dashboard: database unavailable: %s", reason)
    return ServiceUnavailableException(UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER_S)})


@contextmanager
def _connection(request: Request) -> Iterator[psycopg.Connection]:
    """A connection for one request; the database failing (at connect or mid-query) is a 503."""
    pool = _app_pool(request)
    try:
        if pool is not None:
            with pool.connection() as conn:
                yield conn
            return
        conn = connect()
        try:
            yield conn
        finally:
            conn.close()
    except (PoolTimeout, DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise _unavailable(exc) from None


def _current_default_alpha(request: Request | None = None) -> float | None:
    """The serving process's settings.default_alpha (the API's runtime settings if mounted)."""
    runtime = getattr(request.app.state, "runtime", None) if request is not None else None
    settings = getattr(runtime, "settings", None)
    if settings is not None:
        return float(settings.default_alpha)
    try:
        return float(get_settings().default_alpha)
    except Exception:  # noqa: BLE001 - the page must render without settings
        return None


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
        current_default_alpha if current_default_alpha is not None else _current_default_alpha(),
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
    fams = [f for f in FAMILIES if any(r.family == f for r in data.rows)]
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
    labels = [f"{f} ({FAMILY_KIND[f]})" for f in fams]
    return charts.family_chart(labels, series, f"run #{data.run.id}")


# --- the page ----------------------------------------------------------------------------
def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


# Plain Jinja2 rather than Litestar's TemplateConfig: the controller is mounted in apps that
# configure no template engine (the API, the tests' bare Litestar apps), and render_page
# must also render outside a request.
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("evaluation", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.filters["num"] = _f
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
                ("certified top 10, first candidates", h.certified_fast, None),
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
            "skipped_shown": SKIPPED_SHOWN,
        }
    return _TEMPLATES.get_template("dashboard.html.j2").render(context)


def _png_response(data: bytes) -> Response[bytes]:
    return Response(content=data, media_type=PNG, headers={"Cache-Control": "no-store"})


def _load(request: Request, run: int | None) -> DashboardData:
    with _connection(request) as conn:
        try:
            return load_data(conn, run, _current_default_alpha(request))
        except LookupError as exc:
            raise NotFoundException(str(exc)) from None


# ``?run=<id>``: another run than the latest (Litestar validates it: 400 if not an id).
RunParam = Annotated[
    int | None,
    QueryParameter(ge=1, description="Evaluation run id; default: the latest run."),
]


PNG = "image/png"
# Every route: 400 (run is not an id), 404 (no such run), 503 (database); see the module doc.
_ROUTE = {
    "sync_to_thread": True,
    "operation_class": DocumentedOperation,
    "responses": error_responses(400, 404, 503),
}


class DashboardController(Controller):
    """Analysts' MAP dashboard (HTML + PNG charts); see the module docstring."""

    path = "/dashboard"
    tags: ClassVar[list[str]] = ["dashboard"]

    @get("/", media_type=MediaType.HTML, summary="The dashboard page (HTML)", **_ROUTE)
    def page(self, request: Request, run: RunParam = None) -> str:
        base = request.url.path.rstrip("/") or "/dashboard"
        return render_page(_load(request, run), base)

    @get("/history.png", media_type=PNG, summary="MAP@10 per mode across runs", **_ROUTE)
    def history(self, request: Request, run: RunParam = None) -> Response[bytes]:
        return _png_response(history_png(_load(request, run)))

    @get("/alpha.png", media_type=PNG, summary="The run's MAP@10 against alpha", **_ROUTE)
    def alpha(self, request: Request, run: RunParam = None) -> Response[bytes]:
        return _png_response(alpha_png(_load(request, run)))

    @get("/families.png", media_type=PNG, summary="The run's MAP@10 per query family", **_ROUTE)
    def families(self, request: Request, run: RunParam = None) -> Response[bytes]:
        return _png_response(families_png(_load(request, run)))

    @get("/data.json", summary="The dashboard's numbers as JSON", **_ROUTE)
    def data(self, request: Request, run: RunParam = None) -> dict[str, Any]:
        d = _load(request, run)
        return {
            "runs": [
                {
                    "id": r.id,
                    "finished_at": str(r.finished_at),
                    "index_version_id": r.index_version_id,
                }
                for r in d.runs
            ],
            "history": d.history,
            "run": d.run.id if d.run else None,
            "headline": d.head.__dict__ if d.head else None,
            "comparison": [c.__dict__ for c in d.comparison],
            "current_default_alpha": d.current_default_alpha,
            "metrics": [r.__dict__ for r in d.rows if r.family == ALL or r.metric == PRIMARY],
        }
