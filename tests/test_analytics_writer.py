"""The analytics writer (services.analytics.writer) against the real PostgreSQL: rows reach
the partitioned tables by COPY as ``fashion_events``; a full queue drops and counts exactly;
a database outage loses nothing that was queued (the batch is retried); a row the database
refuses for itself is set aside without holding the others back.
"""

from __future__ import annotations

import socket
import threading
import uuid
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from api_harness import TcpProxy

from services.analytics.writer import AnalyticsWriter
from services.store import analytics as store


class CommitReplyDropper(TcpProxy):
    """A TcpProxy that, once ``armed``, lets the next COMMIT reach the server and drops the
    server's reply: the connection breaks after the server committed and before the client
    heard so (``broken`` is set then). Disarms itself after one break."""

    def __init__(self, target_port: int):
        super().__init__(target_port)
        self.armed = threading.Event()
        self.broken = threading.Event()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            with self._lock:
                self._conns += [client, upstream]
            committing = threading.Event()  # this connection's COMMIT went to the server
            threading.Thread(
                target=self._forward, args=(client, upstream, committing, True), daemon=True
            ).start()
            threading.Thread(
                target=self._forward, args=(upstream, client, committing, False), daemon=True
            ).start()

    def _forward(self, src, dst, committing: threading.Event, to_server: bool) -> None:
        try:
            while data := src.recv(65536):
                if to_server and self.armed.is_set() and b"COMMIT" in data:
                    self.armed.clear()
                    committing.set()  # set before the server can answer
                elif not to_server and committing.is_set():
                    self.broken.set()  # the server's answer to COMMIT: it committed
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _event(i: int, at: datetime | None = None, session: str = "s") -> tuple:
    return (at or datetime.now(UTC), uuid.uuid4(), "click", 1 + i % 50, 1 + i % 24, session)


def _count(settings, session: str) -> int:
    with psycopg.connect(settings.database_url) as c:
        return c.execute(
            "SELECT count(*) FROM analytics_events WHERE session_hash = %s", (session,)
        ).fetchone()[0]


def _writer(url: str, **kw) -> AnalyticsWriter:
    return AnalyticsWriter(lambda: psycopg.connect(url, connect_timeout=2), **kw)


def test_rows_reach_their_day_partition_as_the_events_role(settings):
    writer = _writer(settings.events_url).start()
    try:
        for i in range(500):
            assert writer.offer("analytics_events", _event(i, session="plain"))
        assert writer.flush(30)
    finally:
        stats = writer.close()
    assert (stats.offered, stats.written, stats.dropped, stats.rejected) == (500, 500, 0, 0)
    assert _count(settings, "plain") == 500
    with psycopg.connect(settings.database_url) as c:
        today = datetime.now(UTC).date()
        where = c.execute(
            "SELECT tableoid::regclass::text, count(*) FROM analytics_events "
            "WHERE session_hash = 'plain' GROUP BY 1"
        ).fetchall()
    assert where == [(f"analytics_events_{today:%Y%m%d}", 500)]


def test_a_full_queue_drops_and_counts_exactly_and_never_blocks(settings):
    """Nothing drains the queue (the database cannot be reached): the first ``capacity``
    rows are taken, every later one is dropped and counted, and offer() returns at once."""
    proxy = TcpProxy(settings.pg_port)  # never listening: connections are refused
    url = settings.events_url.replace(f":{settings.pg_port}/", f":{proxy.port}/")
    writer = _writer(url, capacity=300, batch=1000, retry_s=0.05).start()
    try:
        results = [writer.offer("analytics_events", _event(i, session="full")) for i in range(1000)]
        stats = writer.stats()
        assert results.count(True) == 300 and results.count(False) == 700
        assert stats.offered == 1000 and stats.dropped == 700
        assert stats.queued == 300 and stats.written == 0
        for _ in range(100):  # the writer tries (and fails) to connect
            if writer.stats().last_error:
                break
            threading.Event().wait(0.05)
        assert "OperationalError" in (writer.stats().last_error or "")
        assert writer.stats().written == 0
        # the database comes back: the 300 queued rows are written, none lost
        proxy.restore()
        assert writer.flush(60), writer.stats()
    finally:
        stats = writer.close()
        proxy.cut()
    assert stats.written == 300 and stats.dropped == 700
    assert _count(settings, "full") == 300


def test_an_outage_under_load_loses_no_queued_row(settings):
    """Rows keep coming while the connection is cut twice (a restart, seen from the
    writer): every row offered is written once, none twice."""
    proxy = TcpProxy(settings.pg_port)
    proxy.restore()
    url = settings.events_url.replace(f":{settings.pg_port}/", f":{proxy.port}/")
    writer = _writer(url, capacity=50_000, batch=200, retry_s=0.05, max_retry_s=0.2).start()
    stop = threading.Event()
    offered = 0

    def load() -> None:
        nonlocal offered
        while not stop.is_set():
            writer.offer("analytics_events", _event(offered, session="outage"))
            offered += 1
            if offered % 100 == 0:  # about 5,000 rows a second
                stop.wait(0.02)

    thread = threading.Thread(target=load)
    thread.start()
    try:
        for _ in range(2):
            stop.wait(0.3)
            proxy.cut()
            stop.wait(0.5)
            proxy.restore()
        stop.wait(0.3)
        stop.set()
        thread.join()
        assert writer.flush(60), writer.stats()
    finally:
        stats = writer.close()
        proxy.cut()
    assert stats.dropped == 0 and stats.rejected == 0
    assert stats.retries >= 1, "the cut never reached the writer"
    assert stats.written == offered
    assert _count(settings, "outage") == offered


