"""The files between the encode and load stages: shards' sidecars and encoded vectors.

- ``<shard>.json`` beside each Parquet shard: ``{rows, fingerprint, first_id, last_id}``;
- ``work_dir/encoded/<fingerprint>.dense.<model>.npz``: arrays ``image`` and ``name`` (unit
  rows, one per product), blended at load time by :func:`product_dense_vectors`;
- ``work_dir/encoded/<fingerprint>.sparse.<model>.npz``: CSR layout ``indptr``, ``indices``,
  ``values``, ``dim``.

Encoded files are content-addressed by the shard's fingerprint, so a retried task, or a new
run over the same catalogue and models, reuses them. Every write is a temp file + rename, so
a killed task never leaves half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow.parquet as pq
from pgvector import SparseVector

from services.catalog.errors import CatalogError
from services.pipeline.encode import product_dense_vectors  # noqa: F401 (re-exported)


def slug(text: str) -> str:
    """``text`` as a safe file name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def atomic_save(path: Path, writer: Callable[[BinaryIO], None]) -> None:
    """Write through a temp file + rename, so a killed task never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            writer(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def shard_fingerprint(rows: Sequence[dict]) -> str:
    """A digest of a shard's rows (fields and image bytes)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr(sorted((k, v) for k, v in row.items() if k != "image")).encode())
        digest.update(hashlib.sha256(bytes(row["image"])).digest())
    return digest.hexdigest()


def write_shard_meta(shard_path: Path, rows: Sequence[dict]) -> None:
    shard_path.with_suffix(".json").write_text(
        json.dumps(
            {
                "rows": len(rows),
                "fingerprint": shard_fingerprint(rows),
                "first_id": rows[0]["id"],
                "last_id": rows[-1]["id"],
            }
        )
    )


def shard_meta(shard_path: str | Path) -> dict:
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


def read_shard(shard_path: str | Path, columns: list[str]) -> dict[str, list]:
    """Columns of a shard (dataset field names -> values)."""
    shard_path = Path(shard_path)
    if not shard_path.exists():
        raise FileNotFoundError(f"shard file {shard_path} is missing; re-run the shard stage")
    try:
        table = pq.read_table(shard_path, columns=columns)
    except Exception as exc:
        raise CatalogError(f"cannot read shard {shard_path.name}: {exc}") from exc
    return table.to_pydict()


def encoded_path(folder: Path, shard_path: str | Path, kind: str, model: str) -> tuple[Path, dict]:
    """``(path of the shard's encoded file of kind 'dense'|'sparse' by model, shard meta)``."""
    meta = shard_meta(shard_path)
    return folder / f"{meta['fingerprint'][:24]}.{kind}.{slug(model)}.npz", meta


# --- dense ---------------------------------------------------------------------------------
def save_dense(path: Path, image: np.ndarray, name: np.ndarray) -> None:
    atomic_save(path, lambda fh: np.savez(fh, image=image, name=name))


def load_dense(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(image vectors, name vectors)`` of a dense file."""
    with np.load(path) as z:
        return z["image"], z["name"]


def dense_rows(path: Path) -> int | None:
    """Rows of a finished dense file (both arrays agree), or None when unreadable."""
    try:
        with np.load(path) as z:
            n = z["image"].shape[0]
            return n if z["name"].shape[0] == n else None
    except (ValueError, OSError, KeyError):
        return None


# --- sparse --------------------------------------------------------------------------------
def save_sparse(path: Path, vectors: Sequence[SparseVector]) -> None:
    indptr = np.zeros(len(vectors) + 1, dtype=np.int64)
    indices, values = [], []
    for i, vec in enumerate(vectors):
        idx = vec.indices()
        indices.append(np.asarray(idx, dtype=np.int32))
        values.append(np.asarray(vec.values(), dtype=np.float32))
        indptr[i + 1] = indptr[i] + len(idx)
    dim = vectors[0].dimensions() if vectors else 0
    atomic_save(
        path,
        lambda fh: np.savez(
            fh,
            indptr=indptr,
            indices=np.concatenate(indices) if indices else np.zeros(0, np.int32),
            values=np.concatenate(values) if values else np.zeros(0, np.float32),
            dim=np.int64(dim),
        ),
    )


def sparse_rows(path: Path) -> int | None:
    """Rows of a finished sparse file, or None when unreadable."""
    try:
        with np.load(path) as z:
            return len(z["indptr"]) - 1
    except (ValueError, OSError, KeyError):
        return None


def read_sparse(path: str | Path) -> list[SparseVector]:
    with np.load(path) as z:
        indptr, indices, values, dim = z["indptr"], z["indices"], z["values"], int(z["dim"])
    return [
        SparseVector(dict(zip(indices[a:b].tolist(), values[a:b].tolist())), dim)
        for a, b in pairwise(indptr.tolist())
    ]
