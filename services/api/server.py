"""Serving the API with uvicorn, hardened against slow and greedy clients.

uvicorn times out idle keep-alive connections but has no timeout for *reading* a request: a
client that sends one header line every few seconds ("slowloris") or a body one byte at a
time holds its connection, a file descriptor and a little memory for ever, and some
thousands of them exhaust the process's descriptors so that real clients are refused.
:class:`GuardedHttpToolsProtocol` (uvicorn's httptools protocol, subclassed) adds:

- **header timeout** (``HEADER_TIMEOUT_S``): a request head (request line + headers) must be
  complete within this many seconds of the connection opening, or of the previous response
  on a keep-alive connection (an absolute deadline: trickling bytes does not extend it);
  else ``408`` (when part of a head arrived) and the connection is closed;
- **body timeout** (``BODY_TIMEOUT_S``): a request body must be complete within this many
  seconds of its head; else the connection is closed and the app's ``receive()`` gets
  ``http.disconnect``;
- **head size and header count** (``MAX_HEAD_BYTES``, h11's default incomplete-event size,
  and ``MAX_HEADERS``): over either, ``431 Request Header Fields Too Large`` and close;
- **a connection cap** (:func:`max_connections_for`): the soft ``RLIMIT_NOFILE`` is raised to
  the hard limit at startup and the cap is that less ``FD_RESERVE`` descriptors (database
  pool, model and log files), at most ``MAX_CONNECTIONS_CAP``. A connection over the cap
  gets ``503`` and is closed at once; uvicorn's ``limit_concurrency`` (the same number)
  answers ``503`` to requests while the server is full.

``fashion-search serve`` (``services/api/cli.py``) is a thin wrapper around :func:`run`.
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
import resource
import socket
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0  # request line + headers, absolute
BODY_TIMEOUT_S = 60.0  # whole body after the head: an 8 MiB photo at ~140 KB/s
KEEP_ALIVE_TIMEOUT_S = 5.0  # uvicorn's default: idle keep-alive connection
MAX_HEAD_BYTES = 16 * 1024  # h11's default max incomplete event size
MAX_HEADERS = 100
FD_RESERVE = 1024  # descriptors kept for the DB pool, model/log files, event loop, threads
MAX_CONNECTIONS_CAP = 50_000  # ~15 KiB of server memory each (10,000 slowloris: +150 MiB)
UNREAD_GRACE_S = 1.0  # a timed-out connection with unread bytes is checked again after this
BACKLOG = 4096  # Linux caps it at net.core.somaxconn (4096 by default)


@dataclass(frozen=True)
class Limits:
    """What a client may hold or send; the defaults are the module constants."""

    header_timeout: float = HEADER_TIMEOUT_S
    body_timeout: float = BODY_TIMEOUT_S
    keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES
    max_headers: int = MAX_HEADERS
    max_connections: int = 1024
    backlog: int = BACKLOG


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. macOS with an unlimited hard limit
            log.warning("could not raise RLIMIT_NOFILE from %s to %s: %s", soft, hard, exc)
    return soft, hard


def max_connections_for(nofile: int, cap: int | None = None) -> int:
    """Concurrent connections the server accepts with ``nofile`` descriptors: all but
    ``FD_RESERVE`` (at least 64), and at most ``cap`` (default ``MAX_CONNECTIONS_CAP``)."""
    if nofile == resource.RLIM_INFINITY:
        nofile = 1 << 20
    limit = max(64, nofile - FD_RESERVE)
    return min(limit, cap if cap is not None else MAX_CONNECTIONS_CAP)


def _plain_response(status: int, body: bytes, default_headers: list) -> bytes:
    phrase = http.HTTPStatus(status).phrase.encode()
    out = [b"HTTP/1.1 %d %s\r\n" % (status, phrase)]
    out += [name + b": " + value + b"\r\n" for name, value in default_headers]
    out.append(
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % len(body)
    )
    out.append(body)
    return b"".join(out)


class _Reject(Exception):
    """Raised inside a parser callback: the request is refused with ``status``."""


_last_full_warning = 0.0


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the header/body timeouts, head limits and the
    connection cap of the module docstring. ``limits`` is set on a subclass by
    :func:`protocol_class`."""

    limits: ClassVar[Limits] = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # between requests: the next bytes are a request head
        self._head_started = False  # part of a head has been parsed
        self._head_raw = 0  # bytes received while a head is incomplete (may undercount)
        self._head_size = 0  # bytes of the URL and headers parsed so far
        self._header_count = 0
        self._reject_status: int | None = None

    # --- connection -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            # Full: answer at once instead of holding a descriptor for a request we would 503.
            self.transport = transport
            self._awaiting_head = False
            transport.write(_plain_response(503, b"Server full", self.server_state.default_headers))
            transport.close()
            _warn_full(self.limits.max_connections)
            return
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_raw += len(data)
        super().data_received(data)
        if (
            self._awaiting_head
            and self._head_raw > self.limits.max_head_bytes
            and not self.transport.is_closing()
        ):
            # A head still incomplete after this many bytes: one header line httptools is
            # still buffering, or a head that never ends.
            self._refuse(431, b"Request header fields too large")

    # --- parser callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._head_size = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.limits.max_head_bytes:
            self._reject_status = 431
            raise _Reject("request head too large")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            self._reject_status = 431
            raise _Reject("too many headers")
        if self._head_size > self.limits.max_head_bytes:
            self._reject_status = 431
            raise _Reject("request head too large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_started = False
        self._head_raw = 0
        self._cancel_head_timer()
        super().on_headers_complete()
        if self._has_body():
            self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_timeout)

    def on_message_complete(self) -> None:
        self._cancel_body_timer()
        super().on_message_complete()
        self._awaiting_head = True
        self._head_raw = 0
        if self.cycle.response_complete and not self.pipeline and not self.transport.is_closing():
            # The app answered before the body was in (an error, say): the next head's
            # deadline starts now.
            self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # uvicorn armed its keep-alive timer: no pipelined request is waiting, so the next
        # head gets its deadline from now (or, if this request's body is still coming in,
        # from its end: on_message_complete).
        if (
            self.timeout_keep_alive_task is not None
            and self._awaiting_head
            and not self.transport.is_closing()
        ):
            self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers 400 to any parser error, ours (a _Reject from a callback) included.
        if self._reject_status is not None:
            self._refuse(self._reject_status, b"Request header fields too large")
            return
        self._awaiting_head = False
        super().send_400_response(msg)

    # --- helpers ------------------------------------------------------------------------
    def _has_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length" and value.strip() not in (b"0", b""):
                return True
            if name == b"transfer-encoding":
                return True
        return False

    def _refuse(self, status: int, body: bytes) -> None:
        self._awaiting_head = False
        self._cancel_timers()
        if self.transport.is_closing():
            return
        log.debug("refused a request from %s: %d", self.client, status)
        if self.cycle is None or self.cycle.response_complete:
            headers = self.server_state.default_headers
            self.transport.write(_plain_response(status, body, headers))
        # else a response is being written on this connection: only closing is safe
        self.transport.close()

    def _unread_bytes_waiting(self) -> bool:
        """True when the client has sent bytes this process has not read yet: on an event
        loop running seconds behind (overload), a timer can fire before the ``data_received``
        of a request that arrived in time. Closing then would reset a healthy client."""
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return False
        try:
            fd = os.dup(sock.fileno())  # uvloop's pseudo-socket has no recv: peek on a dup
        except OSError:
            return False
        try:
            with socket.socket(fileno=fd) as peek:
                return bool(peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:  # nothing to read (EAGAIN), or the connection is gone
            return False

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing() and self._unread_bytes_waiting():
            # The next request is already here, just not read yet: not idle.
            self.timeout_keep_alive_task = self.loop.call_later(
                UNREAD_GRACE_S, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head:
            return
        if self._unread_bytes_waiting():  # bytes in time, loop behind: read them first
            self._head_timer = self.loop.call_later(UNREAD_GRACE_S, self._head_timeout)
            return
        log.debug("request head timeout: %s", self.client)
        if self._head_started:
            self._refuse(408, b"Request timeout")
        else:
            self._awaiting_head = False
            self.transport.close()

    def _body_timeout(self) -> None:
        self._body_timer = None
        if not self.transport.is_closing():
            log.debug("request body timeout: %s", self.client)
            self.transport.close()  # connection_lost: the app's receive() sees http.disconnect

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()


def _warn_full(limit: int) -> None:
    """At most one warning a minute while connections are refused for the cap."""
    global _last_full_warning
    now = time.monotonic()
    if now - _last_full_warning > 60:
        _last_full_warning = now
        log.warning("connection limit reached (%d open): refusing new connections", limit)


def protocol_class(limits: Limits) -> type[GuardedHttpToolsProtocol]:
    """A :class:`GuardedHttpToolsProtocol` subclass bound to ``limits`` (uvicorn builds one
    protocol object per connection from the class)."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits})


def build_config(
    app: Any,
    *,
    host: str,
    port: int,
    limits: Limits,
    graceful_timeout: float | None = 10.0,
    **kwargs: Any,
) -> uvicorn.Config:
    """The uvicorn config of the API: guarded HTTP/1.1 (httptools), no WebSockets."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(limits),
        ws="none",  # the API has no WebSocket routes: no upgrade path to guard
        # uvicorn answers 503 when len(connections) >= limit, counting the requesting one:
        # +1 so that all max_connections connections (the protocol's cap) are served.
        limit_concurrency=limits.max_connections + 1,
        backlog=limits.backlog,
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type] # call_later
        timeout_graceful_shutdown=graceful_timeout,
        h11_max_incomplete_event_size=limits.max_head_bytes,
        lifespan="on",
        **kwargs,
    )


