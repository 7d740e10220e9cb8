"""The store's helpers for the benchmarks and tests (issue #11: ``services/store`` owns every SQL
statement), against the real PostgreSQL + pgvector."""

from __future__ import annotations

import numpy as np
import pytest
from test_store import COLOURS, DIM, N, _build_version, _vectors

from services import search
from services.store import index_versions as iv
from services.store import products
from services.store.db import connect, server_versions


@pytest.fixture
def live(empty_db):
    vid = _build_version(empty_db)
    dense, sparse = _vectors()
    return empty_db, iv.get_version(empty_db, vid), dense, sparse


def _exists(conn, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()[0]


# --- db ------------------------------------------------------------------------------------


def test_server_versions(conn):
    pg, vec = server_versions(conn)
    assert pg.split(".")[0].isdigit() and int(pg.split(".")[0]) >= 13
    assert tuple(int(x) for x in vec.split(".")[:2]) >= (0, 7)


# --- index_versions ------------------------------------------------------------------------


@pytest.mark.parametrize("truncate", [False, True])
def test_drop_all_versions_and_products(live, truncate):
    conn, version, _, _ = live
    second = _build_version(conn, swap=False)
    tables = [version.table, iv.table_name(second)]
    assert all(_exists(conn, t) for t in tables)
    iv.drop_all_versions_and_products(conn, truncate=truncate)
    assert conn.info.transaction_status.name == "IDLE"  # committed, nothing left open
    with connect() as other:  # another session sees the empty database
        assert iv.list_versions(other) == [] and iv.live_version(other) is None
        assert not any(_exists(other, t) for t in tables)
        assert list(products.iter_products(other)) == []
    # The schema is intact: the database takes a new version at once.
    vid = _build_version(conn, n=50)
    assert iv.row_count(conn, vid) == 50


def test_drop_all_versions_and_products_on_empty_database(empty_db):
    iv.drop_all_versions_and_products(empty_db)
    assert iv.list_versions(empty_db) == []


# --- search --------------------------------------------------------------------------------


def test_dense_vectors(live):
    conn, version, dense, _ = live
    every = search.dense_vectors(conn, version)
    assert sorted(every) == list(range(N))
    assert all(v.dtype == np.float32 and v.shape == (DIM,) for v in every.values())
    assert np.allclose(np.stack([every[i] for i in range(N)]), dense, atol=1e-6)
    some = search.dense_vectors(conn, version, [3, 7, 10**9])
    assert sorted(some) == [3, 7]
    assert np.allclose(some[7], dense[7], atol=1e-6)
    assert search.dense_vectors(conn, version, []) == {}
    # The same vectors as stored_vectors gives one product at a time.
    assert np.array_equal(some[3], search.stored_vectors(conn, 3, version)[0])


def test_count_matching(live):
    conn, version, _, _ = live
    count = search.count_matching
    assert count(conn, version, search.Filters()) == N
    red_men = search.Filters.from_mapping({"baseColour": "Red", "gender": "Men"})
    assert count(conn, version, red_men) == sum(
        1 for i in range(N) if COLOURS[i % 4] == "Red" and i % 2 == 0
    )
    assert (
        count(conn, version, search.Filters.from_mapping({"baseColour": "Red", "gender": "Women"}))
        == 0
    )
    recent = search.Filters.from_mapping({"gender": ["Men", "Women"], "year_min": 2014})
    assert count(conn, version, recent) == sum(1 for i in range(N) if 2010 + i % 8 >= 2014)
    # Values are bound parameters, never SQL.
    hostile = search.Filters.from_mapping({"baseColour": "Red'; DROP TABLE products; --"})
    assert count(conn, version, hostile) == 0
    assert count(conn, version, search.Filters()) == N


def _setting(conn, name: str) -> str:
    return conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()[0]


@pytest.mark.parametrize("exact", [False, True])
def test_explain_search_plans_the_fused_statement(live, exact):
    conn, version, dense, sparse = live
    before = _setting(conn, "hnsw.ef_search")
    conn.commit()  # outside any transaction, as fused_search is called
    filters = search.Filters.from_mapping({"baseColour": "Red"})
    # exact_max_rows=0: this selective filter would otherwise be routed to the exact scan.
    query = search.SearchQuery(
        dense[1], sparse[1], 0.5, 10, filters, exact=exact, candidates=80, exact_max_rows=0
    )
    lines = search.explain_search(conn, query, version)
    plan = "\n".join(lines)
    assert lines and all(isinstance(line, str) for line in lines)
    assert "Limit" in plan and version.table in plan
    assert "actual time" in plan and "Execution Time" in plan  # EXPLAIN ANALYZE
    # Every stage is in the statement; the first candidates are read unless exact=True.
    assert "CTE fast_d" in plan and "CTE fast_s" in plan and "CTE exact_r" in plan, plan
    first = next(line for line in lines[lines.index("  CTE fast_d") :] if "actual" in line)
    assert ("rows=0.00" in first) == exact, first
    # The session settings are LOCAL to the statement's transaction.
    assert _setting(conn, "hnsw.ef_search") == before
    # Without ANALYZE nothing runs: no actual times.
    plain = search.explain_search(conn, query, version, analyze=False)
    assert plain and "actual time" not in "\n".join(plain)


def test_explain_search_uses_the_search_settings(live, monkeypatch):
    """explain_search runs the statement fused_search runs, under the same HNSW settings
    (one plan, one search session)."""
    from services.search import ranking

    conn, version, dense, sparse = live
    seen = []
    for name in ("run_search", "explain"):
        original = getattr(ranking, name)

        def spy(conn_, statement, params, *args, _original=original, **kwargs):
            seen.append((_setting(conn_, "hnsw.ef_search"), params["route_exact"], statement))
            return _original(conn_, statement, params, *args, **kwargs)

        monkeypatch.setattr(ranking, name, spy)
    query = search.SearchQuery(dense[2], sparse[2], 0.5, 10, candidates=300)
    search.explain_search(conn, query, version, analyze=False)
    search.fused_search(conn, query, version)
    assert [s[:2] for s in seen] == [("300", False), ("300", False)]
    assert seen[0][2] == seen[1][2]  # the same statement


def test_explain_search_validates_like_fused_search(live):
    conn, version, dense, sparse = live
    with pytest.raises(search.SearchValidationError, match="alpha"):
        search.explain_search(conn, search.SearchQuery(dense[0], sparse[0], alpha=2.0), version)
    with pytest.raises(search.SearchValidationError, match="dimensions"):
        search.explain_search(conn, search.SearchQuery(np.ones(DIM + 1, np.float32), None))


def test_explain_search_without_live_index(empty_db):
    dense, sparse = _vectors(1)
    with pytest.raises(search.NoLiveIndex):
        search.explain_search(empty_db, search.SearchQuery(dense[0], sparse[0]))


def test_the_statement_run_is_search_sql(live, monkeypatch):
    """What ranks a query is services/store/sql/search.sql as a reader sees it: the
    statement the code runs is the file's text, line for line, with only its identifier
    slots ({t}, {filters}, {metadata}, {dense_key}, {dense_query}) filled."""
    from services.search import ranking
    from services.store.search_sql import SEARCH_SQL_PATH

    conn, version, dense, sparse = live
    ran = []
    original = ranking.run_search
    monkeypatch.setattr(
        ranking,
        "run_search",
        lambda c, statement, params: ran.append(statement) or original(c, statement, params),
    )
    filters = search.Filters.from_mapping({"gender": ["Women", "Men"]})
    search.fused_search(conn, search.SearchQuery(dense[0], sparse[0], 0.5, 5, filters), version)
    (statement,) = ran
    file_lines = SEARCH_SQL_PATH.read_text().splitlines()
    run_lines = statement.splitlines()
    assert len(run_lines) == len(file_lines)
    for file_line, run_line in zip(file_lines, run_lines):
        if "{" not in file_line:
            assert run_line == file_line
    assert f'"{version.table}" e' in statement and '"e"."gender" = ANY(' in statement