def test_a_batch_whose_commit_reply_is_lost_is_written_once(settings):
    """The connection breaks after the server committed a batch and before the writer heard
    it (the reply to COMMIT is lost): the writer asks the server (pg_xact_status) and does
    not write the batch again. Deterministic: the proxy drops exactly that reply."""
    proxy = CommitReplyDropper(settings.pg_port)
    proxy.restore()
    url = settings.events_url.replace(f":{settings.pg_port}/", f":{proxy.port}/")
    writer = _writer(url, batch=500, retry_s=0.05, max_retry_s=0.2).start()
    proxy.armed.set()
    try:
        for i in range(300):
            writer.offer("analytics_events", _event(i, session="reply-lost"))
        assert writer.flush(60), writer.stats()
    finally:
        stats = writer.close()
        proxy.cut()
    assert proxy.broken.is_set(), "no reply to a COMMIT was dropped"
    assert stats.retries >= 1 and stats.dropped == 0 and stats.rejected == 0
    assert stats.written == 300
    assert _count(settings, "reply-lost") == 300


def test_a_row_the_database_refuses_is_set_aside_alone(settings):
    writer = _writer(settings.events_url).start()
    try:
        bad = (datetime.now(UTC), uuid.uuid4(), "click", 5, 0, "bad")  # position >= 1
        writer.offer("analytics_events", _event(1, session="bad"))
        writer.offer("analytics_events", bad)
        writer.offer("analytics_events", _event(2, session="bad"))
        assert writer.flush(30)
    finally:
        stats = writer.close()
    assert stats.rejected == 1 and stats.written == 2
    assert _count(settings, "bad") == 2


def test_rows_before_their_partition_wait_in_the_default_one_and_move_in(settings, empty_db):
    """A day with no partition yet: its rows land in the default partition; making the
    partition (the DAG does, as the pipeline) moves them in; dropping days past retention
    removes them. In a database of this test's own (it drops today's partitions too)."""
    from services.config import EVENTS_ROLE

    c = empty_db
    c.autocommit = True
    far = date.today() + timedelta(days=40)
    at = datetime(far.year, far.month, far.day, 12, tzinfo=UTC)
    events_url = settings.role_url(EVENTS_ROLE, c.info.dbname)
    with psycopg.connect(events_url) as w:
        store.copy_rows(w, "analytics_events", [_event(i, at, "future") for i in range(3)])

    def where() -> list[tuple]:
        return c.execute(
            "SELECT tableoid::regclass::text, count(*) FROM analytics_events "
            "WHERE session_hash = 'future' GROUP BY 1"
        ).fetchall()

    assert where() == [("analytics_events_default", 3)]
    assert store.ensure_partitions(c, far, 1) == 2  # the searches' and the events' day
    assert where() == [(f"analytics_events_{far:%Y%m%d}", 3)]
    assert store.ensure_partitions(c, far, 1) == 0  # idempotent
    assert f"analytics_searches_{far:%Y%m%d}" in store.partitions(c, "analytics_searches")
    assert store.drop_partitions(c, far) >= 2  # the days before far (made by the migration)
    assert store.partitions(c, "analytics_events") == [
        f"analytics_events_{far:%Y%m%d}",
        "analytics_events_default",
    ]
    assert store.drop_partitions(c, far + timedelta(days=1)) == 2
    assert where() == []


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT count(*) FROM analytics_events",
        "DELETE FROM analytics_searches",
        "UPDATE analytics_events SET position = 2",
        "SELECT analytics_drop_partitions(current_date + 1)",
        "SELECT analytics_ensure_partitions(current_date, 1)",
        "SELECT 1 FROM products LIMIT 1",
        (
            "INSERT INTO experiments (name, arm_a, arm_b, traffic, impressions) "
            "VALUES ('x', '{}', '{}', 1, 1)"
        ),
    ],
)
def test_the_events_role_may_only_insert(settings, statement):
    with (
        psycopg.connect(settings.events_url) as c,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        c.execute(statement)


def test_the_search_role_cannot_read_the_raw_rows(settings):
    """The API's read-only role reads the aggregates (the analytics page), never the raw
    searches and events, nor one of their day partitions."""
    today = datetime.now(UTC).date()
    for table in (
        "analytics_searches",
        "analytics_events",
        f"analytics_events_{today:%Y%m%d}",
        "analytics_searches_default",
    ):
        with (
            psycopg.connect(settings.search_url) as c,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            c.execute(f"SELECT count(*) FROM {table}")
    with psycopg.connect(settings.search_url) as c:
        assert c.execute("SELECT count(*) >= 0 FROM analytics_daily").fetchone() == (True,)
