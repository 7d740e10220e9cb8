"""What the click-derived evaluation family reads from the raw analytics rows (issue #24).

``evaluation.click_judgments`` turns it into judgments; this module only counts. Which
searches count (every figure below is over these alone):

- text searches (no photo, a non-blank query), grouped by the normalised query
  ``lower(btrim(query))`` (the API already normalises the spacing);
- first pages (``page_offset = 0``) ranked by relevance (``sort = 'relevance'``): a next
  page or a sorted page is not the ranking being judged;
- not in an experiment (``experiment_id IS NULL``): an interleaved list is two rankings
  mixed, and its clicks serve the experiment, not the judgments;
- in the window ``[since, until)`` (the search's time).

A **click** counts only where it names the product the page showed at that position
(``product_ids[position] = product_id`` on a first page), only ``click`` events (an
add-to-cart or purchase follows a click on the same card and would count it twice), and
at most once per (search, position): a shopper clicking a card twice is one click.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

# The searches that count, with their matched clicks (one row per search and clicked
# position). Events are read from ``since`` on (an event follows its search), which lets
# PostgreSQL skip the older day partitions of both tables.
_SEARCHES = """
WITH s AS (
    SELECT search_id, lower(btrim(query)) AS query, product_ids
    FROM analytics_searches
    WHERE at >= %(since)s AND at < %(until)s
      AND NOT has_image AND query IS NOT NULL AND btrim(query) <> ''
      AND page_offset = 0 AND sort = 'relevance' AND experiment_id IS NULL
), c AS (
    SELECT DISTINCT s.search_id, e.position
    FROM s JOIN analytics_events e
      ON e.search_id = s.search_id AND e.kind = 'click'
     AND e.product_id = s.product_ids[e.position]
    WHERE e.at >= %(since)s
)
"""

_QUERY_COUNTS = (
    _SEARCHES
    + """
SELECT s.query,
       count(*) AS searches,
       count(*) FILTER (WHERE n.clicks > 0) AS clicked_searches,
       coalesce(sum(n.clicks), 0)::bigint AS clicks
FROM s LEFT JOIN (SELECT search_id, count(*) AS clicks FROM c GROUP BY search_id) n
  USING (search_id)
GROUP BY s.query
HAVING count(*) FILTER (WHERE n.clicks > 0) >= %(min_clicked)s
ORDER BY clicked_searches DESC, s.query
"""
)

_CELLS = (
    _SEARCHES
    + """
SELECT s.query, shown.product_id, shown.position::integer AS position,
       count(*) AS impressions,
       count(c.search_id) AS clicks
FROM s
CROSS JOIN LATERAL unnest(s.product_ids) WITH ORDINALITY AS shown (product_id, position)
LEFT JOIN c ON c.search_id = s.search_id AND c.position = shown.position
WHERE s.query = ANY(%(queries)s)
GROUP BY s.query, shown.product_id, shown.position
ORDER BY s.query, shown.product_id, shown.position
"""
)

_FAR_FUTURE = datetime(9999, 1, 1)


@dataclass(frozen=True)
class QueryCount:
    """A normalised query's counting searches: how many, how many got a matched click, and
    the matched clicks in all."""

    query: str
    searches: int
    clicked_searches: int
    clicks: int


@dataclass(frozen=True)
class Cell:
    """One (query, product, position): how many counting searches showed that product at
    that position (1-based), and how many of those clicked it there."""

    query: str
    product_id: int
    position: int
    impressions: int
    clicks: int


def query_counts(
    conn: psycopg.Connection,
    since: datetime,
    until: datetime | None = None,
    min_clicked_searches: int = 1,
) -> list[QueryCount]:
    """Every normalised query with at least ``min_clicked_searches`` searches with a matched
    click in ``[since, until)``, most clicked searches first (ties by query)."""
    rows = conn.execute(
        _QUERY_COUNTS,
        {"since": since, "until": until or _FAR_FUTURE, "min_clicked": min_clicked_searches},
    ).fetchall()
    return [QueryCount(*r) for r in rows]


def position_cells(
    conn: psycopg.Connection,
    queries: Sequence[str],
    since: datetime,
    until: datetime | None = None,
) -> list[Cell]:
    """Impressions and matched clicks per (query, product, position) of ``queries``
    (normalised, as :func:`query_counts` returns them) in ``[since, until)``."""
    if not queries:
        return []
    rows = conn.execute(
        _CELLS, {"since": since, "until": until or _FAR_FUTURE, "queries": list(queries)}
    ).fetchall()
    return [Cell(*r) for r in rows]
