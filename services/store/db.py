"""Connections to PostgreSQL + pgvector: one door in, clear errors out.

Works with any server reachable through ``DATABASE_URL`` (or the embedded default).
On connect we check that pgvector is installed and recent enough (>= 0.7, for
``sparsevec`` and iterative HNSW scans need 0.8 for filtered fast search).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from services.config import Settings, get_settings

MIN_PGVECTOR = (0, 7, 0)


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or lacks what the platform needs."""


def redact(url: str) -> str:
    """A DSN with its password removed, safe for messages and logs."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3] if p.isdigit())


def prepare_connection(conn: psycopg.Connection) -> None:
    """Make sure pgvector exists (creating it if we may) and register its types."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        available = conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if available is None:
            raise DatabaseUnavailable(
                "the pgvector extension is not installed on this PostgreSQL server "
                f"(need >= {'.'.join(map(str, MIN_PGVECTOR))})"
            )
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            if not conn.autocommit:
                conn.commit()
        except psycopg.Error as exc:
            raise DatabaseUnavailable(
                f"pgvector is available but could not be created: {exc}"
            ) from exc
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    if _version_tuple(row[0]) < MIN_PGVECTOR:
        raise DatabaseUnavailable(
            f"pgvector {row[0]} is too old; need >= {'.'.join(map(str, MIN_PGVECTOR))}"
        )
    register_vector(conn)
    if not conn.autocommit:
        conn.commit()


def ping(conn: psycopg.Connection) -> None:
    """Raise unless the server answers a trivial query."""
    conn.execute("SELECT 1")


@dataclass(frozen=True)
class ReplicationLag:
    """How far a streaming replica is behind its primary.

    ``bytes``: WAL the primary has written (``pg_current_wal_lsn``: with
    ``synchronous_commit = off`` a commit is written within ``wal_writer_delay``, 200 ms)
    that the replica has not replayed yet (None when the primary is not at hand). ``seconds``: 0 when the replica has replayed all
    of it (with no primary at hand: all it has received), else the age of the newest
    transaction it has replayed (None before it has replayed one). Both None when the
    server is not a replica at all (``in_recovery`` False)."""

    in_recovery: bool
    bytes: int | None
    seconds: float | None


def replication_lag(
    replica: psycopg.Connection, primary: psycopg.Connection | None = None
) -> ReplicationLag:
    """The lag of ``replica`` (a hot standby) behind ``primary``, from functions any role
    may call (pg_stat_replication would need pg_read_all_stats)."""
    primary_lsn = None
    if primary is not None:
        primary_lsn = primary.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    in_recovery, behind, received_all, age = replica.execute(
        "SELECT pg_is_in_recovery(), "
        "pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()), "
        "coalesce(pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn(), true), "
        "extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())",
        (primary_lsn,),
    ).fetchone()
    if not in_recovery:
        return ReplicationLag(False, None, None)
    # The primary was asked first: the replica may have replayed a little more since.
    lag_bytes = None if behind is None else max(0, int(behind))
    caught_up = lag_bytes == 0 if lag_bytes is not None else bool(received_all)
    seconds = 0.0 if caught_up else (None if age is None else max(0.0, float(age)))
    return ReplicationLag(True, lag_bytes, seconds)


def server_versions(conn: psycopg.Connection) -> tuple[str, str]:
    """``(PostgreSQL server version, pgvector extension version)``."""
    pg = conn.execute("SHOW server_version").fetchone()[0]
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return pg, row[0] if row else "absent"


def connect(
    url: str | None = None, *, autocommit: bool = False, connect_timeout: int = 5
) -> psycopg.Connection:
    """Open one connection with pgvector registered, or raise DatabaseUnavailable."""
    url = url or get_settings().database_url
    try:
        conn = psycopg.connect(url, autocommit=autocommit, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(f"cannot connect to {redact(url)}: {reason}") from None
    try:
        prepare_connection(conn)
    except Exception:
        conn.close()
        raise
    return conn


@contextmanager
def connection(url: str | None = None, *, autocommit: bool = False) -> Iterator[psycopg.Connection]:
    conn = connect(url, autocommit=autocommit)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def make_pool(
    settings: Settings | None = None,
    *,
    url: str | None = None,
    min_size: int = 1,
    max_size: int = 8,
    timeout: float = 5.0,
    open: bool = False,
    check_idle_s: float | None = None,
    on_connect: Callable[[psycopg.Connection], None] | None = None,
) -> ConnectionPool:
    """A connection pool whose connections have pgvector registered.

    Not opened by default (``pool.open(wait=False)``), so a service can start while
    the database is down and recover when it comes back.

    ``check_idle_s``: None checks every connection handed out (one round trip each);
    a number checks only those not handed out for longer than that, a busy service's
    connections then cost no round trip of their own (its caller retries a read that
    found its connection dead: ``services.api.runtime.Runtime.read``). ``on_connect``:
    more set-up of each new connection, after pgvector's. ``url``: another server than
    ``settings.database_url`` (the API's read replica, ``settings.database_read_url``).
    """
    settings = settings or get_settings()
    # When each connection was last handed out. (Not a ``reset`` hook stamping returns:
    # with one, the pool hands every returned connection to a worker thread.)
    handed_out: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def configure(conn: psycopg.Connection) -> None:
        register_vector(conn)
        conn.commit()
        if on_connect is not None:
            on_connect(conn)

    def check(conn: psycopg.Connection) -> None:
        now, last = time.monotonic(), handed_out.get(conn)
        if check_idle_s is None or last is None or now - last > check_idle_s:
            ConnectionPool.check_connection(conn)
        handed_out[conn] = now

    return ConnectionPool(
        url or settings.database_url,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        configure=configure,
        kwargs={"connect_timeout": 5},
        open=open,
        check=check,
        reconnect_timeout=0,
    )
