"""The product catalogue table: bulk upsert with binary COPY, and lookups.

Rows use the real dataset's field names (``masterCategory``...); the table uses
snake_case columns. Loading the same products twice updates them, never duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from services.catalog.schema import BY_COLUMN, FIELDS, METADATA_FIELDS

# The columns of ``products`` written by upsert, from the product schema.
_UPSERT_COLUMNS = [f.column for f in FIELDS]
_METADATA = [f.column for f in METADATA_FIELDS]


def _row_values(row: dict, source: str) -> list:
    record = {**row, "source": row.get("source") or source}
    return [f.value(record) for f in FIELDS]


def _ids(names: Iterable[str]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def upsert_products(
    conn: psycopg.Connection, rows: Iterable[dict], *, source: str = "unknown", commit: bool = True
) -> int:
    """Binary-COPY rows into a staging table, then upsert by id in one statement."""
    cols = _ids(_UPSERT_COLUMNS)
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS products_staging "
            "(LIKE products INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        cur.execute("TRUNCATE products_staging")
        n = 0
        with cur.copy(
            sql.SQL("COPY products_staging ({}) FROM STDIN WITH (FORMAT BINARY)").format(cols)
        ) as copy:
            copy.set_types([f.copy_type for f in FIELDS])
            for row in rows:
                copy.write_row(_row_values(row, source))
                n += 1
        updates = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in _UPSERT_COLUMNS
            if c != "id"
        )
        cur.execute(
            sql.SQL(
                """
                INSERT INTO products ({cols})
                SELECT DISTINCT ON (id) {cols} FROM products_staging ORDER BY id
                ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now()
                """
            ).format(cols=cols, updates=updates)
        )
    if commit:
        conn.commit()
    return n


def get_product(conn: psycopg.Connection, product_id: int) -> dict | None:
    """A product by id: ``id``, ``product_display_name``, its metadata columns, ``has_image``."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            sql.SQL(
                "SELECT id, product_display_name, {meta}, image IS NOT NULL AS has_image "
                "FROM products WHERE id = %s"
            ).format(meta=_ids(_METADATA)),
            (product_id,),
        ).fetchone()


def get_image(conn: psycopg.Connection, product_id: int) -> tuple[bytes, str] | None:
    row = conn.execute(
        "SELECT image, coalesce(image_mime, 'application/octet-stream') FROM products "
        "WHERE id = %s AND image IS NOT NULL",
        (product_id,),
    ).fetchone()
    return (bytes(row[0]), row[1]) if row else None


def names_and_images(conn: psycopg.Connection, ids: list[int]) -> dict[int, tuple[str, bytes]]:
    """``id -> (display name, image bytes)`` of ``ids``."""
    rows = conn.execute(
        "SELECT id, product_display_name, image FROM products WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    return {int(i): (name, bytes(image) if image is not None else None) for i, name, image in rows}


def iter_products(
    conn: psycopg.Connection, ids: list[int] | None = None, with_image: bool = False
) -> Iterator[dict]:
    """Stream products in dataset field names (the schema's dataset fields), optionally only
    ``ids``."""
    names = [f.column for f in FIELDS if f.in_dataset and (with_image or f.column != "image")]
    query = sql.SQL("SELECT {cols} FROM products").format(cols=_ids(names))
    params: tuple = ()
    if ids is not None:
        query += sql.SQL(" WHERE id = ANY(%s)")
        params = (ids,)
    query += sql.SQL(" ORDER BY id")
    with conn.cursor(name="iter_products") if not conn.autocommit else conn.cursor() as cur:
        cur.execute(query, params)
        for row in cur:
            d = {BY_COLUMN[c].name: v for c, v in zip(names, row)}
            if with_image and d["image"] is not None:
                d["image"] = bytes(d["image"])
            yield d
