"""The indexing pipeline's stages: plain functions called by the Airflow DAG and by ``fashion-search index``.

Every stage takes and returns small JSON-able values (paths, ids, counts), so a task's
XCom never carries embeddings: encoded shards are files. The order is

    fetch -> validate_and_shard -> create_version -> encode_images_shard / encode_texts_shard
    (per shard) -> load_shard (per shard) -> build_indexes -> check_version -> swap -> retire

Safety and resumption:
- A new index version is built in its own table beside the live one; only :func:`swap`
  changes what is served, in one transaction. A failure anywhere before it leaves the live
  version untouched by construction; :func:`fail_version` records the failure.
- Encoded shards are content-addressed (``work_dir/encoded/<shard fingerprint>.<model>.*``):
  a retried task, or a new run over the same catalogue and models, reuses finished files.
- ``load_shard`` is idempotent per product id (the store upserts), so a retried load never
  duplicates rows.
- A session-level PostgreSQL advisory lock (:data:`BUILD_LOCK`) serialises builds: the
  no-Airflow runner holds it for its whole run; DAG tasks take it around create/load/swap.
  A second run waits (DAG tasks, bounded by ``lock_timeout``) or refuses (runner).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from itertools import islice, pairwise
from pathlib import Path

import numpy as np
import psycopg
import pyarrow.parquet as pq
from pgvector import SparseVector

from services.config import get_settings

log = logging.getLogger(__name__)

# Advisory lock key shared by every build (hashtext() of this name).
BUILD_LOCK_NAME = "fashion_index_build"
LOCK_TIMEOUT = os.environ.get("FASHION_BUILD_LOCK_TIMEOUT", "15min")
DEFAULT_MIN_RECALL = 0.9
RECALL_QUERIES = 20
SMOKE_QUERIES = 5
RETIRE_LOCK_TIMEOUT = "20s"
KEEP_RUN_DIRS = 3

_lock_held_here = False  # True while this process holds BUILD_LOCK through build_lock()


class BuildLockBusy(RuntimeError):
    """Another indexing run holds the build lock."""


class CheckFailed(RuntimeError):
    """A freshly built index version failed its checks; it will not go live."""


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _connect():
    from services.store.db import connect

    return connect(get_settings().database_url)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def run_dir_for(run_id: str) -> Path:
    """The folder of one run's intermediate files: ``settings.work_dir/<run id>``."""
    return get_settings().work_dir / _slug(run_id)


