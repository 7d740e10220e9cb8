"""Pages of a search: the cursor that continues one, and what a response says about its page.

A relevance page of ``k`` results at offset ``o`` is the slice ``[o, o + k)`` of the ranking
of depth ``o + k`` (services/store/sql/search.sql, stage 4); another sort's page is the same
slice of the relevant set (the filtered top ``RELEVANT_POOL`` by fused score) in that
order. The **cursor** of the next page is opaque to clients and carries:

- the index version it belongs to: a cursor of another version is refused (410 Gone), never
  answered with a silently different ranking;
- a fingerprint of the search (text, image digest, mode, the alpha it ran with, filters,
  understanding choices, sort): a cursor sent with another search is refused (422);
- the next offset (how deep to rank) and the sort key of the last result shown: the next
  page starts strictly after that key, so no product is shown twice, even when the deeper
  ranking differs from the shallower one (``Page.shifted`` then says by how much);
- an HMAC-SHA256 tag under the cursor key (``FASHION_CURSOR_SECRET``, else a random key kept
  in ``FASHION_HOME/secrets/cursor-key``): a cursor altered or cut short is refused (422).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import msgspec

from services.config import Settings
from services.search import MAX_DEPTH, Filters, Ranking, sort_key

CURSOR_VERSION = 1
_TAG_BYTES = 16


class CursorRejected(Exception):
    """A cursor the API refuses: 422 (not one it issued, or for another search) or 410 (its
    index version is no longer live); services.api.errors answers it."""

    def __init__(self, status_code: int, detail: str, error: str = "invalid_cursor"):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.error = error


@dataclass(frozen=True)
class Cursor:
    index_version: int
    fingerprint: str
    offset: int
    after: tuple


class _Payload(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    format: int
    index_version: int
    fingerprint: str
    offset: int
    after: list[float | int]


@functools.cache
def _key_from_file(path: Path) -> bytes:
    """The cursor key kept in ``path`` (created once, 0600, shared by one machine's API
    processes: the first writer wins, the others read its key)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        if len(key) >= 32:
            return key
        raise RuntimeError(f"{path} holds no usable cursor key; delete it to make a new one")
    key = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def cursor_key(settings: Settings) -> bytes:
    if settings.cursor_secret:
        return settings.cursor_secret.encode()
    return _key_from_file(settings.cursor_key_file)


def fingerprint(
    text: str | None,
    image: bytes | None,
    mode: str,
    alpha: float,
    filters: Filters,
    literal: bool,
    ignore: list[str] | None,
    sort: str,
) -> str:
    """What a cursor is bound to: everything that decides the ranking and its order."""
    parts = [
        text,
        hashlib.sha256(image).hexdigest() if image is not None else None,
        mode,
        repr(float(alpha)),
        [list(v) for v in filters.values],
        [list(r) for r in filters.ranges],
        literal,
        sorted(set(ignore or ())),
        sort,
    ]
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(cursor: Cursor, key: bytes) -> str:
    payload = msgspec.json.encode(
        _Payload(
            CURSOR_VERSION,
            cursor.index_version,
            cursor.fingerprint,
            cursor.offset,
            list(cursor.after),
        )
    )
    tag = hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]
    return f"{_b64(payload)}.{_b64(tag)}"


_INVALID = "cursor is not valid (malformed, altered or cut short); start again from the first page"


def decode_cursor(token: str, key: bytes) -> Cursor:
    """The cursor in ``token``; CursorRejected 422 for anything but a cursor this API issued."""
    try:
        body, tag = token.split(".")
        payload, tag_bytes = _unb64(body), _unb64(tag)
    except (ValueError, binascii.Error):
        raise CursorRejected(422, _INVALID) from None
    expected = hmac.new(key, payload, hashlib.sha256).digest()[:_TAG_BYTES]
    if not hmac.compare_digest(expected, tag_bytes):
        raise CursorRejected(422, _INVALID)
    try:
        p = msgspec.json.decode(payload, type=_Payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise CursorRejected(422, _INVALID) from None
    if p.format != CURSOR_VERSION or not 0 < p.offset < MAX_DEPTH:
        raise CursorRejected(422, _INVALID)
    return Cursor(p.index_version, p.fingerprint, p.offset, tuple(p.after))


def check_cursor(cursor: Cursor, fingerprint_now: str, live_version: int) -> None:
    if cursor.fingerprint != fingerprint_now:
        raise CursorRejected(
            422,
            "this cursor belongs to another search: send the same text, image, mode, alpha, "
            "filters and sort as the first page (or drop the cursor to start again)",
        )
    if cursor.index_version != live_version:
        raise CursorRejected(
            410,
            f"the index changed since this cursor was issued (v{cursor.index_version}, now "
            f"v{live_version}); start again from the first page",
            error="cursor_expired",
        )


@dataclass(frozen=True)
class PageState:
    """Where a page stands: ``has_more``, the next page's offset and cursor, ``shifted``."""

    has_more: bool
    next_offset: int | None
    next_cursor: str | None
    shifted: int


def page_state(
    ranking: Ranking,
    offset: int,
    sort: str,
    cursor_after: bool,
    version: int,
    fingerprint_now: str,
    key: bytes,
) -> PageState:
    """The page's place in its ranking. ``shifted``: with a cursor, how many more products
    the deeper ranking puts before the cursor than the earlier pages showed (0: this page
    continues them exactly; > 0: products they missed, skipped here rather than shown
    out of order; < 0: products they showed that the ranking no longer holds there)."""
    shown = len(ranking.hits)
    consumed = ranking.before_after if cursor_after else offset
    shifted = ranking.before_after - offset if cursor_after else 0
    next_offset = offset + shown
    has_more = shown > 0 and ranking.ranked - consumed > shown and next_offset < MAX_DEPTH
    if not has_more:
        return PageState(False, None, None, shifted)
    token = encode_cursor(
        Cursor(version, fingerprint_now, next_offset, sort_key(sort, ranking.hits[-1])), key
    )
    return PageState(True, next_offset, token, shifted)
