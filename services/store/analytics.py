"""Search analytics in PostgreSQL (issue #24): the raw rows' batched COPY, their day
partitions, and experiments. The tables: db/migrations/versions/0008_search_analytics.py;
the daily aggregation: :mod:`services.store.analytics_aggregate`.

The API's writer logs in as ``fashion_events`` (INSERT into the two raw tables only);
partitions are made and dropped by the owner's SECURITY DEFINER functions, called by the
pipeline's DAG.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg
from psycopg import sql

SEARCH_COLUMNS = (
    "at",
    "search_id",
    "session_hash",
    "query",
    "has_image",
    "mode",
    "alpha",
    "filters",
    "page_offset",
    "sort",
    "ranked",
    "product_ids",
    "exact",
    "understood",
    "latency_ms",
    "index_version",
    "experiment_id",
    "teams",
)
EVENT_COLUMNS = ("at", "search_id", "kind", "product_id", "position", "session_hash")
TABLES = {"analytics_searches": SEARCH_COLUMNS, "analytics_events": EVENT_COLUMNS}
EVENT_KINDS = ("click", "add_to_cart", "purchase")


def copy_rows(conn: psycopg.Connection, table: str, rows: Sequence[tuple]) -> int:
    """COPY ``rows`` (tuples in :data:`TABLES`' column order) into ``table``, in the
    caller's transaction. Returns how many."""
    columns = TABLES[table]
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
    return len(rows)


def current_xact_id(conn: psycopg.Connection) -> str:
    """The id of ``conn``'s open transaction, kept so that a write whose connection broke at
    COMMIT can later ask whether it landed (:func:`xact_status`)."""
    return conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]


def xact_status(conn: psycopg.Connection, xid: str) -> str | None:
    """``pg_xact_status`` of ``xid``: "committed", "aborted", "in progress" or None."""
    return conn.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()[0]


def ensure_partitions(conn: psycopg.Connection, first_day: date, days: int) -> int:
    """The day partitions of both raw tables from ``first_day`` for ``days`` days (rows
    already waiting in the default partition for one of them are moved in). Returns how
    many partitions were made."""
    return conn.execute("SELECT analytics_ensure_partitions(%s, %s)", (first_day, days)).fetchone()[
        0
    ]


def drop_partitions(conn: psycopg.Connection, before: date) -> int:
    """Drops the day partitions (and default-partition rows) older than ``before``."""
    return conn.execute("SELECT analytics_drop_partitions(%s)", (before,)).fetchone()[0]


