"""The analytics writer: searches and events reach PostgreSQL without slowing a search.

A request only puts a row on an in-memory queue (:meth:`AnalyticsWriter.offer`, never
blocking); at most ``capacity`` rows wait (queued, or in the batch being written): beyond,
the row is dropped and counted (``dropped`` is exact: one per row refused). One background
thread takes what is queued, up to ``batch`` rows gathered for at most ``linger_s`` after
the first, and COPYs it into the raw tables in one transaction, on its own connection (as
``fashion_events``, which may only INSERT there).

When the database is away (a restart, a failover) the thread keeps the batch it holds and
retries it with backoff until it is written: rows already queued are not lost; the queue
keeps taking rows until it is full, and only then drops. A row the database refuses for
itself (not for the connection) is set aside and counted as ``rejected``, so one bad row
cannot hold the others back forever.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from services.store.analytics import TABLES, copy_rows, current_xact_id, xact_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterStats:
    offered: int  # rows offered
    written: int  # rows committed to PostgreSQL
    dropped: int  # rows refused because the queue was full
    rejected: int  # rows the database refused for themselves
    queued: int  # rows waiting (in the queue and in the batch being written)
    retries: int  # batches tried again after a connection failure
    capacity: int
    last_error: str | None


class AnalyticsWriter:
    """``connect()`` opens a new connection (autocommit off); ``capacity`` rows at most
    wait; ``batch`` rows at most per COPY transaction."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        capacity: int = 20000,
        batch: int = 2000,
        linger_s: float = 0.1,
        retry_s: float = 0.2,
        max_retry_s: float = 5.0,
    ):
        self._connect = connect
        # unbounded itself: ``capacity`` bounds the rows queued plus the batch being written
        self._queue: queue.Queue[tuple[str, tuple]] = queue.Queue()
        self.capacity = capacity
        self._batch = batch
        self._linger_s = linger_s
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._lock = threading.Condition()
        self._offered = self._written = self._dropped = self._rejected = self._retries = 0
        self._pending = 0  # rows offered and taken, not yet written (or set aside)
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        # The transaction id of the batch being written: when the connection breaks at its
        # COMMIT, the client cannot tell whether it committed; PostgreSQL can.
        self._xid: str | None = None
        self._thread = threading.Thread(target=self._run, name="analytics-writer", daemon=True)

    # --- the request side ---------------------------------------------------------------
    def offer(self, table: str, row: tuple) -> bool:
        """Queues ``row`` for ``table``; False (and counted as dropped) when full."""
        if table not in TABLES:
            raise ValueError(f"unknown analytics table {table!r}")
        with self._lock:
            self._offered += 1
            if self._pending >= self.capacity:
                self._dropped += 1
                return False
            self._pending += 1
        self._queue.put_nowait((table, row))
        return True

    def stats(self) -> WriterStats:
        with self._lock:
            return WriterStats(
                offered=self._offered,
                written=self._written,
                dropped=self._dropped,
                rejected=self._rejected,
                queued=self._pending,
                retries=self._retries,
                capacity=self.capacity,
                last_error=self._last_error,
            )

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> AnalyticsWriter:
        self._thread.start()
        return self

    def flush(self, timeout: float = 30.0) -> bool:
        """Waits until every row queued so far is written (or set aside); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 10.0) -> WriterStats:
        """Writes what is queued (trying for ``timeout`` seconds), then stops."""
        if self._thread.is_alive():
            self.flush(timeout)
            self._stop.set()
            self._thread.join(timeout=self._max_retry_s + 1)
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        return self.stats()

    # --- the writer thread --------------------------------------------------------------
    def _take(self) -> list[tuple[str, tuple]]:
        """The next batch: the first row queued, and what follows it within ``linger_s``
        (up to ``batch`` rows): one transaction for many searches, not one each (a commit
        per search cost the API ~0.7 ms of CPU a search at 110 searches/s)."""
        try:
            first = self._queue.get(timeout=0.05)  # short: the stop flag is checked between
        except queue.Empty:
            return []
        rows = [first]
        deadline = time.monotonic() + self._linger_s
        while len(rows) < self._batch:
            left = deadline - time.monotonic()
            try:
                rows.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return rows

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = self._take()
            if rows:
                self._write_until_done(rows)

    def _write_until_done(self, rows: list[tuple[str, tuple]]) -> None:
        wait = self._retry_s
        unsure: str | None = None  # the xid of an attempt whose COMMIT may have landed
        while True:
            try:
                if unsure is not None:
                    status = self._xact_status(unsure)
                    if status == "committed":  # the break came after the commit
                        self._done(len(rows), 0)
                        return
                    if status is None or status == "in progress":
                        raise psycopg.OperationalError(f"transaction {unsure} not settled yet")
                    unsure = None  # aborted (or unknown to the server): write it again
                self._write(rows)
                return
            except psycopg.OperationalError as exc:  # the connection, not the rows
                self._failed(exc)
                unsure = unsure or self._xid
                self._xid = None
                if self._stop.is_set():
                    return
                time.sleep(wait)
                wait = min(wait * 2, self._max_retry_s)
                with self._lock:
                    self._retries += 1
            except psycopg.Error as exc:  # the rows: write them one by one, set bad ones aside
                self._failed(exc)
                self._write_one_by_one(rows)
                return

    def _xact_status(self, xid: str) -> str | None:
        """``pg_xact_status`` of ``xid`` asked on a new connection ("committed", "aborted",
        "in progress"); None when the server cannot be reached."""
        try:
            with self._connect() as conn:
                return xact_status(conn, xid)
        except psycopg.OperationalError:
            return None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def _write(self, rows: list[tuple[str, tuple]]) -> None:
        self._xid = None
        conn = self._connection()
        by_table: dict[str, list[tuple]] = {}
        for table, row in rows:
            by_table.setdefault(table, []).append(row)
        with conn.transaction():
            self._xid = current_xact_id(conn)
            for table, table_rows in by_table.items():
                copy_rows(conn, table, table_rows)
        self._xid = None
        self._done(len(rows), 0)

    def _write_one_by_one(self, rows: list[tuple[str, tuple]]) -> None:
        written = rejected = 0
        for table, row in rows:
            try:
                conn = self._connection()
                with conn.transaction():
                    copy_rows(conn, table, [row])
                written += 1
            except psycopg.Error as exc:
                self._failed(exc)
                rejected += 1
        self._done(written, rejected)

    def _done(self, written: int, rejected: int) -> None:
        with self._lock:
            self._written += written
            self._rejected += rejected
            self._pending -= written + rejected
            self._lock.notify_all()

    def _failed(self, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        with self._lock:
            self._last_error = message
        log.warning("analytics writer: %s", message)
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
