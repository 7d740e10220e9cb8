"""Shared by tests/test_api.py and tests/test_browser.py: a tiny live index built with the real
offline encoders, the real app served by uvicorn on a free loopback port, and a TCP proxy
that can cut the database connection (to test 503 and recovery without touching the
shared PostgreSQL server).
"""

from __future__ import annotations

import dataclasses
import io
import socket
import threading
import time
from dataclasses import dataclass

import httpx
import uvicorn

CATALOG_SIZE = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def jpeg_bytes(size=(64, 64), colour=(200, 30, 30), quality=90) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def serving_settings(settings):
    """``settings``, with the untrained offline CLIP when the trained checkpoint is absent
    (it is produced by the training area; the API tests need an encoder, not a good one)."""
    from services.encoders.registry import get_spec, is_available

    if is_available(get_spec(settings.dense_model)):
        return settings
    return dataclasses.replace(settings, dense_model="clip-tiny-untrained")


@dataclass
class LiveIndex:
    version_id: int
    rows: list[dict]  # catalogue rows (with image bytes)
    dense_model: str
    sparse_model: str


def build_live_index(settings) -> LiveIndex:
    """Offline catalogue of CATALOG_SIZE products, encoded with the real encoders, made live."""
    from services.catalog.reader import iter_rows
    from services.catalog.sources import resolve_source
    from services.encoders.clip import load_clip
    from services.encoders.splade import load_splade
    from services.store import index_versions as iv
    from services.store.db import connect
    from services.store.products import upsert_products

    rows = list(iter_rows(resolve_source("offline", size=CATALOG_SIZE)))
    clip, splade = load_clip(settings.dense_model), load_splade(settings.sparse_model)
    dense = clip.encode_images([r["image"] for r in rows])
    sparse = splade.encode([r["productDisplayName"] for r in rows])
    conn = connect(settings.database_url)
    try:
        upsert_products(conn, rows, source="offline")
        vid = iv.create_version(
            conn,
            dense_model=clip.name,
            dense_dim=clip.dim,
            sparse_model=splade.name,
            sparse_dim=splade.vocab_size,
            params={"source": "offline", "size": CATALOG_SIZE, "by": "test_api"},
        )
        iv.load_embeddings(conn, vid, [r["id"] for r in rows], dense, sparse)
        iv.build_indexes(conn, vid)
        iv.mark_ready(conn, vid, {"by": "test_api"})
        iv.swap_live(conn, vid)
    finally:
        conn.close()
    return LiveIndex(vid, rows, clip.name, splade.name)


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

