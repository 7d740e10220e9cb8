"""Session-level PostgreSQL advisory locks, keyed by name (``hashtext(name)``)."""

from __future__ import annotations

import psycopg
from psycopg import sql


def acquire(conn: psycopg.Connection, name: str, *, timeout: str | None) -> bool:
    """Take the lock ``name`` on ``conn`` (autocommit). ``timeout=None``: try once and return
    whether it was taken; else wait up to ``timeout`` (a PostgreSQL interval such as
    ``"15min"``) and return True, raising ``psycopg.errors.LockNotAvailable`` past it."""
    if timeout is None:
        return conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (name,)).fetchone()[0]
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(timeout)))
    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
    return True


def release(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (name,))