def resolve_limits(limits: Limits | None = None, *, max_connections: int | None = None) -> Limits:
    """``limits`` with ``max_connections`` from the descriptor limit, raised to the hard limit
    first (``max_connections``, when given, lowers it further)."""
    soft, hard = raise_nofile_limit()
    limits = limits or Limits()
    resolved = max_connections_for(soft, max_connections)
    log.debug("RLIMIT_NOFILE %s/%s -> max_connections %d", soft, hard, resolved)
    return replace(limits, max_connections=resolved)


def run(app: Any, *, host: str, port: int, limits: Limits, graceful_timeout: float = 10.0) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (stop accepting, finish requests, shutdown hooks).

    ``limits.max_connections`` is taken as is (see :func:`resolve_limits`)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    config = build_config(
        app,
        host=host,
        port=port,
        limits=limits,
        graceful_timeout=graceful_timeout,
        log_config=None,  # keep our JSON handler; uvicorn's loggers propagate to it
        access_log=False,  # the request-id middleware writes the access log
    )
    log.info(
        "serving on http://%s:%d: max_connections=%d (RLIMIT_NOFILE %d, %d reserved), "
        "header timeout %gs, body timeout %gs, head <= %d bytes, <= %d headers",
        host,
        port,
        limits.max_connections,
        soft,
        FD_RESERVE,
        limits.header_timeout,
        limits.body_timeout,
        limits.max_head_bytes,
        limits.max_headers,
        extra={
            "max_connections": limits.max_connections,
            "rlimit_nofile": soft,
            "header_timeout_s": limits.header_timeout,
            "body_timeout_s": limits.body_timeout,
            "max_head_bytes": limits.max_head_bytes,
            "max_headers": limits.max_headers,
            "backlog": limits.backlog,
        },
    )
    uvicorn.Server(config).run()
