"""The product catalogue table: bulk upsert with binary COPY, and lookups.

Rows use the real dataset's field names (``masterCategory``...); the table uses
snake_case columns. Loading the same products twice updates them, never duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import psycopg

# dataset field -> (column, PostgreSQL type for binary COPY)
PRODUCT_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("id", "int8"),
    "gender": ("gender", "text"),
    "masterCategory": ("master_category", "text"),
    "subCategory": ("sub_category", "text"),
    "articleType": ("article_type", "text"),
    "baseColour": ("base_colour", "text"),
    "season": ("season", "text"),
    "year": ("year", "int4"),
    "usage": ("usage", "text"),
    "productDisplayName": ("product_display_name", "text"),
    "image": ("image", "bytea"),
    "image_mime": ("image_mime", "text"),
    "source": ("source", "text"),
}
METADATA_COLUMNS = [
    "gender", "master_category", "sub_category", "article_type", "base_colour",
    "season", "year", "usage",
]


def sniff_mime(data: bytes | None) -> str | None:
    if not data:
        return None
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


def _row_values(row: dict, source: str) -> list:
    image = row.get("image")
    if isinstance(image, dict):  # Hugging Face parquet layout
        image = image.get("bytes")
    year = row.get("year")
    return [
        int(row["id"]), row.get("gender"), row.get("masterCategory"), row.get("subCategory"),
        row.get("articleType"), row.get("baseColour"), row.get("season"),
        int(year) if year is not None else None, row.get("usage"),
        row["productDisplayName"], image, sniff_mime(image), row.get("source", source),
    ]


def upsert_products(conn: psycopg.Connection, rows: Iterable[dict], *, source: str = "unknown",
                    commit: bool = True) -> int:
    """Binary-COPY rows into a staging table, then upsert by id in one statement."""
    cols = [c for c, _ in PRODUCT_COLUMNS.values()]
    types = [t for _, t in PRODUCT_COLUMNS.values()]
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS products_staging "
            "(LIKE products INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        cur.execute("TRUNCATE products_staging")
        n = 0
        with cur.copy(
            f"COPY products_staging ({', '.join(cols)}) FROM STDIN WITH (FORMAT BINARY)"
        ) as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(_row_values(row, source))
                n += 1
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c != "id")
        cur.execute(
            f"""
            INSERT INTO products ({', '.join(cols)})
            SELECT DISTINCT ON (id) {', '.join(cols)} FROM products_staging ORDER BY id
            ON CONFLICT (id) DO UPDATE SET {updates}, updated_at = now()
            """
        )
    if commit:
        conn.commit()
    return n


def get_product(conn: psycopg.Connection, product_id: int) -> dict | None:
    row = conn.execute(
        """
        SELECT id, product_display_name, gender, master_category, sub_category, article_type,
               base_colour, season, year, usage, image IS NOT NULL AS has_image
        FROM products WHERE id = %s
        """,
        (product_id,),
    ).fetchone()
    if row is None:
        return None
    keys = ["id", "product_display_name", "gender", "master_category", "sub_category",
            "article_type", "base_colour", "season", "year", "usage", "has_image"]
    return dict(zip(keys, row))


def get_image(conn: psycopg.Connection, product_id: int) -> tuple[bytes, str] | None:
    row = conn.execute(
        "SELECT image, coalesce(image_mime, 'application/octet-stream') FROM products "
        "WHERE id = %s AND image IS NOT NULL",
        (product_id,),
    ).fetchone()
    return (bytes(row[0]), row[1]) if row else None


def iter_products(conn: psycopg.Connection, ids: list[int] | None = None,
                  with_image: bool = False) -> Iterator[dict]:
    """Stream products (dataset field names), optionally only ``ids``."""
    img = ", image" if with_image else ""
    sql = (
        "SELECT id, gender, master_category, sub_category, article_type, base_colour, season, "
        f"year, usage, product_display_name{img} FROM products"
    )
    params: tuple = ()
    if ids is not None:
        sql += " WHERE id = ANY(%s)"
        params = (ids,)
    sql += " ORDER BY id"
    names = ["id", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
             "season", "year", "usage", "productDisplayName"] + (["image"] if with_image else [])
    with conn.cursor(name="iter_products") if not conn.autocommit else conn.cursor() as cur:
        cur.execute(sql, params)
        for row in cur:
            d = dict(zip(names, row))
            if with_image and d["image"] is not None:
                d["image"] = bytes(d["image"])
            yield d
