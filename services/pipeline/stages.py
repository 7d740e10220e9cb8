"""The indexing pipeline's stages: plain functions called by the Airflow DAG and by ``fashion-search index``.

Every stage takes and returns small JSON-able values (paths, ids, counts), so a task's XCom
never carries embeddings: encoded shards are files (:mod:`services.pipeline.vector_files`).
Each name says what the stage changes. The order is

    fetch_catalog -> validate_store_and_shard -> create_building_version
    -> encode_dense_file / encode_sparse_file (per shard) -> load_shard_into_version (per shard)
    -> build_version_indexes -> checks.check_and_mark_ready -> swap_live -> retire_old_versions

Safety and resumption:
- A new index version is built in its own table beside the live one; only :func:`swap_live`
  changes what is served, in one transaction. A failure anywhere before it leaves the live
  version untouched by construction; :func:`mark_version_failed` records the failure.
- Encoded shards are content-addressed, so a retried task, or a new run over the same
  catalogue and models, reuses finished files.
- ``load_shard_into_version`` is idempotent per product id (the store upserts).
- The build lock (:mod:`services.pipeline.run_lock`) serialises builds.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path

import numpy as np
import psycopg

from services.catalog.reader import iter_rows
from services.catalog.shards import write_parquet
from services.catalog.sources import resolve_source
from services.catalog.text import DOCUMENT_COLUMNS, dense_name_text, document_text
from services.catalog.validate import iter_valid
from services.config import get_settings
from services.encoders.registry import get_spec
from services.pipeline import vector_files as vf
from services.pipeline.checks import require_building
from services.pipeline.run_lock import build_lock
from services.store import index_versions as iv
from services.store.db import connect
from services.store.products import upsert_products

log = logging.getLogger(__name__)

RETIRE_LOCK_TIMEOUT = "20s"
KEEP_RUN_DIRS = 3


def _connect() -> psycopg.Connection:
    return connect(get_settings().database_url)


def run_dir_for(run_id: str) -> Path:
    """The folder of one run's intermediate files: ``settings.work_dir/<run id>``."""
    return get_settings().work_dir / vf.slug(run_id)


def _encoded_dir() -> Path:
    return get_settings().work_dir / "encoded"


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
    run_dir: str | Path,
    *,
    limit: int | None = None,
    source: str = "catalog",
) -> dict:
    """Validate rows, upsert the valid products into ``products``, and write them as Parquet
    shards under ``run_dir/shards``.

    Streams: rows are read, checked and written one shard at a time. Returns
    ``{"shards": [path, ...], "report": {read, valid, rejected, rejected_by_reason, examples}}``.
    Re-running rewrites the same shards (same content -> same fingerprints, so encoded
    files are reused).
    """
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    out = Path(run_dir) / "shards"
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("shard-*.parquet")) + list(out.glob("shard-*.json")):
        old.unlink()
    rejected: list = []
    valid_iter = iter_valid(iter_rows([Path(p) for p in paths], limit=limit), rejected)
    shards: list[str] = []
    n_valid = 0
    with _connect() as conn:
        while chunk := list(islice(valid_iter, shard_size)):
            upsert_products(conn, chunk, source=source)
            path = out / f"shard-{len(shards):05d}.parquet"
            write_parquet(chunk, path)
            vf.write_shard_meta(path, chunk)
            shards.append(str(path))
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


def encode_dense_file(
    shard_path: str, dense_model: str | None = None, *, batch_size: int = 64
) -> str:
    """CLIP-encode a shard's photos and names into its dense file (arrays ``image`` and
    ``name``, unit rows); reuses a finished file. Returns the file's path.

    The text half is the display name alone: on the tuning split it beat the name plus
    attributes (``document_text``) on photo + text queries by more than it lost on text
    queries (README, "How the defaults were chosen"). Both arrays are kept so that the version's
    ``dense_image_weight`` is applied at load time and a new weight needs no re-encoding.
    """
    # Deferred: CLIP imports torch and open_clip (seconds); other stages never need them.
    from services.encoders.clip import load_clip  # noqa: PLC0415

    dense_model = dense_model or model_dims(None, None)["dense_model"]
    out, meta = vf.encoded_path(_encoded_dir(), shard_path, "dense", dense_model)
    if out.exists():
        if vf.dense_rows(out) == meta["rows"]:
            log.info("reusing %s", out.name)
            return str(out)
        log.warning("re-encoding: %s is unreadable or has the wrong row count", out)
    data = vf.read_shard(shard_path, ["image", "productDisplayName"])
    images = [img["bytes"] if isinstance(img, dict) else img for img in data["image"]]
    encoder = load_clip(dense_model)
    image_vecs = np.ascontiguousarray(
        encoder.encode_images(images, batch_size=batch_size), dtype=np.float32
    )
    name_vecs = np.ascontiguousarray(
        encoder.encode_texts([dense_name_text(n) for n in data["productDisplayName"]]),
        dtype=np.float32,
    )
    if image_vecs.shape[0] != len(images) or name_vecs.shape[0] != len(images):
        raise RuntimeError(
            f"CLIP returned {image_vecs.shape[0]} image and {name_vecs.shape[0]} "
            f"text vectors for {len(images)} products"
        )
    vf.save_dense(out, image_vecs, name_vecs)
    return str(out)


