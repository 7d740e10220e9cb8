"""Micro-batching of query encodes (services.api.encoding.Batcher), alone and with the real
offline encoders: concurrent callers share encoder calls and each gets its own result."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.api.encoding import Batcher


def test_concurrent_callers_share_calls_and_get_their_own_results():
    calls: list[list[str]] = []
    gate = threading.Event()

    def encode(texts: list[str]) -> list[str]:
        calls.append(list(texts))
        gate.wait(5)  # the first call holds the encoder while the others queue
        return [t.upper() for t in texts]

    batcher = Batcher(encode, max_batch=4)
    texts = [f"text {i}" for i in range(9)]
    with ThreadPoolExecutor(len(texts)) as pool:
        futures = [pool.submit(batcher, [t]) for t in texts]
        time.sleep(0.3)  # all nine are queued behind the first call
        gate.set()
        assert [f.result(10) for f in futures] == [[t.upper()] for t in texts]
    assert sorted(t for call in calls for t in call) == sorted(texts)  # each encoded once
    assert max(len(c) for c in calls) == 4  # batches formed, none over max_batch
    assert len(calls) < len(texts) and batcher.batches == len(calls)


def test_a_callers_several_texts_stay_together_and_in_order():
    """A search hands the batcher its query, rewrite and left-over words together: they are
    encoded in one batch (never split across two) and come back in the caller's order."""
    calls: list[list[str]] = []
    gate = threading.Event()

    def encode(texts: list[str]) -> list[str]:
        calls.append(list(texts))
        gate.wait(5)
        return [t.upper() for t in texts]

    batcher = Batcher(encode, max_batch=4)
    groups = [["a"], ["b1", "b2", "b3"], ["c1", "c2"], ["d1", "d2", "d3", "d4", "d5"]]
    with ThreadPoolExecutor(len(groups)) as pool:
        futures = [pool.submit(batcher, g) for g in groups]
        time.sleep(0.3)
        gate.set()
        assert [f.result(10) for f in futures] == [[t.upper() for t in g] for g in groups]
    for g in groups:  # each caller's texts in exactly one call, contiguous
        (call,) = [c for c in calls if g[0] in c]
        at = call.index(g[0])
        assert call[at : at + len(g)] == g
    # a caller over max_batch is encoded alone rather than refused
    assert ["d1", "d2", "d3", "d4", "d5"] in calls


def test_one_callers_error_stays_its_own():
    def encode(texts: list[str]) -> list[str]:
        if "bad" in texts:
            raise ValueError("bad text")
        time.sleep(0.05)
        return [t * 2 for t in texts]

    batcher = Batcher(encode, max_batch=8)
    with ThreadPoolExecutor(6) as pool:
        futures = {t: pool.submit(batcher, [t]) for t in ["a", "b", "bad", "c", "d", "e"]}
    for text, future in futures.items():
        if text == "bad":
            with pytest.raises(ValueError, match="bad text"):
                future.result()
        else:
            assert future.result() == [text * 2]


def test_batched_real_encodes_equal_one_at_a_time(settings):
    """The offline CLIP and SPLADE give a text in a batch the vectors it gets alone."""
    from services.api.runtime import Runtime

    runtime = Runtime(settings, load_models=True)
    runtime.start()
    try:
        assert runtime.wait_for_models(120), runtime.models_state
        enc = runtime.encoders
        texts = [
            "red dress",
            "navy blue slim fit formal shirt for men",
            "watch",
            "black leather handbag with gold chain strap for women",
            "sports shoes",
            "white cotton socks",
        ]
        with ThreadPoolExecutor(len(texts)) as pool:
            batched = list(pool.map(runtime.text_vectors, texts))
        assert runtime._text_batcher.texts == len(texts)
        for text, (dense, sparse, cached) in zip(texts, batched):
            assert not cached
            alone_dense = enc.clip.encode_texts([text])[0]
            alone_sparse = enc.splade.encode([text])[0]
            assert float(np.dot(dense, alone_dense)) > 0.99999
            a, b = sparse.to_numpy(), alone_sparse.to_numpy()
            assert float(np.dot(a, b)) > 0.9999, text
    finally:
        runtime.stop()
