"""The incremental catalogue sync (services.pipeline.sync) against a live index built by the real
pipeline with the real offline encoders, in this module's own database.

Each sync test takes the live version's current products as its catalogue (so the tests hold in
any order), writes a local Parquet copy with products renamed, re-described, re-photographed,
added and dropped, syncs it, and checks what was re-encoded (the report's ids AND the stored
vectors), what searches see, the row counts, and the record in ``catalog_syncs``.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from api_harness import ServerThread
from conftest import drop_airflow_db, scratch_db
from PIL import Image, ImageOps

from services.catalog.schema import content_hash
from services.catalog.shards import write_parquet

SIZE = 400  # the 100 changed + 10 removed, on a small index
N_CHANGED = 100  # a third renamed, a third re-described (metadata), a third re-photographed
N_REMOVED = 10
N_NEW = 5
NEW_COLOUR = "Lavender Haze"
# New names: each renamed product gets its own (brand, style, garment), so its name is unique.
_BRANDS = ["Zanzibar", "Quetzal", "Marmalade", "Obsidian", "Tundra", "Saffron", "Juniper"]
_STYLES = ["Ultramarine", "Corduroy", "Paisley", "Herringbone", "Seersucker"]
_GARMENTS = [
    "Poncho",
    "Kimono",
    "Parka",
    "Tuxedo",
    "Sarong",
    "Cardigan",
]  # a colour no offline product has: a filter finds exactly these


@pytest.fixture(scope="module")
def built(settings):
    """The module's first live index: the offline catalogue of SIZE rows through run_reindex."""
    from services.pipeline.reindex import run_reindex

    report = run_reindex(source="offline", size=SIZE, shard_size=SIZE)
    assert report["status"] == "success", report.get("error")
    return report["version"]


@pytest.fixture
def live(built, conn):
    """The id of the version live now (a test may have swapped in another one)."""
    from services.store.index_versions import live_version

    version = live_version(conn)
    conn.commit()
    return version.id


def _current_catalogue(conn, version_id: int) -> list[dict]:
    """The live version's products as catalogue rows (dataset fields, photo bytes)."""
    from services.store.catalog_syncs import version_hashes
    from services.store.products import iter_products

    ids = sorted(version_hashes(conn, version_id))
    rows = list(iter_products(conn, ids=ids, with_image=True))
    conn.commit()
    return rows


