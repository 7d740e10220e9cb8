"""The store against the real PostgreSQL + pgvector: migrations, COPY loads, versions, fused search."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import psycopg
import pytest
from pgvector import SparseVector
from psycopg import sql
from synthetic import build_version, unit_vectors

from services import search
from services.store import hnsw, migrate, products
from services.store import index_versions as iv
from services.store.db import DatabaseUnavailable, connect, redact

DIM, VOCAB, N = 32, 500, 600
COLOURS = ["Red", "Blue", "Black", "Green"]
ARTICLES = ["Tshirts", "Shirts", "Jackets"]


def _rows(n: int = N) -> list[dict]:
    return [
        {
            "id": i,
            "gender": ["Men", "Women"][i % 2],
            "masterCategory": "Apparel",
            "subCategory": "Topwear",
            "articleType": ARTICLES[i % 3],
            "baseColour": COLOURS[i % 4],
            "season": "Summer",
            "year": 2010 + i % 8,
            "usage": "Casual",
            "productDisplayName": f"Brand {ARTICLES[i % 3]} {i}",
            "image": b"\x89PNG\r\n\x1a\nxx",
        }
        for i in range(n)
    ]


def _vectors(n: int = N, seed: int = 0):
    return unit_vectors(n, DIM, VOCAB, nnz=12, low=0.05, seed=seed)


def _build_version(
    conn, n: int = N, seed: int = 0, swap: bool = True, dense_index: str = "vector", **options
) -> int:
    products.upsert_products(conn, _rows(n), source="test")
    dense, sparse = _vectors(n, seed)
    vid = build_version(
        conn,
        range(n),
        dense,
        sparse,
        {"test": True},
        models=("test-dense", "test-sparse"),
        dense_index=dense_index,
        **options,
    )
    if swap:
        iv.swap_live(conn, vid)
    return vid


@pytest.fixture
def live(empty_db):
    vid = _build_version(empty_db)
    dense, sparse = _vectors()
    return empty_db, vid, dense, sparse


# --- connections and migrations -------------------------------------------------------


def test_pgvector_version_checked(conn):
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()[
        0
    ]
    assert tuple(int(x) for x in version.split(".")[:2]) >= (0, 7)


def test_database_down_gives_clear_error_without_password():
    url = "postgresql://shopper:s3cret@127.0.0.1:9/fashion"
    with pytest.raises(DatabaseUnavailable) as exc:
        connect(url)
    message = str(exc.value)
    assert "127.0.0.1" in message and "s3cret" not in message
    assert "s3cret" not in redact(url)


def test_migrations_downgrade_and_upgrade(settings):
    migrate.downgrade("base")
    with connect() as c:
        assert c.execute("SELECT to_regclass('products')").fetchone()[0] is None
    migrate.upgrade("head")
    with connect() as c:
        assert c.execute("SELECT to_regclass('products')").fetchone()[0] == "products"
        assert c.execute("SELECT to_regclass('index_versions')").fetchone()[0] == "index_versions"
    assert migrate.current() is not None


# --- loading -------------------------------------------------------------------------


def test_loading_products_twice_does_not_duplicate(empty_db):
    rows = _rows(50)
    products.upsert_products(empty_db, rows)
    rows[3]["productDisplayName"] = "Renamed"
    products.upsert_products(empty_db, rows)
    assert empty_db.execute("SELECT count(*) FROM products").fetchone()[0] == 50
    assert products.get_product(empty_db, 3)["product_display_name"] == "Renamed"
    assert products.get_image(empty_db, 3)[1] == "image/png"


def test_embedding_reload_is_idempotent_and_dims_come_from_models(empty_db):
    products.upsert_products(empty_db, _rows(40))
    dense, sparse = _vectors(40)
    vid = iv.create_version(
        empty_db, dense_model="d", dense_dim=DIM, sparse_model="s", sparse_dim=VOCAB
    )
    iv.load_embeddings(empty_db, vid, list(range(40)), dense, sparse)
    iv.load_embeddings(empty_db, vid, list(range(40)), dense, sparse)
    assert iv.row_count(empty_db, vid) == 40
    typ = empty_db.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attname IN ('dense', 'sparse') ORDER BY attname",
        (iv.table_name(vid),),
    ).fetchall()
    assert [t[0] for t in typ] == [f"vector({DIM})", f"sparsevec({VOCAB})"]


def test_embeddings_of_unknown_products_are_refused(empty_db):
    products.upsert_products(empty_db, _rows(5))
    dense, sparse = _vectors(6)
    vid = iv.create_version(
        empty_db, dense_model="d", dense_dim=DIM, sparse_model="s", sparse_dim=VOCAB
    )
    with pytest.raises(LookupError):
        iv.load_embeddings(empty_db, vid, list(range(6)), dense, sparse)
    assert iv.row_count(empty_db, vid) == 0


def test_wrong_dimension_refused_on_load(empty_db):
    products.upsert_products(empty_db, _rows(3))
    vid = iv.create_version(
        empty_db, dense_model="d", dense_dim=DIM, sparse_model="s", sparse_dim=VOCAB
    )
    _, sparse = _vectors(3)
    with pytest.raises(ValueError, match="shape"):
        iv.load_embeddings(empty_db, vid, [0, 1, 2], np.ones((3, DIM + 1), np.float32), sparse)


# --- versions and swap ---------------------------------------------------------------


def test_a_version_rows_lie_in_the_catalogue_hierarchy_order_and_a_built_one_stays(live):
    """Before its graphs are built a version's table is rewritten in CLUSTER_COLUMNS order
    (a storefront filter's rows on adjacent pages); a version that has its graphs (maybe live)
    is never rewritten again."""
    conn, vid, _, _ = live
    t = sql.Identifier(iv.table_name(vid))
    key = sql.SQL(", ").join(map(sql.Identifier, (*hnsw.CLUSTER_COLUMNS, "product_id")))
    physical = [
        r[0] for r in conn.execute(sql.SQL("SELECT product_id FROM {} ORDER BY ctid").format(t))
    ]
    ordered = [
        r[0] for r in conn.execute(sql.SQL("SELECT product_id FROM {} ORDER BY {}").format(t, key))
    ]
    assert physical == ordered and physical != sorted(physical)  # _rows cycle their values
    brin = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = %s",
        (f"{iv.table_name(vid)}_hierarchy_brin",),
    ).fetchone()[0]
    assert "USING brin (gender, master_category, sub_category, article_type, base_colour)" in brin
    # Built: build_indexes again neither rewrites it nor waits for a lock.
    conn.execute(sql.SQL("UPDATE {} SET gender = 'Women' WHERE product_id = 0").format(t))
    conn.commit()
    before = conn.execute(
        sql.SQL("SELECT ctid::text FROM {} WHERE product_id = 0").format(t)
    ).fetchone()
    assert hnsw.build_indexes(conn, vid)["cluster"] == 0.0
    after = conn.execute(
        sql.SQL("SELECT ctid::text FROM {} WHERE product_id = 0").format(t)
    ).fetchone()
    assert before == after


def test_swap_keeps_one_live_and_previous_for_rollback(live):
    conn, first, _, _ = live
    second = _build_version(conn, seed=1, swap=False)
    assert iv.live_version(conn).id == first  # a built, unswapped version changes nothing
    iv.swap_live(conn, second)
    statuses = {v.id: v.status for v in iv.list_versions(conn)}
    assert statuses[first] == "previous" and statuses[second] == "live"
    assert iv.rollback_live(conn).id == first
    iv.swap_live(conn, second)
    third = _build_version(conn, seed=2)
    retired = iv.retire_old(conn, keep_previous=1)
    assert first in retired and second not in retired and third == iv.live_version(conn).id
    assert conn.execute("SELECT to_regclass(%s)", (iv.table_name(first),)).fetchone()[0] is None


def test_unready_or_failed_version_cannot_go_live(live):
    conn, first, _, _ = live
    products.upsert_products(conn, _rows(5))
    vid = iv.create_version(
        conn, dense_model="d", dense_dim=DIM, sparse_model="s", sparse_dim=VOCAB
    )
    with pytest.raises(ValueError, match="building"):
        iv.swap_live(conn, vid)
    iv.mark_failed(conn, vid, "encoder crashed")
    with pytest.raises(ValueError, match="failed"):
        iv.swap_live(conn, vid)
    assert iv.live_version(conn).id == first


def test_database_enforces_single_live_version(live):
    conn, _, _, _ = live
    second = _build_version(conn, seed=1, swap=False)
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("UPDATE index_versions SET status = 'live' WHERE id = %s", (second,))
    conn.rollback()


# --- fused search --------------------------------------------------------------------


def _ids(hits):
    return [h.product_id for h in hits]


def test_alpha_one_is_exactly_dense_order_and_zero_exactly_sparse(live):
    conn, vid, dense, sparse = live
    table = iv.table_name(vid)
    for q in (3, 77, 301):
        qd, qs = dense[q] * 0.9 + dense[q + 1] * 0.1, sparse[q]
        by_dense = [
            r[0]
            for r in conn.execute(
                f"SELECT product_id FROM {table} ORDER BY dense <#> %s, product_id LIMIT 20", (qd,)
            ).fetchall()
        ]
        by_sparse = [
            r[0]
            for r in conn.execute(
                f"SELECT product_id FROM {table} ORDER BY sparse <#> %s, product_id LIMIT 20", (qs,)
            ).fetchall()
        ]
        exact1 = search.fused_search(conn, search.SearchQuery(qd, qs, alpha=1.0, k=20, exact=True))
        exact0 = search.fused_search(conn, search.SearchQuery(qd, qs, alpha=0.0, k=20, exact=True))
        assert _ids(exact1) == by_dense
        # Sparse ties (products sharing no term score 0) are broken by id, as in by_sparse.
        assert _ids(exact0) == by_sparse
        fast1 = search.fused_search(conn, search.SearchQuery(qd, qs, alpha=1.0, k=10, candidates=N))
        assert _ids(fast1) == by_dense[:10]


def test_scores_are_the_documented_blend(live):
    conn, _, dense, sparse = live
    qd, qs = dense[10], sparse[11]
    hits = search.fused_search(conn, search.SearchQuery(qd, qs, alpha=0.3, k=15, exact=True))
    for h in hits:
        d = float(dense[h.product_id] @ qd)
        s = float(np.dot(sparse[h.product_id].to_numpy(), qs.to_numpy()))
        assert h.dense_score == pytest.approx(d, abs=1e-4)
        assert h.sparse_score == pytest.approx(s, abs=1e-4)
        assert h.score == pytest.approx(0.3 * d + 0.7 * s, abs=1e-4)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_fast_mode_matches_exact_with_enough_candidates(live):
    conn, _, dense, sparse = live
    recalls = []
    for q in range(0, 60, 3):
        qd, qs = dense[q], sparse[(q * 7) % N]
        exact = _ids(search.fused_search(conn, search.SearchQuery(qd, qs, 0.5, 10, exact=True)))
        fast = _ids(search.fused_search(conn, search.SearchQuery(qd, qs, 0.5, 10, candidates=200)))
        recalls.append(len(set(exact) & set(fast)) / 10)
    assert np.mean(recalls) >= 0.95


# exact; the service's routing (this filter is selective: exact); the filtered HNSW scans.
@pytest.mark.parametrize(
    "mode",
    [{"exact": True}, {}, {"exact_max_rows": 0, "budget": 150}],
    ids=["exact", "routed", "hnsw"],
)
def test_filters_hold_in_every_path(live, mode):
    conn, _, dense, sparse = live
    f = search.Filters.from_mapping(
        {
            "baseColour": "Red",
            "gender": ["Men"],
            "year_min": 2012,
            "articleType": ["Tshirts", "Jackets"],
        }
    )
    ranking = search.certified_search(
        conn, search.SearchQuery(dense[1], sparse[1], 0.5, 10, filters=f, **mode)
    )
    hits = ranking.hits
    assert hits, "a selective filter must still return rows (iterative scan)"
    assert (ranking.certificate.path == "exact") == ("exact_max_rows" not in mode)
    for h in hits:
        m = h.metadata
        assert m["base_colour"] == "Red" and m["gender"] == "Men" and m["year"] >= 2012
        assert m["article_type"] in ("Tshirts", "Jackets")
    expected = conn.execute(
        "SELECT count(*) FROM products WHERE base_colour='Red' AND gender='Men' AND year >= 2012 "
        "AND article_type IN ('Tshirts','Jackets')"
    ).fetchone()[0]
    assert len(hits) == min(10, expected)


# --- certificates (the threshold bound; see services.search.SEARCH_SQL) -----------


def _queries(dense, sparse, count: int = 40, seed: int = 5):
    """Queries near a product (its dense vector blended with another row's, the terms of
    either): some with a clear winner on both sides, some middling on both."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        a, b = (int(x) for x in rng.choice(N, 2, replace=False))
        qd = dense[a] + (0.3 + 0.6 * rng.random()) * dense[b]
        yield qd / np.linalg.norm(qd), sparse[a if i % 2 else b]


def _exact(conn, qd, qs, alpha, k=10, filters=None):
    f = filters or search.Filters()
    return _ids(search.fused_search(conn, search.SearchQuery(qd, qs, alpha, k, f, exact=True)))


def _first_stage_outcomes(conn, dense, sparse, alpha, candidates, version=None) -> dict:
    """{threshold met?: count} over _queries, first stage only (no deepening, no fallback).
    Here (600 rows, HNSW lists that hold their sides' true top n) every answer that meets
    the threshold equals the exact ranking (kth >= bound); every other one has a bound
    above its k-th score. None is called exact: HNSW candidates prove nothing."""
    outcomes = {True: 0, False: 0}
    for qd, qs in _queries(dense, sparse):
        ranking = search.certified_search(
            conn,
            search.SearchQuery(
                qd, qs, alpha, 10, candidates=candidates, budget=candidates, exact_max_rows=0
            ),
            version,
        )
        c = ranking.certificate
        assert c.path == "fast" and c.candidates == candidates and c.estimated_rows == N
        outcomes[c.threshold_met] += 1
        assert not c.exact and c.reason == "dense side from HNSW", c
        if c.threshold_met:
            assert c.kth_score >= c.bound
            assert _ids(ranking.hits) == _exact(conn, qd, qs, alpha)
        else:
            assert c.kth_score < c.bound
    return outcomes


# (alpha, candidates) where 40 queries split between threshold met and not (probed).
@pytest.mark.parametrize("alpha, candidates", [(0.3, 30), (0.5, 30), (0.7, 20)])
def test_a_certified_answer_is_the_exact_one_and_an_uncertified_one_is_flagged(
    live, alpha, candidates
):
    """First stage only (no deepening, no fallback), few candidates: both outcomes occur.
    Every answer that meets the threshold equals the exact ranking; every other one has a
    bound above its k-th score (the reason it deepens or falls back); none claims exact."""
    conn, _, dense, sparse = live
    outcomes = _first_stage_outcomes(conn, dense, sparse, alpha, candidates)
    assert outcomes[True] and outcomes[False], outcomes


@pytest.mark.parametrize("alpha, candidates", [(0.5, 30), (0.7, 20)])
def test_a_halfvec_dense_index_keeps_certified_answers_exact(empty_db, alpha, candidates):
    """A version whose dense HNSW index is half precision: its scan orders by the indexed
    expression (the plan uses the index) and the bound carries the rounding slack, so every
    answer that meets the threshold still equals the exact full-precision ranking."""
    conn = empty_db
    vid = _build_version(conn, dense_index="halfvec")
    version = iv.get_version(conn, vid)
    assert search.dense_index(version) == "halfvec"
    dense, sparse = _vectors()
    conn.execute("SET enable_seqscan = off")  # 600 rows: the planner would sort them instead
    conn.commit()
    plan = "\n".join(
        search.explain_search(conn, search.SearchQuery(dense[1], sparse[1], alpha, 10), version)
    )
    assert f"Index Scan using {version.table}_dense_hnsw" in plan, plan
    outcomes = _first_stage_outcomes(conn, dense, sparse, alpha, candidates, version)
    assert outcomes[True], outcomes
    with pytest.raises(ValueError, match="dense_index"):
        hnsw.build_indexes(conn, vid, dense_index="float16")


def test_an_ivfflat_dense_index_reads_its_probes_and_says_so(empty_db):
    """A version whose dense index is IVFFlat (12 lists of ~50 rows): the plan scans it, the
    version records its lists and the lists a search reads (pgvector's sqrt(lists) rule, 4),
    an answer from it is never called exact and says why; reading all 12 lists gives the
    exact dense top 10 for every query, reading one list does not (the probes reach the scan)."""
    from services.store.search_sql import scan_settings

    conn = empty_db
    vid = _build_version(conn, dense_index="ivfflat", lists=12)
    version = iv.get_version(conn, vid)
    assert search.dense_index(version) == "ivfflat"
    assert version.params["ivfflat"] == {"lists": 12, "probes": 4}, version.params
    assert iv.has_indexes(conn, vid)
    assert scan_settings(conn, version, 10).get("ivfflat.probes") == "4"
    hnsw.build_indexes(conn, vid, dense_index="vector")  # a retried build keeps its kind
    assert iv.get_version(conn, vid).params["dense_index"] == "ivfflat"
    assert not conn.execute("SELECT to_regclass(%s)", (f"{version.table}_dense_hnsw",)).fetchone()[
        0
    ]
    dense, sparse = _vectors()
    conn.execute("SET enable_seqscan = off")  # 600 rows: the planner would sort them instead
    conn.commit()
    q = search.SearchQuery(dense[1], None, 1.0, 10, exact_max_rows=0)
    plan = "\n".join(search.explain_search(conn, q, version, analyze=False))
    assert f"Index Scan using {version.table}_dense_ivf" in plan, plan
    exact_found: dict[int, list[bool]] = {}
    for probes in (1, 12):
        exact_found[probes] = []
        for qd, _ in _queries(dense, sparse):
            ranking = search.certified_search(
                conn,
                search.SearchQuery(
                    qd, None, 1.0, 10, candidates=10, budget=10, exact_max_rows=0, probes=probes
                ),
                version,
            )
            c = ranking.certificate
            assert c.path == "fast" and not c.exact, c
            assert c.reason == "dense side from IVFFlat", c
            found = set(_ids(ranking.hits)) == set(_exact(conn, qd, None, 1.0))
            exact_found[probes].append(found)
    assert all(exact_found[12]), exact_found[12]
    assert not all(exact_found[1]), "one list of 12 held every query's exact top 10"
    # A filter passing a quarter of the rows: the scan reads further lists until 10 pass.
    red = search.Filters.from_mapping({"baseColour": ["Red"]})
    for qd, _ in _queries(dense, sparse, count=10):
        q = search.SearchQuery(qd, None, 1.0, 10, red, candidates=10, exact_max_rows=0)
        ranking = search.certified_search(conn, q, version)
        assert ranking.certificate.path == "fast", ranking.certificate
        assert len(ranking.hits) == 10
        assert {h.metadata["base_colour"] for h in ranking.hits} == {"Red"}


def test_side_top_ids_exact_is_the_true_order_and_hnsw_finds_it_here(live):
    """The build check's measure: one side's top n by the exact scan (numpy's scores, to
    float32 rounding) and by its HNSW index (on 600 rows it finds nearly all of them)."""
    from services.store.search_sql import side_top_ids

    conn, vid, dense, sparse = live
    version = iv.get_version(conn, vid)
    qd, qs = next(_queries(dense, sparse))
    n = 50
    for side, query, scores in (
        ("dense", qd, dense @ qd),
        ("sparse", qs, np.array([float(np.dot(v.to_numpy(), qs.to_numpy())) for v in sparse])),
    ):
        exact = side_top_ids(conn, version, side, query, n, exact=True)
        assert len(exact) == n == len(set(exact))
        top = np.sort(scores)[::-1][:n]
        np.testing.assert_allclose(scores[exact], top, atol=1e-5)  # the true top n, in order
        found = side_top_ids(conn, version, side, query, n, exact=False)
        assert len(set(found) & set(exact)) >= 0.9 * n, side
    with pytest.raises(ValueError, match="side"):
        side_top_ids(conn, version, "both", qd, n, exact=True)


def test_an_unproven_answer_says_why(live):
    """exact where every row was scored; an answer with dense weight from HNSW candidates is
    never exact and says so; a sparse-only one is exact when the postings' bound is met,
    else it names the depth read."""
    conn, _, dense, sparse = live
    qd, qs = next(_queries(dense, sparse))
    for alpha, d, s in ((0.5, qd, qs), (1.0, qd, qs), (0.5, qd, None)):
        q = search.SearchQuery(d, s, alpha, 10, exact_max_rows=0)
        c = search.certified_search(conn, q).certificate
        assert c.path != "exact" and not c.exact and c.reason == "dense side from HNSW", c
        assert c.hnsw_recall is None  # this version has no build check report
        c = search.certified_search(conn, replace(q, exact=True)).certificate
        assert c.path == "exact" and c.exact and c.reason is None, (alpha, c)
    for alpha, d in ((0.0, qd), (0.5, None)):  # no dense weight: the sparse side alone
        q = search.SearchQuery(d, qs, alpha, 10, candidates=5, budget=5, exact_max_rows=0)
        c = search.certified_search(conn, q).certificate
        assert c.path == "fast"
        if c.exact:
            assert c.threshold_met and c.reason is None
        else:
            assert c.reason == "sparse bound not met at 20 postings per term", c


def test_deepening_certifies_what_the_first_candidates_could_not(live):
    conn, _, dense, sparse = live
    deepened = 0
    for qd, qs in _queries(dense, sparse, seed=6):
        ranking = search.certified_search(
            conn, search.SearchQuery(qd, qs, 0.5, 10, candidates=20, budget=300, exact_max_rows=0)
        )
        c = ranking.certificate
        if c.path == "deepened":
            deepened += 1
            assert c.candidates == 300
        if c.threshold_met:
            assert _ids(ranking.hits) == _exact(conn, qd, qs, 0.5)
    assert deepened, "20 candidates certify every query: the deepened stage went untested"


def test_an_uncertified_answer_falls_back_to_the_exact_scan_on_a_small_table(live):
    conn, _, dense, sparse = live
    paths = set()
    for qd, qs in _queries(dense, sparse, seed=7):
        ranking = search.certified_search(
            conn, search.SearchQuery(qd, qs, 0.5, 10, candidates=30, budget=30)
        )
        c = ranking.certificate
        paths.add(c.path)
        assert c.threshold_met
        assert _ids(ranking.hits) == _exact(conn, qd, qs, 0.5)
        assert c.exact is (c.path == "exact")
        if c.path == "exact":
            assert c.candidates is None and c.bound is None and c.kth_score is None
            assert c.reason is None and c.hnsw_recall is None
    assert paths == {"fast", "exact"}, paths


def test_selective_filters_are_routed_to_the_exact_scan_by_their_estimated_rows(live):
    conn, vid, dense, sparse = live
    version = iv.get_version(conn, vid)
    red = search.Filters.from_mapping({"baseColour": "Red"})  # 150 of 600 rows
    red_men = search.Filters.from_mapping({"baseColour": "Red", "gender": "Men"})
    recent = search.Filters.from_mapping({"year_min": 2016})  # 150 rows
    for f in (red, recent):  # one column: the per-value counts are exact
        assert search.estimated_rows(conn, version, f) == search.count_matching(conn, version, f)
    # Two columns are taken as independent: 600 * 1/4 * 1/2 = 75, while every Red row here is
    # a Men row (i % 4 == 0 implies i % 2 == 0): 150. The estimate only routes; it is shown.
    assert search.estimated_rows(conn, version, red_men) == 75
    assert search.count_matching(conn, version, red_men) == 150
    assert search.estimated_rows(conn, version, search.Filters()) == N
    assert search.route_exact(150, 1_000_000, 150)  # a 0.015 % filter: exact
    assert not search.route_exact(300_000, 1_000_000, 150)  # 30 %: the HNSW scans
    routes = []
    for f in (red, red_men):
        q = search.SearchQuery(dense[2], sparse[2], 0.5, 10, filters=f, candidates=5)
        expect = search.route_exact(search.estimated_rows(conn, version, f), N, 5)
        routes.append(expect)
        ranking = search.certified_search(conn, q)
        assert ranking.certificate.routed == expect
        if expect:
            assert ranking.certificate.path == "exact"
        assert ranking.certificate.threshold_met
        assert _ids(ranking.hits) == _exact(conn, dense[2], sparse[2], 0.5, filters=f)
    assert routes == [False, True]  # 150 rows: 150^2 > 6 * 5 * 600; 75: below


def test_no_hit_still_returns_a_certificate(live):
    conn, _, dense, sparse = live
    nothing = search.Filters.from_mapping({"baseColour": "Ultraviolet"})
    ranking = search.certified_search(
        conn, search.SearchQuery(dense[0], sparse[0], 0.5, 10, filters=nothing)
    )
    assert ranking.hits == []
    c = ranking.certificate
    assert c.estimated_rows == 0 and c.path == "exact" and c.routed and c.threshold_met


def test_session_settings_are_set_when_they_change_and_hold_each_querys(live):
    """A connection given to use_session_settings (the API's pool) keeps the HNSW settings in
    its session, set only when a query needs others; any other connection keeps none."""
    from services.config import get_settings

    conn0, vid, dense, sparse = live
    version = iv.get_version(conn0, vid)
    q = search.SearchQuery(dense[3], sparse[3], 0.5, 10)
    exact = [h.product_id for h in search.fused_search(conn0, replace(q, exact=True), version)]
    url = get_settings().database_url
    with connect(url, autocommit=True) as conn:
        search.use_session_settings(conn)
        for candidates, ef in ((None, "150"), (300, "300"), (None, "150")):
            ranking = search.certified_search(conn, replace(q, candidates=candidates), version)
            assert [h.product_id for h in ranking.hits] == exact
            assert ranking.certificate.threshold_met and ranking.version_status == "live"
            assert conn.execute("SHOW hnsw.ef_search").fetchone()[0] == ef
            assert conn.execute("SHOW hnsw.iterative_scan").fetchone()[0] == "relaxed_order"
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with connect(url, autocommit=True) as other:
        search.certified_search(other, replace(q, candidates=300), version)
        assert other.execute(
            "SELECT setting = boot_val FROM pg_settings WHERE name = 'hnsw.ef_search'"
        ).fetchone()[0]
    second = _build_version(conn0, seed=1, swap=False)  # ready, not live
    ranking = search.certified_search(conn0, q, iv.get_version(conn0, second))
    assert ranking.version_status == "ready"


def test_image_only_and_text_only_queries(live):
    conn, _, dense, sparse = live
    hits = search.fused_search(conn, search.SearchQuery(dense[5], None, alpha=0.2, k=3))
    assert hits[0].product_id == 5 and hits[0].sparse_score is None
    hits = search.fused_search(conn, search.SearchQuery(None, sparse[9], alpha=0.8, k=3))
    assert hits[0].product_id == 9 and hits[0].dense_score is None


def test_stored_vectors_roundtrip(live):
    conn, _, dense, sparse = live
    d, s = search.stored_vectors(conn, 42)
    assert np.allclose(d, dense[42], atol=1e-6)
    assert s.indices() == sparse[42].indices()
    assert search.stored_vectors(conn, 10**9) is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"k": 0}, "k must"),
        ({"k": 101}, "k must"),
        ({"k": -3}, "k must"),
        ({"candidates": 0}, "candidates"),
        ({"budget": 10_001}, "budget"),
    ],
)
def test_bad_parameters_rejected_before_sql(live, kwargs, message):
    conn, _, dense, sparse = live
    with pytest.raises(search.SearchValidationError, match=message):
        search.fused_search(conn, search.SearchQuery(dense[0], sparse[0], **kwargs))


