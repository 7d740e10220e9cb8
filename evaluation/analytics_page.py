"""The analysts' search analytics page (issue #24): what shoppers searched and clicked over
the last ``days`` UTC days, which queries fail, and which ranking wins an experiment.

Read-only, from the daily aggregate tables (``services.store.analytics_read``; the DAG
``fashion_search_analytics`` builds them). The API serves it at ``/analytics``
(``services.api.controllers.analytics``); this module knows no HTTP. It builds the page
(Jinja2 ``evaluation/templates/analytics.html.j2``, autoescaped), three charts
(``evaluation.charts``' cache: drawn once per distinct input) and a CSV of each table.

Each listed query links to the storefront searching it (``/?q=...``) and names the
merchandiser synonym rules whose words it contains (matched as query understanding matches
them: whole words, singular or plural, ``services.understanding.text.key``).

An experiment's verdict follows the documented stop rule (fixed horizon): its p-value (the
two-sided sign test of wins against losses) is read only once its planned impressions are
recorded; then p < :data:`SIGNIFICANCE` names the winning arm, anything else is "no
difference shown". Before that the page says how far it is.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import psycopg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evaluation.charts import _cached, _empty, _png
from evaluation.dashboard import _f as _num
from evaluation.dashboard import templates
from services.analytics.interleave import sign_test
from services.store import analytics_read as read
from services.understanding.rules import Rule, list_rules
from services.understanding.text import key

DEFAULT_DAYS = 28
MAX_DAYS = 366
SHOWN = 20  # rows of each query table on the page
CSV_ROWS = 1000  # rows of each query table in its CSV
CHART_QUERIES = 10
POSITIONS_SHOWN = 20  # the position chart's bars; deeper clicks share one "21+" bar
SIGNIFICANCE = 0.01  # the stop rule's level (docs/analytics.md)
# "Queries to fix": frequent, and shoppers rarely click or click deep.
FIX_MIN_SEARCHES = 5
FIX_MAX_CLICK_THROUGH = 0.25
FIX_MAX_CLICK_POSITION = 5.0
CSV_TABLES = (
    "daily",
    "positions",
    "top-queries",
    "zero-result-queries",
    "queries-to-fix",
    "experiments",
)


def window_start(days: int, today: date | None = None) -> date:
    """The first UTC day of a window of ``days`` days ending today (included)."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=days - 1)


@dataclass(frozen=True)
class ListedQuery:
    """A query as listed: its figures, the storefront link, its rules, why it needs work."""

    stats: read.QueryStats
    href: str
    rules: list[str]
    reason: str = ""


@dataclass(frozen=True)
class ExperimentRow:
    totals: read.ExperimentTotals
    arm_a: str
    arm_b: str
    p_value: float | None  # None until the planned impressions are recorded
    verdict: str


@dataclass
class AnalyticsData:
    days: int
    since: date
    daily: list[read.Day]
    positions: list[tuple[int, int]]
    distinct_queries: int
    top: list[ListedQuery]
    zero: list[ListedQuery]
    to_fix: list[ListedQuery]
    experiments: list[ExperimentRow]


# --- reading ---------------------------------------------------------------------------------
def _rule_matcher(rules: Iterable[Rule]) -> Callable[[str], list[str]]:
    """query -> the texts of the rules that apply to it (a term of the rule, the left side of
    a one-way rule or any member of a two-way group, is among the query's words)."""
    keyed = [(tuple(f" {key(t)} " for t in r.terms), f"#{r.id} {r}") for r in rules]

    def match(query: str) -> list[str]:
        words = f" {key(query)} "
        return [text for keys, text in keyed if any(k in words for k in keys)]

    return match


def storefront_href(query: str) -> str:
    """The storefront page searching ``query`` (it restores a search from ``?q=``)."""
    return "/?" + urlencode({"q": query})


def _fix_reason(q: read.QueryStats) -> str:
    reasons = []
    ctr = q.click_through_rate
    if ctr is not None and ctr < FIX_MAX_CLICK_THROUGH:
        reasons.append(f"click-through {ctr:.0%}")
    if q.mean_click_position is not None and q.mean_click_position > FIX_MAX_CLICK_POSITION:
        reasons.append(f"clicks deep (mean position {q.mean_click_position:.1f})")
    return "; ".join(reasons)


