"""Fast search at a scale where the HNSW indexes matter (issue #15, item 1).

The other store tests search a few hundred rows with 150-200 candidates per index, where a
sequential scan would pass just as well. Here a scratch database holds 20,000 synthetic
products (64-d clustered dense unit vectors, 30,522-d sparse unit vectors with 10-40
non-zeros) loaded and indexed by the real store code, so that the default 150 candidates per
index are under 1% of the rows. The tests fail if the HNSW indexes are missing or broken, or
if the fused statement stops using them:

- the fast plan goes through both HNSW indexes, the exact plan through neither, and a plan
  without the dense index no longer lists it (the negative control: the plan check has teeth);
- recall@10 of fast mode against exact mode at alpha 0.5, 1 (dense only) and 0 (sparse only);
- a filter keeping < 1% of rows still returns k hits in fast mode, all matching, with recall,
  both as the planner chooses and with the HNSW iterative scan forced.

Deterministic: fixed seeds for the data and the queries; no timing asserts.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np
import pytest
from conftest import scratch_db
from pgvector import SparseVector
from psycopg import sql

from services import search
from services.store import hnsw, migrate, products
from services.store import index_versions as iv
from services.store.db import connect

N_ROWS = 20_000
DIM = 64
VOCAB = 30_522
CENTRES = 200
TERMS_PER_CENTRE = 60
TERM_POOL = 3000  # terms the centres' own terms are drawn from
COMMON_WEIGHT = 0.3  # weight of a common (Zipf) term relative to a centre's own terms
N_QUERIES = 50
SEED = 15

GENDERS = ["Men", "Women", "Unisex"]
COLOURS = ["Black", "White", "Blue", "Navy Blue", "Grey", "Red", "Green", "Brown", "Pink"]
RARE_COLOUR = "Mauve"  # on ~0.5% of rows
RARE_SHARE = 0.005
ARTICLES = ["Tshirts", "Shirts", "Jackets", "Trousers", "Dresses", "Sandals", "Handbags"]
SEASONS = ["Summer", "Fall", "Winter", "Spring"]


def _synth(n: int, seed: int = SEED):
    """Rows, dense (n, DIM) unit vectors and sparse unit vectors, all seeded.

    Dense: around CENTRES centres (real CLIP spaces are clustered). Sparse: each row takes
    most of its 10-40 terms from its centre's own terms and the rest from a Zipf-like
    common vocabulary, weights L2-normalised like the platform's SPLADE vectors."""
    rng = np.random.default_rng(seed)
    c_dense = rng.normal(size=(CENTRES, DIM)).astype(np.float32)
    # Centres draw their own terms from one shared pool (a catalogue's vocabulary of
    # materials, cuts, styles), so neighbouring centres share some terms.
    pool = rng.choice(np.arange(1000, VOCAB), size=TERM_POOL, replace=False)
    c_terms = np.stack([rng.choice(pool, TERMS_PER_CENTRE, replace=False) for _ in range(CENTRES)])
    zipf_p = 1.0 / np.arange(1, VOCAB - 999) ** 1.1
    zipf_p /= zipf_p.sum()
    cluster = rng.integers(0, CENTRES, size=n)
    dense = c_dense[cluster] + 0.9 * rng.normal(size=(n, DIM)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    nnz = rng.integers(10, 41, size=n)
    common = 1000 + rng.choice(VOCAB - 1000, size=(n, 40), p=zipf_p)
    sparse = []
    for i in range(n):
        own = rng.choice(c_terms[cluster[i]], size=(2 * nnz[i]) // 3, replace=False)
        ids = np.concatenate([own, np.setdiff1d(common[i], own)])[: nnz[i]]
        # Like SPLADE's, a frequent term weighs less than a distinctive one.
        w = rng.gamma(2.0, 0.5, size=len(ids)) * np.where(np.isin(ids, own), 1.0, COMMON_WEIGHT)
        order = np.argsort(ids)
        ids, w = ids[order], w[order] / np.linalg.norm(w)
        sparse.append(SparseVector(dict(zip(ids.tolist(), w.tolist())), VOCAB))
    meta = np.random.default_rng(seed + 1)
    gender = meta.integers(0, len(GENDERS), size=n)
    colour = meta.integers(0, len(COLOURS), size=n)
    rare = meta.random(size=n) < RARE_SHARE
    article = meta.integers(0, len(ARTICLES), size=n)
    season = meta.integers(0, len(SEASONS), size=n)
    year = 2010 + meta.integers(0, 9, size=n)
    rows = [
        {
            "id": i,
            "gender": GENDERS[gender[i]],
            "masterCategory": "Apparel",
            "subCategory": "Topwear",
            "articleType": ARTICLES[article[i]],
            "baseColour": RARE_COLOUR if rare[i] else COLOURS[colour[i]],
            "season": SEASONS[season[i]],
            "year": int(year[i]),
            "usage": "Casual",
            "productDisplayName": f"Synth {GENDERS[gender[i]]} {ARTICLES[article[i]]} {i}",
            "image": None,
        }
        for i in range(n)
    ]
    return rows, dense, sparse


def _queries(dense: np.ndarray, sparse: list[SparseVector], count: int, seed: int):
    """Perturbed copies of random rows: the dense vector plus noise (cosine ~0.7 to the row),
    re-normalised; 5-25 of the row's terms, re-normalised."""
    rng = np.random.default_rng(seed)
    out = []
    for i in rng.choice(len(sparse), size=count, replace=False):
        d = dense[i] + rng.normal(size=DIM).astype(np.float32) / np.sqrt(DIM)
        d /= np.linalg.norm(d)
        idx = np.array(sparse[i].indices())
        val = np.array(sparse[i].values())
        keep = rng.choice(len(idx), size=min(len(idx), int(rng.integers(5, 26))), replace=False)
        q = val[keep] / np.linalg.norm(val[keep])
        out.append((d.astype(np.float32), SparseVector(dict(zip(idx[keep].tolist(), q)), VOCAB)))
    return out


def build_scale_version(
    url: str, n_rows: int, *, seed: int, test: str, batch: int = 5000, memory: str = "256MB"
):
    """Migrate the scratch database ``url``, load ``n_rows`` synthetic products (``_synth``)
    through the real store code, build the version's indexes and swap it live; returns the
    connection, the version, the vectors and the seconds per index."""
    migrate.upgrade("head", url)
    conn = connect(url)
    rows, dense, sparse = _synth(n_rows, seed)
    products.upsert_products(conn, rows, source=test)
    vid = iv.create_version(
        conn, dense_model="synthetic", dense_dim=DIM, sparse_model="synthetic", sparse_dim=VOCAB
    )
    for lo in range(0, n_rows, batch):
        hi = min(n_rows, lo + batch)
        iv.load_embeddings(conn, vid, list(range(lo, hi)), dense[lo:hi], sparse[lo:hi])
    timings = hnsw.build_indexes(conn, vid, maintenance_work_mem=memory)
    iv.mark_ready(conn, vid, {"test": test})
    version = iv.swap_live(conn, vid)
    conn.commit()
    return conn, version, dense, sparse, timings


@pytest.fixture(scope="module")
def scale(settings):
    """A scratch database with N_ROWS products and a live, indexed version: a connection, the
    version and the vectors (dense, sparse) by product id; dropped at the end."""
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs the embedded server to create a scratch database")
    with scratch_db(settings, "fashion_scale") as url:
        start = time.perf_counter()
        conn, version, dense, sparse, timings = build_scale_version(
            url, N_ROWS, seed=SEED, test="scale"
        )
        print(
            f"\nscale fixture: {N_ROWS} rows built in {time.perf_counter() - start:.1f} s "
            f"(indexes: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())})"
        )
        try:
            yield conn, version, dense, sparse
        finally:
            conn.close()


def _ids(hits) -> list[int]:
    return [h.product_id for h in hits]


def _recall(fast: list[int], exact: list[int]) -> float:
    return len(set(fast) & set(exact)) / len(exact) if exact else 1.0


def _mean_recall(conn, version, queries, **kw) -> tuple[float, list[float]]:
    recalls = []
    for qd, qs in queries:
        fast = search.fused_search(conn, search.SearchQuery(qd, qs, **kw), version)
        exact = search.fused_search(conn, search.SearchQuery(qd, qs, exact=True, **kw), version)
        assert len(exact) == kw.get("k", 10)
        recalls.append(_recall(_ids(fast), _ids(exact)))
    return float(np.mean(recalls)), recalls


def _plan(conn, version, query) -> str:
    return "\n".join(search.explain_search(conn, query, version, analyze=False))


def _hnsw(version) -> tuple[str, str]:
    return f"{version.table}_dense_hnsw", f"{version.table}_sparse_hnsw"


def test_candidates_are_a_small_share_of_the_rows(scale):
    conn, version, _, _ = scale
    assert search.count_matching(conn, version, search.Filters()) == N_ROWS
    assert version.row_count == N_ROWS
    # Two indexes x 150 candidates: 1.5% of the rows, so a fast search that did not go
    # through the graphs could not pass the recall tests below by scanning everything.
    assert 2 * search.DEFAULT_CANDIDATES <= N_ROWS / 50


def test_fast_plan_uses_both_hnsw_indexes_and_exact_plan_neither(scale):
    conn, version, dense, sparse = scale
    dense_idx, sparse_idx = _hnsw(version)
    qd, qs = _queries(dense, sparse, 1, seed=1)[0]
    fast = _plan(conn, version, search.SearchQuery(qd, qs, alpha=0.5))
    assert dense_idx in fast and sparse_idx in fast, fast
    exact = _plan(conn, version, search.SearchQuery(qd, qs, alpha=0.5, exact=True))
    assert "hnsw" not in exact, exact


def test_negative_control_plan_without_the_dense_index_does_not_list_it(scale):
    """Drop the dense HNSW index in a transaction that is rolled back: the fast plan no
    longer names it (so the plan test above fails on a version missing its index), and
    after the rollback it is back."""
    conn, version, dense, sparse = scale
    dense_idx, sparse_idx = _hnsw(version)
    qd, qs = _queries(dense, sparse, 1, seed=1)[0]
    query = search.SearchQuery(qd, qs, alpha=0.5)
    conn.rollback()
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(dense_idx)))
        plan = _plan(conn, version, query)
        assert dense_idx not in plan, plan
        assert sparse_idx in plan, plan
        # Still answers (the dense side by a scan), but no longer through the graph.
        assert len(search.fused_search(conn, query, version)) == 10
    assert iv.has_indexes(conn, version.id)
    assert dense_idx in _plan(conn, version, query)


