"""Query-encoding helpers of one API process: an LRU cache of query embeddings and
micro-batching of concurrent text encodes. Used by :class:`services.api.runtime.Runtime`.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any


class LRUCache:
    """A small thread-safe LRU map with hit/miss counters."""

    def __init__(self, maxsize: int = 1024):
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any]) -> tuple[Any, bool]:
        """(value, was_cached). ``compute`` runs outside the lock (two threads may both compute)."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key], True
            self.misses += 1
        value = compute()
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)
        return value, False

    def get(self, key: Hashable) -> Any | None:
        """The cached value (counted as a hit), or None (a miss)."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                self.hits += 1
                return self._data[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class Batcher:
    """Runs ``encode`` once for the texts of concurrent callers (micro-batching).

    A caller's texts (a query, its rewrite, its left-over words) wait in a queue; whichever
    waiting caller finds the encoder free takes what is queued (whole callers, up to
    ``max_batch`` texts, at least one caller), encodes it in one call and hands each caller
    its results; the others keep waiting for theirs or for the encoder. One caller alone is
    encoded at once (no timer, no added latency); under load, texts that arrive while a
    batch runs form the next one. On CPU a batch of short texts costs little more than one
    (bench_api.py: unseen text queries at 16 clients). A batch that fails is encoded again
    one caller at a time, so one caller's error stays its own."""

    def __init__(self, encode: Callable[[list[str]], list[Any]], max_batch: int = 16):
        self._encode = encode
        self.max_batch = max(1, max_batch)
        self._cond = threading.Condition()
        self._queue: list[tuple[list[str], dict]] = []
        self._busy = False
        self.batches = 0  # encoder calls, and the texts they encoded (for the logs/tests)
        self.texts = 0

    def __call__(self, texts: list[str]) -> list[Any]:
        slot: dict = {}
        with self._cond:
            self._queue.append((list(texts), slot))
        while True:
            with self._cond:
                while not slot and self._busy:
                    self._cond.wait()
                if slot:
                    return self._result(slot)
                self._busy = True  # this caller encodes the next batch (its texts are queued)
                batch, size = [], 0
                while self._queue and (
                    not batch or size + len(self._queue[0][0]) <= self.max_batch
                ):
                    item = self._queue.pop(0)
                    batch.append(item)
                    size += len(item[0])
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _run(self, batch: list[tuple[list[str], dict]]) -> None:
        texts = [t for item, _ in batch for t in item]
        try:
            results = self._encode(texts)
            if len(results) != len(texts):
                raise RuntimeError(f"{len(results)} results for {len(texts)} texts")
        except Exception:  # noqa: BLE001 - each caller again on its own: errors stay their caller's
            for item, slot in batch:
                try:
                    slot["value"] = self._encode(item)
                except Exception as exc:  # noqa: BLE001 - handed to its caller
                    slot["error"] = exc
        else:
            at = 0
            for item, slot in batch:
                slot["value"] = results[at : at + len(item)]
                at += len(item)
        self.batches += 1
        self.texts += len(texts)

    @staticmethod
    def _result(slot: dict) -> Any:
        if "error" in slot:
            raise slot["error"]
        return slot["value"]


def image_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
