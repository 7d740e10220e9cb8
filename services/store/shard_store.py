"""What the indexing stages hand each other, kept in the database (never on a worker's disk).

A full build's tasks may run on different machines (Celery workers that share nothing but
the database and the broker), so every hand-off is a row:

- ``pipeline_shards``: one row per shard of a run: ``(run_key, shard)`` -> the products' ids
  and content hashes (:func:`services.catalog.schema.content_hash`) in shard order, and the
  shard's fingerprint (a digest of those hashes). Tasks pass *shard refs*, strings
  ``"<run_key>#<shard>"``; the products themselves (with their photos) are in ``products``.
  A product that changed since the ingest (a catalogue sync ran in between) fails the encode
  or load of its shard (:class:`CatalogChanged`), so a version never holds vectors of one
  content under the hash of another.
- ``encoded_shards``: a shard's encoded vectors, content-addressed by ``(fingerprint, kind,
  model)``: kind ``dense`` holds the arrays ``image`` and ``name`` (unit rows, one per
  product; blended at load time by the version's image weight), kind ``sparse`` the CSR
  layout ``indptr``, ``indices``, ``values``, ``dim`` of the SPLADE vectors. Payloads are
  ``.npz`` bytes. A retried task, or a new run over the same catalogue and models, reuses them.

:func:`prune` keeps the shards of the newest runs and the encoded payloads they reference.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import psycopg
from pgvector import SparseVector

from services.catalog.schema import content_hash
from services.store.products import iter_products

KEEP_RUNS = 3


def slug(text: str) -> str:
    """``text`` as a safe file name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


class CatalogChanged(RuntimeError):
    """Products of a shard changed since the run's ingest (a catalogue sync ran in between)."""


@dataclass(frozen=True)
class Shard:
    run_key: str
    number: int
    product_ids: list[int]
    content_hashes: list[str]
    fingerprint: str

    @property
    def ref(self) -> str:
        return shard_ref(self.run_key, self.number)

    @property
    def rows(self) -> int:
        return len(self.product_ids)


def shard_ref(run_key: str, number: int) -> str:
    return f"{run_key}#{int(number)}"


def parse_ref(ref: str) -> tuple[str, int]:
    run_key, sep, number = str(ref).rpartition("#")
    if not sep or not run_key or not number.isdigit():
        raise ValueError(f"not a shard ref (run_key#number): {ref!r}")
    return run_key, int(number)


def shard_fingerprint(content_hashes: Sequence[str]) -> str:
    """A digest of a shard's products, in order: of their content hashes."""
    return hashlib.sha256("\n".join(content_hashes).encode()).hexdigest()


# --- shards ----------------------------------------------------------------------------------
def clear_run(conn: psycopg.Connection, run_key: str) -> None:
    """Forget the shards of ``run_key`` (a re-run of its ingest writes them again)."""
    conn.execute("DELETE FROM pipeline_shards WHERE run_key = %s", (run_key,))


def add_shard(conn: psycopg.Connection, run_key: str, number: int, rows: Sequence[dict]) -> Shard:
    """Record shard ``number`` of ``run_key``: its rows' ids and content hashes in order, and
    its fingerprint."""
    hashes = [content_hash(r) for r in rows]
    shard = Shard(run_key, number, [int(r["id"]) for r in rows], hashes, shard_fingerprint(hashes))
    conn.execute(
        """
        INSERT INTO pipeline_shards (run_key, shard, product_ids, content_hashes, fingerprint)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (run_key, shard) DO UPDATE
            SET product_ids = EXCLUDED.product_ids, content_hashes = EXCLUDED.content_hashes,
                fingerprint = EXCLUDED.fingerprint, created_at = now()
        """,
        (run_key, number, shard.product_ids, hashes, shard.fingerprint),
    )
    return shard


def get_shard(conn: psycopg.Connection, ref: str) -> Shard:
    run_key, number = parse_ref(ref)
    row = conn.execute(
        "SELECT product_ids, content_hashes, fingerprint FROM pipeline_shards "
        "WHERE run_key = %s AND shard = %s",
        (run_key, number),
    ).fetchone()
    if row is None:
        raise LookupError(f"shard {ref} is not recorded; re-run the run's ingest stage")
    return Shard(run_key, number, [int(i) for i in row[0]], list(row[1]), row[2])


def _changed(shard: Shard, now: dict[int, str | None]) -> None:
    """Raise :class:`CatalogChanged` unless every product of ``shard`` still has the content
    hash it had at ingest (``now``: id -> current hash, absent when deleted)."""
    changed = [i for i, h in zip(shard.product_ids, shard.content_hashes) if now.get(i) != h]
    if changed:
        raise CatalogChanged(
            f"shard {shard.ref}: {len(changed)} products changed or were removed since this "
            f"run's ingest (e.g. id {changed[0]}; a catalogue sync ran in between): trigger a "
            "new run"
        )