def encode_sparse_file(
    shard_path: str, sparse_model: str | None = None, *, batch_size: int = 64
) -> str:
    """SPLADE-encode a shard's product texts into its sparse file; reuses a finished file.
    Returns the file's path."""
    # Deferred: SPLADE imports torch and transformers (seconds).
    from services.encoders.splade import load_splade  # noqa: PLC0415

    sparse_model = sparse_model or get_settings().sparse_model
    out, meta = vf.encoded_path(_encoded_dir(), shard_path, "sparse", sparse_model)
    if out.exists():
        if vf.sparse_rows(out) == meta["rows"]:
            log.info("reusing %s", out.name)
            return str(out)
        log.warning("re-encoding: %s is unreadable or has the wrong row count", out)
    data = vf.read_shard(shard_path, list(DOCUMENT_COLUMNS))
    texts = [
        document_text(dict(zip(DOCUMENT_COLUMNS, values)))
        for values in zip(*(data[c] for c in DOCUMENT_COLUMNS))
    ]
    vectors = load_splade(sparse_model).encode(texts, batch_size=batch_size)
    if len(vectors) != len(texts):
        raise RuntimeError(f"SPLADE returned {len(vectors)} vectors for {len(texts)} texts")
    vf.save_sparse(out, vectors)
    return str(out)


def load_shard_into_version(version_id: int, shard: str, dense_path: str, sparse_path: str) -> int:
    """COPY one shard's embeddings into the version's table (idempotent per product id)."""
    ids = [int(i) for i in vf.read_shard(shard, ["id"])["id"]]
    for p in (dense_path, sparse_path):
        if not Path(p).exists():
            raise FileNotFoundError(f"encoded file {p} is missing; re-run its encode task")
    image, name = vf.load_dense(dense_path)
    sparse = vf.read_sparse(sparse_path)
    if image.shape[0] != len(ids) or name.shape[0] != len(ids) or len(sparse) != len(ids):
        raise ValueError(
            f"{Path(shard).name}: {len(ids)} rows but {image.shape[0]} dense and "
            f"{len(sparse)} sparse vectors; delete the stale encoded files"
        )
    with _connect() as conn, build_lock(wait=True):
        version = require_building(conn, version_id)
        dense = vf.product_dense_vectors(image, name, version.dense_image_weight)
        n = iv.load_embeddings(conn, version_id, ids, dense, sparse)
    log.info("loaded %d rows of %s into version %d", n, Path(shard).name, version_id)
    return n


def build_version_indexes(version_id: int) -> dict:
    """Build both HNSW indexes of the version (idempotent); returns seconds per index."""
    with _connect() as conn:
        require_building(conn, version_id)
        timings = iv.build_indexes(conn, version_id, dense_index=get_settings().dense_index)
    return {k: round(v, 3) for k, v in timings.items()}


def swap_live(version_id: int) -> dict:
    """Make the checked version live in one transaction (the old live one becomes 'previous')."""
    with _connect() as conn, build_lock(wait=True):
        before = iv.live_version(conn)
        after = iv.swap_live(conn, version_id)
    log.info("version %d is live (was %s)", after.id, before.id if before else None)
    return {"live": after.id, "previous": before.id if before else None, "rows": after.row_count}


def prune_work_dirs(keep_runs: int = KEEP_RUN_DIRS) -> list[str]:
    """Delete the shard folders of all but the newest ``keep_runs`` runs under work_dir.

    Encoded shards (``work_dir/encoded``) are a content-addressed cache and stay.
    """
    work = get_settings().work_dir
    if not work.is_dir():
        return []
    runs = sorted(
        (d for d in work.iterdir() if d.is_dir() and d.name != "encoded"),
        key=lambda d: d.stat().st_mtime,
        reverse=True,
    )
    removed = []
    for d in runs[keep_runs:]:
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d.name)
    return removed


def retire_old_versions(keep_previous: int = 1) -> list[int]:
    """Drop the tables of versions older than the live one and its ``keep_previous``
    predecessors, and delete the shard folders of old runs. Returns the retired ids."""
    prune_work_dirs()
    with _connect() as conn:
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
