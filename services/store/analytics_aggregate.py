"""The daily analytics tables, rebuilt from the raw rows one UTC day at a time (issue #24).

:func:`aggregate_day` deletes the day's aggregate rows and inserts them again in one
transaction, so running it twice gives the same tables (the hourly DAG reruns it for the
hour's day and the day before, so events that arrive after midnight are folded in).

What each figure means (docs/analytics.md says the same for analysts):

- a **page** is any search response; a **search** is a first page (``page_offset = 0``)
  with the next pages the same session asked of the same query after it ("Load more"; a
  page without a session stands alone);
- an **event** counts only where its product is the one that page showed at its position
  (others are ``unmatched_events``); events are read up to a day after their search's day;
- **zero-result rate**: searches whose first page showed no product;
- **click-through rate**: searches with products that got at least one click, on any of
  their pages;
- **mean click position**: of the clicks, 1-based in the whole ranking;
- **abandonment**: searches with products that got no event on any page and were followed
  by no other search of the same session within 30 minutes (searches without a session: no
  event);
- **latency** percentiles of every page; **exact share**: pages whose certificate proved
  the ranking exact.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import psycopg

from services.store.analytics import _OUTCOMES

# The pages of one UTC day with their matched events, and the searches they make up.
# ``search_key`` ties a next page to its first page: the same session and query, after that
# first page (a page without a session stands alone).
_PER_SEARCH = """
WITH s AS (
    SELECT search_id, at, session_hash, lower(query) AS query, page_offset,
           cardinality(product_ids) AS shown, exact, latency_ms,
           CASE WHEN session_hash IS NULL THEN search_id::text
                ELSE session_hash || ':' || coalesce(lower(query), '') || ':' ||
                     count(*) FILTER (WHERE page_offset = 0) OVER (
                         PARTITION BY session_hash, lower(query) ORDER BY at
                         ROWS UNBOUNDED PRECEDING)
           END AS search_key
    FROM analytics_searches WHERE at >= %(lo)s AND at < %(hi)s
), e AS (
    SELECT e.search_id, e.kind, e.position,
           e.product_id = x.product_ids[e.position - x.page_offset] AS matched
    FROM analytics_events e JOIN analytics_searches x USING (search_id)
    WHERE e.at >= %(lo)s AND e.at < %(hi)s + interval '1 day'
      AND x.at >= %(lo)s AND x.at < %(hi)s
), page AS (
    SELECT s.*,
           coalesce(c.clicks, 0) AS clicks,
           coalesce(c.events, 0) AS events,
           coalesce(c.click_sum, 0) AS click_sum
    FROM s LEFT JOIN (
        SELECT search_id,
               count(*) FILTER (WHERE kind = 'click' AND matched) AS clicks,
               count(*) FILTER (WHERE matched) AS events,
               sum(position) FILTER (WHERE kind = 'click' AND matched) AS click_sum
        FROM e GROUP BY search_id
    ) c USING (search_id)
), search AS (
    SELECT search_key,
           min(at) FILTER (WHERE page_offset = 0) AS at,
           max(session_hash) AS session_hash,
           max(query) FILTER (WHERE page_offset = 0) AS query,
           max(shown) FILTER (WHERE page_offset = 0) AS shown,
           sum(clicks) AS clicks, sum(events) AS events, sum(click_sum) AS click_sum
    FROM page GROUP BY search_key
    HAVING bool_or(page_offset = 0)
), per AS (
    SELECT search.*,
           CASE WHEN session_hash IS NOT NULL
                THEN lead(at) OVER (PARTITION BY session_hash ORDER BY at) END AS next_at
    FROM search
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
       (SELECT count(*) FROM per),
       count(*),
       (SELECT count(DISTINCT query) FROM per),
       (SELECT avg((shown = 0)::int) FROM per),
       (SELECT avg((clicks > 0)::int) FROM per WHERE shown > 0),
       (SELECT avg(position) FROM e WHERE kind = 'click' AND matched),
       (SELECT avg((events = 0 AND (next_at IS NULL
                                    OR next_at > at + interval '30 minutes'))::int)
        FROM per WHERE shown > 0),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms),
       avg(exact::int),
       (SELECT count(*) FROM e WHERE kind = 'click' AND matched),
       (SELECT count(*) FROM e WHERE kind = 'add_to_cart' AND matched),
       (SELECT count(*) FROM e WHERE kind = 'purchase' AND matched),
       (SELECT count(*) FROM e WHERE NOT matched OR matched IS NULL)
FROM page
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
       sum(click_sum)::real / nullif(sum(clicks), 0)
FROM per WHERE query IS NOT NULL
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
