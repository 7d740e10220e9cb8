"""The type-ahead's service (``GET /v1/suggest``): the live version's vocabulary index,
built once per version and kept, and the answer's schema.

The index (``services.search.suggest``) is built from the live version's facet value
counts and its products' display names (``services.store.suggest_sql``) on the first
request: one read of the database and a build in Python (the controller runs that in a
worker thread). Every later request is answered from memory without touching the
database: a dictionary probe when the same text was asked before, a sorted-list range
otherwise (microseconds). The index is refreshed when it is older than
:data:`SUGGEST_TTL_S` (a catalogue sync changes the live version in place, a swap makes
another version live): in the background, while requests go on with the one they have;
the vocabulary is only rebuilt when what it is built from changed. A refresh that fails
(the database is down) keeps the index it had and is tried again a TTL later.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, replace
from typing import Annotated, Literal

import msgspec

from services.api.runtime import Runtime
from services.catalog.schema import BY_NAME
from services.search import NoLiveIndex, SearchValidationError
from services.search.suggest import FACET_KINDS, MAX_SUGGESTIONS, SuggestIndex, build_index
from services.store.index_versions import live_version
from services.store.suggest_sql import display_names, facet_value_counts

log = logging.getLogger(__name__)

# How long a built index is served before it is checked against the database again.
SUGGEST_TTL_S = 60.0
MAX_QUERY_CHARS = 100
DEFAULT_LIMIT = MAX_SUGGESTIONS
_COLUMNS = tuple(BY_NAME[kind].column for kind in FACET_KINDS)

SuggestionKind = Literal["articleType", "baseColour", "brand", "subCategory", "usage", "phrase"]


class SuggestionBody(msgspec.Struct):
    """A completion of the typed text."""

    text: Annotated[str, msgspec.Meta(description="The completion, as the catalogue spells it.")]
    kind: Annotated[
        SuggestionKind,
        msgspec.Meta(
            description="Where it comes from: a facet field (its name is the search's filter "
            'key: {"articleType": "Jackets"}), or "phrase", words frequent in product names.'
        ),
    ]
    count: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            description="Products of the live index that match it (that have the facet "
            "value, or whose name contains the phrase).",
        ),
    ]
    typo: Annotated[
        bool,
        msgspec.Meta(
            description="Found by tolerating a typo in the last word (edit distance 1, "
            "2 from 8 characters on): ranked after the exact prefix matches."
        ),
    ]


class Suggestions(msgspec.Struct):
    """Up to ``limit`` completions: exact prefix matches by product count, then typo-tolerant
    ones."""

    q: Annotated[str, msgspec.Meta(description="The text as sent.")]
    index_version: Annotated[int, msgspec.Meta(description="The index version answering.")]
    suggestions: list[SuggestionBody]


# --- the index of the live version -----------------------------------------------------------
@dataclass(frozen=True)
class BuiltIndex:
    version_id: int
    index: SuggestIndex
    fingerprint: int  # of what it was built from: a refresh with the same rebuilds nothing
    stamp: float  # time.monotonic() when it was built or last found current


class SuggestCache:
    """The live version's :class:`SuggestIndex` of one API process (see the module's doc)."""

    def __init__(self, ttl: float = SUGGEST_TTL_S):
        self.ttl = ttl
        self._built: BuiltIndex | None = None
        self._build_lock = threading.Lock()  # one database read and build at a time
        self._state_lock = threading.Lock()
        self._refreshing = False
        self.builds = 0  # indexes built (not counting refreshes that found nothing changed)

    def current(self, runtime: Runtime) -> BuiltIndex | None:
        """The index without blocking: None before the first build. One past its TTL is
        still returned; a background refresh is started."""
        built = self._built
        if built is not None and time.monotonic() - built.stamp > self.ttl:
            self._refresh_in_background(runtime)
        return built

    def get(self, runtime: Runtime) -> BuiltIndex:
        """The index, built now (blocking: a database read and a build) if there is none."""
        built = self.current(runtime)
        if built is None:
            with self._build_lock:
                built = self._built
                if built is None:
                    built = self._built = self._load(runtime, None)
        return built

    def _load(self, runtime: Runtime, previous: BuiltIndex | None) -> BuiltIndex:
        def read(conn):
            version = live_version(conn)
            if version is None:
                raise NoLiveIndex("no index version is live yet; run the indexing pipeline first")
            return (
                version,
                facet_value_counts(conn, version, _COLUMNS),
                display_names(conn, version),
            )

        version, counts, names = runtime.read(read, background=True)
        by_kind = {kind: counts[column] for kind, column in zip(FACET_KINDS, _COLUMNS)}
        fingerprint = hash(
            (version.id, tuple(tuple(by_kind[k]) for k in FACET_KINDS), tuple(names))
        )
        now = time.monotonic()
        if previous is not None and (previous.version_id, previous.fingerprint) == (
            version.id,
            fingerprint,
        ):
            return replace(previous, stamp=now)
        start = time.perf_counter()
        index = build_index(by_kind, names)
        self.builds += 1
        log.info(
            "type-ahead index of v%s: %d entries from %d products in %.0f ms",
            version.id,
            len(index),
            len(names),
            (time.perf_counter() - start) * 1000,
        )
        return BuiltIndex(version.id, index, fingerprint, now)

    def _refresh_in_background(self, runtime: Runtime) -> None:
        with self._state_lock:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(
            target=self._refresh, args=(runtime,), name="suggest-refresh", daemon=True
        ).start()

    def _refresh(self, runtime: Runtime) -> None:
        try:
            with self._build_lock:
                previous = self._built
                try:
                    self._built = self._load(runtime, previous)
                except Exception as exc:  # noqa: BLE001 - keep serving the index we have
                    log.warning("type-ahead refresh failed, kept the current index: %s", exc)
                    if previous is not None:
                        self._built = replace(previous, stamp=time.monotonic())
        finally:
            with self._state_lock:
                self._refreshing = False


_CACHES: weakref.WeakKeyDictionary[Runtime, SuggestCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def cache_of(runtime: Runtime) -> SuggestCache:
    """The runtime's (the API process's) type-ahead cache."""
    cache = _CACHES.get(runtime)
    if cache is None:
        with _CACHES_LOCK:
            cache = _CACHES.setdefault(runtime, SuggestCache())
    return cache


# --- the request ---------------------------------------------------------------------------
def check_request(q: str, limit: int) -> None:
    """The request's validation (422, ``SearchValidationError``): a NUL character, ``q``
    over MAX_QUERY_CHARS characters, ``limit`` outside 1..MAX_SUGGESTIONS."""
    if "\x00" in q:
        raise SearchValidationError("q contains a NUL character (U+0000)")
    if len(q) > MAX_QUERY_CHARS:
        raise SearchValidationError(f"q is {len(q)} characters; the limit is {MAX_QUERY_CHARS}")
    if not 1 <= limit <= MAX_SUGGESTIONS:
        raise SearchValidationError(f"limit must be in 1..{MAX_SUGGESTIONS}, got {limit}")


def ready(runtime: Runtime) -> BuiltIndex | None:
    """The live version's index if built (never blocks); None: call :func:`load`."""
    return cache_of(runtime).current(runtime)


def load(runtime: Runtime) -> BuiltIndex:
    """The live version's index, read and built now if needed (blocking: run in a thread).
    ``NoLiveIndex`` or a database error (503) when there is none and it cannot be built."""
    return cache_of(runtime).get(runtime)


def answer(built: BuiltIndex, q: str, limit: int = DEFAULT_LIMIT) -> Suggestions:
    """The completions of ``q`` (validated by :func:`check_request`); blank: none."""
    return Suggestions(
        q=q,
        index_version=built.version_id,
        suggestions=[
            SuggestionBody(s.text, s.kind, s.count, s.typo) for s in built.index.suggest(q, limit)
        ],
    )


def suggest(runtime: Runtime, q: str, limit: int = DEFAULT_LIMIT) -> Suggestions:
    """``GET /v1/suggest`` in one blocking call (benchmarks, tests)."""
    check_request(q, limit)
    return answer(load(runtime), q, limit)