def shard_products(conn: psycopg.Connection, shard: Shard) -> list[dict]:
    """The shard's products from ``products`` (dataset field names, with photos), in order,
    exactly as they were at ingest (else :class:`CatalogChanged`)."""
    by_id = {int(r["id"]): r for r in iter_products(conn, shard.product_ids, with_image=True)}
    _changed(shard, {i: content_hash(r) for i, r in by_id.items()})
    return [by_id[i] for i in shard.product_ids]


def require_unchanged(conn: psycopg.Connection, shard: Shard) -> None:
    """:class:`CatalogChanged` unless the shard's products are as they were at ingest
    (``products.content_hash``)."""
    rows = conn.execute(
        "SELECT id, content_hash FROM products WHERE id = ANY(%s)", (shard.product_ids,)
    ).fetchall()
    _changed(shard, {int(i): h for i, h in rows})


# --- encoded payloads ------------------------------------------------------------------------
def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _put(
    conn: psycopg.Connection, fingerprint: str, kind: str, model: str, rows: int, payload: bytes
) -> None:
    conn.execute(
        """
        INSERT INTO encoded_shards (fingerprint, kind, model, rows, payload)
        VALUES (%s, %s, %s, %s, %s)
        ON CONFLICT (fingerprint, kind, model) DO UPDATE
            SET rows = EXCLUDED.rows, payload = EXCLUDED.payload, created_at = now()
        """,
        (fingerprint, kind, model, rows, payload),
    )


def _get(conn: psycopg.Connection, fingerprint: str, kind: str, model: str) -> np.lib.npyio.NpzFile:
    row = conn.execute(
        "SELECT payload FROM encoded_shards WHERE fingerprint = %s AND kind = %s AND model = %s",
        (fingerprint, kind, model),
    ).fetchone()
    if row is None:
        raise LookupError(
            f"no {kind} vectors of shard {fingerprint[:12]} by {model}; re-run its encode task"
        )
    return np.load(io.BytesIO(bytes(row[0])))


def encoded_rows(conn: psycopg.Connection, fingerprint: str, kind: str, model: str) -> int | None:
    """Rows of a shard's stored vectors of ``kind`` by ``model``, or None when not stored."""
    row = conn.execute(
        "SELECT rows FROM encoded_shards WHERE fingerprint = %s AND kind = %s AND model = %s",
        (fingerprint, kind, model),
    ).fetchone()
    return None if row is None else int(row[0])


def put_dense(
    conn: psycopg.Connection, fingerprint: str, model: str, image: np.ndarray, name: np.ndarray
) -> None:
    if image.shape[0] != name.shape[0]:
        raise ValueError(f"{image.shape[0]} image vectors but {name.shape[0]} name vectors")
    _put(conn, fingerprint, "dense", model, image.shape[0], _npz(image=image, name=name))


def get_dense(
    conn: psycopg.Connection, fingerprint: str, model: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(image vectors, name vectors)`` of a shard."""
    with _get(conn, fingerprint, "dense", model) as z:
        return z["image"], z["name"]


def put_sparse(
    conn: psycopg.Connection, fingerprint: str, model: str, vectors: Sequence[SparseVector]
) -> None:
    indptr = np.zeros(len(vectors) + 1, dtype=np.int64)
    indices, values = [], []
    for i, vec in enumerate(vectors):
        idx = vec.indices()
        indices.append(np.asarray(idx, dtype=np.int32))
        values.append(np.asarray(vec.values(), dtype=np.float32))
        indptr[i + 1] = indptr[i] + len(idx)
    payload = _npz(
        indptr=indptr,
        indices=np.concatenate(indices) if indices else np.zeros(0, np.int32),
        values=np.concatenate(values) if values else np.zeros(0, np.float32),
        dim=np.int64(vectors[0].dimensions() if vectors else 0),
    )
    _put(conn, fingerprint, "sparse", model, len(vectors), payload)


def get_sparse(conn: psycopg.Connection, fingerprint: str, model: str) -> list[SparseVector]:
    with _get(conn, fingerprint, "sparse", model) as z:
        indptr, indices, values, dim = z["indptr"], z["indices"], z["values"], int(z["dim"])
    return [
        SparseVector(dict(zip(indices[a:b].tolist(), values[a:b].tolist())), dim)
        for a, b in pairwise(indptr.tolist())
    ]


# --- retention -------------------------------------------------------------------------------
def prune(conn: psycopg.Connection, keep_runs: int = KEEP_RUNS) -> dict[str, int]:
    """Delete the shards of all but the newest ``keep_runs`` runs, and the encoded payloads no
    remaining shard references. Returns ``{"shards": n, "encoded": n}`` deleted."""
    shards = conn.execute(
        """
        DELETE FROM pipeline_shards WHERE run_key NOT IN (
            SELECT run_key FROM pipeline_shards GROUP BY run_key
            ORDER BY max(created_at) DESC LIMIT %s)
        """,
        (keep_runs,),
    ).rowcount
    encoded = conn.execute(
        """
        DELETE FROM encoded_shards e
        WHERE NOT EXISTS (SELECT 1 FROM pipeline_shards s WHERE s.fingerprint = e.fingerprint)
        """
    ).rowcount
    return {"shards": shards, "encoded": encoded}