def _other_photo(data: bytes) -> bytes:
    """The same garment, mirrored and inverted: another photo (other bytes, other vector)."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    out = io.BytesIO()
    ImageOps.invert(ImageOps.mirror(img)).save(out, "PNG")
    return out.getvalue()


def _edited_catalogue(
    rows: list[dict], tag: str, n_changed=N_CHANGED, n_removed=N_REMOVED, colour=NEW_COLOUR
):
    """``rows`` with ``n_changed`` products changed (name / metadata / photo, in turn),
    ``n_removed`` dropped and N_NEW added; returns (rows, changes)."""
    original, rows = rows, [dict(r) for r in rows]
    step = max(1, len(rows) // (n_changed + n_removed))
    picked = [r["id"] for r in rows[::step]][: n_changed + n_removed]
    changed_ids, removed_ids = picked[:n_changed], picked[n_changed:]
    by_id = {r["id"]: r for r in rows}
    renamed, recoloured, rephotographed = {}, [], []
    for i, pid in enumerate(changed_ids):
        row = by_id[pid]
        if i % 3 == 0:
            k = len(renamed)
            brand, style = _BRANDS[k % len(_BRANDS)], _STYLES[(k // len(_BRANDS)) % len(_STYLES)]
            garment = _GARMENTS[(k // (len(_BRANDS) * len(_STYLES))) % len(_GARMENTS)]
            row["productDisplayName"] = f"{brand} {tag} Men {style} {garment}"
            renamed[pid] = row["productDisplayName"]
        elif i % 3 == 1:
            row["baseColour"] = colour
            row["season"] = "Winter" if row["season"] != "Winter" else "Summer"
            recoloured.append(pid)
        else:
            row["image"] = _other_photo(row["image"])
            rephotographed.append(pid)
    top = max(by_id)
    new_rows = []
    for k in range(N_NEW):
        new = dict(
            original[k], id=top + 1 + k, productDisplayName=f"Brandnew {tag} Women Scarf {k}"
        )
        new_rows.append(new)
    kept = [r for r in rows if r["id"] not in set(removed_ids)] + new_rows
    return kept, {
        "changed": sorted(changed_ids),
        "removed": sorted(removed_ids),
        "new": sorted(r["id"] for r in new_rows),
        "renamed": renamed,
        "recoloured": recoloured,
        "rephotographed": rephotographed,
    }


def _dense(conn, version_id: int) -> dict[int, np.ndarray]:
    from services.search import dense_vectors
    from services.store.index_versions import get_version

    out = dense_vectors(conn, get_version(conn, version_id))
    conn.commit()
    return out


def _search(conn, text: str, version_id: int, filters=None):
    from services.encoders.clip import load_clip
    from services.encoders.splade import load_splade
    from services.search import Filters, SearchQuery, fused_search
    from services.store.index_versions import get_version

    version = get_version(conn, version_id)
    qd = load_clip(version.dense_model).encode_texts([text])[0]
    qs = load_splade(version.sparse_model).encode([text])[0]
    query = SearchQuery(dense=qd, sparse=qs, k=10, filters=Filters.from_mapping(filters or {}))
    hits = fused_search(conn, query, version)
    conn.commit()
    return hits


def test_sync_without_a_live_version_refuses_as_no_live_version(empty_db):
    """A fresh install: nothing to sync into. The hourly DAG turns this one refusal into a
    skip (not a failed run every hour); it is recorded like any refusal."""
    from services.pipeline.sync import NoLiveVersion, SyncRefused, sync_catalog
    from services.store.catalog_syncs import recent_syncs

    with pytest.raises(NoLiveVersion, match="no index version is live"):
        sync_catalog("offline", 50)
    assert issubclass(NoLiveVersion, SyncRefused)
    assert recent_syncs(empty_db, 1)[0]["status"] == "refused"


# --- the content hash ------------------------------------------------------------------------
def test_content_hash_is_the_same_from_the_file_and_from_the_database(empty_db):
    from services.store.products import iter_products, upsert_products

    row = {
        "id": 7,
        "gender": "Men",
        "masterCategory": "Apparel",
        "subCategory": "Topwear",
        "articleType": "Shirts",
        "baseColour": None,
        "season": "Summer",
        "year": 2012,
        "usage": "Casual",
        "productDisplayName": "Peter England Men Blue Shirt",
        "image": b"\x89PNG\r\n\x1a\nnot really",
    }
    h = content_hash(row)
    assert h == content_hash({**row, "image": {"bytes": row["image"], "path": None}})
    upsert_products(empty_db, [row], source="test")
    (stored,) = iter_products(empty_db, with_image=True)
    assert content_hash(stored) == h
    assert empty_db.execute("SELECT content_hash FROM products").fetchone()[0] == h
    # every dataset field counts; None differs from "" and from a missing photo
    for change in (
        {"productDisplayName": "Peter England Men Blue Shirts"},
        {"baseColour": ""},
        {"year": 2013},
        {"year": None},
        {"image": row["image"] + b"\x00"},
        {"image": None},
        {"id": 8},
        {"usage": "Formal"},
    ):
        assert content_hash({**row, **change}) != h, change


# --- the sync --------------------------------------------------------------------------------
def test_sync_reencodes_exactly_the_changed_and_new_products(settings, live, conn, tmp_path):
    from services.pipeline.sync import format_report, sync_catalog
    from services.store.catalog_syncs import get_sync
    from services.store.index_versions import get_version, row_count

    base = _current_catalogue(conn, live)
    rows, ch = _edited_catalogue(base, "a")
    source = write_parquet(rows, tmp_path / "catalogue.parquet")
    before = _dense(conn, live)

    report = sync_catalog(str(source))

    assert report["status"] == "succeeded", report
    assert report["read"] == report["valid"] == len(rows) and report["rejected"] == 0
    assert report["changed_ids"] == ch["changed"]
    assert report["new_ids"] == ch["new"]
    assert report["removed_ids"] == ch["removed"]
    assert report["encoded_ids"] == sorted(ch["changed"] + ch["new"])
    assert report["encoded"] == N_CHANGED + N_NEW
    assert report["unchanged"] == len(base) - N_CHANGED - N_REMOVED
    assert set(report["seconds"]) >= {"read_hash", "encode", "write", "checks", "total"}
    assert report["checks"]["rows"] == len(rows) and not report["checks"]["problems"]
    assert "changed" in format_report(report)

    # the stored vectors: re-encoded exactly where the product changed, untouched elsewhere
    after = _dense(conn, live)
    assert set(after) == set(before) - set(ch["removed"]) | set(ch["new"])
    touched = {
        pid for pid in set(before) & set(after) if not np.array_equal(before[pid], after[pid])
    }
    renamed_or_photographed = set(ch["renamed"]) | set(ch["rephotographed"])
    assert renamed_or_photographed <= touched <= set(ch["changed"])

    # removed: gone from the live table and from products; row counts follow
    assert row_count(conn, live) == len(rows) == get_version(conn, live).row_count
    gone = conn.execute("SELECT count(*) FROM products WHERE id = ANY(%s)", (ch["removed"],))
    assert gone.fetchone()[0] == 0
    # the live table's filter columns and hashes follow products
    stale = conn.execute(
        f"SELECT count(*) FROM index_v{int(live)} e JOIN products p ON p.id = e.product_id "
        "WHERE e.base_colour IS DISTINCT FROM p.base_colour OR e.season IS DISTINCT FROM p.season "
        "OR e.content_hash <> p.content_hash"  # NULL: loaded before hashes, p's is used
    ).fetchone()[0]
    assert stale == 0
    hashed = conn.execute(
        f"SELECT count(*) FROM index_v{int(live)} e JOIN products p ON p.id = e.product_id "
        "WHERE e.product_id = ANY(%s) AND e.content_hash = p.content_hash",
        (report["encoded_ids"],),
    ).fetchone()[0]
    assert hashed == report["encoded"]

    # searches see the change: a renamed product by its new name, the new colour by filter
    pid, name = next(iter(ch["renamed"].items()))
    hits = _search(conn, name, live)
    assert any(h.product_id == pid and h.product_display_name == name for h in hits)
    hits = _search(conn, "shirt", live, {"baseColour": NEW_COLOUR})
    found = {h.product_id for h in hits}
    assert found and found <= set(ch["recoloured"])

    record = get_sync(conn, report["sync_id"])
    conn.commit()
    assert record["status"] == "succeeded" and record["index_version_id"] == live
    assert (record["changed"], record["removed"], record["new"]) == (N_CHANGED, N_REMOVED, N_NEW)
    assert record["report"]["encoded_ids"] == report["encoded_ids"]

    # a second sync of the same source changes and encodes nothing
    again = sync_catalog(str(source))
    assert again["status"] == "succeeded"
    assert again["encoded"] == again["new"] == again["changed"] == again["removed"] == 0
    assert again["encoded_ids"] == [] and again["unchanged"] == len(rows)
    assert _dense(conn, live).keys() == after.keys()


def test_removed_products_leave_the_previous_version_too(settings, live, conn, tmp_path):
    """Deletes are real: a product gone from the source leaves every version's table (a
    rollback must not serve it again), and each version's row_count follows."""
    from services.pipeline.reindex import run_reindex
    from services.pipeline.sync import sync_catalog
    from services.store.index_versions import get_version, live_version, row_count

    report = run_reindex(source="offline", size=SIZE, shard_size=SIZE)
    assert report["status"] == "success", report.get("error")
    current, previous = live_version(conn).id, report["swap"]["previous"]
    conn.commit()
    assert previous is not None
    rows = _current_catalogue(conn, current)
    in_previous = {
        r[0] for r in conn.execute(f"SELECT product_id FROM index_v{int(previous)}").fetchall()
    }
    gone = [r["id"] for r in rows if r["id"] in in_previous][:4]
    source = write_parquet([r for r in rows if r["id"] not in gone], tmp_path / "fewer.parquet")
    before_previous = row_count(conn, previous)
    conn.commit()

    out = sync_catalog(str(source))
    assert out["removed_ids"] == sorted(gone) and out["encoded"] == 0
    assert row_count(conn, previous) == before_previous - 4
    assert get_version(conn, previous).row_count == before_previous - 4
    assert get_version(conn, current).row_count == len(rows) - 4
    left = conn.execute(
        f"SELECT count(*) FROM index_v{int(previous)} WHERE product_id = ANY(%s)", (gone,)
    ).fetchone()[0]
    conn.commit()
    assert left == 0
    assert out["row_counts"][previous] == {"before": before_previous, "after": before_previous - 4}


