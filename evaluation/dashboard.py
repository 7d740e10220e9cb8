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

``?run=<id>`` selects another run than the latest. The controller takes a database
connection from the API's pool (``app.state.runtime.pool``, or ``app.state.db_pool``)
when mounted in ``services.api``, else opens one per request (a bare Litestar app in
tests); an unreachable database answers 503.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
from litestar import Controller, MediaType, Request, Response, get

from evaluation import charts, storage
from evaluation.metrics import PRIMARY
from evaluation.queries import FAMILIES
from evaluation.report import TARGETS, family_table, overall_table, target_lines
from evaluation.storage import ALL
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

HISTORY_RUNS = 60


def _app_pool(request: Request):
    """The API's pool: ``app.state.runtime.pool`` (services.api) or ``app.state.db_pool``."""
    state = request.app.state
    runtime = getattr(state, "runtime", None)
    for candidate in (getattr(runtime, "pool", None), getattr(state, "db_pool", None),
                      getattr(state, "pool", None)):
        if candidate is not None and hasattr(candidate, "connection"):
            return candidate
    return None


@contextmanager
def _connection(request: Request) -> Iterator[psycopg.Connection]:
    from litestar.exceptions import ServiceUnavailableException

    from services.store.db import DatabaseUnavailable, connect

    pool = _app_pool(request)
    try:
        if pool is not None:
            with pool.connection() as conn:
                yield conn
            return
        conn = connect()
    except (DatabaseUnavailable, psycopg.OperationalError) as exc:
        raise ServiceUnavailableException(f"database unavailable: {exc}") from None
    except Exception as exc:  # psycopg_pool.PoolTimeout
        if type(exc).__name__ == "PoolTimeout":
            raise ServiceUnavailableException("database unavailable (pool timeout)") from None
        raise
    try:
        yield conn
    finally:
        conn.close()


def _current_default_alpha(request: Request | None = None) -> float | None:
    """The serving process's settings.default_alpha (the API's runtime settings if mounted)."""
    runtime = getattr(request.app.state, "runtime", None) if request is not None else None
    settings = getattr(runtime, "settings", None)
    if settings is not None:
        return float(settings.default_alpha)
    try:
        from services.config import get_settings

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


def load_data(conn: psycopg.Connection, run_id: int | None = None,
              current_default_alpha: float | None = None) -> DashboardData:
    runs = storage.list_runs(conn, limit=HISTORY_RUNS)
    by_run = storage.metrics_for_runs(conn, [r.id for r in runs])
    history: dict[str, list[float | None]] = {m: [] for m in
                                              ("dense", "sparse", "hybrid", "hybrid_default",
                                               "multi")}
    for r in runs:
        h = headline(by_run[r.id], r.details.get("default_alpha"),
                     r.details.get("default_alpha_multi"))
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
    head = headline(rows, run.details.get("default_alpha"),
                    run.details.get("default_alpha_multi")) if run else None
    previous = storage.previous_run(conn, run.id) if run else None
    prev_head = headline(storage.metrics_for(conn, previous.id), previous.details.get("default_alpha"),
                         previous.details.get("default_alpha_multi")) if previous else None
    try:
        margin = margin_from_env()
    except ValueError:
        margin = DEFAULT_MARGIN
    comparison = compare(head, prev_head, margin) if head else []
    alerts = storage.list_alerts(conn, limit=10)
    conn.commit()
    return DashboardData(runs, history, run, rows, head, previous, comparison, alerts,
                         current_default_alpha if current_default_alpha is not None
                         else _current_default_alpha(), margin)


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
    if data.run is None or data.head is None:
        return charts.family_chart([], {}, "no run")
    fams = [f for f in FAMILIES if any(r.family == f for r in data.rows)]
    h = data.head
    series = {
        "dense": [value(data.rows, "dense", family=f) for f in fams],
        "sparse": [value(data.rows, "sparse", family=f) for f in fams],
        "hybrid": [value(data.rows, "hybrid", h.hybrid_alpha, family=f)
                   if h.hybrid_alpha is not None else None for f in fams],
        "multi": [value(data.rows, "multi", h.multi_alpha, family=f)
                  if h.multi_alpha is not None else None for f in fams],
    }
    return charts.family_chart(fams, series, f"run #{data.run.id}")


