"""Failures at the late stages of an index build, against the real PostgreSQL and the real stages
(issue #15, item 5): a failed check, a refused swap, a retire that cannot take its lock, two
swaps at once; and the SPLADE pruning cap.

Every test starts from an empty database, makes a live version with ``run_reindex`` on a small
offline catalogue, then builds another version stage by stage and breaks one stage.
"""

from __future__ import annotations

import threading
import time

import pytest

SIZE = 120


@pytest.fixture
def fresh(empty_db):
    return empty_db


@pytest.fixture
def live_id(fresh):
    """A live version built by the whole pipeline; its id."""
    from services.pipeline.reindex import run_reindex
    from services.store.index_versions import live_version

    report = run_reindex(source="offline", size=SIZE, shard_size=SIZE)
    assert report["status"] == "success", report.get("error")
    live = live_version(fresh)
    fresh.commit()
    assert live is not None and live.id == report["version"]
    return live.id


def _built_version(tmp_path, run_key: str, *, indexes: bool = True) -> tuple[int, int]:
    """A new version loaded (and indexed) stage by stage, still 'building': (id, valid rows)."""
    from services.pipeline import stages

    paths = stages.fetch_catalog("offline", SIZE)
    out = stages.validate_store_and_shard(paths, SIZE, run_key)
    vid = stages.create_building_version(run_key=run_key)
    for shard in out["shards"]:
        stages.encode_dense_shard(shard)
        stages.encode_sparse_shard(shard)
        stages.load_shard_into_version(vid, shard)
    if indexes:
        stages.build_version_indexes(vid)
    return vid, out["report"]["valid"]


def _status(conn, version_id: int) -> str:
    from services.store.index_versions import get_version

    status = get_version(conn, version_id).status
    conn.commit()
    return status


def _live_ids(conn) -> list[int]:
    ids = [r[0] for r in conn.execute("SELECT id FROM index_versions WHERE status = 'live'")]
    conn.commit()
    return ids


def _assert_serving(conn, version_id: int) -> None:
    """``version_id`` is the one live version and answers a fused search."""
    from services.encoders.clip import load_clip
    from services.encoders.splade import load_splade
    from services.search import SearchQuery, fused_search
    from services.store.index_versions import live_version

    assert _live_ids(conn) == [version_id]
    live = live_version(conn)
    name = conn.execute(
        f"SELECT p.product_display_name FROM {live.table} e JOIN products p ON p.id = e.product_id "
        "ORDER BY e.product_id LIMIT 1"
    ).fetchone()[0]
    dense = load_clip(live.dense_model).encode_texts([name])[0]
    sparse = load_splade(live.sparse_model).encode([name])[0]
    hits = fused_search(conn, SearchQuery(dense=dense, sparse=sparse, k=5))
    conn.commit()  # end the read transaction (it would hold a lock on the version's table)
    assert len(hits) == 5


def _table_exists(conn, version_id: int) -> bool:
    from services.store.index_versions import table_name

    found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table_name(version_id),)).fetchone()
    conn.commit()
    return found[0]


# --- check -----------------------------------------------------------------------------------------
def test_failed_check_keeps_the_live_version_and_the_new_one_out(fresh, live_id, tmp_path):
    from services.pipeline import checks, stages
    from services.store import index_versions as iv

    vid, valid = _built_version(tmp_path, "check-fails")
    with pytest.raises(checks.CheckFailed, match=rf"row count {valid} != {valid + 1}") as failed:
        checks.check_and_mark_ready(vid, valid + 1)
    assert _status(fresh, vid) == "building"  # the gate never marked it ready
    stages.mark_version_failed(vid, str(failed.value))

    assert _status(fresh, vid) == "failed"
    assert (
        "row count"
        in fresh.execute("SELECT error FROM index_versions WHERE id = %s", (vid,)).fetchone()[0]
    )
    fresh.commit()
    _assert_serving(fresh, live_id)
    # a failed version can never be swapped in afterwards
    with pytest.raises(ValueError, match="'failed'"):
        iv.swap_live(fresh, vid)
    _assert_serving(fresh, live_id)


# --- swap ------------------------------------------------------------------------------------------
def test_swap_of_an_unchecked_or_unindexed_version_is_refused(fresh, live_id, tmp_path):
    from services.pipeline import stages
    from services.store import index_versions as iv

    vid, _ = _built_version(tmp_path, "swap-fails", indexes=False)
    with pytest.raises(ValueError, match="'building'"):
        stages.swap_live(vid)
    _assert_serving(fresh, live_id)
    assert _status(fresh, vid) == "building"

    # marked ready by hand (skipping the checks), but without HNSW indexes: still refused
    iv.mark_ready(fresh, vid, {"note": "test: no indexes"})
    assert _status(fresh, vid) == "ready" and not iv.has_indexes(fresh, vid)
    fresh.commit()
    with pytest.raises(ValueError, match="no HNSW indexes"):
        stages.swap_live(vid)
    _assert_serving(fresh, live_id)
    assert _status(fresh, vid) == "ready"
    previous = [
        r[0] for r in fresh.execute("SELECT id FROM index_versions WHERE status = 'previous'")
    ]
    fresh.commit()
    assert previous == []  # the refused swap demoted nothing

    with pytest.raises(LookupError, match="does not exist"):
        stages.swap_live(vid + 1000)
    _assert_serving(fresh, live_id)