def test_rows_stored_before_hashes_get_theirs_from_the_database(settings, live, conn, tmp_path):
    """Products and version rows without a hash (loaded before migration 0005): the sync
    computes the hashes from the stored rows, stores them, and re-encodes nothing."""
    from services.pipeline.sync import sync_catalog

    rows = _current_catalogue(conn, live)
    conn.execute("UPDATE products SET content_hash = NULL")
    conn.execute(f"UPDATE index_v{int(live)} SET content_hash = NULL")
    conn.commit()
    source = write_parquet(rows, tmp_path / "same.parquet")
    report = sync_catalog(str(source))
    assert report["hashes_backfilled"] == len(rows)
    assert report["encoded"] == 0 and report["unchanged"] == len(rows)
    missing = conn.execute(
        "SELECT count(*) FROM products WHERE content_hash IS NULL AND id = ANY(%s)",
        ([r["id"] for r in rows],),
    ).fetchone()[0]
    conn.commit()
    assert missing == 0


def test_sync_refuses_when_the_configured_models_are_not_the_live_ones(
    settings, live, conn, monkeypatch
):
    from services.config import get_settings
    from services.pipeline.sync import SyncRefused, sync_catalog
    from services.store.catalog_syncs import recent_syncs
    from services.store.index_versions import get_version

    version = get_version(conn, live)
    other = (
        "fashion-clip-offline"
        if version.dense_model != "fashion-clip-offline"
        else ("fashion-lit-minilm")
    )
    monkeypatch.setenv("FASHION_DENSE_MODEL", other)
    get_settings.cache_clear()
    with pytest.raises(SyncRefused, match="full rebuild"):
        sync_catalog("offline", size=SIZE)
    last = recent_syncs(conn, 1)[0]
    conn.commit()
    assert last["status"] == "refused" and "fashion-search index" in last["error"]
    assert get_version(conn, live).row_count == version.row_count


