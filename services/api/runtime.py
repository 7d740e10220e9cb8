"""What one API process holds for its lifetime: the connection pool, the loaded encoders,
and an LRU cache of query embeddings. Injected into handlers with ``Provide``.

With a read replica (``Settings.database_read_url``), a second pool: searches and lookups
(:meth:`Runtime.read`) go to the replica first and to the primary when the replica fails
them, and the other way round while one side is marked down (:data:`SIDE_RETRY_S`), so
searches go on with either server down. Writes (none in the API) stay on the primary.

Startup never blocks on the database or the models: the pool opens with ``wait=False``
(the app serves /healthz while PostgreSQL is down and recovers when it returns), and the
encoders load once in a background thread (/readyz says "loading" until they are in).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import psycopg
from pgvector import SparseVector
from psycopg_pool import ConnectionPool

from services.api.analytics import Analytics
from services.api.encoding import Batcher, LRUCache, image_digest
from services.api.paging import cursor_key
from services.config import Settings
from services.encoders.images import (
    DECODE_WAIT_TIMEOUT_S,
    decode_image,
    set_decode_concurrency,
)
from services.search import NoLiveIndex, use_session_settings
from services.store.db import make_pool
from services.store.index_versions import IndexVersion, live_version
from services.understanding.live import LiveUnderstanding
from services.understanding.query import Encoded, QueryUnderstanding, Understanding, encoder_of
from services.understanding.understand import Understood
from services.understanding.understand import literal as literal_understanding

log = logging.getLogger(__name__)
T = TypeVar("T")
# A pooled connection idle longer than this is checked (one round trip) before use; a busy
# one is not, and a read that finds it dead is retried (Runtime.read).
POOL_CHECK_IDLE_S = 1.0
# A side (primary or replica) that failed a read is tried after the other for this long;
# then a read tries it first again, waiting at most PROBE_TIMEOUT_S for a connection.
SIDE_RETRY_S = 5.0
PROBE_TIMEOUT_S = 0.5
PRIMARY, REPLICA = "primary", "replica"


def _search_connection(conn: psycopg.Connection) -> None:
    """Set-up of each new pooled connection: autocommit, search settings in the session."""
    conn.autocommit = True
    use_session_settings(conn)


class ModelsNotReady(RuntimeError):
    """The encoders are still loading (or failed to load)."""


@dataclass(frozen=True)
class Encoders:
    clip: Any  # services.encoders.clip.ClipEncoder
    splade: Any  # services.encoders.splade.SpladeEncoder


@dataclass(frozen=True)
class QueryVectors:
    dense: np.ndarray | None
    sparse: SparseVector | None
    cached: bool
    understood: Understood | None = None  # None: no text; .literal: understanding was off
    status: str = "literal"  # "understood" | "literal" | "unavailable" (not built yet)


class Runtime:
    """Pool + encoders + caches of one API process."""

    def __init__(
        self,
        settings: Settings,
        *,
        pool_timeout: float = 3.0,
        pool_max_size: int | None = None,
        cache_size: int = 2048,
        load_models: bool = True,
    ):
        self.settings = settings
        self.pool = make_pool(
            settings,
            url=settings.search_url,  # the read-only search role (services.store.roles)
            min_size=1,
            max_size=pool_max_size or settings.api_pool_size,
            timeout=pool_timeout,
            check_idle_s=POOL_CHECK_IDLE_S,
            on_connect=_search_connection,
        )
        read_url = settings.database_read_url
        self.read_pool: ConnectionPool | None = None
        if read_url:
            self.read_pool = make_pool(
                settings,
                url=read_url,
                min_size=1,
                max_size=pool_max_size or settings.api_pool_size,
                timeout=pool_timeout,
                check_idle_s=POOL_CHECK_IDLE_S,
                on_connect=_search_connection,
            )
        # Reads served by each side, and until when a side that failed comes second.
        self.reads = {PRIMARY: 0, REPLICA: 0}
        self._down_until: dict[str, float] = {}
        self.text_cache = LRUCache(cache_size)
        self.image_cache = LRUCache(max(64, cache_size // 8))
        self._load_models = load_models
        self._encoders: Encoders | None = None
        self._model_error: str | None = None
        self._loader: threading.Thread | None = None
        # version id -> (when computed, facet values): see search_service.FACETS_TTL_S
        self.facets_cache: dict[int, tuple[float, dict[str, list[str]]]] = {}
        self._live_version: IndexVersion | None = None
        self._text_batcher: Batcher | None = None
        self.understanding: LiveUnderstanding | None = None
        self.query_runtime: str | None = None  # "onnx" or "torch" once the encoders load
        self.understood_cache = LRUCache(cache_size)
        # Search analytics (issue #24): None with FASHION_ANALYTICS=0.
        self.analytics: Analytics | None = None
        if settings.analytics:
            self.analytics = Analytics(settings, cursor_key(settings))

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        set_decode_concurrency(self.settings.image_decode_slots)  # bounds decode memory
        self.pool.open(wait=False)
        if self.read_pool is not None:
            self.read_pool.open(wait=False)
        if self._load_models and self._loader is None:
            self._loader = threading.Thread(target=self._load, name="model-loader", daemon=True)
            self._loader.start()
        if self.analytics is not None:
            self.analytics.start()

    def stop(self) -> None:
        if self.analytics is not None:
            self.analytics.stop()
        if self.understanding is not None:
            self.understanding.stop()
        self.pool.close(timeout=5.0)
        if self.read_pool is not None:
            self.read_pool.close(timeout=5.0)

    @contextmanager
    def connection(
        self, side: str = PRIMARY, timeout: float | None = None
    ) -> Iterator[psycopg.Connection]:
        """A pooled connection (of the primary, or of the read replica: ``side``) in
        autocommit mode: reads need no transaction of their own, and searches keep their
        HNSW settings in the session (``use_session_settings``), which saves round trips
        per request. ``timeout``: seconds to wait for it (default: the pool's)."""
        pool = self.read_pool if side == REPLICA else self.pool
        if pool is None:
            raise ValueError("no read replica is configured")
        with pool.connection(timeout=timeout) as conn:
            if not conn.autocommit:
                conn.autocommit = True
            yield conn

    def read_sides(self) -> list[str]:
        """The sides a read tries, in order: the replica first (when there is one), a side
        that failed a read in the last SIDE_RETRY_S seconds last."""
        if self.read_pool is None:
            return [PRIMARY]
        now = time.monotonic()
        return sorted((REPLICA, PRIMARY), key=lambda side: self._down_until.get(side, 0) > now)

    def side_down(self, side: str) -> bool:
        """Whether ``side`` failed a read (or a readiness check) in the last SIDE_RETRY_S s."""
        return self._down_until.get(side, 0) > time.monotonic()

    def mark(self, side: str, up: bool) -> None:
        if up:
            self._down_until.pop(side, None)
        else:
            self._down_until[side] = time.monotonic() + SIDE_RETRY_S

    def read(self, fn: Callable[[psycopg.Connection], T], *, background: bool = False) -> T:
        """``fn(conn)`` on a pooled connection of the read replica, else of the primary
        (:meth:`read_sides`); on each side once more on another connection when the first
        was dead (the database restarted since the pool last checked it: busy connections
        are not checked, see POOL_CHECK_IDLE_S). A side that fails (down, or a query
        cancelled by a recovery conflict on the replica) hands the read to the other.
        For reads only: they are safe to repeat. ``background``: a read of the API's own
        upkeep (the type-ahead's index), neither counted in ``reads`` nor marking a side
        up or down: a long read cancelled by a recovery conflict says nothing about the
        searches' side."""
        sides = self.read_sides()
        for i, side in enumerate(sides):
            last = i == len(sides) - 1
            # A side that was down gets a short wait for a connection: it is likely still down.
            timeout = PROBE_TIMEOUT_S if len(sides) > 1 and self.side_down(side) else None
            try:
                result = self._read_on(side, fn, timeout)
            except psycopg.OperationalError as exc:
                if len(sides) > 1 and not background:
                    self.mark(side, up=False)
                if last:
                    raise
                log.warning("a read failed on the %s, retried on the %s: %s", side, sides[-1], exc)
                continue
            if background:
                return result
            if len(sides) > 1:
                self.mark(side, up=True)
            self.reads[side] += 1
            return result
        raise AssertionError("unreachable")

    def _read_on(
        self, side: str, fn: Callable[[psycopg.Connection], T], timeout: float | None
    ) -> T:
        used: psycopg.Connection | None = None
        try:
            with self.connection(side, timeout) as used:
                return fn(used)
        except psycopg.OperationalError:
            if used is None or not used.broken:  # no connection at all, or a live one
                raise
            log.info("a pooled connection was dead; the read is retried on another")
        with self.connection(side, timeout) as conn:
            return fn(conn)

    def live_version(self, conn: psycopg.Connection, *, refresh: bool = False) -> IndexVersion:
        """The live index version, cached: a search checks in its own statement that the
        version is still live (``Ranking.version_status``) and refreshes it when not, so
        the common search costs no lookup of its own."""
        version = None if refresh else self._live_version
        if version is None:
            version = live_version(conn)
            if version is None:
                self._live_version = None
                raise NoLiveIndex("no index version is live yet; run the indexing pipeline first")
            self._live_version = version
        return version

    def _load(self) -> None:
        start = time.perf_counter()
        try:
            from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
            from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

            clip = load_clip(self.settings.dense_model)
            splade = load_splade(self.settings.sparse_model)
            towers = None
            if self.settings.query_runtime == "onnx":
                from services.encoders.query_onnx import query_towers  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

                towers = query_towers(clip, splade, self.settings.model_cache / "onnx")
            self.query_runtime = "onnx" if towers is not None else "torch"
            encode = encoder_of(clip, splade, towers=towers)
            self._text_batcher = Batcher(encode, self.settings.query_batch)
            self._encoders = Encoders(clip=clip, splade=splade)
            log.info(
                "encoders loaded in %.1fs: dense=%s sparse=%s, query towers on %s",
                time.perf_counter() - start,
                clip.name,
                splade.name,
                self.query_runtime,
            )
        except Exception as exc:  # reported by /readyz and on every search
            self._model_error = f"{type(exc).__name__}: {exc}"
            log.exception("loading encoders failed")
            return
        if self.settings.understanding:
            self.understanding = LiveUnderstanding(
                self.read,
                # through the batcher: the encoders (their tokenizers) are never used by two
                # threads at once, and a rebuild's new phrases wait their turn like a search
                self._text_batcher,
                check_every_s=self.settings.rules_check_s,
                wordnet_dir=str(self.settings.wordnet_dir),
            )
            self.understanding.check()  # the first build, before searches need it
            self.understanding.start()

    def wait_for_models(self, timeout: float | None = None) -> bool:
        if self._loader is not None:
            self._loader.join(timeout)
        return self._encoders is not None

    @property
    def models_state(self) -> str:
        if self._encoders is not None:
            return "loaded"
        if self._model_error:
            return f"failed: {self._model_error}"
        return "loading"

    @property
    def understanding_state(self) -> str:
        """ "off", "waiting for the encoders", or the live understanding's state."""
        if not self.settings.understanding:
            return "off"
        if self.understanding is None:
            return "waiting for the encoders"
        return self.understanding.state

    @property
    def encoders(self) -> Encoders:
        if self._encoders is None:
            if self._model_error:
                raise ModelsNotReady(f"the encoders failed to load: {self._model_error}")
            raise ModelsNotReady("the encoders are still loading; retry in a few seconds")
        return self._encoders

    # --- query embeddings (cached) ---------------------------------------------------
    def encoded_texts(self, texts: list[str]) -> tuple[list[Encoded], bool]:
        """Both encoders' vectors of ``texts`` (and whether every one was cached); texts
        missing from the cache are encoded together with those of concurrent searches
        (``Batcher``)."""
        enc = self.encoders
        keys = [(enc.clip.name, enc.splade.name, t) for t in texts]
        found = {k: v for k in keys if (v := self.text_cache.get(k)) is not None}
        missing = [k for k in dict.fromkeys(keys) if k not in found]
        if missing:
            for k, value in zip(missing, self._text_batcher([k[2] for k in missing])):
                self.text_cache.put(k, value)
                found[k] = value
        return [found[k] for k in keys], not missing

    def text_vectors(self, text: str) -> tuple[np.ndarray, SparseVector, bool]:
        """(clip text vector, splade vector, cached?) of ``text`` exactly as sent."""
        (e,), cached = self.encoded_texts([text])
        return e.dense, e.sparse, cached

    def understood_vectors(
        self, text: str, ignore: frozenset[str] = frozenset()
    ) -> tuple[Understanding | None, bool, QueryUnderstanding | None]:
        """``text`` understood (``services.understanding``) and its composed vectors, cached
        by the understanding's fingerprint (rules, live version, settings), and the
        understanding snapshot that made them (a photo is read with the same one); None
        while no understanding is built."""
        live = self.understanding
        qu = live.current if live is not None else None
        if qu is None:
            return None, False, None
        key = (qu.fingerprint, text, tuple(sorted(ignore)))
        hit = self.understood_cache.get(key)
        if hit is not None:
            return hit, True, qu
        u = qu.understand(text, ignore)
        texts = qu.texts(u)
        encoded, cached = self.encoded_texts(texts)
        result = qu.finish(u, dict(zip(texts, encoded)))
        self.understood_cache.put(key, result)
        return result, cached, qu

    def image_vector(self, data: bytes) -> tuple[np.ndarray, bool]:
        """CLIP vector of uploaded image bytes, cached by their SHA-256.

        Decoding happens only on a miss; a bad upload raises InvalidImageError (not cached).
        """

        enc = self.encoders
        return self.image_cache.get_or_compute(
            (enc.clip.name, image_digest(data)),
            lambda: enc.clip.encode_images(
                [decode_image(data, wait_timeout=DECODE_WAIT_TIMEOUT_S)]
            )[0],
        )

    def query_vectors(
        self,
        text: str | None,
        image: bytes | None,
        text_weight: float | None = None,
        *,
        literal: bool = False,
        ignore: frozenset[str] = frozenset(),
    ) -> QueryVectors:
        """Dense = CLIP(text, image) (multimodal when both: the text's share is ``text_weight``,
        default ``settings.query_text_weight``); sparse = SPLADE(text). The text is
        understood first (spelling, rules, shades, occasions: ``services.understanding``)
        unless ``literal`` or understanding is off or not built yet."""
        from services.encoders.clip import combine_query_vectors  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

        if text_weight is None:
            text_weight = self.settings.query_text_weight
        dense_text = sparse = dense_image = understood = result = qu = None
        status = "literal"
        cached = True
        if text is not None:
            if not literal and self.settings.understanding:
                result, hit, qu = self.understood_vectors(text, ignore)
                status = "understood" if result is not None else "unavailable"
            if result is not None:
                dense_text, sparse, understood = result.dense, result.sparse, result.understood
            else:
                dense_text, sparse, hit = self.text_vectors(text)
                understood = literal_understanding(text)
            cached = cached and hit
        if image is not None:
            dense_image, hit = self.image_vector(image)
            cached = cached and hit
            if result is not None:  # what the photo shows, for the text side
                result = qu.with_photo(result, dense_image)
                sparse, understood = result.sparse, result.understood
        if dense_text is not None and dense_image is not None:
            dense = combine_query_vectors(dense_text, dense_image, text_weight)
        else:
            dense = dense_text if dense_text is not None else dense_image
        return QueryVectors(dense, sparse, cached, understood, status)
