"""Shared by tests/test_api.py and tests/test_browser.py: a tiny live index built with the real
offline encoders, the real app served by uvicorn on a free loopback port, and a TCP proxy
that can cut the database connection (to test 503 and recovery without touching the
shared PostgreSQL server).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

CATALOG_SIZE = 120
# Screenshots of the browser tests (gitignored).
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

# The real headless browser of the page tests (Debian `chromium`, driven by Playwright).
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg_bytes(size=(64, 64), colour=(200, 30, 30), quality=90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class LiveIndex:
    version_id: int
    rows: list[dict]  # catalogue rows (with image bytes)
    dense_model: str
    sparse_model: str


def build_live_index(settings, size: int = CATALOG_SIZE) -> LiveIndex:
    """Offline catalogue of ``size`` (CATALOG_SIZE) products through the real reindex pipeline (real
    encoders, COPY, HNSW, checks, swap): the index the API serves in production, small."""
    from services.catalog.reader import iter_rows
    from services.catalog.sources import resolve_source
    from services.pipeline.reindex import run_reindex

    report = run_reindex(
        source="offline",
        size=size,
        shard_size=size,
        dense_model=settings.dense_model,
        sparse_model=settings.sparse_model,
    )
    assert report["status"] == "success", report.get("error")
    rows = list(iter_rows(resolve_source("offline", size=size)))
    return LiveIndex(report["version"], rows, report["dense_model"], report["sparse_model"])


class ServerThread:
    """uvicorn serving ``app`` in a daemon thread on 127.0.0.1:<free port>."""

    def __init__(self, app, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, daemon=True, name=f"uvicorn-{self.port}"
        )

    def start(self, timeout: float = 30) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def wait_ready(self, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = httpx.get(self.url + "/readyz", timeout=10)
            if last.status_code == 200:
                return last.json()
            time.sleep(0.25)
        raise RuntimeError(f"API not ready: {last.text if last else 'no answer'}")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class TcpProxy:
    """A loopback TCP forwarder; ``cut()`` closes it and every open connection, ``restore()``
    listens again on the same port. Stands in for a database outage."""

    def __init__(self, target_port: int, port: int | None = None):
        self.target_port = target_port
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def cut(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def assert_error(resp: httpx.Response, status: int) -> dict:
    """The API's JSON error body of ``status`` (never a traceback); returns it."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["status_code"] == status and body["detail"]
    assert "Traceback" not in resp.text
    return body


@contextlib.contextmanager
def dashboard_app(settings, *, pool_timeout: float = 3.0):
    """The dashboard's controller alone in a Litestar app, with the API's real runtime (its
    pool on ``settings``' database, no encoders) injected as the API injects it, and the
    API's error handlers (a database that is down answers 503 as in the API)."""
    from litestar import Litestar
    from litestar.di import Provide

    from services.api.controllers.dashboard import DashboardController
    from services.api.errors import EXCEPTION_HANDLERS
    from services.api.runtime import Runtime

    runtime = Runtime(settings, load_models=False, pool_timeout=pool_timeout)
    runtime.start()
    try:
        yield Litestar(
            route_handlers=[DashboardController],
            dependencies={"runtime": Provide(lambda: runtime, sync_to_thread=False)},
            exception_handlers=EXCEPTION_HANDLERS,
        )
    finally:
        runtime.stop()


def copy_version(conn, version_id: int) -> int:
    """A ready copy of a version (same models, rows and vectors), with its own indexes."""
    from psycopg import sql

    from services.store import hnsw
    from services.store import index_versions as iv

    old = iv.get_version(conn, version_id)
    vid = iv.create_version(
        conn,
        dense_model=old.dense_model,
        dense_dim=old.dense_dim,
        sparse_model=old.sparse_model,
        sparse_dim=old.sparse_dim,
        params={"test": "copy"},
    )
    conn.execute(
        sql.SQL("INSERT INTO {} SELECT * FROM {}").format(
            sql.Identifier(iv.table_name(vid)), sql.Identifier(old.table)
        )
    )
    conn.commit()
    hnsw.build_indexes(conn, vid)
    iv.mark_ready(conn, vid, {"test": "copy"})
    return vid
