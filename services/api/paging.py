"""Pages of a search: the cursor that continues one, and what a response says about its page.

A relevance page of ``k`` results at offset ``o`` is the slice ``[o, o + k)`` of the ranking
of depth ``o + k`` (services/store/sql/search.sql, stage 4); another sort's page is the same
slice of the relevant set (the filtered top ``RELEVANT_POOL`` by fused score) in that
order. The **cursor** of the next page is opaque to clients and carries:

- the index version it belongs to: a cursor of another version is refused (410 Gone), never
  answered with a silently different ranking;
- a fingerprint of the search (text, image digest, mode, the alpha it ran with, filters,
  understanding choices, sort): a cursor sent with another search is refused (422);
- the next offset (how deep to rank) and what the earlier pages showed: every product up to
  a sort key, and the products shown since by pages not proven exact (their candidates may
  have missed one that sorts earlier). The next page is the first ``k`` products of its
  ranking that were not shown: none twice, and one the earlier pages missed comes now
  rather than never (``Page.late`` counts them);
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
# The most products a cursor lists as shown by pages not proven exact (10 pages of 24).
MAX_SHOWN = 240


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
    """Where the next page starts: every product sorting at or before ``after`` (None: none)
    was shown, and so were ``shown`` (the products shown since, by pages whose ranking was
    not proven exact: they may have missed one that sorts earlier); ``last`` is the last
    product's key; ``offset`` how many were shown in all."""

    index_version: int
    fingerprint: str
    offset: int
    after: tuple | None
    last: tuple
    shown: tuple[int, ...]


class _Payload(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    format: int
    index_version: int
    fingerprint: str
    offset: int
    after: list[float | int] | None
    last: list[float | int]
    shown: bytes  # the ids, sorted, as varint deltas


def _pack_ids(ids: tuple[int, ...]) -> bytes:
    out, prev = bytearray(), 0
    for i in sorted(ids):
        delta, prev = i - prev, i
        while True:
            byte, delta = delta & 0x7F, delta >> 7
            out.append(byte | (0x80 if delta else 0))
            if not delta:
                break
    return bytes(out)


def _unpack_ids(data: bytes) -> tuple[int, ...]:
    ids, value, shift, prev = [], 0, 0, 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            prev += value
            ids.append(prev)
            value, shift = 0, 0
        elif shift > 63:
            raise ValueError("id too long")
    if shift:
        raise ValueError("truncated id")
    return tuple(ids)


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
            None if cursor.after is None else list(cursor.after),
            list(cursor.last),
            _pack_ids(cursor.shown),
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
    try:
        shown = _unpack_ids(p.shown)
    except ValueError:
        raise CursorRejected(422, _INVALID) from None
    if p.format != CURSOR_VERSION or not 0 < p.offset < MAX_DEPTH or len(shown) > MAX_SHOWN:
        raise CursorRejected(422, _INVALID)
    after = None if p.after is None else tuple(p.after)
    return Cursor(p.index_version, p.fingerprint, p.offset, after, tuple(p.last), shown)


def check_search(cursor: Cursor, fingerprint_now: str) -> None:
    """422 unless ``cursor`` was issued for the search it comes with (checked before any
    encoding or ranking)."""
    if cursor.fingerprint != fingerprint_now:
        raise CursorRejected(
            422,
            "this cursor belongs to another search: send the same text, image, mode, alpha, "
            "filters and sort as the first page (or drop the cursor to start again)",
        )


def check_version(cursor: Cursor, live_version: int) -> None:
    """410 unless ``cursor``'s index version is the one the page was ranked on."""
    if cursor.index_version != live_version:
        raise CursorRejected(
            410,
            f"the index changed since this cursor was issued (v{cursor.index_version}, now "
            f"v{live_version}); start again from the first page",
            error="cursor_expired",
        )


@dataclass(frozen=True)
class PageState:
    """Where a page stands: ``has_more``, the next page's offset and cursor, ``late``."""

    has_more: bool
    next_offset: int | None
    next_cursor: str | None
    late: int


def page_state(
    ranking: Ranking,
    offset: int,
    sort: str,
    cursor: Cursor | None,
    version: int,
    fingerprint_now: str,
    key: bytes,
) -> PageState:
    """The page's place in its ranking and the cursor of the next. ``late``: the products
    of this page that sort before the previous page's last one (the earlier pages'
    candidates missed them; shown now rather than lost; 0 when the pages agree).

    The next cursor says what was shown: after a page whose ranking is proven exact, every
    product up to its last (``after``); else this page's products too (``shown``), up to
    MAX_SHOWN of them (beyond, the cursor declares everything up to the last product shown:
    a product the candidates missed before it would not be shown later; that happens only
    past ten unproven pages, on an index too large for the exact fallback)."""
    hits = ranking.hits
    keys = [sort_key(sort, h) for h in hits]
    late = sum(1 for k in keys if cursor is not None and k < cursor.last)
    next_offset = offset + len(hits)
    has_more = bool(hits) and ranking.remaining > len(hits) and next_offset < MAX_DEPTH
    if not has_more:
        return PageState(False, None, None, late)
    last = max([*keys, *([cursor.last] if cursor is not None else [])])
    before = cursor.shown if cursor is not None else ()
    if cursor is None and offset > 0:
        after, shown = keys[-1], ()  # an offset page is a slice: what came before it is unknown
    elif ranking.certificate.exact:
        # Proven: every product up to this page's last was shown now or before; products
        # listed as shown may still sort after it (kept).
        after, shown = keys[-1], before
    else:
        after = cursor.after if cursor is not None else None
        shown = before + tuple(h.product_id for h in hits)
    if len(shown) > MAX_SHOWN:
        after, shown = last, ()
    token = encode_cursor(Cursor(version, fingerprint_now, next_offset, after, last, shown), key)
    return PageState(True, next_offset, token, late)