# --- the page ----------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1240px}
h1{font-size:1.5em;margin-bottom:4px} h2{font-size:1.15em;margin-top:28px}
.meta{color:#555;font-size:.9em} .cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #ddd;border-radius:8px;padding:10px 14px;min-width:150px}
.card .v{font-size:1.6em;font-weight:600} .card .l{font-size:.8em;color:#555}
table{border-collapse:collapse;font-size:.88em;margin:6px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right} th:first-child,td:first-child{text-align:left}
th{background:#f4f4f4} tr.regressed td{background:#fde2e2;color:#8b0000;font-weight:600}
tr.improved td:last-child{color:#1a7f37} .ok{color:#1a7f37} .bad{color:#b00020;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:10px} .charts img{border:1px solid #eee;max-width:100%}
.note{font-size:.85em;color:#555;max-width:900px}
"""


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                   for r in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_page(data: DashboardData, base: str) -> str:
    esc = html.escape
    q = f"?run={data.run.id}" if data.run else ""
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Search quality dashboard</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Search quality dashboard</h1>",
    ]
    if data.run is None or data.head is None:
        parts += [
            ("<p class='meta'>No evaluation run is stored yet. Run <code>fashion-search eval</code> "
            "(or the <code>fashion_eval_nightly</code> DAG) once a live index exists.</p>"),
            f"<div class='charts'><img alt='MAP history' src='{base}/history.png'></div>",
            "</body></html>",
        ]
        return "".join(parts)
    run, h = data.run, data.head
    parts.append(
        f"<p class='meta'>Run <b>#{run.id}</b> ({esc(run.status)}), finished "
        f"{esc(str(run.finished_at or run.started_at)[:19])} · index "
        f"{'v' + str(run.index_version_id) if run.index_version_id else '(deleted)'} "
        f"({run.details.get('n_products', '?')} products) · dense <code>{esc(str(run.dense_model))}"
        f"</code> · sparse <code>{esc(str(run.sparse_model))}</code> · query set "
        f"<code>{esc(str(run.query_set_version))}</code>, {run.details.get('n_queries_scored', '?')}"
        f" queries scored, {len(run.details.get('skipped', []))} skipped</p>")
    cards = [
        ("dense MAP@10", h.dense, TARGETS["dense"]),
        ("sparse MAP@10", h.sparse, None),
        (f"hybrid at default alpha {_f(h.default_alpha, 2)}", h.hybrid_default, TARGETS["hybrid"]),
        (f"hybrid MAP@10 (best alpha {_f(h.hybrid_alpha, 1)})", h.hybrid, None),
        ("image + text MAP@10 (default alpha)", h.multi_default, TARGETS["multi"]),
        (f"image + text (best alpha {_f(h.multi_alpha, 1)})", h.multi, None),
        ("fast recall@10 vs exact", h.fast_recall, None),
    ]
    parts.append("<div class='cards'>")
    for label, v, target in cards:
        cls = "" if target is None or v is None else ("ok" if v >= target else "bad")
        tgt = f" <span class='l'>(target {target:.2f})</span>" if target is not None else ""
        parts.append(f"<div class='card'><div class='v {cls}'>{_f(v)}</div>"
                     f"<div class='l'>{esc(label)}</div>{tgt}</div>")
    parts.append("</div>")
    parts.append("<ul class='note'>" + "".join(f"<li>{esc(t)}</li>" for t in target_lines(h, data.rows))
                 + "</ul>")
    cur = data.current_default_alpha
    parts.append(
        f"<p class='note'>The service currently ranks with <b>default alpha {_f(cur, 2)}</b> "
        f"(settings.default_alpha), chosen by <code>fashion-search eval-sweep</code> on the tuning "
        f"half of the query set; a reported run asks the other half "
        f"(split: <b>{esc(str(run.details.get('split', 'all')))}</b>). This run's best alpha, "
        f"<b>{_f(h.hybrid_alpha, 1)}</b>, is picked on its own queries: an optimistic number.</p>")
    parts += [
        "<h2>Charts</h2><div class='charts'>",
        f"<img alt='MAP@10 history per mode' src='{base}/history.png' width='590'>",
        f"<img alt='alpha curve of the run' src='{base}/alpha.png{q}' width='590'>",
        f"<img alt='MAP@10 per family' src='{base}/families.png{q}' width='590'>",
        "</div>",
    ]
    # previous-run comparison
    title = f"Against the previous run #{data.previous.id}" if data.previous else \
        "Against the previous run (none yet)"
    parts.append(f"<h2>{esc(title)}</h2>")
    parts.append("<table><thead><tr><th>number</th><th>previous</th><th>current</th>"
                 "<th>delta</th></tr></thead><tbody>")
    for c in data.comparison:
        cls = "regressed" if c.regressed else ("improved" if (c.delta or 0) > 0 else "")
        flag = " ▼ regression" if c.regressed else ""
        parts.append(f"<tr class='{cls}'><td>{esc(c.name)}</td><td>{_f(c.previous)}</td>"
                     f"<td>{_f(c.current)}</td><td>{_f(c.delta)}{flag}</td></tr>")
    parts.append(f"</tbody></table><p class='note'>A drop of more than {data.margin:.3f} is "
                 "a regression (FASHION_EVAL_MAP_MARGIN); the nightly DAG fails on a hybrid "
                 "regression.</p>")
    parts.append("<h2>MAP@10 per query family</h2>")
    parts.append(_table(family_table(data.rows, h)))
    parts.append("<h2>All metrics, per mode and alpha (all families)</h2>")
    parts.append(_table(overall_table(data.rows)))
    if data.alerts:
        parts.append("<h2>Recent alerts</h2><table><thead><tr><th>when</th><th>run</th>"
                     "<th>source</th><th>message</th></tr></thead><tbody>")
        for a in data.alerts:
            parts.append(f"<tr class='regressed'><td>{esc(str(a.created_at)[:19])}</td>"
                         f"<td>{a.run_id or ''}</td><td>{esc(a.source)}</td>"
                         f"<td>{esc(a.message)}</td></tr>")
        parts.append("</tbody></table>")
    skipped = data.run.details.get("skipped", [])
    if skipped:
        parts.append(f"<h2>Skipped queries ({len(skipped)})</h2><ul class='note'>")
        parts += [f"<li>{esc(s['qid'])} “{esc(s['text'])}”: {esc(s['reason'])}</li>"
                  for s in skipped[:50]]
        parts.append("</ul>")
    parts.append(
        "<p class='note'>Relevance is judged from catalogue metadata (binary); AP@10 = sum of "
        "precision@i at relevant ranks i ≤ 10, divided by min(10, #relevant). Protocol: "
        "evaluation/PROTOCOL.md.</p></body></html>")
    return "".join(parts)


def _png_response(data: bytes) -> Response[bytes]:
    return Response(content=data, media_type="image/png", headers={"Cache-Control": "no-store"})


def _run_param(request: Request) -> int | None:
    raw = request.query_params.get("run")
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        from litestar.exceptions import ValidationException

        raise ValidationException(f"run must be an integer, got {raw!r}") from None


def _load(request: Request) -> DashboardData:
    from litestar.exceptions import NotFoundException

    with _connection(request) as conn:
        try:
            return load_data(conn, _run_param(request), _current_default_alpha(request))
        except LookupError as exc:
            raise NotFoundException(str(exc)) from None


class DashboardController(Controller):
    """Analysts' MAP dashboard (HTML + PNG charts); see the module docstring."""

    path = "/dashboard"
    tags: ClassVar[list[str]] = ["dashboard"]

    @get("/", media_type=MediaType.HTML, sync_to_thread=True, include_in_schema=False)
    def page(self, request: Request) -> str:
        base = request.url.path.rstrip("/") or "/dashboard"
        return render_page(_load(request), html.escape(base, quote=True))

    @get("/history.png", sync_to_thread=True)
    def history(self, request: Request) -> Response[bytes]:
        return _png_response(history_png(_load(request)))

    @get("/alpha.png", sync_to_thread=True)
    def alpha(self, request: Request) -> Response[bytes]:
        return _png_response(alpha_png(_load(request)))

    @get("/families.png", sync_to_thread=True)
    def families(self, request: Request) -> Response[bytes]:
        return _png_response(families_png(_load(request)))

    @get("/data.json", sync_to_thread=True)
    def data(self, request: Request) -> dict[str, Any]:
        d = _load(request)
        return {
            "runs": [{"id": r.id, "finished_at": str(r.finished_at),
                      "index_version_id": r.index_version_id} for r in d.runs],
            "history": d.history,
            "run": d.run.id if d.run else None,
            "headline": d.head.__dict__ if d.head else None,
            "comparison": [c.__dict__ for c in d.comparison],
            "current_default_alpha": d.current_default_alpha,
            "metrics": [r.__dict__ for r in d.rows if r.family == ALL or r.metric == PRIMARY],
        }
