"""Benchmark rows derived from the real encodings of the live index, and real encoded queries.

Each derived row i comes from real product i % N of the LIVE index (the main database):
- dense: the real vector plus Gaussian noise scaled to norm ``noise`` (0.33: cosine ~0.95 to
  its source), re-normalised;
- sparse: each real term kept with probability ``keep`` (at least one), its weight times
  lognormal noise (sigma ``sigma``), L2-normalised again (stored SPLADE vectors are);
- metadata and display name (hence brand): copied from the source, so real filters keep
  their real selectivities and dense, sparse and metadata stay correlated as for real
  products.
Queries (:func:`encoded_queries`): the evaluation's text queries, encoded with the live
version's models.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from pgvector import SparseVector

from evaluation.queries import TEXT_FAMILIES, generate_queries
from services import search
from services.store import index_versions as iv

Batch = tuple[list[dict], np.ndarray, list[SparseVector]]  # product rows, dense, sparse


@dataclass(frozen=True)
class Catalogue:
    """Every product of one index version, in id order."""

    version: iv.IndexVersion
    dense: np.ndarray  # (N, dense_dim)
    sparse: list[SparseVector]
    metadata: list[dict]  # iv.product_metadata: dataset field names
    names: list[str]


def read_live(conn: psycopg.Connection) -> Catalogue:
    """The live version's vectors, metadata and names (one read of each)."""
    version = iv.live_version(conn)
    if version is None:
        raise SystemExit("no live index: run `make run` or `fashion-search index` first")
    metadata = iv.product_metadata(conn, version.id)
    ids = [m["id"] for m in metadata]
    dense = search.dense_vectors(conn, version)
    sparse = search.sparse_vectors(conn, version)
    names = dict(iv.product_names(conn, version.id))
    return Catalogue(
        version,
        np.stack([dense[i] for i in ids]).astype(np.float32),
        [sparse[i] for i in ids],
        metadata,
        [names[i] for i in ids],
    )


def _perturb(vec: SparseVector, rng: np.random.Generator, keep: float, sigma: float):
    idx = np.asarray(vec.indices())
    val = np.asarray(vec.values(), dtype=np.float64)
    mask = rng.random(len(idx)) < keep
    if not mask.any():
        mask[rng.integers(len(idx))] = True
    idx, val = idx[mask], val[mask] * rng.lognormal(0.0, sigma, size=int(mask.sum()))
    val /= np.linalg.norm(val)
    return SparseVector(dict(zip(idx.tolist(), val.tolist())), vec.dimensions())


def derive(
    cat: Catalogue,
    n: int,
    *,
    noise: float = 0.33,
    keep: float = 0.8,
    sigma: float = 0.2,
    seed: int = 7,
    batch: int = 20_000,
) -> Iterator[Batch]:
    """``n`` rows (ids 0..n-1), row i derived from product i % N of ``cat``; seeded."""
    rng = np.random.default_rng(seed)
    size = len(cat.metadata)
    for start in range(0, n, batch):
        end = min(n, start + batch)
        src = np.arange(start, end) % size
        g = rng.normal(size=(end - start, cat.dense.shape[1]))
        g *= noise / np.linalg.norm(g, axis=1, keepdims=True)
        dense = cat.dense[src] + g.astype(np.float32)
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        sparse = [_perturb(cat.sparse[s], rng, keep, sigma) for s in src]
        rows = [
            {
                **{k: v for k, v in cat.metadata[s].items() if k != "has_image"},
                "id": i,
                "productDisplayName": cat.names[s],
                "image": None,
            }
            for i, s in zip(range(start, end), src.tolist())
        ]
        yield rows, dense, sparse


def closeness(cat: Catalogue, batch: Batch) -> tuple[float, float]:
    """Mean cosine of derived rows (the first batch of :func:`derive`) to their sources:
    dense, sparse."""
    _, dense, sparse = batch
    src = np.arange(len(sparse)) % len(cat.metadata)
    dense_cos = float(np.mean(np.sum(dense * cat.dense[src], axis=1)))
    sparse_cos = []
    for vec, s in zip(sparse, src.tolist()):
        orig = dict(zip(cat.sparse[s].indices(), cat.sparse[s].values()))
        sparse_cos.append(sum(v * orig.get(i, 0.0) for i, v in zip(vec.indices(), vec.values())))
    return dense_cos, float(np.mean(sparse_cos))


def encoded_queries(
    version: iv.IndexVersion, metadata: Sequence[dict], count: int
) -> list[tuple[np.ndarray, SparseVector]]:
    """``count`` of the evaluation's text queries for ``metadata`` (evenly spread over the
    query set, so over its families), encoded with ``version``'s models."""
    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only these modes need them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only these modes need them

    qs = generate_queries(metadata, seed=0, families=TEXT_FAMILIES).queries
    picked = [qs[i] for i in np.linspace(0, len(qs) - 1, min(count, len(qs))).round().astype(int)]
    texts = [q.text for q in picked]
    dense = load_clip(version.dense_model).encode_texts(texts)
    sparse = load_splade(version.sparse_model).encode(texts)
    return [(np.asarray(d, dtype=np.float32), s) for d, s in zip(dense, sparse)]