def test_bad_vectors_and_filters_rejected(live):
    conn, _, _, _ = live
    with pytest.raises(search.SearchValidationError, match="dimensions"):
        search.fused_search(conn, search.SearchQuery(np.ones(DIM + 3, np.float32), None))
    too_many = SparseVector({i: 1.0 for i in range(1001)}, VOCAB)
    with pytest.raises(search.SearchValidationError, match="non-zeros"):
        search.fused_search(conn, search.SearchQuery(None, too_many))
    with pytest.raises(search.SearchValidationError, match="text, an image"):
        search.fused_search(conn, search.SearchQuery(None, None))
    with pytest.raises(search.SearchValidationError, match="unknown filter"):
        search.Filters.from_mapping({"price": "cheap"})
    with pytest.raises(search.SearchValidationError, match="integer"):
        search.Filters.from_mapping({"year_min": "2012"})
    with pytest.raises(search.SearchValidationError, match="string"):
        search.Filters.from_mapping({"gender": 3})
    # found by schemathesis's negative_data_rejection: an unknown name with an empty value,
    # and an empty range bound, were dropped as "no filter" instead of refused
    for empty in ([], ""):
        with pytest.raises(search.SearchValidationError, match="unknown filter 'price'"):
            search.Filters.from_mapping({"price": empty})
        with pytest.raises(search.SearchValidationError, match="integer"):
            search.Filters.from_mapping({"year_min": empty})
    assert search.Filters.from_mapping({"gender": "", "baseColour": [], "year_max": None}) == (
        search.Filters()
    )
    # an integral float is the integer the schema says (JSON Schema: 2012.0 is an integer)
    assert search.Filters.from_mapping({"year_min": 2012.0}) == search.Filters.from_mapping(
        {"year_min": 2012}
    )
    with pytest.raises(search.SearchValidationError, match="integer"):
        search.Filters.from_mapping({"year_min": 2012.5})


def test_filter_values_are_bound_parameters(live):
    conn, _, dense, sparse = live
    f = search.Filters.from_mapping({"baseColour": "Red'; DROP TABLE products; --"})
    assert search.fused_search(conn, search.SearchQuery(dense[0], sparse[0], filters=f)) == []
    assert conn.execute("SELECT count(*) FROM products").fetchone()[0] == N


def test_no_live_index(empty_db):
    with pytest.raises(search.NoLiveIndex):
        search.fused_search(empty_db, search.SearchQuery(np.ones(DIM, np.float32), None))
