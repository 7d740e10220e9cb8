"""The API's outer edge: which ``Host`` is served, and ``HEAD`` wherever ``GET`` works.

One ASGI wrapper around the whole application (:func:`edge_guard`, installed by
``create_app`` around Litestar's own handler, so it sees every request, unknown routes
included, and its answers still pass the ``before_send`` hooks: the security headers):

- **Host allow-list.** A request is served only when its ``Host`` names a loopback address
  (``127.0.0.1``, ``localhost``, ``[::1]``; any port) or a name of ``FASHION_ALLOWED_HOSTS``
  (``settings.allowed_hosts``: exact names, any case, any port; ``*.example.com`` also
  allows every subdomain of example.com). Any other Host, or none, is a 400 with the API's
  JSON error body, before any route runs: a page or an API answer is never served under a
  name an attacker chose (DNS rebinding, poisoned absolute links).
- **HEAD.** A ``HEAD`` request is answered as the same ``GET``, status and headers
  (``Content-Length`` included), without the body. A path that has no GET answers HEAD as
  it answers GET: 405 (``Allow`` names its methods). HEAD is not an OpenAPI operation of
  its own: every GET operation has it implicitly.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable

from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def host_name(header: str) -> str:
    """The name of a ``Host`` header, without its port, lower-cased (``[::1]:8000`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):  # an IPv6 literal, maybe with a port
        end = header.find("]")
        return header[1:end] if end > 0 else header
    name, _, port = header.rpartition(":")
    if name and port.isdigit():
        header = name
    return header.rstrip(".")


def host_allowed(name: str, allowed: Iterable[str]) -> bool:
    """Whether a Host name (see :func:`host_name`) is a loopback name or one of ``allowed``."""
    if not name:
        return False
    if name in LOOPBACK_HOSTS:
        return True
    for entry in allowed:
        entry = entry.strip().lower().rstrip(".")
        if entry.startswith("*.") and name.endswith(entry[1:]) and len(name) > len(entry) - 1:
            return True
        if name == entry:
            return True
    return False


async def _refuse_host(scope: Scope, send: Send, header: str | None) -> None:
    rid = uuid.uuid4().hex
    detail = (
        "missing Host header"
        if header is None
        else f"Host {header!r} is not served here; use a loopback address or a name in "
        "FASHION_ALLOWED_HOSTS"
    )
    log.info("refused %s %s: %s", scope.get("method"), scope.get("path"), detail)
    body = json.dumps(
        {"status_code": 400, "error": "bad_request", "detail": detail, "request_id": rid}
    ).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"x-request-id", rid.encode("ascii")),
            ],
        }
    )
    if scope.get("method") == "HEAD":
        body = b""
    await send({"type": "http.response.body", "body": body, "more_body": False})


def edge_guard(app: ASGIApp, allowed_hosts: Iterable[str] = ()) -> ASGIApp:
    """``app`` behind the Host allow-list and with HEAD answered as GET (module docstring)."""
    allowed = tuple(allowed_hosts)

    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the API has no websockets; lifespan passes through
            await app(scope, receive, send)
            return
        header = None
        for name, value in scope.get("headers", ()):
            if name == b"host":
                header = value.decode("latin-1")
                break
        if header is None or not host_allowed(host_name(header), allowed):
            await _refuse_host(scope, send, header)
            return
        if scope.get("method") != "HEAD":
            await app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await app({**scope, "method": "GET"}, receive, send_headers_only)

    return guard
