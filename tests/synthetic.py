"""Seeded synthetic data the tests share: catalogue rows, unit vectors, a built version.

One definition each, so that two tests that mean the same data get the same data.
"""

from __future__ import annotations

import random

import numpy as np
from pgvector import SparseVector

from services.store import hnsw
from services.store import index_versions as iv


def catalogue_rows(n: int = 600, seed: int = 1) -> list[dict]:
    """``n`` catalogue rows (ids from 1000) with attributes drawn from the vocabulary."""
    from services.catalog import vocabulary as v

    rng = random.Random(seed)
    return [
        {
            "id": 1000 + i,
            "articleType": rng.choice(sorted(v.ARTICLE_TYPES)),
            "baseColour": rng.choice(sorted(v.COLOURS)),
            "gender": rng.choice(v.GENDERS),
            "season": rng.choice(v.SEASONS),
            "usage": rng.choice(v.USAGES),
        }
        for i in range(n)
    ]


def unit_vectors(
    n: int, dim: int, vocab: int, *, nnz: int, low: float, seed: int
) -> tuple[np.ndarray, list[SparseVector]]:
    """``n`` random unit dense vectors (``dim``) and ``n`` unit sparse vectors of ``nnz``
    terms out of ``vocab``, each weight at least ``low`` before normalising; seeded."""
    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, dim)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    sparse = []
    for _ in range(n):
        v = np.zeros(vocab, np.float32)
        v[rng.choice(vocab, nnz, replace=False)] = rng.random(nnz) + low
        sparse.append(SparseVector(v / np.linalg.norm(v)))
    return dense, sparse


def build_version(
    conn, ids, dense, sparse, report: dict, *, models=("test", "test"), **index_options
) -> int:
    """A version holding ``dense``/``sparse`` for the products ``ids`` (already upserted),
    its indexes built (``index_options`` for hnsw.build_indexes) and marked ready."""
    vid = iv.create_version(
        conn,
        dense_model=models[0],
        dense_dim=int(dense.shape[1]),
        sparse_model=models[1],
        sparse_dim=int(sparse[0].dimensions()),
    )
    iv.load_embeddings(conn, vid, list(ids), dense, sparse)
    hnsw.build_indexes(conn, vid, **index_options)
    iv.mark_ready(conn, vid, report)
    return vid
