"""The daily analytics tables, rebuilt from the raw rows one UTC day at a time (issue #24).

:func:`aggregate_day` deletes the day's aggregate rows and inserts them again in one
transaction, so running it twice gives the same tables (the hourly DAG reruns it for the
hour's day and the day before, so events that arrive after midnight are folded in).

What each figure means (docs/analytics.md says the same for analysts):

- a **search** is a first page (``page_offset = 0``); a **page** is any search response;
- an **event** counts only where its product is the one that page showed at its position
  (others are ``unmatched_events``); events are read up to a day after their search's day;
- **zero-result rate**: first pages that showed no product;
- **click-through rate**: pages with products that got at least one click;
- **mean click position**: of the clicks, 1-based in the whole ranking;
- **abandonment**: first pages with products that got no event and were followed by no
  other search of the same session within 30 minutes (searches without a session: no
  event);
- **latency** percentiles of every page; **exact share**: pages whose certificate proved
  the ranking exact.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import psycopg

from services.store.analytics import _OUTCOMES

# The searches of one UTC day, each with its matched events.
_PER_SEARCH = """
WITH s AS (
    SELECT search_id, at, session_hash, lower(query) AS query, page_offset,
           cardinality(product_ids) AS shown, exact, latency_ms
    FROM analytics_searches WHERE at >= %(lo)s AND at < %(hi)s
), e AS (
    SELECT e.search_id, e.kind, e.position,
           e.product_id = x.product_ids[e.position - x.page_offset] AS matched
    FROM analytics_events e JOIN analytics_searches x USING (search_id)
    WHERE e.at >= %(lo)s AND e.at < %(hi)s + interval '1 day'
      AND x.at >= %(lo)s AND x.at < %(hi)s
), per AS (
    SELECT s.*,
           coalesce(c.clicks, 0) AS clicks,
           coalesce(c.events, 0) AS events,
           c.click_position,
           CASE WHEN s.session_hash IS NOT NULL
                THEN lead(s.at) OVER (PARTITION BY s.session_hash ORDER BY s.at) END AS next_at
    FROM s LEFT JOIN (
        SELECT search_id,
               count(*) FILTER (WHERE kind = 'click' AND matched) AS clicks,
               count(*) FILTER (WHERE matched) AS events,
               avg(position) FILTER (WHERE kind = 'click' AND matched) AS click_position
        FROM e GROUP BY search_id
    ) c USING (search_id)
)
"""

_DAILY = (
    _PER_SEARCH
    + """
INSERT INTO analytics_daily (
    day, searches, pages, unique_queries, zero_result_rate, click_through_rate,
    mean_click_position, abandonment_rate, latency_p50_ms, latency_p95_ms, latency_p99_ms,
    exact_share, clicks, add_to_carts, purchases, unmatched_events)
SELECT %(day)s,
       count(*) FILTER (WHERE page_offset = 0),
       count(*),
       count(DISTINCT query) FILTER (WHERE page_offset = 0),
       avg((shown = 0)::int) FILTER (WHERE page_offset = 0),
       avg((clicks > 0)::int) FILTER (WHERE shown > 0),
       (SELECT avg(position) FROM e WHERE kind = 'click' AND matched),
       avg((events = 0 AND (next_at IS NULL OR next_at > at + interval '30 minutes'))::int)
           FILTER (WHERE page_offset = 0 AND shown > 0),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms),
       avg(exact::int),
       (SELECT count(*) FROM e WHERE kind = 'click' AND matched),
       (SELECT count(*) FROM e WHERE kind = 'add_to_cart' AND matched),
       (SELECT count(*) FROM e WHERE kind = 'purchase' AND matched),
       (SELECT count(*) FROM e WHERE NOT matched OR matched IS NULL)
FROM per
HAVING count(*) > 0
"""
)

_QUERIES = (
    _PER_SEARCH
    + """
INSERT INTO analytics_queries_daily (
    day, query, searches, zero_results, clicked_searches, clicks, mean_click_position)
SELECT %(day)s, query, count(*), count(*) FILTER (WHERE shown = 0),
       count(*) FILTER (WHERE clicks > 0), sum(clicks),
       sum(click_position * clicks) / nullif(sum(clicks), 0)
FROM per WHERE page_offset = 0 AND query IS NOT NULL
GROUP BY query
"""
)

_POSITIONS = (
    _PER_SEARCH
    + """
INSERT INTO analytics_positions_daily (day, position, clicks)
SELECT %(day)s, position, count(*) FROM e WHERE kind = 'click' AND matched GROUP BY position
"""
)

_EXPERIMENTS = f"""
INSERT INTO experiment_daily (experiment_id, day, impressions, clicked, wins, losses, ties)
SELECT %(experiment)s, day, impressions, clicked, wins, losses, ties FROM ({_OUTCOMES}) o
"""

AGGREGATE_TABLES = (
    "analytics_daily",
    "analytics_queries_daily",
    "analytics_positions_daily",
    "experiment_daily",
)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    lo = datetime.combine(day, time(0), tzinfo=UTC)
    return lo, lo + timedelta(days=1)


def aggregate_day(conn: psycopg.Connection, day: date) -> dict[str, int]:
    """Rebuilds the aggregate tables' rows of ``day`` (UTC) in one transaction. Returns the
    rows written per table."""
    lo, hi = day_bounds(day)
    params = {"day": day, "lo": lo, "hi": hi}
    written: dict[str, int] = {}
    with conn.transaction():
        for table in AGGREGATE_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE day = %s", (day,))
        for table, statement in (
            ("analytics_daily", _DAILY),
            ("analytics_queries_daily", _QUERIES),
            ("analytics_positions_daily", _POSITIONS),
        ):
            written[table] = conn.execute(statement, params).rowcount
        ids = conn.execute(
            "SELECT DISTINCT experiment_id FROM analytics_searches "
            "WHERE at >= %s AND at < %s AND experiment_id IS NOT NULL",
            (lo, hi),
        ).fetchall()
        written["experiment_daily"] = sum(
            conn.execute(_EXPERIMENTS, {**params, "experiment": i}).rowcount for (i,) in ids
        )
    return written


def record_hour(conn: psycopg.Connection, hour: datetime) -> tuple[int, int]:
    """Records that ``hour`` (UTC, truncated) was aggregated, with its raw row counts;
    idempotent (a rerun updates the row). Returns (searches, events)."""
    lo = hour.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hi = lo + timedelta(hours=1)
    searches, events = conn.execute(
        "SELECT (SELECT count(*) FROM analytics_searches WHERE at >= %(lo)s AND at < %(hi)s), "
        "(SELECT count(*) FROM analytics_events WHERE at >= %(lo)s AND at < %(hi)s)",
        {"lo": lo, "hi": hi},
    ).fetchone()
    conn.execute(
        "INSERT INTO analytics_hours (hour, searches, events) VALUES (%s, %s, %s) "
        "ON CONFLICT (hour) DO UPDATE SET searches = EXCLUDED.searches, "
        "events = EXCLUDED.events, aggregated_at = now()",
        (lo, searches, events),
    )
    return searches, events