def partitions(conn: psycopg.Connection, table: str) -> list[str]:
    """The names of ``table``'s partitions, the default one included, sorted."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = %s::regclass ORDER BY 1",
        (table,),
    ).fetchall()
    return [r[0] for r in rows]


# --- experiments --------------------------------------------------------------------------


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    arm_a: dict[str, Any]
    arm_b: dict[str, Any]
    traffic: float
    status: str
    started_at: datetime
    stopped_at: datetime | None
    impressions: int
    note: str


_EXPERIMENT = (
    "SELECT id, name, arm_a, arm_b, traffic, status, started_at, stopped_at, impressions, note "
    "FROM experiments"
)


class ExperimentConflict(RuntimeError):
    """Another experiment is running, or the name is taken."""


def start_experiment(
    conn: psycopg.Connection,
    name: str,
    arm_a: dict[str, Any],
    arm_b: dict[str, Any],
    traffic: float,
    impressions: int,
    note: str = "",
) -> Experiment:
    """Starts an experiment (at most one runs at a time)."""
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO experiments (name, arm_a, arm_b, traffic, impressions, note) "
                "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (name, json.dumps(arm_a), json.dumps(arm_b), traffic, impressions, note),
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        running = running_experiment(conn)
        if running is not None and running.name != name:
            raise ExperimentConflict(
                f"experiment {running.name!r} is running; stop it first"
            ) from exc
        raise ExperimentConflict(f"an experiment named {name!r} exists already") from exc
    return experiment(conn, row[0])


def stop_experiment(conn: psycopg.Connection, name: str) -> Experiment | None:
    """Stops a running experiment; None when no running one has that name."""
    row = conn.execute(
        "UPDATE experiments SET status = 'stopped', stopped_at = now() "
        "WHERE name = %s AND status = 'running' RETURNING id",
        (name,),
    ).fetchone()
    return None if row is None else experiment(conn, row[0])


def experiment(conn: psycopg.Connection, key: int | str) -> Experiment | None:
    column = "id" if isinstance(key, int) else "name"
    row = conn.execute(f"{_EXPERIMENT} WHERE {column} = %s", (key,)).fetchone()
    return None if row is None else Experiment(*row)


def experiments(conn: psycopg.Connection) -> list[Experiment]:
    return [Experiment(*r) for r in conn.execute(f"{_EXPERIMENT} ORDER BY id DESC").fetchall()]


def running_experiment(conn: psycopg.Connection) -> Experiment | None:
    row = conn.execute(f"{_EXPERIMENT} WHERE status = 'running'").fetchone()
    return None if row is None else Experiment(*row)


# Per impression (a search of the experiment): the clicks on positions of each team, a
# click counted once per position and only where the clicked product is the one shown there.
_CREDITED = """
WITH imp AS (
    SELECT s.search_id, s.teams, s.product_ids, s.page_offset, s.at
    FROM analytics_searches s
    WHERE s.experiment_id = %(experiment)s AND s.teams IS NOT NULL
      AND s.at >= %(lo)s AND s.at < %(hi)s
), credited AS (
    SELECT i.search_id,
           count(DISTINCT e.position) FILTER (
               WHERE i.teams[e.position - i.page_offset] = 1) AS a,
           count(DISTINCT e.position) FILTER (
               WHERE i.teams[e.position - i.page_offset] = 2) AS b
    FROM imp i
    JOIN analytics_events e ON e.search_id = i.search_id AND e.kind = 'click'
     AND e.product_id = i.product_ids[e.position - i.page_offset]
    GROUP BY i.search_id
)
"""
_OUTCOMES = (
    _CREDITED
    + """
SELECT (i.at AT TIME ZONE 'UTC')::date AS day,
       count(*) AS impressions,
       count(c.search_id) FILTER (WHERE c.a + c.b > 0) AS clicked,
       count(*) FILTER (WHERE c.a > c.b) AS wins,
       count(*) FILTER (WHERE c.b > c.a) AS losses,
       count(*) FILTER (WHERE c.a = c.b AND c.a > 0) AS ties
FROM imp i LEFT JOIN credited c USING (search_id)
GROUP BY 1 ORDER BY 1
"""
)
_CREDITS = (
    _CREDITED
    + """
SELECT coalesce(c.a, 0), coalesce(c.b, 0)
FROM imp i LEFT JOIN credited c USING (search_id)
ORDER BY i.at, i.search_id
"""
)


def _window(experiment_id: int, lo: datetime | None, hi: datetime | None) -> dict:
    return {
        "experiment": experiment_id,
        "lo": lo or datetime(1970, 1, 1),
        "hi": hi or datetime(9999, 1, 1),
    }


def impression_credits(conn: psycopg.Connection, experiment_id: int) -> list[tuple[int, int]]:
    """Each impression's clicks credited to arm A and to arm B, in the order recorded."""
    return conn.execute(_CREDITS, _window(experiment_id, None, None)).fetchall()


@dataclass(frozen=True)
class Outcome:
    """An experiment's impressions and who won them (arm A's wins, its losses, ties)."""

    day: date | None
    impressions: int
    clicked: int
    wins: int
    losses: int
    ties: int


def experiment_outcomes(
    conn: psycopg.Connection,
    experiment_id: int,
    lo: datetime | None = None,
    hi: datetime | None = None,
) -> list[Outcome]:
    """Per day, from the raw rows (between ``lo`` and ``hi`` when given)."""
    rows = conn.execute(_OUTCOMES, _window(experiment_id, lo, hi)).fetchall()
    return [Outcome(*r) for r in rows]


def total(outcomes: Iterable[Outcome]) -> Outcome:
    rows = list(outcomes)
    return Outcome(
        None,
        sum(o.impressions for o in rows),
        sum(o.clicked for o in rows),
        sum(o.wins for o in rows),
        sum(o.losses for o in rows),
        sum(o.ties for o in rows),
    )