def arm_text(arm: dict[str, Any]) -> str:
    """``{"alpha": 0.5}`` -> ``alpha 0.5``; ``{"understanding": false}`` -> ``understanding off``."""
    if not arm:
        return "(service defaults)"
    words = {True: "on", False: "off"}
    return ", ".join(
        f"{k} {words[v] if isinstance(v, bool) else v}" for k, v in sorted(arm.items())
    )


def verdict(e: read.ExperimentTotals) -> tuple[float | None, str]:
    """(p-value, verdict) by the stop rule: nothing is read before the planned impressions."""
    if e.impressions < e.planned:
        if e.status == "running":
            return None, f"running: {e.impressions:,} of {e.planned:,} impressions"
        return None, f"stopped at {e.impressions:,} of {e.planned:,} impressions: no verdict"
    p = sign_test(e.wins, e.losses)
    if p < SIGNIFICANCE:
        arm, config = ("A", e.arm_a) if e.wins > e.losses else ("B", e.arm_b)
        return p, f"arm {arm} wins ({arm_text(config)})"
    return p, "no difference shown"


def load_data(
    conn: psycopg.Connection, days: int, today: date | None = None, limit: int = SHOWN
) -> AnalyticsData:
    """Everything the page and its CSVs show, ``limit`` rows per query table."""
    since = window_start(days, today)
    rules = _rule_matcher(list_rules(conn))

    def listed(rows: list[read.QueryStats], why=lambda q: "") -> list[ListedQuery]:
        return [ListedQuery(q, storefront_href(q.query), rules(q.query), why(q)) for q in rows]

    experiments = []
    for e in read.experiment_totals(conn):
        p, text = verdict(e)
        experiments.append(ExperimentRow(e, arm_text(e.arm_a), arm_text(e.arm_b), p, text))
    to_fix = read.queries_to_fix(
        conn,
        since,
        limit,
        min_searches=FIX_MIN_SEARCHES,
        max_click_through=FIX_MAX_CLICK_THROUGH,
        max_click_position=FIX_MAX_CLICK_POSITION,
    )
    return AnalyticsData(
        days=days,
        since=since,
        daily=read.daily(conn, since),
        positions=read.positions(conn, since),
        distinct_queries=read.distinct_queries(conn, since),
        top=listed(read.top_queries(conn, since, limit)),
        zero=listed(read.zero_result_queries(conn, since, limit)),
        to_fix=listed(to_fix, _fix_reason),
        experiments=experiments,
    )


def _weighted(pairs: Iterable[tuple[float | None, float]]) -> float | None:
    """The mean of values weighted by their weights (None values and zero weights left out)."""
    kept = [(v, w) for v, w in pairs if v is not None and w > 0]
    total = sum(w for _, w in kept)
    return sum(v * w for v, w in kept) / total if total else None


def _shown(r) -> float:
    """A day's searches that showed products (what its click-through divides)."""
    return r.searches * (1 - (r.zero_result_rate or 0.0))


def summary(data: AnalyticsData) -> list[tuple[str, str]]:
    """The window's headline figures: sums, and the daily rates weighted by what each
    divides (zero-result rate by searches, click position by clicks, click-through and
    abandonment by searches that showed products: searches x (1 - zero-result rate))."""
    d = data.daily
    searches = sum(r.searches for r in d)

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{v:.1%}"

    zero = _weighted((r.zero_result_rate, r.searches) for r in d)
    return [
        ("searches", f"{searches:,}"),
        ("pages (next pages included)", f"{sum(r.pages for r in d):,}"),
        ("different queries", f"{data.distinct_queries:,}"),
        ("zero-result rate", pct(zero)),
        ("click-through rate", pct(_weighted((r.click_through_rate, _shown(r)) for r in d))),
        (
            "mean click position",
            _num(_weighted((r.mean_click_position, r.clicks) for r in d), 2),
        ),
        (
            "abandonment",
            pct(
                _weighted(
                    (r.abandonment_rate, r.searches * (1 - (r.zero_result_rate or 0))) for r in d
                )
            ),
        ),
        ("clicks", f"{sum(r.clicks for r in d):,}"),
        ("add to carts", f"{sum(r.add_to_carts for r in d):,}"),
        ("purchases", f"{sum(r.purchases for r in d):,}"),
    ]