def test_fast_recall_at_10_against_exact_at_alpha_half(scale):
    conn, version, dense, sparse = scale
    queries = _queries(dense, sparse, N_QUERIES, seed=2)
    dense_idx, sparse_idx = _hnsw(version)
    plan = _plan(conn, version, search.SearchQuery(*queries[0], alpha=0.5))
    assert dense_idx in plan and sparse_idx in plan, plan
    mean, recalls = _mean_recall(conn, version, queries, alpha=0.5, k=10)
    print(f"\nrecall@10 alpha=0.5: mean {mean:.3f}, min {min(recalls):.2f}")
    assert mean >= 0.95, recalls


@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_fast_recall_at_10_single_sided(scale, alpha):
    """alpha 1 = dense only (only the dense graph is walked), 0 = sparse only."""
    conn, version, dense, sparse = scale
    queries = _queries(dense, sparse, N_QUERIES, seed=3)
    dense_idx, sparse_idx = _hnsw(version)
    plan = _plan(conn, version, search.SearchQuery(*queries[0], alpha=alpha))
    used, unused = (dense_idx, sparse_idx) if alpha == 1.0 else (sparse_idx, dense_idx)
    assert used in plan and unused not in plan, plan
    mean, recalls = _mean_recall(conn, version, queries, alpha=alpha, k=10)
    print(f"\nrecall@10 alpha={alpha}: mean {mean:.3f}, min {min(recalls):.2f}")
    assert mean >= 0.95, recalls


