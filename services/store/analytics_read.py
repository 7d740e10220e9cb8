"""What the analytics page reads (issue #24): the daily aggregate tables over a window of
UTC days, and the experiments with their outcome totals. Read-only; the tables are built by
:mod:`services.store.analytics_aggregate` (the definitions of each figure are there).

Every window is ``day >= since`` (``since``: the first UTC day shown, included). A query's
figures over the window are the sums of its daily rows; its click-through is the share of
its searches (first pages) that got a click, its mean click position the mean over all its
clicks (the daily means weighted by their clicks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg


@dataclass(frozen=True)
class Day:
    """One row of ``analytics_daily`` (rates in 0..1, None where nothing to divide)."""

    day: date
    searches: int
    pages: int
    unique_queries: int
    zero_result_rate: float | None
    click_through_rate: float | None
    mean_click_position: float | None
    abandonment_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    exact_share: float | None
    clicks: int
    add_to_carts: int
    purchases: int
    unmatched_events: int


DAY_COLUMNS = tuple(Day.__dataclass_fields__)


@dataclass(frozen=True)
class QueryStats:
    """One query's figures summed over the window."""

    query: str
    searches: int
    zero_results: int
    clicked_searches: int
    clicks: int
    mean_click_position: float | None

    @property
    def click_through_rate(self) -> float | None:
        return self.clicked_searches / self.searches if self.searches else None


@dataclass(frozen=True)
class ExperimentTotals:
    """An experiment and its outcome summed over all its aggregated days; ``planned`` is
    the sample size fixed when it started (the stop rule's horizon)."""

    id: int
    name: str
    arm_a: dict[str, Any]
    arm_b: dict[str, Any]
    traffic: float
    status: str
    started_at: datetime
    stopped_at: datetime | None
    planned: int
    impressions: int
    clicked: int
    wins: int
    losses: int
    ties: int


def daily(conn: psycopg.Connection, since: date) -> list[Day]:
    """The days of the window that have searches, oldest first."""
    rows = conn.execute(
        f"SELECT {', '.join(DAY_COLUMNS)} FROM analytics_daily WHERE day >= %s ORDER BY day",
        (since,),
    ).fetchall()
    return [Day(*r) for r in rows]


def positions(conn: psycopg.Connection, since: date) -> list[tuple[int, int]]:
    """(position, clicks) summed over the window, by position (1-based)."""
    return conn.execute(
        "SELECT position, sum(clicks)::int FROM analytics_positions_daily "
        "WHERE day >= %s GROUP BY position ORDER BY position",
        (since,),
    ).fetchall()


def distinct_queries(conn: psycopg.Connection, since: date) -> int:
    """How many different (lower-cased) query texts were searched in the window."""
    return conn.execute(
        "SELECT count(DISTINCT query) FROM analytics_queries_daily WHERE day >= %s", (since,)
    ).fetchone()[0]


# Each query's window totals; the three lists below filter and order them.
_PER_QUERY = """
WITH q AS (
    SELECT query,
           sum(searches)::int AS searches,
           sum(zero_results)::int AS zero_results,
           sum(clicked_searches)::int AS clicked_searches,
           sum(clicks)::int AS clicks,
           sum(mean_click_position * clicks) / nullif(sum(clicks), 0) AS mean_click_position
    FROM analytics_queries_daily WHERE day >= %(since)s
    GROUP BY query
)
SELECT query, searches, zero_results, clicked_searches, clicks, mean_click_position FROM q
"""


def _queries(conn: psycopg.Connection, tail: str, params: dict[str, Any]) -> list[QueryStats]:
    return [QueryStats(*r) for r in conn.execute(_PER_QUERY + tail, params).fetchall()]


def top_queries(conn: psycopg.Connection, since: date, limit: int) -> list[QueryStats]:
    """The most searched queries of the window."""
    return _queries(
        conn,
        "ORDER BY searches DESC, query LIMIT %(limit)s",
        {"since": since, "limit": limit},
    )


def zero_result_queries(conn: psycopg.Connection, since: date, limit: int) -> list[QueryStats]:
    """Queries that showed no product at least once, the most often first."""
    return _queries(
        conn,
        "WHERE zero_results > 0 ORDER BY zero_results DESC, searches DESC, query LIMIT %(limit)s",
        {"since": since, "limit": limit},
    )


def queries_to_fix(
    conn: psycopg.Connection,
    since: date,
    limit: int,
    *,
    min_searches: int = 5,
    max_click_through: float = 0.25,
    max_click_position: float = 5.0,
) -> list[QueryStats]:
    """Frequent queries (at least ``min_searches``) whose shoppers rarely click (click-through
    below ``max_click_through``) or click deep (mean click position over
    ``max_click_position``), the most searched first."""
    return _queries(
        conn,
        "WHERE searches >= %(min)s AND (clicked_searches::float8 / searches < %(ctr)s "
        "OR mean_click_position > %(position)s) "
        "ORDER BY searches DESC, query LIMIT %(limit)s",
        {
            "since": since,
            "limit": limit,
            "min": min_searches,
            "ctr": max_click_through,
            "position": max_click_position,
        },
    )


def experiment_totals(conn: psycopg.Connection, limit: int = 100) -> list[ExperimentTotals]:
    """The experiments, newest first, each with its ``experiment_daily`` rows summed over
    its whole run (the stop rule reads the whole sample, not a window of it)."""
    rows = conn.execute(
        "SELECT x.id, x.name, x.arm_a, x.arm_b, x.traffic, x.status, x.started_at, "
        "x.stopped_at, x.impressions, "
        "coalesce(sum(d.impressions), 0)::int, coalesce(sum(d.clicked), 0)::int, "
        "coalesce(sum(d.wins), 0)::int, coalesce(sum(d.losses), 0)::int, "
        "coalesce(sum(d.ties), 0)::int "
        "FROM experiments x LEFT JOIN experiment_daily d ON d.experiment_id = x.id "
        "GROUP BY x.id ORDER BY x.id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [ExperimentTotals(*r) for r in rows]
