"""Search ids: what a search response hands out and an event must bring back.

A search id is opaque to clients and signed, so ``POST /v1/events`` can refuse an unknown
one without a database round trip (the events' writer never reads): it carries a random
128-bit id (the ``search_id`` stored with the search), when it was issued, the page's
offset and how many products it showed (an event's position must lie in that page), and an
HMAC-SHA256 tag under a key derived from the API's cursor key. A search id older than
:data:`MAX_AGE_S` is refused too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
import uuid
from dataclasses import dataclass

FORMAT = 1
MAX_AGE_S = 24 * 3600  # events later than a day after their search are refused
_TAG_BYTES = 12
_BODY = struct.Struct(">B16sIHH")  # format, id, issued (unix s), offset, shown


class UnknownSearchId(ValueError):
    """Not a search id this API issued (altered, cut short, another key), or too old."""


@dataclass(frozen=True)
class SearchId:
    id: uuid.UUID
    issued: int  # unix seconds
    offset: int  # the page's offset in the ranking
    shown: int  # products on the page

    def positions(self) -> range:
        """The 1-based positions (in the whole ranking) of the page's products."""
        return range(self.offset + 1, self.offset + self.shown + 1)


def _key(cursor_key: bytes) -> bytes:
    return hmac.new(cursor_key, b"fashion-search search id", hashlib.sha256).digest()


def new_search_id(cursor_key: bytes, offset: int, shown: int) -> tuple[SearchId, str]:
    """A fresh search id for a page at ``offset`` showing ``shown`` products, and its token."""
    sid = SearchId(uuid.UUID(bytes=secrets.token_bytes(16)), int(time.time()), offset, shown)
    body = _BODY.pack(FORMAT, sid.id.bytes, sid.issued, offset, shown)
    tag = hmac.new(_key(cursor_key), body, hashlib.sha256).digest()[:_TAG_BYTES]
    return sid, base64.urlsafe_b64encode(body + tag).rstrip(b"=").decode()


def read_search_id(token: str, cursor_key: bytes, now: float | None = None) -> SearchId:
    """The search id in ``token``; :class:`UnknownSearchId` when it is not one of ours or
    is older than MAX_AGE_S."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise UnknownSearchId("unknown search_id: not one this service issued") from None
    if len(raw) != _BODY.size + _TAG_BYTES:
        raise UnknownSearchId("unknown search_id: not one this service issued")
    body, tag = raw[: _BODY.size], raw[_BODY.size :]
    want = hmac.new(_key(cursor_key), body, hashlib.sha256).digest()[:_TAG_BYTES]
    if not hmac.compare_digest(tag, want):
        raise UnknownSearchId("unknown search_id: not one this service issued")
    fmt, raw_id, issued, offset, shown = _BODY.unpack(body)
    if fmt != FORMAT:
        raise UnknownSearchId("unknown search_id: not one this service issued")
    now = time.time() if now is None else now
    if now - issued > MAX_AGE_S:
        raise UnknownSearchId("search_id expired: events are taken up to a day after the search")
    return SearchId(uuid.UUID(bytes=raw_id), issued, offset, shown)