# --- retire ----------------------------------------------------------------------------------------
def test_retire_blocked_by_a_reader_returns_nothing_and_keeps_serving(
    fresh, live_id, tmp_path, monkeypatch
):
    import psycopg

    from services.config import get_settings
    from services.pipeline import stages

    stale, _ = _built_version(tmp_path, "retire-blocked", indexes=False)
    stages.mark_version_failed(stale, "test: to be retired")
    assert _status(fresh, stale) == "failed" and _table_exists(fresh, stale)

    monkeypatch.setattr(stages, "RETIRE_LOCK_TIMEOUT", "300ms")
    reader = psycopg.connect(get_settings().database_url)  # the test's own database
    try:
        # another session reads the old table and keeps its transaction open
        reader.execute(f"LOCK TABLE index_v{int(stale)} IN ACCESS SHARE MODE")
        assert stages.retire_old_versions() == []
        assert _table_exists(fresh, stale)
        retired_at = fresh.execute(
            "SELECT retired_at FROM index_versions WHERE id = %s", (stale,)
        ).fetchone()[0]
        fresh.commit()
        assert retired_at is None  # the retire transaction rolled back as a whole
        _assert_serving(fresh, live_id)
    finally:
        reader.close()
    # the reader gone, the next run retires it
    assert stages.retire_old_versions() == [stale]
    assert not _table_exists(fresh, stale)
    _assert_serving(fresh, live_id)


# --- concurrent swaps --------------------------------------------------------------------------
def test_two_concurrent_swaps_end_with_one_live_version(fresh, live_id, tmp_path):
    import psycopg

    from services.config import get_settings
    from services.pipeline import checks
    from services.store import index_versions as iv
    from services.store.db import connect

    a, valid_a = _built_version(tmp_path, "swap-race-a")
    checks.check_and_mark_ready(a, valid_a)
    b, valid_b = _built_version(tmp_path, "swap-race-b")
    checks.check_and_mark_ready(b, valid_b)
    assert _status(fresh, a) == _status(fresh, b) == "ready"
    url = get_settings().database_url  # the test's own database

    # Hold the swap's advisory lock so that both swaps are queued on it before either runs.
    holder = psycopg.connect(url, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtext('fashion_index_swap'))")
    results: dict[int, object] = {}

    def swap(version_id: int) -> None:
        conn = connect(url)
        try:
            results[version_id] = iv.swap_live(conn, version_id)
        except (psycopg.Error, ValueError, LookupError) as exc:  # asserted below
            results[version_id] = exc
        finally:
            conn.close()

    threads = [threading.Thread(target=swap, args=(v,)) for v in (a, b)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            waiting = holder.execute(
                "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
                "WHERE l.locktype = 'advisory' AND NOT l.granted "
                "AND d.datname = current_database()"
            ).fetchone()[0]
            if waiting == 2:
                break
            time.sleep(0.05)
        assert waiting == 2, "both swaps should be waiting on the swap lock"
    finally:
        holder.execute("SELECT pg_advisory_unlock(hashtext('fashion_index_swap'))")
        holder.close()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    assert all(isinstance(results[v], iv.IndexVersion) for v in (a, b)), results
    live = _live_ids(fresh)
    assert len(live) == 1 and live[0] in (a, b)
    winner = live[0]
    first = b if winner == a else a
    statuses = {v.id: v.status for v in iv.list_versions(fresh) if v.id in (live_id, a, b)}
    fresh.commit()
    # first swap: live_id -> previous, first -> live; second: first -> previous, winner -> live
    assert statuses == {live_id: "previous", first: "previous", winner: "live"}
    versions = {v.id: v for v in iv.list_versions(fresh)}
    fresh.commit()
    assert versions[first].live_at is not None and versions[winner].live_at is not None
    assert versions[first].live_at <= versions[winner].live_at
    _assert_serving(fresh, winner)
    # rolling back goes to the version swapped out last, not the original one
    assert iv.rollback_live(fresh).id == first
    fresh.commit()
    _assert_serving(fresh, first)


# --- SPLADE pruning cap ------------------------------------------------------------------------
def test_splade_never_returns_more_terms_than_its_cap():
    from services.encoders.splade import DEFAULT_MAX_TERMS, load_splade

    enc = load_splade("splade-tiny-offline")
    assert enc.max_terms == DEFAULT_MAX_TERMS == 256
    # A long text of many different whole words taken from the model's own vocabulary.
    words = sorted(
        t for t in enc.tokenizer.get_vocab() if t.isascii() and t.isalpha() and len(t) > 3
    )
    assert len(words) > 4 * DEFAULT_MAX_TERMS
    step = max(1, len(words) // 700)
    long_text = " ".join(words[::step][:700])
    texts = [
        long_text,
        " ".join(reversed(long_text.split())),
        long_text[: len(long_text) // 3],
        "red dress",
    ]
    # the long text really has more candidate terms than the cap, so pruning is exercised
    unpruned = int((enc._weights([long_text])[0] > 0).sum())
    assert unpruned > DEFAULT_MAX_TERMS, unpruned
    vectors = enc.encode(texts)
    assert len(vectors) == len(texts)
    nnz = [len(v.indices()) for v in vectors]
    assert all(0 < n <= DEFAULT_MAX_TERMS for n in nnz), nnz
    assert nnz[0] == DEFAULT_MAX_TERMS  # pruned to exactly the cap
    for v in vectors:
        assert v.dimensions() == enc.vocab_size
        assert abs(sum(x * x for x in v.values()) - 1.0) < 1e-4