def test_sync_refuses_to_remove_most_of_the_catalogue(settings, live, conn, tmp_path):
    from services.pipeline.sync import SyncRefused, sync_catalog
    from services.store.index_versions import row_count

    rows = _current_catalogue(conn, live)
    source = write_parquet(rows[:20], tmp_path / "truncated.parquet")
    with pytest.raises(SyncRefused, match="would remove"):
        sync_catalog(str(source))
    assert row_count(conn, live) == len(rows)
    conn.commit()


def test_a_sync_that_fails_its_checks_changes_nothing(settings, live, conn, tmp_path, monkeypatch):
    """The checks run inside the sync's transaction: a failure rolls back products, vectors
    and deletes together."""
    from services.pipeline import sync
    from services.pipeline.checks import CheckFailed
    from services.store.catalog_syncs import recent_syncs

    base = _current_catalogue(conn, live)
    rows, _ = _edited_catalogue(base, "rolled-back", n_changed=6, n_removed=2)
    source = write_parquet(rows, tmp_path / "c.parquet")
    before = _dense(conn, live)
    # every product row as it was (an earlier test's sync may have left products that the
    # live version does not hold, with the ids this edit gives its new ones)
    stored = dict(conn.execute("SELECT id, product_display_name FROM products").fetchall())
    conn.commit()
    monkeypatch.setattr(sync, "search_checks", lambda *a, **k: ({}, ["broken on purpose"]))
    with pytest.raises(CheckFailed, match="broken on purpose"):
        sync.sync_catalog(str(source))
    assert _dense(conn, live).keys() == before.keys()
    assert all(np.array_equal(before[p], v) for p, v in _dense(conn, live).items())
    names = dict(conn.execute("SELECT id, product_display_name FROM products").fetchall())
    conn.commit()
    assert all(names[r["id"]] == r["productDisplayName"] for r in base)
    assert names == stored  # nothing added, renamed or removed
    assert recent_syncs(conn, 1)[0]["status"] == "failed"
    conn.commit()