RARE = {"baseColour": RARE_COLOUR, "gender": ["Men", "Women"]}


def _check_filtered(conn, version, queries, filters, k=10, **config):
    matching = search.count_matching(conn, version, filters)
    recalls = []
    for qd, qs in queries:
        fast = search.fused_search(
            conn, search.SearchQuery(qd, qs, alpha=0.5, k=k, filters=filters, **config), version
        )
        assert len(fast) == min(k, matching)
        for hit in fast:
            assert hit.metadata["base_colour"] == RARE_COLOUR
            assert hit.metadata["gender"] in ("Men", "Women")
        exact = search.fused_search(
            conn, search.SearchQuery(qd, qs, alpha=0.5, k=k, filters=filters, exact=True), version
        )
        recalls.append(_recall(_ids(fast), _ids(exact)))
    return float(np.mean(recalls)), recalls


def test_selective_filter_fills_k_in_fast_mode(scale):
    conn, version, dense, sparse = scale
    filters = search.Filters.from_mapping(RARE)
    matching = search.count_matching(conn, version, filters)
    assert 10 < matching < N_ROWS / 100, matching
    queries = _queries(dense, sparse, N_QUERIES, seed=4)
    mean, recalls = _check_filtered(conn, version, queries, filters)
    print(f"\nfiltered recall@10 ({matching} rows match): mean {mean:.3f}")
    assert mean >= 0.9, recalls


