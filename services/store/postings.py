"""A version's impact-ordered postings: the exact sparse side of the search (issue #25).

``index_v<N>_postings (term, weight, product_id)`` holds one row per non-zero of each
product's SPLADE vector, with a B-tree on ``(term, weight DESC, product_id)``: the top m
postings of a query term are one index-only range scan. The fused statement
(``sql/search.sql``) reads the top m of each query term, scores the products it met exactly
from their stored vectors, and bounds every product it did not meet by the sum over query
terms of ``query weight x the m-th posting's weight`` (Fagin's threshold algorithm): the
sparse side's answer is then proven, not hoped for, which an HNSW graph cannot give.

Built in bulk after a version's rows are loaded (:func:`build_postings`, from
``hnsw.build_indexes``); from then on the trigger ``sparse_postings_sync`` (migration 0009)
keeps them in step with every insert, sparse-vector change and delete of the version's
table, so the incremental sync keeps the bound sound.
"""

from __future__ import annotations

import time

import psycopg
from psycopg import sql

from services.store.index_versions import postings_name, table_name


def build_postings(conn: psycopg.Connection, version_id: int) -> float:
    """(Re)build the postings of a loaded version and attach the trigger that keeps them
    current; one transaction, then a VACUUM (the visibility map lets the search's posting
    reads be index-only). Returns the seconds it took."""
    start = time.perf_counter()
    t = table_name(version_id)
    p = postings_name(version_id)
    with conn.transaction():
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(p)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {p} (term integer NOT NULL, weight real NOT NULL, "
                "product_id bigint NOT NULL)"
            ).format(p=sql.Identifier(p))
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {p} SELECT s.term, s.weight, e.product_id "
                "FROM {t} e CROSS JOIN LATERAL sparse_terms(e.sparse) s"
            ).format(p=sql.Identifier(p), t=sql.Identifier(t))
        )
        conn.execute(
            sql.SQL("CREATE INDEX {i} ON {p} (term, weight DESC, product_id)").format(
                i=sql.Identifier(p + "_impact"), p=sql.Identifier(p)
            )
        )
        conn.execute(
            sql.SQL("DROP TRIGGER IF EXISTS {g} ON {t}").format(
                g=sql.Identifier(p + "_sync"), t=sql.Identifier(t)
            )
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {g} AFTER INSERT OR UPDATE OF sparse OR DELETE ON {t} "
                "FOR EACH ROW EXECUTE FUNCTION sparse_postings_sync()"
            ).format(g=sql.Identifier(p + "_sync"), t=sql.Identifier(t))
        )
    if not conn.autocommit:
        conn.commit()
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(p)))
    finally:
        conn.autocommit = autocommit
    return time.perf_counter() - start


def postings_exist(conn: psycopg.Connection, version_id: int) -> bool:
    """Whether the version has its postings' impact index (the trigger comes with it)."""
    name = postings_name(version_id) + "_impact"
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def postings_size(conn: psycopg.Connection, version_id: int) -> dict[str, int]:
    """Rows and bytes (table, impact index) of the version's postings."""
    p = postings_name(version_id)
    rows, table, index = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM {p}), pg_table_size({lit}), pg_relation_size({ilit})"
        ).format(p=sql.Identifier(p), lit=sql.Literal(p), ilit=sql.Literal(p + "_impact"))
    ).fetchone()
    return {"rows": int(rows), "table_bytes": int(table), "index_bytes": int(index)}
