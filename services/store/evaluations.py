"""Evaluation results in PostgreSQL: ``eval_runs``, ``eval_metrics``, ``eval_alerts`` (migration 0002).

Every function takes a psycopg connection and commits its own writes, so a failed
evaluation still leaves its run row (status 'failed', the error in ``notes``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime

import psycopg
from psycopg.rows import class_row, dict_row

MODES = ("dense", "sparse", "hybrid", "multi", "literal", "multi_literal")
ALL = "all"  # the family name of overall means


@dataclass(frozen=True)
class EvalRun:
    id: int
    started_at: datetime
    finished_at: datetime | None
    index_version_id: int | None
    dense_model: str | None
    sparse_model: str | None
    query_set_version: str | None
    status: str
    notes: str | None
    details: dict


@dataclass(frozen=True)
class MetricRow:
    mode: str
    alpha: float
    family: str
    metric: str
    value: float
    n_queries: int


@dataclass(frozen=True)
class Alert:
    id: int
    created_at: datetime
    run_id: int | None
    source: str
    message: str
    details: dict


_RUN_COLS = ", ".join(f.name for f in fields(EvalRun))
_METRIC_COLS = ", ".join(f.name for f in fields(MetricRow))
_ALERT_COLS = ", ".join(f.name for f in fields(Alert))


def _rows(conn: psycopg.Connection, cls: type, query: str, params=None) -> list:
    """Rows of ``query`` as ``cls`` instances, matched by column name."""
    with conn.cursor(row_factory=class_row(cls)) as cur:
        return cur.execute(query, params).fetchall()


def _one(conn: psycopg.Connection, cls: type, query: str, params=None):
    found = _rows(conn, cls, query, params)
    return found[0] if found else None


def _commit(conn: psycopg.Connection) -> None:
    if not conn.autocommit:
        conn.commit()


def start_run(
    conn: psycopg.Connection,
    *,
    index_version_id: int | None,
    dense_model: str | None,
    sparse_model: str | None,
    query_set_version: str | None = None,
    notes: str | None = None,
    details: dict | None = None,
) -> int:
    run_id = conn.execute(
        """
        INSERT INTO eval_runs (index_version_id, dense_model, sparse_model, query_set_version,
                               notes, details)
        VALUES (%s, %s, %s, %s, %s, %s) RETURNING id
        """,
        (
            index_version_id,
            dense_model,
            sparse_model,
            query_set_version,
            notes,
            json.dumps(details or {}, default=str),
        ),
    ).fetchone()[0]
    _commit(conn)
    return run_id


def store_metrics(conn: psycopg.Connection, run_id: int, rows: Iterable[MetricRow]) -> int:
    rows = list(rows)
    with conn.cursor() as cur:
        cur.executemany(
            """
            INSERT INTO eval_metrics (run_id, mode, alpha, family, metric, value, n_queries)
            VALUES (%s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (run_id, mode, alpha, family, metric)
            DO UPDATE SET value = EXCLUDED.value, n_queries = EXCLUDED.n_queries
            """,
            [
                (
                    run_id,
                    r.mode,
                    round(float(r.alpha), 6),
                    r.family,
                    r.metric,
                    float(r.value),
                    int(r.n_queries),
                )
                for r in rows
            ],
        )
    _commit(conn)
    return len(rows)


def finish_run(
    conn: psycopg.Connection,
    run_id: int,
    *,
    status: str,
    query_set_version: str | None = None,
    notes: str | None = None,
    details: dict | None = None,
) -> None:
    if status not in ("succeeded", "failed"):
        raise ValueError(f"status must be succeeded or failed, got {status!r}")
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.rollback()
    conn.execute(
        """
        UPDATE eval_runs
           SET status = %s, finished_at = now(),
               query_set_version = coalesce(%s, query_set_version),
               notes = coalesce(%s, notes),
               details = details || %s
         WHERE id = %s
        """,
        (status, query_set_version, notes, json.dumps(details or {}, default=str), run_id),
    )
    _commit(conn)


def get_run(conn: psycopg.Connection, run_id: int) -> EvalRun | None:
    return _one(conn, EvalRun, f"SELECT {_RUN_COLS} FROM eval_runs WHERE id = %s", (run_id,))


def list_runs(
    conn: psycopg.Connection, *, status: str | None = "succeeded", limit: int = 60
) -> list[EvalRun]:
    """Runs oldest first (the last ``limit`` of them), optionally only one status."""
    where = "WHERE status = %s" if status else ""
    params: tuple = (status, limit) if status else (limit,)
    return _rows(
        conn,
        EvalRun,
        f"SELECT * FROM (SELECT {_RUN_COLS} FROM eval_runs {where} "
        "ORDER BY id DESC LIMIT %s) r ORDER BY id",
        params,
    )


def latest_run(conn: psycopg.Connection) -> EvalRun | None:
    return _one(
        conn,
        EvalRun,
        f"SELECT {_RUN_COLS} FROM eval_runs WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1",
    )


def previous_run(conn: psycopg.Connection, run_id: int) -> EvalRun | None:
    """The last succeeded run before ``run_id`` that asked the same query families of the same
    split (a run restricted to two families, or on the tuning half, is not compared with a
    full test run)."""
    return _one(
        conn,
        EvalRun,
        f"""
        SELECT {_RUN_COLS} FROM eval_runs r
         WHERE r.status = 'succeeded' AND r.id < %(id)s
           AND (r.details -> 'families') IS NOT DISTINCT FROM
               (SELECT details -> 'families' FROM eval_runs WHERE id = %(id)s)
           AND (r.details -> 'split') IS NOT DISTINCT FROM
               (SELECT details -> 'split' FROM eval_runs WHERE id = %(id)s)
         ORDER BY r.id DESC LIMIT 1
        """,
        {"id": run_id},
    )


def metrics_for(conn: psycopg.Connection, run_id: int) -> list[MetricRow]:
    return _rows(
        conn,
        MetricRow,
        f"SELECT {_METRIC_COLS} FROM eval_metrics WHERE run_id = %s "
        "ORDER BY mode, alpha, family, metric",
        (run_id,),
    )


def metrics_for_runs(
    conn: psycopg.Connection, run_ids: list[int], *, family: str = ALL, metric: str = "map@10"
) -> dict[int, list[MetricRow]]:
    out: dict[int, list[MetricRow]] = {rid: [] for rid in run_ids}
    if not run_ids:
        return out
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            f"SELECT run_id, {_METRIC_COLS} FROM eval_metrics "
            "WHERE run_id = ANY(%s) AND family = %s AND metric = %s ORDER BY run_id, mode, alpha",
            (run_ids, family, metric),
        ).fetchall()
    for r in rows:
        out[r.pop("run_id")].append(MetricRow(**r))
    return out


def record_alert(
    conn: psycopg.Connection,
    *,
    source: str,
    message: str,
    run_id: int | None = None,
    details: dict | None = None,
) -> int:
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.rollback()
    alert_id = conn.execute(
        "INSERT INTO eval_alerts (run_id, source, message, details) VALUES (%s, %s, %s, %s) "
        "RETURNING id",
        (run_id, source, message[:4000], json.dumps(details or {}, default=str)),
    ).fetchone()[0]
    _commit(conn)
    return alert_id


def list_alerts(conn: psycopg.Connection, limit: int = 20) -> list[Alert]:
    return _rows(
        conn, Alert, f"SELECT {_ALERT_COLS} FROM eval_alerts ORDER BY id DESC LIMIT %s", (limit,)
    )