def test_selective_filter_through_the_hnsw_iterative_scan(scale):
    """The same filter with the planner's ways around the graphs taken away (the filter
    columns' B-trees and the hierarchy BRIN dropped, sequential scans disabled, in a
    transaction rolled back):
    both HNSW scans must keep going past the ~99.7% non-matching rows (pgvector's iterative
    scan) to fill k; a plain HNSW scan stops after ef_search rows, of which ~0 match. The
    service would send this selective filter to the exact scan (``route_exact``):
    ``exact_max_rows=0`` keeps it on the HNSW path."""
    conn, version, dense, sparse = scale
    filters = search.Filters.from_mapping(RARE)
    matching = search.count_matching(conn, version, filters)
    queries = _queries(dense, sparse, N_QUERIES, seed=5)
    dense_idx, sparse_idx = _hnsw(version)
    conn.rollback()
    with conn.transaction(force_rollback=True):
        for column in ("base_colour", "gender", "hierarchy_brin"):
            conn.execute(
                sql.SQL("DROP INDEX {}").format(sql.Identifier(f"{version.table}_{column}"))
            )
        conn.execute("SET LOCAL enable_seqscan = off")
        hnsw = {"exact_max_rows": 0}
        query = search.SearchQuery(*queries[0], alpha=0.5, filters=filters, **hnsw)
        plan = _plan(conn, version, query)
        assert dense_idx in plan and sparse_idx in plan, plan
        mean, recalls = _check_filtered(conn, version, queries, filters, **hnsw)
        print(f"\nfiltered recall@10 through HNSW ({matching} rows match): mean {mean:.3f}")
        assert mean >= 0.9, recalls
        # k above the matching count: the scans reach every matching row.
        mean, recalls = _check_filtered(conn, version, queries[:3], filters, k=search.MAX_K, **hnsw)
        assert matching < search.MAX_K and mean == 1.0, recalls


# --- what the certificate claims (issue #25) --------------------------------------------------
@pytest.mark.parametrize("alpha", [0.3, 0.5, 1.0, 0.0])
def test_no_answer_claims_exact_unless_it_is_proven(scale, alpha):
    """Over 50 queries, few candidates, policies with and without deepening and the exact
    fallback: every answer that says exact IS the exact top 10. With dense weight only the
    exact path says so (the dense side came from HNSW otherwise, and the reason says that);
    a sparse-only answer also when the postings' bound is met. Answers that met the
    threshold test and still differ from the exact top 10 (a dense HNSW list missing rows of
    its own top n) are counted in the message: the reason that test proves nothing there."""
    conn, version, dense, sparse = scale
    misses = claims = proven_by_postings = 0
    policies = (
        {"candidates": 20, "budget": 20, "exact_max_rows": 0},  # first candidates only
        {"candidates": 20, "budget": 60, "exact_max_rows": 0},  # deepened, no fallback
        {"candidates": 20, "budget": 20},  # the exact fallback (20,000 rows)
    )
    for qd, qs in _queries(dense, sparse, N_QUERIES, seed=25):
        q = search.SearchQuery(qd, qs, alpha, exact=True)
        exact = _ids(search.fused_search(conn, q, version))
        for policy in policies:
            ranking = search.certified_search(conn, replace(q, exact=False, **policy), version)
            c = ranking.certificate
            if alpha > 0:
                assert c.exact is (c.path == "exact"), c
            if c.exact:
                claims += 1
                proven_by_postings += c.path != "exact"
                assert c.reason is None and _ids(ranking.hits) == exact, (policy, c)
            elif alpha > 0:
                assert c.reason == "dense side from HNSW", c
                misses += c.threshold_met and _ids(ranking.hits) != exact
            else:
                assert c.reason.startswith("sparse bound not met at "), c
    print(
        f"alpha {alpha}: {claims} exact claims ({proven_by_postings} by the postings), "
        f"{misses} threshold misses of {3 * N_QUERIES}"
    )
    if alpha < 1.0:  # the dense side alone always meets its threshold: no fallback there
        assert claims, f"no answer was proven exact (threshold misses: {misses})"


# --- the halfvec rounding slack (issue #26) ------------------------------------------------------
# A query and two products (unit vectors, float32) whose order half precision inverts: A scores
# below B at full precision, above it at half precision (the halfvec index's order), and A's
# full-precision score is at or above its half-precision one.
HALF_Q = [0.06750061362981796, -0.07092296332120895, 0.3438228666782379, 0.056317586451768875,
          -0.287584125995636, 0.1941290646791458, 0.7000767588615417, 0.508458137512207]  # fmt: skip
