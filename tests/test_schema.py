"""The product schema table (services.catalog.schema) and what derives from it, shown by `brand`."""

from __future__ import annotations

import dataclasses
import os

import httpx
import msgspec
import psycopg
import pytest
from api_harness import ServerThread
from conftest import scratch_db
from psycopg.conninfo import conninfo_to_dict

from services.api.app import create_app
from services.api.schemas import ProductMetadata
from services.catalog import offline
from services.catalog.schema import (
    CATALOG_ARROW_SCHEMA,
    DATASET_COLUMNS,
    FACET_FIELDS,
    FIELDS,
    FILTER_FIELDS,
    METADATA_FIELDS,
    brand_from_name,
    filters_doc,
)
from services.search import Filters
from services.store import migrate, products

REAL_DATASET_COLUMNS = (
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
    "image",
)


@pytest.mark.parametrize(
    "name, brand",
    [
        ("Turtle Check Men Navy Blue Shirt", "Turtle Check"),
        ("Peter England Men Party Blue Jeans", "Peter England"),
        ("Titan Women Silver Watch", "Titan"),
        ("Gini and Jony Girls Pink Top", "Gini and Jony"),
        ("Inkfruit Mens Chain Reaction T-shirt", "Inkfruit"),
        ("United Colors of Benetton Kids Boys Blue Tshirt", "United Colors of Benetton Kids"),
        ("Puma Unisex Black Cap", "Puma"),
        ("Men Black Watch", None),  # nothing before the gender word
        ("Black leather belt", None),  # no gender word
        ("", None),
        (None, None),
    ],
)
def test_brand_is_read_from_the_display_name(name, brand):
    assert brand_from_name(name) == brand


def test_offline_catalogue_names_give_back_their_brand():
    known = {b for brands in offline._BRANDS.values() for b in brands} | set(offline._KIDS_BRANDS)
    rows = [offline.synthetic_metadata(i, i % 10, seed=3) for i in range(400)]
    found = [brand_from_name(r["productDisplayName"]) for r in rows]
    assert all(b in known for b in found), {b for b in found if b not in known}
    assert len(set(found)) > 10


def test_every_derived_schema_follows_the_table():
    assert DATASET_COLUMNS == REAL_DATASET_COLUMNS  # the real dataset's columns, in its order
    assert CATALOG_ARROW_SCHEMA.names == list(REAL_DATASET_COLUMNS)
    assert "brand" not in CATALOG_ARROW_SCHEMA.names  # derived, never in the dataset files
    # metadata: the dataset's attributes (neither the id, the name nor the photo) + brand
    attributes = [c for c in REAL_DATASET_COLUMNS if c not in ("id", "productDisplayName", "image")]
    assert [f.name for f in METADATA_FIELDS] == [*attributes, "brand"]
    assert {f.name for f in FACET_FIELDS} <= {f.name for f in FILTER_FIELDS}
    # the API's metadata: attributes by column, JSON by dataset name
    meta = ProductMetadata(**{f.column: None for f in METADATA_FIELDS})
    assert list(msgspec.to_builtins(meta)) == [f.name for f in METADATA_FIELDS]
    doc = filters_doc()
    assert all(f.name in doc for f in FILTER_FIELDS if f.filter == "any")
    assert "year_min" in doc and "year_max" in doc
    # filters accept either spelling of every value filter
    f = Filters.from_mapping({"brand": "Nike", "base_colour": ["Red"], "yearMax": 2015})
    assert dict(f.values) == {"base_colour": ("Red",), "brand": ("Nike",)}
    assert f.ranges == (("year", None, 2015),)
    assert len({f.column for f in FIELDS}) == len(FIELDS) == len({f.name for f in FIELDS})


@pytest.fixture
def database_at_0003(settings):
    """A scratch database migrated to revision 0003 (before `brand`); its URL."""
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs the embedded server to create a scratch database")
    with scratch_db(settings, "fashion_0003") as url:
        migrate.upgrade("0003", url)
        yield url