def test_no_search_fails_while_a_sync_runs(settings, live, conn, tmp_path, monkeypatch):
    """A real HTTP API serves searches from another thread during the whole sync: every
    request answers 200, and afterwards the API finds a renamed product by its new name and
    (once its facet cache expires) lists the new colour among the facets."""
    from services.api import search_service
    from services.api.app import create_app
    from services.pipeline.sync import sync_catalog

    base = _current_catalogue(conn, live)
    colour = "Concurrent Teal"  # this test's own: other tests of the module sync theirs
    rows, ch = _edited_catalogue(base, "b", n_changed=30, n_removed=3, colour=colour)
    source = write_parquet(rows, tmp_path / "concurrent.parquet")
    queries = [r["productDisplayName"] for r in base[:8]] + ["black shirt", "red dress"]
    srv = ServerThread(create_app(settings)).start()
    statuses: list[int] = []
    errors: list[str] = []
    done, first = threading.Event(), threading.Event()

    def load() -> None:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            i = 0
            while not done.is_set():
                try:
                    r = client.post("/v1/search", json={"text": queries[i % len(queries)], "k": 10})
                    statuses.append(r.status_code)
                    if r.status_code != 200:
                        errors.append(r.text[:300])
                except httpx.HTTPError as exc:
                    statuses.append(0)
                    errors.append(repr(exc))
                first.set()
                i += 1

    try:
        srv.wait_ready()
        colours = httpx.get(srv.url + "/v1/facets", timeout=60).json()["values"]["baseColour"]
        assert colour not in colours  # and now cached for this version
        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        assert first.wait(120), "no search answered before the sync"
        during_start = len(statuses)
        report = sync_catalog(str(source))
        during = len(statuses) - during_start
        done.set()
        thread.join(60)
        assert report["status"] == "succeeded" and report["encoded"] == 30 + N_NEW
        assert during >= 1, "no search ran while the sync did"
        assert errors == [] and set(statuses) == {200}, errors[:3]
        pid, name = next(iter(ch["renamed"].items()))
        r = httpx.post(srv.url + "/v1/search", json={"text": name, "k": 10}, timeout=60)
        assert r.status_code == 200
        assert any(h["id"] == pid and h["name"] == name for h in r.json()["results"])
        monkeypatch.setattr(search_service, "FACETS_TTL_S", 0.0)  # the cache has expired
        colours = httpx.get(srv.url + "/v1/facets", timeout=60).json()["values"]["baseColour"]
        assert colour in colours
    finally:
        done.set()
        srv.stop()


# --- the migration ---------------------------------------------------------------------------
@pytest.fixture
def database_at_0004(settings):
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs the embedded server to create a scratch database")
    from services.store import migrate

    with scratch_db(settings, "fashion_0004") as url:
        migrate.upgrade("0004", url)
        yield url


def test_migration_0005_adds_hashes_and_the_sync_record(database_at_0004):
    from services.store import migrate

    url = database_at_0004
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO products (id, product_display_name) VALUES (1, 'Nike Men Cap')")
        c.execute("CREATE TABLE index_v3 (product_id bigint PRIMARY KEY, gender text)")
        c.execute("INSERT INTO index_v3 VALUES (1, 'Men')")
    migrate.upgrade("head", url)
    with psycopg.connect(url) as c:
        assert c.execute("SELECT content_hash FROM products").fetchone() == (None,)
        assert c.execute("SELECT content_hash FROM index_v3").fetchone() == (None,)
        assert c.execute("SELECT count(*) FROM catalog_syncs").fetchone() == (0,)
    migrate.downgrade("0004", url)
    with psycopg.connect(url) as c:
        cols = c.execute(
            "SELECT count(*) FROM information_schema.columns WHERE column_name = 'content_hash'"
        ).fetchone()[0]
        assert cols == 0
        assert c.execute("SELECT to_regclass('catalog_syncs')").fetchone() == (None,)


# --- the DAG ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_sync_dag_runs_green(settings, live, conn, tmp_path):
    from dag_runner import dag_test

    base = _current_catalogue(conn, live)
    rows, ch = _edited_catalogue(base, "dag", n_changed=3, n_removed=1)
    source = write_parquet(rows, tmp_path / "dag.parquet")
    dbname = f"airflow_sync_test_{os.getpid()}"
    try:
        result = dag_test(
            {"source": str(source)},
            settings,
            home=tmp_path / "airflow",
            dbname=dbname,
            dag_file=Path(__file__).resolve().parent.parent / "dags" / "fashion_catalog_sync.py",
        )
    finally:
        drop_airflow_db(settings, dbname)
    assert result["state"] == "success", result["output"][-4000:]
    assert result["tasks"] == {"sync": "success"}
    from services.store.catalog_syncs import recent_syncs

    last = recent_syncs(conn, 1)[0]
    conn.commit()
    assert last["status"] == "succeeded" and last["encoded"] == 3 + N_NEW
    assert last["report"]["removed_ids"] == ch["removed"]
