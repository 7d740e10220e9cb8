"""What a search looks up besides its ranking: a product's stored vectors, the facet values
and how many products pass filters (the SQL: ``services.store.search_sql``)."""

from __future__ import annotations

import numpy as np
import psycopg
from pgvector import SparseVector

from services.search.contract import Filters, NoLiveIndex
from services.store import search_sql
from services.store.index_versions import IndexVersion, live_version
from services.store.search_sql import dense_vectors, facet_values, sparse_vectors

__all__ = ["count_matching", "dense_vectors", "facet_values", "sparse_vectors", "stored_vectors"]


def stored_vectors(
    conn: psycopg.Connection, product_id: int, version: IndexVersion | None = None
) -> tuple[np.ndarray, SparseVector] | None:
    """A product's own vectors in ``version`` (default: the live one), for "more like this";
    None when the product is not in it."""
    version = version or live_version(conn)
    if version is None:
        raise NoLiveIndex("no index version is live yet; run the indexing pipeline first")
    return search_sql.stored_vectors(conn, product_id, version)


def count_matching(conn: psycopg.Connection, version: IndexVersion, filters: Filters) -> int:
    """How many products of ``version`` pass ``filters`` (all of them with no filter)."""
    return search_sql.count_matching(conn, version, filters.values, filters.ranges)
