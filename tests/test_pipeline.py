"""The indexing pipeline without Airflow: stages on a tiny offline catalogue, against the
real test PostgreSQL and the real (offline) encoders.

Covers: an end-to-end run whose swapped-in version answers fused_search; idempotent
reloads; a failure mid-run that leaves the previous live version serving and the new one
'failed'; a re-run that finishes (reusing encoded shards); validation rejects in the report;
the build lock refusing a second concurrent run.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

SIZE = 200
SHARD = 80


def _dense_model() -> str:
    """The trained offline CLIP. Its checkpoint ships with the repo: a missing one is a broken
    checkout and fails here, never a silent switch to an untrained model."""
    from services.encoders.registry import get_spec, is_available

    assert is_available(get_spec("fashion-clip-offline")), (
        "fashion-clip-offline's checkpoint is missing (services/encoders/weights)"
    )
    return "fashion-clip-offline"


@pytest.fixture(scope="module")
def dense_model():
    return _dense_model()


@pytest.fixture
def fresh(empty_db):
    return empty_db


def _search_name(conn, name: str, dense_model: str):
    from services.encoders.clip import load_clip
    from services.encoders.splade import load_splade
    from services.search import SearchQuery, fused_search

    qd = load_clip(dense_model).encode_texts([name])[0]
    qs = load_splade().encode([name])[0]
    hits = fused_search(conn, SearchQuery(dense=qd, sparse=qs, k=10))
    conn.commit()  # end the read transaction: it would block retiring that version's table
    return hits


def test_run_reindex_end_to_end_then_search(fresh, dense_model):
    from services.pipeline.reindex import format_timings, run_reindex
    from services.store.index_versions import live_version

    report = run_reindex(source="offline", size=SIZE, shard_size=SHARD, dense_model=dense_model)
    assert report["status"] == "success"
    assert report["validation"]["valid"] == SIZE
    assert report["validation"]["shards"] == 3
    live = live_version(fresh)
    assert live is not None and live.id == report["version"] and live.row_count == SIZE
    assert report["checks"]["recall_at_10_fast_vs_exact"] >= 0.9
    # each HNSW side's recall of its exact top n, measured at build for the certificate
    recall = report["checks"]["hnsw_recall"]
    assert recall["n"] == 150 and recall["queries"] == report["checks"]["recall_queries"]
    assert 0.5 < recall["dense"] <= 1.0 and 0.5 < recall["sparse"] <= 1.0, recall
    assert live.report["checks"]["hnsw_recall"] == recall
    table = format_timings(report)
    assert "encode photos + names (CLIP)" in table and "TOTAL" in table
    name = fresh.execute(
        "SELECT product_display_name, id FROM products ORDER BY id LIMIT 1"
    ).fetchone()
    hits = _search_name(fresh, name[0], dense_model)
    assert len(hits) == 10
    assert any(h.product_display_name == name[0] for h in hits)


def test_load_shard_twice_is_idempotent(fresh, dense_model):
    from services.pipeline import stages
    from services.store.index_versions import row_count

    paths = stages.fetch_catalog("offline", SIZE, 60)
    out = stages.validate_store_and_shard(paths, 30, "test-idempotent", limit=60)
    vid = stages.create_building_version(dense_model, None, run_key="test-idempotent")
    shard = out["shards"][0]
    assert stages.encode_dense_shard(shard, dense_model) == {
        "shard": shard,
        "rows": 30,
        "reused": False,
    }
    assert stages.encode_sparse_shard(shard, None)["reused"] is False
    assert stages.load_shard_into_version(vid, shard) == 30
    assert stages.load_shard_into_version(vid, shard) == 30
    assert row_count(fresh, vid) == 30
    # a retried encode reuses the stored vectors: the payload row is not rewritten
    stamp = "SELECT created_at FROM encoded_shards WHERE kind = 'dense' AND model = %s"
    before = fresh.execute(stamp, (dense_model,)).fetchall()
    fresh.commit()
    assert stages.encode_dense_shard(shard, dense_model)["reused"] is True
    assert fresh.execute(stamp, (dense_model,)).fetchall() == before
    stages.mark_version_failed(vid, "test done")


def test_hand_offs_live_in_the_database_and_old_runs_are_pruned(fresh, dense_model):
    """Shards and encoded vectors are rows (no worker's disk); retiring prunes those of runs
    older than the newest three, and only the payloads no kept shard references."""
    from services.pipeline import stages
    from services.store import shard_store

    paths = stages.fetch_catalog("offline", SIZE, 40)
    refs = {}
    for run in range(5):
        limit = 20 if run == 0 else 40  # run 0's shard has other content than the rest
        refs[run] = stages.validate_store_and_shard(paths, 20, f"run-{run}", limit=limit)
    assert [r["report"]["shards"] for r in refs.values()] == [1, 2, 2, 2, 2]
    first = refs[0]["shards"][0]
    assert stages.encode_dense_shard(first, dense_model)["reused"] is False
    # the same products in a later run's shard: same fingerprint, so encoded once
    assert stages.encode_dense_shard(refs[1]["shards"][0], dense_model)["reused"] is True
    second = refs[4]["shards"][1]
    assert stages.encode_dense_shard(second, dense_model)["reused"] is False
    assert fresh.execute("SELECT count(*) FROM encoded_shards").fetchone()[0] == 2
    fresh.commit()
    assert stages.retire_old_versions() == []
    kept = fresh.execute("SELECT DISTINCT run_key FROM pipeline_shards ORDER BY 1").fetchall()
    assert [k[0] for k in kept] == ["run-2", "run-3", "run-4"]
    # run-0/run-1's first shard = run-2's first shard (same rows): its payload is kept
    assert fresh.execute("SELECT count(*) FROM encoded_shards").fetchone()[0] == 2
    with pytest.raises(LookupError, match="ingest"):
        stages.encode_dense_shard(refs[1]["shards"][1], dense_model)
    with pytest.raises(ValueError, match="shard ref"):
        shard_store.parse_ref("no-number")


def test_a_product_changed_since_ingest_fails_its_shard(fresh, dense_model):
    """A catalogue sync between a run's ingest and its encode or load (it rewrites products)
    must not leave vectors of one content under the hash of another: the shard fails."""
    from services.catalog.reader import iter_rows
    from services.pipeline import stages
    from services.store.products import upsert_products
    from services.store.shard_store import CatalogChanged

    paths = stages.fetch_catalog("offline", SIZE, 20)
    shard = stages.validate_store_and_shard(paths, 20, "test-changed", limit=20)["shards"][0]
    vid = stages.create_building_version(dense_model, None, run_key="test-changed")
    stages.encode_dense_shard(shard, dense_model)
    stages.encode_sparse_shard(shard, None)
    row = next(iter_rows([Path(p) for p in paths], limit=1))
    upsert_products(fresh, [{**row, "productDisplayName": "Renamed By A Sync"}], source="sync")
    with pytest.raises(CatalogChanged, match=f"id {row['id']}"):
        stages.load_shard_into_version(vid, shard)
    # a shard not encoded yet (other rows: another fingerprint) reads its products to encode
    other = stages.validate_store_and_shard(paths, 10, "test-changed-2", limit=10)["shards"][0]
    upsert_products(fresh, [{**row, "productDisplayName": "Renamed Again"}], source="sync")
    with pytest.raises(CatalogChanged, match="sync"):
        stages.encode_dense_shard(other, dense_model)
    stages.mark_version_failed(vid, "test done")


def test_failure_keeps_live_version_and_rerun_finishes(fresh, dense_model, monkeypatch):
    from services.config import get_settings
    from services.pipeline import stages
    from services.pipeline.reindex import run_reindex
    from services.store.index_versions import get_version, list_versions, live_version

    first = run_reindex(
        source="offline", size=SIZE, limit=120, shard_size=SHARD, dense_model=dense_model
    )
    live_before = live_version(fresh)
    fresh.commit()
    assert live_before.id == first["version"]

    real_load = stages.load_shard_into_version
    calls = {"n": 0}

    def flaky_load(version_id, shard):
        calls["n"] += 1
        if calls["n"] == 2:  # the second shard's encoded vectors vanished
            with psycopg.connect(get_settings().database_url, autocommit=True) as conn:
                conn.execute(
                    "DELETE FROM encoded_shards WHERE kind = 'dense' AND fingerprint = "
                    "(SELECT fingerprint FROM pipeline_shards WHERE run_key || '#' || shard = %s)",
                    (shard,),
                )
        return real_load(version_id, shard)

    monkeypatch.setattr(stages, "load_shard_into_version", flaky_load)
    with pytest.raises(LookupError, match="re-run its encode task"):
        run_reindex(source="offline", size=SIZE, shard_size=SHARD, dense_model=dense_model)
    monkeypatch.setattr(stages, "load_shard_into_version", real_load)

    fresh.rollback()
    failed = max(v.id for v in list_versions(fresh))
    assert get_version(fresh, failed).status == "failed"
    live = live_version(fresh)
    assert live.id == live_before.id  # still serving the previous version
    hits = _search_name(fresh, "shirt", dense_model)
    assert hits and all(h.product_id for h in hits)

    again = run_reindex(source="offline", size=SIZE, shard_size=SHARD, dense_model=dense_model)
    assert again["status"] == "success"
    assert live_version(fresh).id == again["version"] != live_before.id
    assert get_version(fresh, live_before.id).status == "previous"


def test_index_builds_use_the_configured_build_memory_and_dense_graph(
    fresh, dense_model, monkeypatch
):
    """FASHION_BUILD_MEMORY is the maintenance_work_mem the HNSW builds ran with (recorded in
    the version's params from the build session itself); FASHION_DENSE_HNSW_M and
    _EF_CONSTRUCTION are the dense graph's options (read back from the built index), the sparse
    graph keeps the defaults; a malformed size or graph is refused before any build."""
    from services.config import Settings, get_settings
    from services.pipeline import stages
    from services.store import hnsw
    from services.store.index_versions import get_version

    with pytest.raises(ValueError, match="FASHION_BUILD_MEMORY"):
        Settings.from_env({"FASHION_BUILD_MEMORY": "lots"})
    assert Settings.from_env({}).build_memory == "1GB"
    for bad in (
        {"FASHION_DENSE_HNSW_M": "1"},
        {"FASHION_DENSE_HNSW_M": "many"},
        {"FASHION_DENSE_HNSW_M": "32", "FASHION_DENSE_HNSW_EF_CONSTRUCTION": "40"},
        {"FASHION_DENSE_HNSW_EF_CONSTRUCTION": "1001"},
    ):
        with pytest.raises(ValueError, match="FASHION_DENSE_HNSW_"):
            Settings.from_env(bad)
    assert Settings.from_env({}).dense_graph == (hnsw.HNSW_M, hnsw.HNSW_EF_CONSTRUCTION)
    monkeypatch.setenv("FASHION_BUILD_MEMORY", "96MB")
    monkeypatch.setenv("FASHION_DENSE_HNSW_M", "8")
    monkeypatch.setenv("FASHION_DENSE_HNSW_EF_CONSTRUCTION", "40")
    get_settings.cache_clear()
    try:
        paths = stages.fetch_catalog("offline", SIZE, 20)
        shard = stages.validate_store_and_shard(paths, 20, "test-memory", limit=20)["shards"][0]
        vid = stages.create_building_version(dense_model, None, run_key="test-memory")
        stages.encode_dense_shard(shard, dense_model)
        stages.encode_sparse_shard(shard, None)
        stages.load_shard_into_version(vid, shard)
        stages.build_version_indexes(vid)
        params = get_version(fresh, vid).params
        assert params["maintenance_work_mem"] == "96MB"
        graph = {"m": hnsw.HNSW_M, "ef_construction": hnsw.HNSW_EF_CONSTRUCTION}
        assert params["hnsw"] == {"dense": {"m": 8, "ef_construction": 40}, "sparse": graph}
        stages.mark_version_failed(vid, "test done")
    finally:
        for name in (
            "FASHION_BUILD_MEMORY",
            "FASHION_DENSE_HNSW_M",
            "FASHION_DENSE_HNSW_EF_CONSTRUCTION",
        ):
            monkeypatch.delenv(name)
        get_settings.cache_clear()


def test_bad_model_name_fails_before_touching_anything(fresh):
    from services.pipeline.reindex import run_reindex
    from services.store.index_versions import list_versions

    with pytest.raises(LookupError, match="unknown model"):
        run_reindex(source="offline", size=SIZE, dense_model="no-such-clip")
    assert list_versions(fresh) == []


def test_missing_source_is_a_clear_error(fresh, tmp_path):
    from services.pipeline import stages

    with pytest.raises((FileNotFoundError, ValueError)):
        stages.fetch_catalog(str(tmp_path / "nowhere.parquet"))


def test_validation_rejects_are_counted(fresh, tmp_path):
    from services.catalog.reader import iter_rows
    from services.catalog.shards import write_parquet
    from services.pipeline import stages

    rows = list(iter_rows([Path(p) for p in stages.fetch_catalog("offline", SIZE, 20)], limit=20))
    rows[3]["productDisplayName"] = " "
    rows[5]["id"] = rows[4]["id"]
    rows[7]["image"] = b"not an image"
    src = write_parquet(rows, tmp_path / "bad.parquet")
    out = stages.validate_store_and_shard([str(src)], 10, "test-rejects", source="local")
    rep = out["report"]
    assert rep["read"] == 20 and rep["valid"] == 17 and rep["rejected"] == 3
    assert rep["rejected_by_reason"] == {"empty name": 1, "duplicate id": 1, "undecodable image": 1}
    assert len(out["shards"]) == 2


def test_corrupt_parquet_is_reported_with_its_name(fresh, tmp_path):
    from services.catalog.errors import CatalogError
    from services.pipeline import stages

    bad = tmp_path / "corrupt.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(CatalogError, match="corrupt.parquet"):
        stages.validate_store_and_shard([str(bad)], 10, "test-corrupt")


def test_second_run_refuses_while_the_build_lock_is_held(fresh, dense_model):
    import psycopg

    from services.pipeline import run_lock
    from services.pipeline.reindex import run_reindex

    other = psycopg.connect(fresh.info.dsn, autocommit=True)
    try:
        other.execute("SELECT pg_advisory_lock(hashtext(%s))", (run_lock.BUILD_LOCK_NAME,))
        with pytest.raises(run_lock.BuildLockBusy, match="another indexing run"):
            run_reindex(
                source="offline", size=SIZE, limit=40, shard_size=20, dense_model=dense_model
            )
    finally:
        other.close()