# --- pictures ----------------------------------------------------------------------------
@_cached
def trend_chart(
    days: Sequence[str],
    searches: Sequence[int],
    zero: Sequence[float | None],
    ctr: Sequence[float | None],
) -> bytes:
    """Searches per day (bars) with the zero-result and click-through rates (lines)."""
    if not days:
        return _empty("No searches recorded yet")
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    xs = list(range(len(days)))
    ax.bar(xs, searches, color="#c6dbef", label="searches")
    ax.set_ylabel("searches (first pages)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    rates = ax.twinx()
    for values, colour, marker, label in (
        (zero, "#b00020", "s", "zero-result rate"),
        (ctr, "#1a7f37", "o", "click-through rate"),
    ):
        pts = [(x, v) for x, v in zip(xs, values) if v is not None]
        rates.plot(
            [p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker, label=label
        )
    rates.set_ylim(0, 1.02)
    rates.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    step = max(1, len(xs) // 14)
    ax.set_xticks(xs[::step])
    ax.set_xticklabels(days[::step], fontsize=8, rotation=45 if len(xs) > 7 else 0)
    ax.set_title("Searches, zero-result rate and click-through per day (UTC)")
    ax.grid(True, axis="y", alpha=0.3)
    handles = ax.get_legend_handles_labels()[0] + rates.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=8)
    return _png(fig)


@_cached
def positions_chart(labels: Sequence[str], clicks: Sequence[int]) -> bytes:
    """Clicks per position in the ranking (1 = first)."""
    if not any(clicks):
        return _empty("No clicks recorded yet")
    fig = Figure(figsize=(7.5, 3.4))
    ax = fig.add_subplot()
    ax.bar(range(len(labels)), clicks, color="#1f77b4")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_xlabel("position clicked (1 = first result)")
    ax.set_ylabel("clicks")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Where shoppers click")
    ax.grid(True, axis="y", alpha=0.3)
    return _png(fig)


@_cached
def queries_chart(
    top: Sequence[str],
    searches: Sequence[int],
    clicked: Sequence[int],
    failing: Sequence[str],
    zero_results: Sequence[int],
) -> bytes:
    """Left: the most searched queries (searches, and those that got a click); right: the
    queries that most often showed nothing."""
    if not top:
        return _empty("No text queries recorded yet")
    rows = max(len(top), len(failing), 3)
    fig = Figure(figsize=(9, 1.2 + 0.32 * rows))
    left, right = fig.subplots(1, 2)
    ys = list(range(len(top)))[::-1]
    left.barh(ys, searches, color="#c6dbef", label="searches")
    left.barh(ys, clicked, color="#1f77b4", height=0.45, label="with a click")
    left.set_yticks(ys, [_short(q) for q in top], fontsize=8)
    left.set_title("Top queries", fontsize=10)
    left.legend(fontsize=7, loc="lower right")
    if failing:
        ys = list(range(len(failing)))[::-1]
        right.barh(ys, zero_results, color="#b00020")
        right.set_yticks(ys, [_short(q) for q in failing], fontsize=8)
    else:
        right.axis("off")
        right.text(0.5, 0.5, "no zero-result query", ha="center", va="center", color="#555")
    right.set_title("Zero-result searches", fontsize=10)
    fig.subplots_adjust(wspace=0.6)
    return _png(fig)


def _short(query: str, width: int = 28) -> str:
    return query if len(query) <= width else query[: width - 1] + "…"


def trend_png(data: AnalyticsData) -> bytes:
    """Every day of the window, those without searches as gaps (no bar, no rate)."""
    if not data.daily:
        return trend_chart([], [], [], [])
    by_day = {r.day: r for r in data.daily}
    days = [data.since + timedelta(days=i) for i in range(data.days)]
    rows = [by_day.get(d) for d in days]
    return trend_chart(
        [f"{d:%m-%d}" for d in days],
        [r.searches if r else 0 for r in rows],
        [r.zero_result_rate if r else None for r in rows],
        [r.click_through_rate if r else None for r in rows],
    )


def position_buckets(positions: Iterable[tuple[int, int]]) -> list[tuple[str, int]]:
    """Positions 1..POSITIONS_SHOWN each, and the deeper ones together."""
    counts = dict(positions)
    out = [(str(p), counts.get(p, 0)) for p in range(1, POSITIONS_SHOWN + 1)]
    deeper = sum(c for p, c in counts.items() if p > POSITIONS_SHOWN)
    return out + ([(f"{POSITIONS_SHOWN + 1}+", deeper)] if deeper else [])


def positions_png(data: AnalyticsData) -> bytes:
    buckets = position_buckets(data.positions)
    return positions_chart([b[0] for b in buckets], [b[1] for b in buckets])


def queries_png(data: AnalyticsData) -> bytes:
    top, zero = data.top[:CHART_QUERIES], data.zero[:CHART_QUERIES]
    return queries_chart(
        [q.stats.query for q in top],
        [q.stats.searches for q in top],
        [q.stats.clicked_searches for q in top],
        [q.stats.query for q in zero],
        [q.stats.zero_results for q in zero],
    )


# --- CSV ---------------------------------------------------------------------------------
_QUERY_COLUMNS = (
    "query",
    "searches",
    "zero_results",
    "clicked_searches",
    "clicks",
    "click_through_rate",
    "mean_click_position",
    "synonym_rules",
)
_EXPERIMENT_COLUMNS = (
    *("name", "arm_a", "arm_b", "traffic", "status", "started_at", "stopped_at"),
    *("planned_impressions", "impressions", "clicked", "wins", "losses", "ties"),
    *("p_value", "verdict"),
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A CSV cell: numbers as numbers (floats to 6 decimals), times in ISO 8601, JSON for
    objects. Text that a spreadsheet would run as a formula (a shopper's query "=HYPERLINK(...)")
    gets a leading apostrophe (OWASP's CSV injection advice)."""
    if value is None:
        return ""
    if isinstance(value, int):  # bool included
        return value
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        value = json.dumps(value, sort_keys=True)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _query_rows(rows: list[ListedQuery], reason: bool = False) -> list[list[Any]]:
    return [
        [
            q.stats.query,
            q.stats.searches,
            q.stats.zero_results,
            q.stats.clicked_searches,
            q.stats.clicks,
            q.stats.click_through_rate,
            q.stats.mean_click_position,
            "; ".join(q.rules),
            *([q.reason] if reason else []),
        ]
        for q in rows
    ]


def table_rows(data: AnalyticsData, table: str) -> tuple[Sequence[str], list[list[Any]]]:
    """(header, rows) of one of :data:`CSV_TABLES`; KeyError for another name."""
    if table == "daily":
        return read.DAY_COLUMNS, [[getattr(r, c) for c in read.DAY_COLUMNS] for r in data.daily]
    if table == "positions":
        total = sum(c for _, c in data.positions)
        return ("position", "clicks", "share"), [[p, c, c / total] for p, c in data.positions]
    if table == "top-queries":
        return _QUERY_COLUMNS, _query_rows(data.top)
    if table == "zero-result-queries":
        return _QUERY_COLUMNS, _query_rows(data.zero)
    if table == "queries-to-fix":
        return (*_QUERY_COLUMNS, "reason"), _query_rows(data.to_fix, reason=True)
    if table == "experiments":
        rows = []
        for x in data.experiments:
            e = x.totals
            rows.append(
                [e.name, e.arm_a, e.arm_b, round(e.traffic, 4), e.status, e.started_at]
                + [e.stopped_at, e.planned, e.impressions, e.clicked, e.wins, e.losses]
                + [e.ties, x.p_value, x.verdict]
            )
        return _EXPERIMENT_COLUMNS, rows
    raise KeyError(table)


def csv_text(data: AnalyticsData, table: str) -> str:
    """The table as CSV (a header row, then one row per line; RFC 4180 quoting)."""
    header, rows = table_rows(data, table)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return out.getvalue()


# --- the page ----------------------------------------------------------------------------
def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1%}"


TEMPLATES = templates(pct=_pct, count=lambda v: f"{v:,}")
TEMPLATE = "analytics.html.j2"
WINDOWS = (7, 28, 90)


def render_page(data: AnalyticsData, base: str) -> str:
    """The page's HTML; ``base`` is its URL path (escaped by the template)."""
    return TEMPLATES.get_template(TEMPLATE).render(
        base=base,
        data=data,
        q=f"?days={data.days}",
        cards=summary(data) if data.daily else [],
        positions=position_buckets(data.positions) if data.positions else [],
        windows=WINDOWS,
        fix=(FIX_MIN_SEARCHES, FIX_MAX_CLICK_THROUGH, FIX_MAX_CLICK_POSITION),
        significance=SIGNIFICANCE,
        tables=CSV_TABLES,
    )