def _atomic_save(path: Path, writer) -> None:
    """Write through a temp file + rename, so a killed task never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            writer(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def build_lock(conn=None, *, wait: bool = True) -> Iterator[None]:
    """Hold the build advisory lock (re-entrant within this process).

    ``wait=False`` refuses at once with :class:`BuildLockBusy` when another run holds it;
    ``wait=True`` waits up to ``FASHION_BUILD_LOCK_TIMEOUT`` (default 15min).
    """
    global _lock_held_here
    if _lock_held_here:
        yield
        return
    own = conn is None
    conn = conn or _connect()
    conn.autocommit = True
    try:
        if wait:
            conn.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            try:
                conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (BUILD_LOCK_NAME,))
            except Exception as exc:  # lock_timeout
                raise BuildLockBusy(
                    f"another indexing run held the build lock for more than {LOCK_TIMEOUT}"
                ) from exc
        else:
            ok = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))",
                              (BUILD_LOCK_NAME,)).fetchone()[0]
            if not ok:
                raise BuildLockBusy(
                    "another indexing run is in progress (it holds the build lock); "
                    "wait for it to finish or stop it first"
                )
        _lock_held_here = True
        try:
            yield
        finally:
            _lock_held_here = False
            with contextlib.suppress(Exception):
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (BUILD_LOCK_NAME,))
    finally:
        if own:
            conn.close()


# The fields document_text reads.
DOCUMENT_COLUMNS = ("productDisplayName", "articleType", "baseColour", "gender", "usage", "season")


def document_text(row: dict) -> str:
    """The text SPLADE indexes for a product: its display name plus the attributes a shopper
    types (article type, colour, gender, usage, season) that the name does not already say."""
    name = (row.get("productDisplayName") or "").strip()
    words = set(name.lower().split())
    extra = []
    for key in ("articleType", "baseColour", "gender", "usage", "season"):
        value = row.get(key)
        if isinstance(value, str) and value.strip() and value.lower() not in words:
            extra.append(value.strip())
            words.add(value.lower())
    return " ".join([name, *extra]).strip()


def _shard_meta(shard_path: str | Path) -> dict:
    """The sidecar written next to a shard: rows, ids fingerprint."""
    shard_path = Path(shard_path)
    if not shard_path.exists():
        raise FileNotFoundError(f"shard file {shard_path} is missing; re-run the shard stage")
    side = shard_path.with_suffix(".json")
    if side.exists():
        with contextlib.suppress(ValueError):
            return json.loads(side.read_text())
    digest = hashlib.sha256(shard_path.read_bytes()).hexdigest()
    rows = pq.ParquetFile(shard_path).metadata.num_rows
    return {"rows": rows, "fingerprint": digest}


def _read_shard(shard_path: str | Path, columns: list[str]) -> dict[str, list]:
    from services.catalog.errors import CatalogError

    shard_path = Path(shard_path)
    if not shard_path.exists():
        raise FileNotFoundError(f"shard file {shard_path} is missing; re-run the shard stage")
    try:
        table = pq.read_table(shard_path, columns=columns)
    except Exception as exc:  # corrupt shard
        raise CatalogError(f"cannot read shard {shard_path.name}: {exc}") from exc
    return table.to_pydict()


def _encoded_path(shard_path: str | Path, kind: str, model: str, suffix: str) -> tuple[Path, dict]:
    meta = _shard_meta(shard_path)
    folder = get_settings().work_dir / "encoded"
    return folder / f"{meta['fingerprint'][:24]}.{kind}.{_slug(model)}{suffix}", meta


# --------------------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------------------
def fetch(source: str = "offline", size: int = 10_000, limit: int | None = None) -> list[str]:
    """Parquet files of the catalogue ``source`` ("offline", "hub", or a local path)."""
    from services.catalog.sources import resolve_source

    paths = resolve_source(source, size=size, limit=limit)
    if not paths:
        raise FileNotFoundError(f"catalogue source {source!r} has no Parquet files")
    return [str(p) for p in paths]


def validate_and_shard(paths: Sequence[str], shard_size: int, run_dir: str | Path, *,
                       limit: int | None = None, source: str = "catalog") -> dict:
    """Validate rows, upsert the valid products, and write them as Parquet shards.

    Streams: rows are read, checked and written one shard at a time. Returns
    ``{"shards": [path, ...], "report": {read, valid, rejected, rejected_by_reason, examples}}``.
    Re-running rewrites the same shards (same content -> same fingerprints, so encoded
    files are reused).
    """
    from services.catalog.reader import iter_rows
    from services.catalog.shards import write_parquet
    from services.catalog.validate import iter_valid
    from services.store.products import upsert_products

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
            digest = hashlib.sha256()
            for row in chunk:
                digest.update(repr(sorted((k, v) for k, v in row.items() if k != "image"))
                              .encode())
                digest.update(hashlib.sha256(bytes(row["image"])).digest())
            path.with_suffix(".json").write_text(json.dumps(
                {"rows": len(chunk), "fingerprint": digest.hexdigest(),
                 "first_id": chunk[0]["id"], "last_id": chunk[-1]["id"]}))
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
    log.info("validated %d rows: %d valid, %d rejected %s", report["read"], n_valid,
             len(rejected), counts)
    return {"shards": shards, "report": report}


def model_dims(dense_model: str | None, sparse_model: str | None) -> dict:
    """Resolve model names (defaults from settings) and their dimensions from the registry."""
    from services.encoders.registry import get_spec

    s = get_settings()
    if not dense_model:
        # The encoders' own default resolution (falls back to the untrained offline CLIP
        # while the trained checkpoint is absent), so the version records what encodes it.
        from services.encoders import clip

        resolve = getattr(clip, "_resolve_name", None)
        dense_model = resolve(None) if resolve else s.dense_model
    sparse_model = sparse_model or s.sparse_model
    dense = get_spec(dense_model)
    sparse = get_spec(sparse_model)
    if dense.kind != "clip":
        raise ValueError(f"{dense_model!r} is a {dense.kind} model, not a dense (clip) one")
    if sparse.kind != "splade":
        raise ValueError(f"{sparse_model!r} is a {sparse.kind} model, not a sparse (splade) one")
    return {"dense_model": dense_model, "dense_dim": dense.dim,
            "sparse_model": sparse_model, "sparse_dim": sparse.dim}


def create_version(dense_model: str | None = None, sparse_model: str | None = None, *,
                   run_key: str, params: dict | None = None,
                   dense_image_weight: float | None = None) -> int:
    """Register the new index version (status 'building') for run ``run_key``.

    Resumes a 'building' version of the same run (a retried task); marks 'building' versions
    of other runs failed (stale: their run died without cleaning up). Refuses while another
    indexing run holds the build lock.
    """
    from services.store import index_versions as iv

    dims = model_dims(dense_model, sparse_model)
    with _connect() as conn, build_lock(wait=False):
        for v in iv.list_versions(conn):
            if v.status != "building":
                continue
            if v.params.get("run_key") == run_key and v.dense_model == dims["dense_model"] \
                    and v.sparse_model == dims["sparse_model"]:
                log.info("resuming index version %d of run %s", v.id, run_key)
                return v.id
            log.warning("marking stale building version %d (run %s) failed", v.id,
                        v.params.get("run_key"))
            iv.mark_failed(conn, v.id, f"stale: its run ({v.params.get('run_key')}) ended "
                           f"without finishing; superseded by run {run_key}")
        weight = get_settings().dense_image_weight if dense_image_weight is None else dense_image_weight
        vid = iv.create_version(conn, **dims, params={**(params or {}), "run_key": run_key},
                                dense_image_weight=float(weight))
    log.info("created index version %d (%s + %s, image weight %g)", vid, dims["dense_model"],
             dims["sparse_model"], weight)
    return vid


def encode_images_shard(shard_path: str, dense_model: str | None = None, *,
                        batch_size: int = 64) -> str:
    """CLIP-encode a shard's photos and names into ``<fingerprint>.dense.<model>.npz`` (arrays
    ``image`` and ``name``, unit rows); reuses a finished file.

    The text half is the display name alone: on the tuning split it beat the name plus
    attributes (:func:`document_text`) on photo + text queries by more than it lost on text
    queries (README, "How the defaults were chosen"). Both arrays are kept so that the version's
    ``dense_image_weight`` is applied at load time (:func:`product_dense_vectors`) and a new
    weight needs no re-encoding.
    """
    from services.encoders.clip import load_clip

    dense_model = dense_model or model_dims(None, None)["dense_model"]
    out, meta = _encoded_path(shard_path, "dense", dense_model, ".npz")
    if out.exists():
        try:
            with np.load(out) as z:
                if z["image"].shape[0] == meta["rows"] == z["name"].shape[0]:
                    log.info("reusing %s", out.name)
                    return str(out)
        except (ValueError, OSError, KeyError):
            pass
        log.warning("re-encoding: %s is unreadable or has the wrong row count", out)
    data = _read_shard(shard_path, ["image", "productDisplayName"])
    images = [img["bytes"] if isinstance(img, dict) else img for img in data["image"]]
    encoder = load_clip(dense_model)
    image_vecs = np.ascontiguousarray(encoder.encode_images(images, batch_size=batch_size),
                                      dtype=np.float32)
    name_vecs = np.ascontiguousarray(
        encoder.encode_texts([dense_name_text(n) for n in data["productDisplayName"]]), dtype=np.float32)
    if image_vecs.shape[0] != len(images) or name_vecs.shape[0] != len(images):
        raise RuntimeError(f"CLIP returned {image_vecs.shape[0]} image and {name_vecs.shape[0]} "
                           f"text vectors for {len(images)} products")
    _atomic_save(out, lambda fh: np.savez(fh, image=image_vecs, name=name_vecs))
    return str(out)


def dense_name_text(name: str | None) -> str:
    """The text half of a product's dense vector: its display name (validation guarantees one;
    a blank is encoded as a neutral word rather than failing the shard)."""
    return name.strip() if isinstance(name, str) and name.strip() else "product"


def product_dense_vectors(image: np.ndarray, name: np.ndarray, image_weight: float) -> np.ndarray:
    """Rows of ``normalise(w * image + (1 - w) * name)``: a product's dense vector from its
    photo and its name in the shared CLIP space (w = 1: photo only, w = 0: name only)."""
    mixed = image_weight * image + (1.0 - image_weight) * name
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    return np.ascontiguousarray(mixed / np.maximum(norms, 1e-12), dtype=np.float32)


def encode_texts_shard(shard_path: str, sparse_model: str | None = None, *,
                       batch_size: int = 64) -> str:
    """SPLADE-encode a shard's product texts into ``<fingerprint>.sparse.<model>.npz``
    (CSR layout: ``indptr``, ``indices``, ``values``, ``dim``); reuses a finished file."""
    from services.encoders.splade import load_splade

    sparse_model = sparse_model or get_settings().sparse_model
    out, meta = _encoded_path(shard_path, "sparse", sparse_model, ".npz")
    if out.exists():
        try:
            with np.load(out) as z:
                if len(z["indptr"]) == meta["rows"] + 1:
                    log.info("reusing %s", out.name)
                    return str(out)
        except (ValueError, OSError, KeyError):
            pass
        log.warning("re-encoding: %s is unreadable or has the wrong row count", out)
    data = _read_shard(shard_path, list(DOCUMENT_COLUMNS))
    texts = [document_text(dict(zip(DOCUMENT_COLUMNS, values)))
             for values in zip(*(data[c] for c in DOCUMENT_COLUMNS))]
    encoder = load_splade(sparse_model)
    vectors = encoder.encode(texts, batch_size=batch_size)
    if len(vectors) != len(texts):
        raise RuntimeError(f"SPLADE returned {len(vectors)} vectors for {len(texts)} texts")
    indptr = np.zeros(len(vectors) + 1, dtype=np.int64)
    indices, values = [], []
    for i, vec in enumerate(vectors):
        idx = vec.indices()
        indices.append(np.asarray(idx, dtype=np.int32))
        values.append(np.asarray(vec.values(), dtype=np.float32))
        indptr[i + 1] = indptr[i] + len(idx)
    dim = vectors[0].dimensions() if vectors else 0
    _atomic_save(out, lambda fh: np.savez(
        fh, indptr=indptr,
        indices=np.concatenate(indices) if indices else np.zeros(0, np.int32),
        values=np.concatenate(values) if values else np.zeros(0, np.float32),
        dim=np.int64(dim)))
    return str(out)


def read_sparse(path: str | Path) -> list[SparseVector]:
    with np.load(path) as z:
        indptr, indices, values, dim = z["indptr"], z["indices"], z["values"], int(z["dim"])
    return [SparseVector._from_parts(dim, indices[a:b].tolist(), values[a:b].tolist())
            for a, b in pairwise(indptr.tolist())]


def _require_building(conn, version_id: int):
    from services.store.index_versions import get_version

    v = get_version(conn, version_id)
    if v is None:
        raise LookupError(f"index version {version_id} does not exist")
    if v.status not in ("building", "ready"):
        raise RuntimeError(f"index version {version_id} is '{v.status}', not 'building' "
                           "(another run superseded it, or it failed); start a new run - "
                           "finished encoded shards are reused")
    return v


def load_shard(version_id: int, shard: str, dense_path: str, sparse_path: str) -> int:
    """COPY one shard's embeddings into the version's table (idempotent per product id)."""
    from services.store.index_versions import load_embeddings

    ids = [int(i) for i in _read_shard(shard, ["id"])["id"]]
    for p in (dense_path, sparse_path):
        if not Path(p).exists():
            raise FileNotFoundError(f"encoded file {p} is missing; re-run its encode task")
    with np.load(dense_path) as z:
        image, name = z["image"], z["name"]
    sparse = read_sparse(sparse_path)
    if image.shape[0] != len(ids) or name.shape[0] != len(ids) or len(sparse) != len(ids):
        raise ValueError(f"{Path(shard).name}: {len(ids)} rows but {image.shape[0]} dense and "
                         f"{len(sparse)} sparse vectors; delete the stale encoded files")
    with _connect() as conn, build_lock(wait=True):
        version = _require_building(conn, version_id)
        dense = product_dense_vectors(image, name, version.dense_image_weight)
        n = load_embeddings(conn, version_id, ids, dense, sparse)
    log.info("loaded %d rows of %s into version %d", n, Path(shard).name, version_id)
    return n


def build_indexes(version_id: int) -> dict:
    """Build both HNSW indexes of the version (idempotent); returns seconds per index."""
    from services.store import index_versions as iv

    with _connect() as conn:
        _require_building(conn, version_id)
        timings = iv.build_indexes(conn, version_id)
    return {k: round(v, 3) for k, v in timings.items()}


def check_version(version_id: int, expected_rows: int, *,
                  min_recall: float = DEFAULT_MIN_RECALL, seed: int = 0,
                  extra_report: dict | None = None) -> dict:
    """Check a built version before it may go live, then mark it 'ready'.

    - row count equals the number of valid catalogue rows;
    - smoke: a product's own stored vectors find it first (fast path), and its name as a text
      query returns hits with finite, descending scores;
    - recall@10 of the fast (HNSW) path against the exact scan on ``RECALL_QUERIES`` name
      queries is at least ``min_recall``.
    Raises :class:`CheckFailed` (the version stays out of service) when a check fails.
    """
    import math
    import random

    from services.encoders.clip import load_clip
    from services.encoders.splade import load_splade
    from services.store import index_versions as iv
    from services.store.search import SearchQuery, fused_search, stored_vectors

    report: dict = {"expected_rows": expected_rows}
    with _connect() as conn:
        version = _require_building(conn, version_id)
        rows = iv.row_count(conn, version_id)
        report["rows"] = rows
        problems = []
        if rows != expected_rows:
            problems.append(f"row count {rows} != {expected_rows} valid catalogue rows")
        if not iv.has_indexes(conn, version_id):
            problems.append("HNSW indexes are missing")
        sample = conn.execute(
            f"SELECT e.product_id, p.product_display_name FROM {iv.table_name(version_id)} e "
            "JOIN products p ON p.id = e.product_id ORDER BY e.product_id").fetchall()
        conn.commit()
        rng = random.Random(seed)
        picks = rng.sample(sample, min(RECALL_QUERIES, len(sample)))
        # smoke 1: self-retrieval with the product's own vectors
        self_found = 0
        for pid, _ in picks[:SMOKE_QUERIES]:
            dense, sparse = stored_vectors(conn, pid, version)
            hits = fused_search(conn, SearchQuery(dense=dense, sparse=sparse, k=10), version)
            self_found += int(bool(hits) and hits[0].product_id == pid
                              or pid in [h.product_id for h in hits[:3]])
        report["smoke_self_retrieval"] = f"{self_found}/{min(SMOKE_QUERIES, len(picks))}"
        if self_found < min(SMOKE_QUERIES, len(picks)):
            problems.append(f"self-retrieval found only {report['smoke_self_retrieval']}")
        # smoke 2 + recall: name queries through the real encoders
        clip = load_clip(version.dense_model)
        splade = load_splade(version.sparse_model)
        names = [name for _, name in picks]
        qd = clip.encode_texts(names)
        qs = splade.encode(names)
        recalls, name_found = [], 0
        for (pid, _), d, s in zip(picks, qd, qs):
            fast = fused_search(conn, SearchQuery(dense=d, sparse=s, k=10), version)
            exact = fused_search(conn, SearchQuery(dense=d, sparse=s, k=10, exact=True), version)
            scores = [h.score for h in fast]
            if not fast or not all(math.isfinite(x) for x in scores) \
                    or scores != sorted(scores, reverse=True):
                problems.append(f"name query for {pid} returned no or unsorted hits")
                break
            name_found += int(pid in [h.product_id for h in exact])
            exact_ids = {h.product_id for h in exact}
            recalls.append(len(exact_ids & {h.product_id for h in fast}) / max(1, len(exact_ids)))
        recall = float(np.mean(recalls)) if recalls else 0.0
        report["recall_at_10_fast_vs_exact"] = round(recall, 4)
        report["recall_queries"] = len(recalls)
        report["name_query_hits_own_product_top10"] = f"{name_found}/{len(picks)}"
        report["min_recall"] = min_recall
        if recall < min_recall:
            problems.append(f"fast-vs-exact recall@10 {recall:.3f} < {min_recall}")
        report["problems"] = problems
        if problems:
            raise CheckFailed(f"index version {version_id} failed its checks: "
                              + "; ".join(problems))
        iv.mark_ready(conn, version_id, {"checks": report, **(extra_report or {})})
    return report


def swap(version_id: int) -> dict:
    """Make the checked version live in one transaction (the old live one becomes 'previous')."""
    from services.store import index_versions as iv

    with _connect() as conn, build_lock(wait=True):
        before = iv.live_version(conn)
        after = iv.swap_live(conn, version_id)
    log.info("version %d is live (was %s)", after.id, before.id if before else None)
    return {"live": after.id, "previous": before.id if before else None,
            "rows": after.row_count}


def prune_work_dirs(keep_runs: int = KEEP_RUN_DIRS) -> list[str]:
    """Delete the shard folders of all but the newest ``keep_runs`` runs under work_dir.

    Encoded shards (``work_dir/encoded``) are a content-addressed cache and stay.
    """
    import shutil

    work = get_settings().work_dir
    if not work.is_dir():
        return []
    runs = sorted((d for d in work.iterdir() if d.is_dir() and d.name != "encoded"),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    removed = []
    for d in runs[keep_runs:]:
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d.name)
    return removed


def retire(keep_previous: int = 1) -> list[int]:
    """Drop versions older than the live one and its ``keep_previous`` predecessors (and
    the shard folders of old runs)."""
    from services.store import index_versions as iv

    prune_work_dirs()

    with _connect() as conn:
        # DROP TABLE waits for readers of the old table; never hang a finished run on them.
        conn.execute(f"SET lock_timeout = '{RETIRE_LOCK_TIMEOUT}'")
        try:
            return iv.retire_old(conn, keep_previous=keep_previous)
        except psycopg.errors.LockNotAvailable:
            conn.rollback()
            log.warning("retiring old versions deferred: their tables are in use "
                        "(the next run retires them)")
            return []


def fail_version(version_id: int | None, error: str) -> None:
    """Record a failed build; never touches the live version. Safe to call twice."""
    if version_id is None:
        return
    from services.store import index_versions as iv

    try:
        with _connect() as conn:
            iv.mark_failed(conn, int(version_id), error)
    except Exception:  # the failure being reported matters more than this one
        log.exception("could not mark index version %s failed", version_id)


def fail_versions_of_run(run_key: str, error: str) -> list[int]:
    """Mark every unfinished ('building'/'ready') version of run ``run_key`` failed."""
    from services.store import index_versions as iv

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
