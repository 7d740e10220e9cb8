"""The indexing pipeline's stages: plain functions called by the Airflow DAG and by ``fashion-search index``.

Every stage takes and returns small JSON-able values (shard refs, ids, counts), so a task's
XCom never carries embeddings, and nothing a stage hands the next is on a worker's disk: the
products and their photos are in ``products``, shards and encoded vectors in the database
(:mod:`services.store.shard_store`). So the tasks of one run may run on different Celery
workers that share only the database and the broker. Each name says what the stage changes.
The order is

    ingest_catalog (= fetch_catalog + validate_store_and_shard) -> create_building_version
    -> encode_dense_shard / encode_sparse_shard (per shard) -> load_shard_into_version (per
    shard) -> build_version_indexes -> checks.check_and_mark_ready -> swap_live
    -> retire_old_versions

Safety and resumption:
- A new index version is built in its own table beside the live one; only :func:`swap_live`
  changes what is served, in one transaction. A failure anywhere before it leaves the live
  version untouched by construction; :func:`mark_version_failed` records the failure.
- Encoded shards are content-addressed, so a retried task, or a new run over the same
  catalogue and models, reuses finished ones.
- ``load_shard_into_version`` is idempotent per product id (the store upserts).
- The build lock (:mod:`services.pipeline.run_lock`) serialises builds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import psycopg

from services.catalog.reader import iter_rows
from services.catalog.sources import resolve_source
from services.catalog.validate import iter_valid
from services.config import get_settings
from services.encoders.registry import get_spec
from services.pipeline import encode
from services.pipeline.checks import require_building
from services.pipeline.run_lock import build_lock
from services.store import hnsw
from services.store import index_versions as iv
from services.store import shard_store as ss
from services.store.db import connect
from services.store.products import upsert_products

log = logging.getLogger(__name__)

RETIRE_LOCK_TIMEOUT = "20s"


def _connect() -> psycopg.Connection:
    return connect(get_settings().database_url)


# --------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------
def fetch_catalog(
    source: str = "offline", size: int = 10_000, limit: int | None = None
) -> list[str]:
    """Parquet files of the catalogue ``source`` ("offline", "hub", or a local path); builds
    or downloads them when needed."""
    paths = resolve_source(source, size=size, limit=limit)
    if not paths:
        raise FileNotFoundError(f"catalogue source {source!r} has no Parquet files")
    return [str(p) for p in paths]


def validate_store_and_shard(
    paths: Sequence[str],
    shard_size: int,
    run_key: str,
    *,
    limit: int | None = None,
    source: str = "catalog",
) -> dict:
    """Validate rows, upsert the valid products (with their photos) into ``products``, and
    record them as shards of ``run_key`` in the database (:mod:`shard_store`).

    Streams: rows are read, checked and stored one shard at a time. Returns
    ``{"shards": [shard ref, ...], "report": {read, valid, rejected, rejected_by_reason,
    examples}}``. Re-running records the same shards (same content -> same fingerprints, so
    encoded shards are reused).
    """
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    rejected: list = []
    valid_iter = iter_valid(iter_rows([Path(p) for p in paths], limit=limit), rejected)
    shards: list[str] = []
    n_valid = 0
    with _connect() as conn:
        ss.clear_run(conn, run_key)
        while chunk := list(islice(valid_iter, shard_size)):
            upsert_products(conn, chunk, source=source, commit=False)
            shards.append(ss.add_shard(conn, run_key, len(shards), chunk).ref)
            conn.commit()
            n_valid += len(chunk)
    counts: dict[str, int] = {}
    for r in rejected:
        counts[r.reason] = counts.get(r.reason, 0) + 1
    report = {
        "read": n_valid + len(rejected),
        "valid": n_valid,
        "rejected": len(rejected),
        "rejected_by_reason": counts,
        "rejected_examples": [str(r) for r in rejected[:20]],
        "shards": len(shards),
    }
    if n_valid == 0:
        raise ValueError(f"no valid rows in {', '.join(map(str, paths))}: {report}")
    log.info(
        "validated %d rows: %d valid, %d rejected %s",
        report["read"],
        n_valid,
        len(rejected),
        counts,
    )
    return {"shards": shards, "report": report}


def ingest_catalog(
    source: str,
    size: int,
    limit: int | None,
    shard_size: int,
    run_key: str,
) -> dict:
    """:func:`fetch_catalog` then :func:`validate_store_and_shard`, in one task: the fetched
    files stay on the machine that fetched them; what later tasks need is in the database."""
    paths = fetch_catalog(source, size, limit)
    kind = source if source in ("offline", "hub") else "local"
    return validate_store_and_shard(paths, shard_size, run_key, limit=limit, source=kind)


def model_dims(dense_model: str | None, sparse_model: str | None) -> dict:
    """Resolve model names (defaults from settings) and their dimensions from the registry."""
    settings = get_settings()
    dense_model = dense_model or settings.dense_model
    sparse_model = sparse_model or settings.sparse_model
    dense = get_spec(dense_model)
    sparse = get_spec(sparse_model)
    if dense.kind != "clip":
        raise ValueError(f"{dense_model!r} is a {dense.kind} model, not a dense (clip) one")
    if sparse.kind != "splade":
        raise ValueError(f"{sparse_model!r} is a {sparse.kind} model, not a sparse (splade) one")
    return {
        "dense_model": dense_model,
        "dense_dim": dense.dim,
        "sparse_model": sparse_model,
        "sparse_dim": sparse.dim,
    }


def create_building_version(
    dense_model: str | None = None,
    sparse_model: str | None = None,
    *,
    run_key: str,
    params: dict | None = None,
    dense_image_weight: float | None = None,
) -> int:
    """Register the new index version (status 'building') and create its empty table.

    Resumes a 'building' version of the same run (a retried task); marks 'building' versions
    of other runs failed (stale: their run died without cleaning up). Refuses while another
    indexing run holds the build lock.
    """
    dims = model_dims(dense_model, sparse_model)
    with _connect() as conn, build_lock(wait=False):
        for v in iv.list_versions(conn):
            if v.status != "building":
                continue
            if (
                v.params.get("run_key") == run_key
                and v.dense_model == dims["dense_model"]
                and v.sparse_model == dims["sparse_model"]
            ):
                log.info("resuming index version %d of run %s", v.id, run_key)
                return v.id
            log.warning(
                "marking stale building version %d (run %s) failed", v.id, v.params.get("run_key")
            )
            iv.mark_failed(
                conn,
                v.id,
                f"stale: its run ({v.params.get('run_key')}) ended "
                f"without finishing; superseded by run {run_key}",
            )
        weight = (
            get_settings().dense_image_weight if dense_image_weight is None else dense_image_weight
        )
        vid = iv.create_version(
            conn,
            **dims,
            params={**(params or {}), "run_key": run_key},
            dense_image_weight=float(weight),
        )
    log.info(
        "created index version %d (%s + %s, image weight %g)",
        vid,
        dims["dense_model"],
        dims["sparse_model"],
        weight,
    )
    return vid


def _encode_shard(shard_ref: str, kind: str, model: str, encode_rows) -> dict:
    """Encode a shard's products with ``encode_rows(rows) -> store(conn, fingerprint)`` unless
    its vectors of ``kind`` by ``model`` are stored already. The database connection is not
    held while encoding (minutes on a CPU)."""
    with _connect() as conn:
        shard = ss.get_shard(conn, shard_ref)
        if ss.encoded_rows(conn, shard.fingerprint, kind, model) == shard.rows:
            log.info("reusing the %s vectors of shard %s (%s)", kind, shard_ref, model)
            return {"shard": shard_ref, "rows": shard.rows, "reused": True}
        rows = ss.shard_products(conn, shard)
    store = encode_rows(rows)
    with _connect() as conn:
        store(conn, shard.fingerprint)
    log.info("encoded %d %s vectors of shard %s (%s)", shard.rows, kind, shard_ref, model)
    return {"shard": shard_ref, "rows": shard.rows, "reused": False}


def encode_dense_shard(
    shard_ref: str, dense_model: str | None = None, *, batch_size: int = 64
) -> dict:
    """CLIP-encode a shard's photos and names (:func:`encode.encode_dense`) into the
    database; reuses stored vectors. Returns ``{shard, rows, reused}``."""
    dense_model = dense_model or model_dims(None, None)["dense_model"]

    def encode_rows(rows):
        image, name = encode.encode_dense(rows, dense_model, batch_size=batch_size)
        return lambda conn, fp: ss.put_dense(conn, fp, dense_model, image, name)

    return _encode_shard(shard_ref, "dense", dense_model, encode_rows)


def encode_sparse_shard(
    shard_ref: str, sparse_model: str | None = None, *, batch_size: int = 64
) -> dict:
    """SPLADE-encode a shard's product texts (:func:`encode.encode_sparse`) into the
    database; reuses stored vectors. Returns ``{shard, rows, reused}``."""
    sparse_model = sparse_model or get_settings().sparse_model

    def encode_rows(rows):
        vectors = encode.encode_sparse(rows, sparse_model, batch_size=batch_size)
        return lambda conn, fp: ss.put_sparse(conn, fp, sparse_model, vectors)

    return _encode_shard(shard_ref, "sparse", sparse_model, encode_rows)


def load_shard_into_version(version_id: int, shard_ref: str) -> int:
    """COPY one shard's stored vectors (by the version's models) into the version's table
    (idempotent per product id)."""
    with _connect() as conn, build_lock(wait=True):
        version = require_building(conn, version_id)
        shard = ss.get_shard(conn, shard_ref)
        ss.require_unchanged(conn, shard)  # under the build lock: no sync writes meanwhile
        image, name = ss.get_dense(conn, shard.fingerprint, version.dense_model)
        sparse = ss.get_sparse(conn, shard.fingerprint, version.sparse_model)
        if image.shape[0] != shard.rows or name.shape[0] != shard.rows or len(sparse) != shard.rows:
            raise ValueError(
                f"shard {shard_ref}: {shard.rows} products but {image.shape[0]} dense and "
                f"{len(sparse)} sparse vectors; re-run its encode tasks"
            )
        dense = encode.product_dense_vectors(image, name, version.dense_image_weight)
        n = iv.load_embeddings(conn, version_id, shard.product_ids, dense, sparse)
    log.info("loaded %d rows of shard %s into version %d", n, shard_ref, version_id)
    return n


def build_version_indexes(version_id: int) -> dict:
    """Build both HNSW indexes of the version (idempotent), the dense graph with
    ``FASHION_DENSE_HNSW_M`` / ``_EF_CONSTRUCTION``; returns seconds per index."""
    with _connect() as conn:
        require_building(conn, version_id)
        settings = get_settings()
        timings = hnsw.build_indexes(
            conn,
            version_id,
            dense_index=settings.dense_index,
            dense_graph=settings.dense_graph,
            maintenance_work_mem=settings.build_memory,
        )
    return {k: round(v, 3) for k, v in timings.items()}


def swap_live(version_id: int) -> dict:
    """Make the checked version live in one transaction (the old live one becomes 'previous')."""
    with _connect() as conn, build_lock(wait=True):
        before = iv.live_version(conn)
        after = iv.swap_live(conn, version_id)
    log.info("version %d is live (was %s)", after.id, before.id if before else None)
    return {"live": after.id, "previous": before.id if before else None, "rows": after.row_count}


def retire_old_versions(keep_previous: int = 1) -> list[int]:
    """Drop the tables of versions older than the live one and its ``keep_previous``
    predecessors, and the shards and encoded vectors of old runs (:func:`shard_store.prune`).
    Returns the retired ids."""
    with _connect() as conn:
        pruned = ss.prune(conn)
        conn.commit()
        log.info("pruned the hand-offs of old runs: %s", pruned)
        # DROP TABLE waits for readers of the old table; never hang a finished run on them.
        try:
            return iv.retire_old(
                conn, keep_previous=keep_previous, lock_timeout=RETIRE_LOCK_TIMEOUT
            )
        except psycopg.errors.LockNotAvailable:
            conn.rollback()
            log.warning(
                "retiring old versions deferred: their tables are in use "
                "(the next run retires them)"
            )
            return []


def mark_version_failed(version_id: int | None, error: str) -> None:
    """Record a failed build; never touches the live version. Safe to call twice."""
    if version_id is None:
        return
    try:
        with _connect() as conn:
            iv.mark_failed(conn, int(version_id), error)
    except Exception:
        log.exception("could not mark index version %s failed", version_id)


def mark_run_versions_failed(run_key: str, error: str) -> list[int]:
    """Mark every unfinished ('building'/'ready') version of run ``run_key`` failed."""
    failed = []
    with _connect() as conn:
        for v in iv.list_versions(conn):
            if v.status in ("building", "ready") and v.params.get("run_key") == run_key:
                iv.mark_failed(conn, v.id, error)
                failed.append(v.id)
    return failed


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
