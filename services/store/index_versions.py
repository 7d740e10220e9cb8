"""Index versions: build a new embedding table beside the live one, check it, swap atomically.

Each version owns one table ``index_v<N>`` whose dimensions come from its models:

    product_id bigint PK, <filter columns copied from products>,
    content_hash text (of the content the vectors were encoded from),
    dense vector(d), sparse sparsevec(V)

with HNSW indexes using the inner-product opclasses. The product metadata used by
filters is copied into the table so that a filtered HNSW scan (pgvector iterative
scan) never needs a join. Life cycle: building -> ready -> live -> previous -> retired
(or failed). The swap is one transaction; at most one version is live (unique index).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime

import numpy as np
import psycopg
from pgvector import SparseVector
from psycopg import sql
from psycopg.rows import dict_row

from services.catalog.schema import BY_COLUMN, METADATA_FIELDS

log = logging.getLogger(__name__)

MAX_SPARSE_NNZ = 1000  # pgvector's HNSW limit for sparsevec


@dataclass(frozen=True)
class IndexVersion:
    id: int
    status: str
    dense_model: str
    dense_dim: int
    sparse_model: str
    sparse_dim: int
    row_count: int | None
    created_at: datetime | None
    built_at: datetime | None
    live_at: datetime | None
    params: dict
    report: dict
    # Product dense vector = normalise(w * image + (1 - w) * name text); 1.0 = photo only.
    dense_image_weight: float = 1.0

    @property
    def table(self) -> str:
        return table_name(self.id)

    def describe(self) -> str:
        return (
            f"v{self.id} [{self.status}] dense={self.dense_model}({self.dense_dim}) "
            f"sparse={self.sparse_model}({self.sparse_dim}) image_weight={self.dense_image_weight:g} "
            f"rows={self.row_count} "
            f"live_at={self.live_at}"
        )


# A version's copy of each product's metadata (filters read it without a join).
METADATA_COLUMNS = [f.column for f in METADATA_FIELDS]
_METADATA_DDL = sql.SQL(",\n").join(
    sql.SQL("{} {}").format(sql.Identifier(f.column), sql.SQL(f.pg_type)) for f in METADATA_FIELDS
)
# The products' content hash as it was when the row's vectors were loaded (the incremental
# sync compares the source with it; ``products`` alone may hold newer content than a version).
_HASH = BY_COLUMN["content_hash"]
# Columns of a version's row copied from ``products`` when it is loaded (and re-copied when
# a product's embeddings are loaded again: a sync changes them in place).
_COPIED = [*METADATA_COLUMNS, _HASH.column]

_VERSION_COLS = sql.SQL(", ").join(sql.Identifier(f.name) for f in fields(IndexVersion))


@contextmanager
def _tx(conn: psycopg.Connection) -> Iterator[None]:
    """One committed unit of work: a mutating call never leaves a transaction open."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS and not conn.autocommit:
        conn.commit()  # close the implicit read transaction of earlier lookups
    with conn.transaction():
        yield


def table_name(version_id: int) -> str:
    return f"index_v{int(version_id)}"


def postings_name(version_id: int) -> str:
    """The version's impact-ordered postings table (services.store.postings)."""
    return f"index_v{int(version_id)}_postings"


def _drop_version_tables(conn: psycopg.Connection, version_id: int) -> None:
    conn.execute(
        sql.SQL("DROP TABLE IF EXISTS {p}, {t}").format(
            p=sql.Identifier(postings_name(version_id)),
            t=sql.Identifier(table_name(version_id)),
        )
    )