def test_migration_0004_fills_brand_for_existing_products_and_versions(database_at_0003):
    """A database at 0003 with products and a built version table gains a filled, indexed
    `brand` column in both (the live version keeps serving without a re-index)."""
    url = database_at_0003
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO products (id, product_display_name) VALUES "
            "(1, 'Peter England Men Blue Shirt'), (2, 'Black belt')"
        )
        conn.execute("CREATE TABLE index_v7 (product_id bigint PRIMARY KEY, gender text)")
        conn.execute("INSERT INTO index_v7 VALUES (1, 'Men'), (2, NULL)")
    migrate.upgrade("head", url)
    with psycopg.connect(url) as conn:
        got = conn.execute("SELECT id, brand FROM products ORDER BY id").fetchall()
        assert got == [(1, "Peter England"), (2, None)]
        got = conn.execute("SELECT product_id, brand FROM index_v7 ORDER BY 1").fetchall()
        assert got == [(1, "Peter England"), (2, None)]
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'index_v7'"
        ).fetchall()
        assert ("index_v7_brand",) in indexes
    migrate.downgrade("0003", url)
    with psycopg.connect(url) as conn:
        cols = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name IN ('products', 'index_v7') AND column_name = 'brand'"
        ).fetchall()
        assert cols == []


def test_upsert_derives_brand_and_maps_rows_by_name(empty_db):
    rows = [
        {
            "id": 5,
            "productDisplayName": "Nike Women Running Shoes",
            "gender": "Women",
            "year": 2016,
            "image": None,
        },
        {"id": 6, "productDisplayName": "Plain scarf", "usage": "Casual"},
    ]
    assert products.upsert_products(empty_db, rows, source="test") == 2
    five = products.get_product(empty_db, 5)
    assert five["brand"] == "Nike" and five["gender"] == "Women" and five["year"] == 2016
    assert five["has_image"] is False and five["usage"] is None
    six = products.get_product(empty_db, 6)
    assert six["brand"] is None and six["usage"] == "Casual"
    streamed = {r["id"]: r for r in products.iter_products(empty_db)}
    assert streamed[5]["productDisplayName"] == "Nike Women Running Shoes"
    assert streamed[6]["usage"] == "Casual" and "brand" not in streamed[6]


def test_api_on_an_unmigrated_database_answers_503_and_says_migrate(settings, database_at_0003):
    """New code against a database still at 0003 (no brand column): a clear 503 naming the
    fix, and /readyz not ready, instead of a 500 on every request (found by bench_api)."""
    url = database_at_0003
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO products (id, product_display_name) VALUES (1, 'Nike Men Cap')")
    old = dataclasses.replace(settings, database_url_override=url)
    srv = ServerThread(create_app(old, load_models=False)).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            r = c.get("/v1/products/1")
            assert r.status_code == 503, r.text
            assert r.json()["error"] == "schema_mismatch" and "db migrate" in r.json()["detail"]
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["schema"].startswith("behind: the database is at 0003")
        migrate.upgrade("head", url)
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/v1/products/1").json()["metadata"]["brand"] == "Nike"
            assert c.get("/readyz").json()["checks"]["schema"] == f"ok: {migrate.head_revision()}"
    finally:
        srv.stop()


def test_db_status_on_an_unmigrated_database_says_migrate(settings, capsys):
    """`fashion-search db status` against an empty database (no schema yet):
    it says what to run and exits 1, instead of a traceback (UndefinedTable)."""
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs the embedded server to create a scratch database")
    from services.cli import main
    from services.config import get_settings

    previous = os.environ["FASHION_PG_DATABASE"]
    with scratch_db(settings, "fashion_empty") as url:
        os.environ["FASHION_PG_DATABASE"] = conninfo_to_dict(url)["dbname"]
        get_settings.cache_clear()
        try:
            assert main(["db", "status"]) == 1
        finally:
            os.environ["FASHION_PG_DATABASE"] = previous
            get_settings.cache_clear()
    out = capsys.readouterr().out
    assert "schema revision none (run: fashion-search db migrate)" in out
    assert "live index version" not in out
