"""Index versions against the real PostgreSQL, as a concurrent reader sees them (issue #26).

- a built version has both HNSW graphs (dense and sparse), and only then may go live;
- the swap is ONE transaction: a reader polling the live version while versions are swapped
  back and forth never finds none (nor two);
- concurrent swaps are serialised (the swap's advisory lock): both succeed, one after the
  other, and exactly one version ends live.

A trigger of the test's own database makes each swap's "this version goes live" statement
sleep (``SLOW_SWAP``): the moment between retiring the old live version and making the new
one live, a few microseconds in production, lasts long enough for a reader (or a second
swap) to land in it every time, so the tests do not depend on luck.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psycopg
import pytest
from synthetic import build_version, unit_vectors

from services.config import get_settings
from services.store import index_versions as iv
from services.store import products
from services.store.db import connect

N, DIM, VOCAB = 40, 16, 200
SLOW_SWAP = 0.25  # seconds each swap sleeps while making its version live


def _rows() -> list[dict]:
    return [
        {
            "id": i,
            "gender": "Women",
            "articleType": "Dresses",
            "baseColour": "Red",
            "year": 2015,
            "productDisplayName": f"Brand Women Dress {i}",
        }
        for i in range(N)
    ]


def _build(conn, seed: int) -> int:
    """A version of the N products with seeded vectors, indexed and marked ready."""
    dense, sparse = unit_vectors(N, DIM, VOCAB, nnz=8, low=0.1, seed=seed)
    return build_version(conn, range(N), dense, sparse, {"test": "versions"})


@pytest.fixture
def versions(empty_db):
    """(connection, url, [version ids]): three ready versions, the first one live, and the
    swap slowed down (the trigger above) in this test's own database."""
    conn = empty_db
    products.upsert_products(conn, _rows(), source="test-versions")
    ids = [_build(conn, seed) for seed in (1, 2, 3)]
    iv.swap_live(conn, ids[0])
    conn.commit()
    owner = psycopg.connect(get_settings().owner_url, autocommit=True)  # a trigger: the owner's
    owner.execute(
        f"""
        CREATE FUNCTION slow_swap() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep({SLOW_SWAP}); RETURN NEW; END $$;
        CREATE TRIGGER slow_swap BEFORE UPDATE OF status ON index_versions FOR EACH ROW
            WHEN (NEW.status = 'live' AND OLD.status IS DISTINCT FROM 'live')
            EXECUTE FUNCTION slow_swap();
        """
    )
    owner.close()
    return conn, get_settings().database_url, ids  # (empty_db points settings at its database)


def _live_ids(conn) -> list[int]:
    ids = [r[0] for r in conn.execute("SELECT id FROM index_versions WHERE status = 'live'")]
    conn.commit()
    return ids


def test_a_built_version_has_both_hnsw_indexes_and_uses_them(empty_db):
    """build_indexes makes both graphs (the swap refuses a version without them) and records
    which dense index it built; the version then goes live and answers from them."""
    from services import search

    conn = empty_db
    products.upsert_products(conn, _rows(), source="test-versions")
    vid = _build(conn, seed=4)
    table = iv.table_name(vid)
    found = dict(
        conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", (table,)
        ).fetchall()
    )
    conn.commit()
    for side, opclass in (("dense", "vector_ip_ops"), ("sparse", "sparsevec_ip_ops")):
        name = f"{table}_{side}_hnsw"
        assert name in found, (name, sorted(found))
        assert "USING hnsw" in found[name] and opclass in found[name], found[name]
    assert iv.has_indexes(conn, vid)
    assert search.dense_index(iv.get_version(conn, vid)) == "vector"
    version = iv.swap_live(conn, vid)
    assert version.status == "live"
    conn.execute("SET enable_seqscan = off")  # 40 rows: the planner would scan them instead
    plan = "\n".join(
        search.explain_search(
            conn,
            search.SearchQuery(np.ones(DIM, np.float32) / DIM**0.5, None, k=5, exact_max_rows=0),
            version,
            analyze=False,
        )
    )
    conn.rollback()
    assert f"{table}_dense_hnsw" in plan, plan


def test_a_reader_always_sees_exactly_one_live_version(versions):
    """Swap back and forth while another session polls the live version: it must always find
    exactly one, the old one until a swap commits and the new one after."""
    conn, url, ids = versions
    stop = threading.Event()
    seen: list[int | None] = []
    counts: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as r:
                while not stop.is_set():
                    live = iv.live_version(r)
                    seen.append(live.id if live else None)
                    counts.append(
                        r.execute(
                            "SELECT count(*) FROM index_versions WHERE status = 'live'"
                        ).fetchone()[0]
                    )
                    time.sleep(0.002)
        except psycopg.Error as exc:  # asserted below
            errors.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    order = [ids[1], ids[2], ids[0], ids[1]]
    try:
        time.sleep(0.05)
        for vid in order:
            assert iv.swap_live(conn, vid).status == "live"
            conn.commit()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    assert not thread.is_alive()
    # the reader polled throughout the swaps (each lasts SLOW_SWAP s)
    assert len(seen) >= 20 * len(order), len(seen)
    assert None not in seen, f"no live version seen {seen.count(None)} times of {len(seen)}"
    assert set(counts) == {1}, sorted(set(counts))
    assert set(seen) == set(ids)
    assert _live_ids(conn) == [ids[1]]


def test_concurrent_swaps_are_serialised(versions):
    """Two swaps started together (while the first makes its version live, the second asks
    too): both succeed one after the other, exactly one version ends live, and the version
    swapped out last is the 'previous' one to roll back to."""
    conn, url, ids = versions

    def swap(version_id: int, barrier: threading.Barrier, results: dict) -> None:
        c = connect(url)
        try:
            barrier.wait(timeout=30)
            results[version_id] = iv.swap_live(c, version_id)
        except (psycopg.Error, ValueError, LookupError) as exc:  # asserted below
            results[version_id] = exc
        finally:
            c.close()

    for _ in range(2):
        live = _live_ids(conn)
        assert len(live) == 1
        targets = [v for v in ids if v != live[0]]
        barrier = threading.Barrier(len(targets))
        results: dict[int, object] = {}
        threads = [threading.Thread(target=swap, args=(v, barrier, results)) for v in targets]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert all(isinstance(results[v], iv.IndexVersion) for v in targets), results
        now = _live_ids(conn)
        assert len(now) == 1 and now[0] in targets, now
        statuses = {v.id: v.status for v in iv.list_versions(conn)}
        conn.commit()
        assert sorted(statuses.values()) == ["live", "previous", "previous"], statuses
        first = next(v for v in targets if v != now[0])
        assert iv.get_version(conn, first).live_at <= iv.get_version(conn, now[0]).live_at
        conn.commit()