def _versions(conn: psycopg.Connection, where: str = "", params: tuple = ()) -> list[IndexVersion]:
    query = sql.SQL("SELECT {cols} FROM index_versions {where} ORDER BY id").format(
        cols=_VERSION_COLS, where=sql.SQL(where)
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return [IndexVersion(**row) for row in cur.execute(query, params)]


def get_version(conn: psycopg.Connection, version_id: int) -> IndexVersion | None:
    found = _versions(conn, "WHERE id = %s", (version_id,))
    return found[0] if found else None


def live_version(conn: psycopg.Connection) -> IndexVersion | None:
    found = _versions(conn, "WHERE status = 'live'")
    return found[0] if found else None


def list_versions(conn: psycopg.Connection) -> list[IndexVersion]:
    return _versions(conn)


def create_version(
    conn: psycopg.Connection,
    *,
    dense_model: str,
    dense_dim: int,
    sparse_model: str,
    sparse_dim: int,
    params: dict | None = None,
    dense_image_weight: float = 1.0,
) -> int:
    """Register a new version and create its (empty, index-less) embedding table."""
    if dense_dim <= 0 or sparse_dim <= 0:
        raise ValueError("dimensions must be positive")
    if not 0.0 <= dense_image_weight <= 1.0:
        raise ValueError(f"dense_image_weight must be in [0, 1], got {dense_image_weight}")
    with _tx(conn):
        vid = conn.execute(
            """
            INSERT INTO index_versions (dense_model, dense_dim, sparse_model, sparse_dim, params,
                                        dense_image_weight)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING id
            """,
            (
                dense_model,
                dense_dim,
                sparse_model,
                sparse_dim,
                json.dumps(params or {}),
                float(dense_image_weight),
            ),
        ).fetchone()[0]
        conn.execute(
            sql.SQL(
                """
                CREATE TABLE {t} (
                    product_id bigint PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
                    {metadata},
                    {hash} {hash_type},
                    dense      vector({d}) NOT NULL,
                    sparse     sparsevec({v}) NOT NULL
                )
                """
            ).format(
                t=sql.Identifier(table_name(vid)),
                metadata=_METADATA_DDL,
                hash=sql.Identifier(_HASH.column),
                hash_type=sql.SQL(_HASH.pg_type),
                d=sql.Literal(int(dense_dim)),
                v=sql.Literal(int(sparse_dim)),
            )
        )
    return vid


def load_embeddings(
    conn: psycopg.Connection,
    version_id: int,
    product_ids: Sequence[int],
    dense: np.ndarray,
    sparse: Sequence[SparseVector],
) -> int:
    """Binary-COPY one batch into the version's table; re-loading the same ids replaces them.

    Rows are staged then upserted in one statement joined to ``products`` (which must
    hold every id), so a retried task never duplicates rows. The metadata (filter) columns
    and the content hash are copied from ``products`` on insert and on conflict alike: a
    reload after ``products`` changed (the incremental sync) updates them with the vectors.

    Inside the caller's ``conn.transaction()`` on an autocommit connection it joins that
    transaction (a savepoint), so a caller can make several writes one unit.
    """
    n = len(product_ids)
    if dense.shape[0] != n or len(sparse) != n:
        raise ValueError(
            f"batch sizes differ: {n} ids, {dense.shape[0]} dense, {len(sparse)} sparse"
        )
    version = get_version(conn, version_id)
    if version is None:
        raise LookupError(f"index version {version_id} does not exist")
    if dense.ndim != 2 or dense.shape[1] != version.dense_dim:
        raise ValueError(
            f"dense vectors have shape {dense.shape}, version expects (n, {version.dense_dim})"
        )
    for vec in sparse:
        if vec.dimensions() != version.sparse_dim:
            raise ValueError(
                f"sparse vector has dimension {vec.dimensions()}, version expects "
                f"{version.sparse_dim}"
            )
        if len(vec.indices()) > MAX_SPARSE_NNZ:
            raise ValueError(
                f"sparse vector has {len(vec.indices())} non-zeros (max {MAX_SPARSE_NNZ})"
            )
    table = sql.Identifier(table_name(version_id))
    dense = np.ascontiguousarray(dense, dtype=np.float32)
    with _tx(conn), conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS emb_staging "
            "(product_id bigint, dense vector, sparse sparsevec) ON COMMIT DELETE ROWS"
        )
        cur.execute("TRUNCATE emb_staging")
        with cur.copy(
            "COPY emb_staging (product_id, dense, sparse) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["int8", "vector", "sparsevec"])
            for pid, dvec, svec in zip(product_ids, dense, sparse):
                copy.write_row([int(pid), dvec, svec])
        cur.execute(
            sql.SQL(
                """
                INSERT INTO {t} (product_id, {meta}, dense, sparse)
                SELECT DISTINCT ON (s.product_id) s.product_id, {pmeta}, s.dense, s.sparse
                FROM emb_staging s JOIN products p ON p.id = s.product_id
                ORDER BY s.product_id
                ON CONFLICT (product_id) DO UPDATE
                    SET {updates}, dense = EXCLUDED.dense, sparse = EXCLUDED.sparse
                """
            ).format(
                t=table,
                meta=sql.SQL(", ").join(sql.Identifier(c) for c in _COPIED),
                pmeta=sql.SQL(", ").join(sql.Identifier("p", c) for c in _COPIED),
                updates=sql.SQL(", ").join(
                    sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in _COPIED
                ),
            )
        )
        inserted = cur.rowcount
        if inserted != len({int(p) for p in product_ids}):
            raise LookupError(
                f"{n - inserted} of {n} embeddings have no product row; "
                "load products before their embeddings"
            )
    return inserted


def row_count(conn: psycopg.Connection, version_id: int) -> int:
    return conn.execute(
        sql.SQL("SELECT count(*) FROM {t}").format(t=sql.Identifier(table_name(version_id)))
    ).fetchone()[0]


def product_names(conn: psycopg.Connection, version_id: int) -> list[tuple[int, str]]:
    """``(product id, display name)`` of every product in the version, by id."""
    return conn.execute(
        sql.SQL(
            "SELECT e.product_id, p.product_display_name FROM {t} e "
            "JOIN products p ON p.id = e.product_id ORDER BY e.product_id"
        ).format(t=sql.Identifier(table_name(version_id)))
    ).fetchall()


def product_metadata(conn: psycopg.Connection, version_id: int) -> list[dict]:
    """Every product of the version: ``id``, its metadata in dataset field names, and
    ``has_image``; by id."""
    query = sql.SQL(
        "SELECT e.product_id AS id, {meta}, p.image IS NOT NULL AS has_image "
        "FROM {t} e JOIN products p ON p.id = e.product_id ORDER BY e.product_id"
    ).format(
        meta=sql.SQL(", ").join(
            sql.SQL("e.{} AS {}").format(sql.Identifier(f.column), sql.Identifier(f.name))
            for f in METADATA_FIELDS
        ),
        t=sql.Identifier(table_name(version_id)),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query).fetchall()


def has_indexes(conn: psycopg.Connection, version_id: int) -> bool:
    """Whether the version has what its search reads: both HNSW graphs (or the sparse one and
    an IVFFlat dense index) and the sparse postings' impact index (services.store.postings)."""
    n = conn.execute(
        "SELECT count(*) FILTER (WHERE tablename = %s AND (indexdef ILIKE '%%USING hnsw%%' "
        "OR indexdef ILIKE '%%USING ivfflat%%')), "
        "count(*) FILTER (WHERE tablename = %s AND indexname = %s) FROM pg_indexes",
        (table_name(version_id), postings_name(version_id), postings_name(version_id) + "_impact"),
    ).fetchone()
    return n == (2, 1)


def mark_ready(conn: psycopg.Connection, version_id: int, report: dict) -> None:
    with _tx(conn):
        conn.execute(
            """
            UPDATE index_versions
               SET status = 'ready', row_count = %s, built_at = now(), report = report || %s
             WHERE id = %s AND status IN ('building', 'ready')
            """,
            (row_count(conn, version_id), json.dumps(report, default=str), version_id),
        )


def mark_failed(conn: psycopg.Connection, version_id: int, error: str) -> None:
    """Record a failed build; never touches the live version."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    with _tx(conn):
        conn.execute(
            "UPDATE index_versions SET status = 'failed', error = %s "
            "WHERE id = %s AND status IN ('building', 'ready')",
            (error[:4000], version_id),
        )


def swap_live(conn: psycopg.Connection, version_id: int) -> IndexVersion:
    """Make ``version_id`` live in ONE transaction; the old live version becomes 'previous'.

    Refuses a version that is not 'ready' (built, indexed and checked) or 'previous'. A transaction-level
    advisory lock serialises concurrent swaps; ``live_at`` is the clock time after the lock
    (``now()`` is the transaction's start: a swap that waited on the lock would get a time
    earlier than the swap it waited for, and rollback would pick the wrong version).
    """
    with _tx(conn):
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('fashion_index_swap'))")
        row = conn.execute(
            "SELECT status FROM index_versions WHERE id = %s FOR UPDATE", (version_id,)
        ).fetchone()
        if row is None:
            raise LookupError(f"index version {version_id} does not exist")
        if row[0] == "live":
            return get_version(conn, version_id)
        if row[0] not in ("ready", "previous"):
            raise ValueError(
                f"index version {version_id} is '{row[0]}', only a 'ready' "
                "(or 'previous') version can go live"
            )
        if not has_indexes(conn, version_id):
            raise ValueError(f"index version {version_id} has no HNSW indexes")
        conn.execute("UPDATE index_versions SET status = 'previous' WHERE status = 'live'")
        conn.execute(
            "UPDATE index_versions SET status = 'live', live_at = clock_timestamp() WHERE id = %s",
            (version_id,),
        )
    return get_version(conn, version_id)


def rollback_live(conn: psycopg.Connection) -> IndexVersion:
    """Put the most recent 'previous' version back live (the current live becomes previous)."""
    with _tx(conn):
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('fashion_index_swap'))")
        prev = conn.execute(
            "SELECT id FROM index_versions WHERE status = 'previous' ORDER BY live_at DESC NULLS "
            "LAST, id DESC LIMIT 1"
        ).fetchone()
        if prev is None:
            raise LookupError("no previous index version to roll back to")
        conn.execute("UPDATE index_versions SET status = 'ready' WHERE status = 'live'")
        conn.execute(
            "UPDATE index_versions SET status = 'live', live_at = clock_timestamp() WHERE id = %s",
            (prev[0],),
        )
        conn.execute(
            "UPDATE index_versions SET status = 'previous' WHERE status = 'ready' "
            "AND live_at IS NOT NULL"
        )
    return live_version(conn)


def retire_old(
    conn: psycopg.Connection, keep_previous: int = 1, *, lock_timeout: str | None = None
) -> list[int]:
    """Drop tables of versions older than the live one and the ``keep_previous`` newest
    'previous' ones; failed versions are dropped too. Returns the retired ids.

    ``lock_timeout`` (e.g. ``"20s"``) bounds the wait for readers of an old table
    (``psycopg.errors.LockNotAvailable`` past it)."""
    if lock_timeout is not None:
        conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(lock_timeout)))
    with _tx(conn):
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('fashion_index_swap'))")
        rows = conn.execute(
            """
            SELECT id FROM index_versions
             WHERE status = 'failed'
                OR (status = 'previous' AND id NOT IN (
                        SELECT id FROM index_versions WHERE status = 'previous'
                         ORDER BY live_at DESC NULLS LAST, id DESC LIMIT %s))
            """,
            (keep_previous,),
        ).fetchall()
        retired = [r[0] for r in rows]
        for vid in retired:
            _drop_version_tables(conn, vid)
            conn.execute(
                "UPDATE index_versions SET status = CASE WHEN status = 'failed' THEN 'failed' "
                "ELSE 'retired' END, retired_at = now() WHERE id = %s",
                (vid,),
            )
    return retired


def drop_all_versions_and_products(conn: psycopg.Connection, *, truncate: bool = False) -> None:
    """Empty a database to its bare schema: drop every version's table, forget every version,
    remove every product; one committed transaction. For a private database only (the
    benchmark's ``fashion_bench``, a test's): the live catalogue goes with it.

    ``truncate`` empties ``products`` with ``TRUNCATE ... CASCADE`` (fast on large tables,
    but it waits for every other session reading ``products``) instead of ``DELETE``."""
    with _tx(conn):
        for v in list_versions(conn):
            _drop_version_tables(conn, v.id)
        conn.execute("DELETE FROM index_versions")
        conn.execute("TRUNCATE products CASCADE" if truncate else "DELETE FROM products")
