"""The type-ahead's SQL: what one index version's vocabulary is built from
(``services.search.suggest`` builds it, ``services.api.suggest`` serves it).

- :func:`facet_value_counts`: per facet column, each value and how many of the version's
  products have it (one ``GROUP BY`` per column over the version's own copy of the
  metadata, no join);
- :func:`display_names`: the display names of the version's products (the version's rows
  joined with ``products``, which holds the names), by product id.

Columns reach SQL as identifiers from the schema's facet allow-list; nothing else is
composed.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql

from services.catalog.schema import FACET_FIELDS
from services.store.index_versions import IndexVersion

FACET_COLUMNS = frozenset(f.column for f in FACET_FIELDS)


def facet_value_counts(
    conn: psycopg.Connection, version: IndexVersion, columns: Sequence[str]
) -> dict[str, list[tuple[str, int]]]:
    """``column -> [(value, products)]`` of ``version`` for facet ``columns``, most
    frequent first (NULL values left out)."""
    unknown = [c for c in columns if c not in FACET_COLUMNS]
    if unknown:
        raise ValueError(f"not facet columns: {unknown}")
    out: dict[str, list[tuple[str, int]]] = {c: [] for c in columns}
    if not columns:
        return out
    statement = sql.SQL(" UNION ALL ").join(
        sql.SQL(
            "(SELECT {i}::int AS col, {c}::text AS value, count(*) AS n FROM {t} "
            "WHERE {c} IS NOT NULL GROUP BY {c})"
        ).format(i=sql.Literal(i), c=sql.Identifier(column), t=sql.Identifier(version.table))
        for i, column in enumerate(columns)
    ) + sql.SQL(" ORDER BY col, n DESC, value")
    for i, value, n in conn.execute(statement).fetchall():
        out[columns[i]].append((value, int(n)))
    return out


def display_names(conn: psycopg.Connection, version: IndexVersion) -> list[str]:
    """The display names of ``version``'s products, by product id."""
    rows = conn.execute(
        sql.SQL(
            "SELECT p.product_display_name FROM {t} e JOIN products p ON p.id = e.product_id "
            "ORDER BY e.product_id"
        ).format(t=sql.Identifier(version.table))
    ).fetchall()
    return [name for (name,) in rows]
