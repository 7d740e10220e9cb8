"""The incremental catalogue sync's SQL: content hashes of a version, in-place deletes, row
counts, and the ``catalog_syncs`` record of every sync (``services.pipeline.sync``)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from services.store.index_versions import table_name


def version_hashes(conn: psycopg.Connection, version_id: int) -> dict[int, str | None]:
    """``product id -> content hash`` of every product in the version: the hash its vectors
    were loaded with, else (rows loaded before content hashes existed) the product's;
    None when neither is known yet."""
    rows = conn.execute(
        sql.SQL(
            "SELECT e.product_id, coalesce(e.content_hash, p.content_hash) FROM {t} e "
            "JOIN products p ON p.id = e.product_id"
        ).format(t=sql.Identifier(table_name(version_id)))
    ).fetchall()
    return {int(pid): h for pid, h in rows}


def set_product_hashes(conn: psycopg.Connection, hashes: dict[int, str]) -> int:
    """Store content hashes computed for existing products (only where none is stored)."""
    if not hashes:
        return 0
    cur = conn.execute(
        "UPDATE products p SET content_hash = u.h "
        "FROM unnest(%s::bigint[], %s::text[]) AS u(id, h) "
        "WHERE p.id = u.id AND p.content_hash IS NULL",
        (list(hashes), list(hashes.values())),
    )
    return cur.rowcount


def delete_products(conn: psycopg.Connection, ids: Sequence[int]) -> int:
    """Delete products for good; their rows in every version's table go with them
    (``ON DELETE CASCADE``)."""
    if not ids:
        return 0
    return conn.execute(
        "DELETE FROM products WHERE id = ANY(%s)", ([int(i) for i in ids],)
    ).rowcount


def delete_from_version(conn: psycopg.Connection, version_id: int, ids: Sequence[int]) -> int:
    """Take products out of one version's table (their ``products`` rows stay)."""
    if not ids:
        return 0
    return conn.execute(
        sql.SQL("DELETE FROM {t} WHERE product_id = ANY(%s)").format(
            t=sql.Identifier(table_name(version_id))
        ),
        ([int(i) for i in ids],),
    ).rowcount


def present_ids(conn: psycopg.Connection, version_id: int, ids: Sequence[int]) -> list[int]:
    """Which of ``ids`` the version's table holds."""
    if not ids:
        return []
    rows = conn.execute(
        sql.SQL("SELECT product_id FROM {t} WHERE product_id = ANY(%s) ORDER BY 1").format(
            t=sql.Identifier(table_name(version_id))
        ),
        ([int(i) for i in ids],),
    ).fetchall()
    return [int(r[0]) for r in rows]


def versions_with_tables(conn: psycopg.Connection) -> list[tuple[int, str, int | None]]:
    """``(id, status, row_count)`` of every version whose table still exists (not retired)."""
    return conn.execute(
        "SELECT v.id, v.status, v.row_count FROM index_versions v "
        "WHERE to_regclass('index_v' || v.id) IS NOT NULL ORDER BY v.id"
    ).fetchall()


def refresh_row_counts(conn: psycopg.Connection, version_ids: Iterable[int]) -> dict[int, int]:
    """Set ``index_versions.row_count`` of ``version_ids`` to their tables' rows; returns them."""
    counts = {}
    for vid in version_ids:
        n = conn.execute(
            sql.SQL("SELECT count(*) FROM {t}").format(t=sql.Identifier(table_name(vid)))
        ).fetchone()[0]
        conn.execute("UPDATE index_versions SET row_count = %s WHERE id = %s", (n, vid))
        counts[int(vid)] = int(n)
    return counts


# --- the record of each sync ------------------------------------------------------------------
_COUNTS = ("read", "valid", "rejected", "new", "changed", "removed", "unchanged", "encoded")


def start_sync(conn: psycopg.Connection, source: str, version_id: int | None) -> int:
    """Record a sync that starts now (status 'running'); its id. Committed at once."""
    with conn.transaction():
        return conn.execute(
            "INSERT INTO catalog_syncs (source, index_version_id) VALUES (%s, %s) RETURNING id",
            (source, version_id),
        ).fetchone()[0]


def finish_sync(
    conn: psycopg.Connection, sync_id: int, status: str, report: dict, error: str | None = None
) -> None:
    """Record how a sync ended: its status, counts, report (JSON) and error. Committed."""
    counts = [report.get(k) for k in _COUNTS]
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "UPDATE catalog_syncs SET status = %s, finished_at = clock_timestamp(), "
                "error = %s, report = %s, {sets} WHERE id = %s"
            ).format(
                sets=sql.SQL(", ").join(
                    sql.SQL("{} = %s").format(sql.Identifier(k)) for k in _COUNTS
                )
            ),
            (
                status,
                error[:4000] if error else None,
                json.dumps(report, default=str),
                *counts,
                sync_id,
            ),
        )


def get_sync(conn: psycopg.Connection, sync_id: int) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM catalog_syncs WHERE id = %s", (sync_id,)).fetchone()


def recent_syncs(conn: psycopg.Connection, limit: int = 10) -> list[dict]:
    """The newest syncs first."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM catalog_syncs ORDER BY started_at DESC, id DESC LIMIT %s", (limit,)
        ).fetchall()