HALF_A = [-0.07530713081359863, -0.3362632393836975, 0.22315150499343872, 0.14549574255943298,
          -0.3087988793849945, 0.2082887440919876, 0.8037747740745544, 0.1596730649471283]  # fmt: skip
HALF_B = [-0.2619364261627197, 0.0033490979112684727, 0.5393052101135254, -0.08439217507839203,
          -0.041706811636686325, 0.14318981766700745, 0.6657689213752747, 0.4097742438316345]  # fmt: skip


def test_a_halfvec_rounding_inversion_is_never_certified_as_exact(empty_db):
    """On a halfvec dense index the candidates are ordered by half-precision scores: a product
    outside the list may beat the list's lowest by the rounding. Here A heads the half-precision
    order but B is the true (full-precision) best, so the one-candidate answer [A] is wrong and
    must not be certified: only a bound carrying the rounding slack (HALFVEC_SLACK, at least
    2 * 2^-11 for unit vectors) refuses it; with the slack 0 its k-th score (A's full score)
    reaches A's half-precision score and the wrong answer is called exact."""
    conn = empty_db
    dim, a, b = len(HALF_Q), 0, 1
    # a few more products, far from the query (the graph has something to walk)
    rng = np.random.default_rng(26)
    far = -np.asarray(HALF_Q, np.float32) + 0.3 * rng.normal(size=(6, dim)).astype(np.float32)
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    dense = np.vstack([np.asarray([HALF_A, HALF_B], np.float32), far]).astype(np.float32)
    n = len(dense)
    rows = [
        {"id": i, "gender": "Men", "articleType": "Shirts", "productDisplayName": f"Half {i}"}
        for i in range(n)
    ]
    products.upsert_products(conn, rows, source="halfvec-test")
    sparse = [SparseVector({i: 1.0}, 16) for i in range(n)]
    vid = iv.create_version(
        conn, dense_model="synthetic", dense_dim=dim, sparse_model="synthetic", sparse_dim=16
    )
    iv.load_embeddings(conn, vid, list(range(n)), dense, sparse)
    hnsw.build_indexes(conn, vid, dense_index="halfvec", m=8, ef_construction=24)
    iv.mark_ready(conn, vid, {"test": "halfvec"})
    version = iv.get_version(conn, vid)
    assert search.dense_index(version) == "halfvec"
    assert version.params["hnsw"]["dense"] == {"m": 8, "ef_construction": 24}  # as built
    q = np.asarray(HALF_Q, np.float32)

    # The inversion, as the database computes it.
    scores = {
        pid: (full, half)
        for pid, full, half in conn.execute(
            sql.SQL(
                "SELECT product_id, -(dense <#> %(q)s::vector), "
                "-(dense::halfvec({d}) <#> %(q)s::vector::halfvec({d})) FROM {t}"
            ).format(d=sql.Literal(dim), t=sql.Identifier(version.table)),
            {"q": q},
        ).fetchall()
    }
    conn.commit()
    (full_a, half_a), (full_b, half_b) = scores[a], scores[b]
    assert full_b > full_a >= half_a > half_b, scores
    assert max(full for full, _ in scores.values()) == full_b  # B is the true best
    rounding = max(abs(full - half) for full, half in scores.values())
    assert 0 < rounding < 2 * 2**-11  # what the slack must cover (unit vectors)

    exact = search.fused_search(conn, search.SearchQuery(q, None, k=1, exact=True), version)
    assert [h.product_id for h in exact] == [b]
    # one candidate, first stage only: the list is [A] (half-precision order)
    one = search.SearchQuery(q, None, k=1, candidates=1, budget=1, exact_max_rows=0)
    ranking = search.certified_search(conn, one, version)
    c = ranking.certificate
    assert c.path == "fast" and [h.product_id for h in ranking.hits] == [a]
    assert c.kth_score == pytest.approx(full_a, abs=1e-6)
    assert not c.threshold_met, f"a wrong answer certified exact: {c}"
    assert c.bound >= half_a + 2 * 2**-11 - 1e-7, c  # the bound covers the rounding
    # with the exact fallback allowed (the service's default), the answer is the exact one
    ranking = search.certified_search(conn, replace(one, exact_max_rows=100), version)
    assert ranking.certificate.threshold_met and [h.product_id for h in ranking.hits] == [b]
