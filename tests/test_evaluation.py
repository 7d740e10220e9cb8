"""Evaluation: metrics against hand-computed cases, the deterministic query set, storage,
regression check, the nightly DAG's wiring, and one small end-to-end run on a real index
whose stored rows the dashboard renders."""

from __future__ import annotations

import importlib.util
import math
import os
import random
from pathlib import Path

import pytest
from conftest import drop_airflow_db
from synthetic import catalogue_rows

from evaluation import metrics as M
from evaluation.queries import DEFAULT_SIZES, FAMILIES, PINNED_PARAPHRASES, generate_queries
from services.config import get_settings

REPO = Path(__file__).resolve().parent.parent


# --- metrics ---------------------------------------------------------------------------------
def test_metrics_hand_computed():
    ranking = [1, 2, 3, 4, 5]
    rel = {1, 3}
    assert M.precision_at_k(ranking, rel, 10) == pytest.approx(0.2)
    assert M.average_precision_at_k(ranking, rel, 10) == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert M.reciprocal_rank_at_k(ranking, rel, 10) == 1.0
    assert M.ndcg_at_k(ranking, rel, 10) == pytest.approx(
        (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    )
    assert M.recall_at_k(ranking, rel, 100) == 1.0

    # one relevant product at rank 5
    assert M.average_precision_at_k(ranking, {5}, 10) == pytest.approx(0.2)
    assert M.reciprocal_rank_at_k(ranking, {5}, 10) == pytest.approx(0.2)
    assert M.ndcg_at_k(ranking, {5}, 10) == pytest.approx(1 / math.log2(6))
    # relevant product beyond the cut-off
    long = list(range(1, 31))
    assert M.average_precision_at_k(long, {20}, 10) == 0.0
    assert M.reciprocal_rank_at_k(long, {20}, 10) == 0.0
    assert M.recall_at_k(long, {20}, 100) == 1.0


def test_ap_normalised_by_min_k_and_relevant():
    relevant = set(range(100, 120))  # 20 relevant, top 10 all relevant
    ranking = list(range(100, 110)) + [1, 2, 3]
    assert M.average_precision_at_k(ranking, relevant, 10) == 1.0
    assert M.precision_at_k(ranking, relevant, 10) == 1.0
    assert M.ndcg_at_k(ranking, relevant, 10) == pytest.approx(1.0)
    assert M.recall_at_k(ranking, relevant, 100) == pytest.approx(10 / 20)
    # 3 relevant found at ranks 2, 4, 6 of a list where 3 exist: (1/2 + 2/4 + 3/6) / 3
    assert M.average_precision_at_k([0, 1, 0, 2, 0, 3], {1, 2, 3}, 10) == pytest.approx(0.5)


def test_empty_relevance_is_none_not_zero():
    for fn in (
        M.precision_at_k,
        M.average_precision_at_k,
        M.reciprocal_rank_at_k,
        M.ndcg_at_k,
        M.recall_at_k,
    ):
        assert fn([1, 2, 3], set()) is None
    assert M.query_metrics([1, 2], []) is None
    assert M.mean([None, 0.5, 1.0, None]) == (0.75, 2)
    assert M.mean([None]) == (None, 0)
    assert M.overlap_at_k([1, 2], [], 10) is None


def test_ties_and_duplicates():
    # equal scores: ties broken by ascending id, like the store's ORDER BY score DESC, id
    assert M.rank_by_score({5: 0.9, 3: 0.9, 7: 1.0, 1: 0.1}) == [7, 3, 5, 1]
    ranking = M.rank_by_score({5: 0.9, 3: 0.9, 7: 1.0})
    assert M.average_precision_at_k(ranking, {5}, 10) == pytest.approx(1 / 3)
    # a repeated id never counts twice
    assert M.precision_at_k([1, 1, 2], {1}, 10) == pytest.approx(0.1)
    assert M.average_precision_at_k([1, 1, 1], {1, 2}, 10) == pytest.approx(0.5)
    assert M.overlap_at_k([1, 2, 3], [3, 9, 1], 3) == pytest.approx(2 / 3)


# --- query set --------------------------------------------------------------------------------
def _catalogue(n: int = 600, seed: int = 1) -> list[dict]:
    return catalogue_rows(n, seed)


def test_query_generator_is_deterministic():
    products = _catalogue()
    a = generate_queries(products, seed=0)
    shuffled = list(products)
    random.Random(7).shuffle(shuffled)
    b = generate_queries(shuffled, seed=0)
    assert [q.to_json() for q in a.queries] == [q.to_json() for q in b.queries]
    assert a.version == b.version and a.version.startswith("qs3-")
    c = generate_queries(products, seed=1)
    assert c.version != a.version
    assert {q.family for q in a.queries} == set(FAMILIES)
    assert len({q.qid for q in a.queries}) == len(a.queries)
    assert 150 <= len(a.queries) <= sum(DEFAULT_SIZES.values())


def test_query_relevance_judgements():
    products = _catalogue()
    qs = generate_queries(products, seed=0)
    texts = {q.text: q for q in qs.queries}
    for pinned in PINNED_PARAPHRASES:
        assert pinned in texts
    assert dict(texts["trainers"].criteria)["articleType"] == ("Sports Shoes", "Casual Shoes")
    wmns = dict(texts["wmns top"].criteria)
    assert wmns["gender"] == ("Women", "Unisex") and wmns["articleType"] == ("Tops",)
    for q in qs.queries:
        crit = dict(q.criteria)
        if q.family == "gender_colour_category":
            g = crit["gender"]
            assert q.text.split()[0] == g[0].lower()
            assert g == ((g[0], "Unisex") if g[0] in ("Men", "Women") else (g[0],))
        if q.family == "multimodal":
            src = next(p for p in products if p["id"] == q.image_product_id)
            assert crit["articleType"] == (src["articleType"],)
            assert crit["baseColour"] != (src["baseColour"],)
            assert q.text == crit["baseColour"][0].lower()
            assert q.image_product_id not in q.relevant(products)
        if q.family != "paraphrase":  # built from combinations that exist
            assert q.relevant(products), q


def test_unknown_family_rejected():
    with pytest.raises(ValueError, match="unknown query families"):
        generate_queries(_catalogue(50), families=["nope"])


# --- database: migration, storage, regression --------------------------------------------------
def test_migration_0002_down_and_up(settings, conn):
    from services.store import migrate

    def tables():
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'eval_%%'")
        out = {r[0] for r in rows.fetchall()}
        conn.commit()
        return out

    assert tables() == {"eval_runs", "eval_metrics", "eval_alerts"}
    conn.close()
    try:
        migrate.downgrade("0001")
        from services.store.db import connect

        with connect(settings.database_url) as c:
            left = c.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'eval_%%'")
            assert left.fetchone()[0] == 0
    finally:
        migrate.upgrade("head")
    from services.store.db import connect

    with connect(settings.database_url) as c:
        back = c.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'eval_%%'")
        assert back.fetchone()[0] == 3


def _fake_run(
    conn, hybrid_by_alpha: dict[float, float], dense=0.5, sparse=0.6, multi=0.8, split: str = "test"
):
    from services.store import evaluations as storage
    from services.store.evaluations import MetricRow

    run_id = storage.start_run(
        conn,
        index_version_id=None,
        dense_model="d",
        sparse_model="s",
        query_set_version="qs1-test",
        details={"default_alpha": 0.5, "split": split, "synthetic": True},
    )
    rows = [
        MetricRow("dense", 1.0, "all", "map@10", dense, 10),
        MetricRow("sparse", 0.0, "all", "map@10", sparse, 10),
    ]
    for a, v in hybrid_by_alpha.items():
        rows.append(MetricRow("hybrid", a, "all", "map@10", v, 10))
        rows.append(MetricRow("hybrid", a, "category", "map@10", v - 0.05, 3))
        rows.append(MetricRow("multi", a, "all", "map@10", multi * v, 4))
    storage.store_metrics(conn, run_id, rows)
    storage.finish_run(conn, run_id, status="succeeded")
    return run_id


def test_regression_check_and_alert(settings, conn, monkeypatch):
    from evaluation import nightly
    from evaluation.summary import MapRegression, check_regression, headline
    from services.store import evaluations as storage

    first = _fake_run(conn, {0.0: 0.6, 0.5: 0.80, 1.0: 0.5})
    same = _fake_run(conn, {0.0: 0.6, 0.5: 0.79, 1.0: 0.5})  # drop 0.01 <= 0.02
    check = check_regression(conn, same, 0.02)
    assert check.previous_run_id == first and not check.regressed
    assert check.drop == pytest.approx(0.01)
    tuning = _fake_run(conn, {0.0: 0.6, 0.5: 0.99, 1.0: 0.5}, split="tune")
    assert check_regression(conn, tuning, 0.02).previous_run_id is None  # halves never compared
    worse = _fake_run(conn, {0.0: 0.6, 0.5: 0.70, 1.0: 0.5})
    assert check_regression(conn, worse, 0.02).previous_run_id == same
    assert check_regression(conn, worse, 0.02).regressed
    assert not check_regression(conn, worse, 0.2).regressed
    h = headline(storage.metrics_for(conn, worse), 0.5)
    assert h.hybrid_alpha == 0.5 and h.hybrid == pytest.approx(0.70)

    monkeypatch.setenv("FASHION_EVAL_MAP_MARGIN", "0.05")
    get_settings.cache_clear()  # settings are read once per process
    assert nightly.resolve_margin(None) == 0.05
    assert nightly.resolve_margin(0.01) == 0.01
    with pytest.raises(MapRegression) as info:
        nightly.check_run(worse, None)

    class TI:
        dag_id, task_id = "fashion_eval_nightly", "check_regression"

    before = len(storage.list_alerts(conn, 1000))
    nightly.alert_on_failure({"exception": info.value, "task_instance": TI()})
    alerts = storage.list_alerts(conn, 1000)
    conn.commit()
    assert len(alerts) == before + 1
    assert alerts[0].run_id == worse and "regression" in alerts[0].message
    assert alerts[0].details["previous_run_id"] == same


def test_nightly_dag_wiring():
    from airflow.sdk import AssetOrTimeSchedule

    from evaluation.nightly import alert_on_failure

    spec = importlib.util.spec_from_file_location(
        "fashion_eval_nightly_dag", REPO / "dags" / "fashion_eval_nightly.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag = module.DAG_OBJECT
    assert dag.dag_id == "fashion_eval_nightly"
    assert isinstance(dag.timetable, AssetOrTimeSchedule)
    assert "fashion://index/live" in repr(dag.timetable.asset_condition)
    assert dag.task_ids == ["evaluate", "check_regression"]
    assert dag.task_dict["check_regression"].upstream_task_ids == {"evaluate"}
    for t in dag.tasks:
        assert alert_on_failure in t.on_failure_callback
    assert "margin" in dag.params


# --- end to end: tiny real index -> evaluation -> stored rows -> dashboard ---------------------
TINY_SIZE = 200  # the first offline products; the MAP floors below were measured on them


def _dense_model() -> str:
    """The configured CLIP model. No fallback: it must be a trained model whose checkpoint is
    on this machine, or the floors below would be measured on noise (or skipped)."""
    from services.encoders.registry import get_spec, is_available

    name = get_settings().dense_model
    spec = get_spec(name, kind="clip")
    if not spec.trained:
        raise AssertionError(f"dense model {name!r} is untrained: the evaluation needs a real one")
    if not is_available(spec):
        raise FileNotFoundError(f"dense model {name!r} has no checkpoint on this machine")
    return name


def _build_tiny_index() -> None:
    """A live index of the first TINY_SIZE offline products, through the real reindex pipeline
    with the configured (real, offline) models."""
    from services.pipeline.reindex import run_reindex

    report = run_reindex(
        source="offline",
        size=TINY_SIZE,
        shard_size=TINY_SIZE,
        dense_model=_dense_model(),
        sparse_model=get_settings().sparse_model,
    )
    assert report["status"] == "success", report.get("error")


def _is_tiny_index(conn, version) -> bool:
    """``version`` is the index the floors were measured on (configured models, same products)."""
    from services.catalog.offline import OFFLINE_ID_BASE
    from services.store.index_versions import product_metadata

    s = get_settings()
    if version is None or (version.row_count or 0) != TINY_SIZE:
        return False
    if (version.dense_model, version.sparse_model) != (s.dense_model, s.sparse_model):
        return False
    if not math.isclose(version.dense_image_weight, s.dense_image_weight):
        return False
    ids = {int(p["id"]) for p in product_metadata(conn, version.id)}
    return ids == set(range(OFFLINE_ID_BASE, OFFLINE_ID_BASE + TINY_SIZE))


@pytest.fixture(scope="module")
def tiny_index(settings):
    from services.store.db import connect
    from services.store.index_versions import live_version

    conn = connect(settings.database_url)
    try:
        if not _is_tiny_index(conn, live_version(conn)):
            conn.commit()
            _build_tiny_index()
        live = live_version(conn)
        assert _is_tiny_index(conn, live), live
        conn.commit()
        yield live
    finally:
        conn.close()


SMALL = {
    **dict.fromkeys(FAMILIES, 3),
    "category": 5,
    "colour_category": 5,
    "gender_colour_category": 4,
    "usage_season_category": 4,
    "paraphrase": 6,
    "misspelling": 5,
    "multimodal": 5,
}


# MAP@10 (family "all", text queries) of the run below on the tiny index (fashion-lit-minilm +
# splade-tiny-offline, alpha sweep 0 / 0.5 / 1, default alpha 0.5), measured on CPU:
# hybrid 0.542, dense 0.498, sparse 0.474. Each floor is about 75 % of its measured value.
# The per-side floors matter: with a random dense side the hybrid could still pass its floor
# on the sparse side alone, but the dense floor (and hybrid > dense) would not.
HYBRID_MAP_FLOOR = 0.40
DENSE_MAP_FLOOR = 0.37
SPARSE_MAP_FLOOR = 0.35


def _one_sided_maps(conn, version, outcome) -> tuple[float, float]:
    """(dense-only, sparse-only) MAP@10 of the run's scored text queries, ranked exactly in
    numpy by the stored vectors of every product (ties by id, like the store's SQL)."""
    from services.encoders.clip import load_clip
    from services.encoders.splade import load_splade, sparse_dot
    from services.search import dense_vectors, sparse_vectors
    from services.store.index_versions import product_metadata

    products = product_metadata(conn, version.id)
    dense_docs = dense_vectors(conn, version)
    sparse_docs = sparse_vectors(conn, version)
    conn.commit()
    queries = [
        q for q in outcome.query_set.queries if q.qid in outcome.per_query and not q.is_multimodal
    ]
    assert queries
    # the vectors the run searched: understood as the run understood them (config "split")
    from evaluation.understanding import CachedEncoder, run_understanding, understand_all

    encode = CachedEncoder(load_clip(version.dense_model), load_splade(version.sparse_model))
    understood = understand_all(
        run_understanding(conn, version, "split", encode).understanding,
        [q.text for q in queries],
        encode,
    )
    dense_q = [understood[q.text].dense for q in queries]
    sparse_q = [understood[q.text].sparse for q in queries]
    dense_aps, sparse_aps = [], []
    for i, q in enumerate(queries):
        relevant = q.relevant(products)
        by_dense = {pid: float(vec @ dense_q[i]) for pid, vec in dense_docs.items()}
        by_sparse = {pid: sparse_dot(sparse_q[i], vec) for pid, vec in sparse_docs.items()}
        dense_aps.append(M.average_precision_at_k(M.rank_by_score(by_dense), relevant, 10))
        sparse_aps.append(M.average_precision_at_k(M.rank_by_score(by_sparse), relevant, 10))
    return M.mean(dense_aps)[0], M.mean(sparse_aps)[0]


@pytest.mark.slow
def test_end_to_end_run_is_stored_and_rendered(settings, conn, tiny_index, tmp_path):
    from api_harness import dashboard_app
    from litestar.testing import TestClient

    from evaluation.report import text_report
    from evaluation.run import evaluate
    from services.store import evaluations as storage

    assert tiny_index is not None
    outcome = evaluate(conn, alphas=[0.0, 0.5, 1.0], sizes=SMALL, fast_recall_queries=5)
    run = storage.get_run(conn, outcome.run_id)
    assert run.status == "succeeded" and run.index_version_id == tiny_index.id
    assert run.query_set_version == outcome.query_set.version
    rows = storage.metrics_for(conn, run.id)
    conn.commit()
    modes = {r.mode for r in rows}
    assert modes == {"dense", "sparse", "hybrid", "multi", "literal", "multi_literal"}
    # understanding: the held-out configuration by default, its rule set recorded
    understanding = run.details["understanding"]
    assert understanding["config"] == "split" and understanding["sources"] == "reader-half"
    assert understanding["rules"] > 50 and len(understanding["rules_fingerprint"]) == 12
    families = {r.family for r in rows}
    assert "misspelling_reference" in families and "misspelling" in families
    assert {r.alpha for r in rows if r.mode == "hybrid"} >= {0.0, 0.5, 1.0}
    assert all(0.0 <= r.value <= 1.0 for r in rows)
    overall = [r for r in rows if r.family == "all" and r.metric == "map@10"]
    assert overall and all(r.n_queries > 0 for r in overall)
    assert any(r.metric == "fast_recall@10" for r in rows)
    scored = run.details["n_queries_scored"]
    assert scored + len(run.details["skipped"]) == len(outcome.query_set.queries)
    # Quality, not only plumbing: fusion beats each side alone at the service's default
    # alpha, on the same run, and the whole stack stays above a floor set from measurement.
    from evaluation.summary import value

    default_alpha = run.details["default_alpha"]
    dense, sparse = value(rows, "dense"), value(rows, "sparse")
    hybrid = value(rows, "hybrid", default_alpha)
    assert hybrid > dense and hybrid > sparse, (dense, sparse, hybrid)
    assert hybrid >= HYBRID_MAP_FLOOR, hybrid
    assert dense >= DENSE_MAP_FLOOR and sparse >= SPARSE_MAP_FLOOR, (dense, sparse)
    # The dense-only and sparse-only rows are what a plain ranking by one side gives:
    # recomputed here outside the SQL path (exact scores in numpy over the stored vectors).
    check_dense, check_sparse = _one_sided_maps(conn, tiny_index, outcome)
    assert dense == pytest.approx(check_dense, abs=0.01)
    assert sparse == pytest.approx(check_sparse, abs=0.01)
    assert outcome.report_path and outcome.report_path.exists()
    assert "MAP@10 per family" in outcome.report_path.read_text()
    text = text_report(conn, run.id)
    assert "map@10" in text and "hybrid" in text

    with dashboard_app(settings) as app, TestClient(app=app) as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert f"Run <b>#{run.id}</b>" in page.text
        assert "/dashboard/alpha.png" in page.text
        for png in ("history.png", "alpha.png", "families.png"):
            r = client.get(f"/dashboard/{png}")
            assert r.status_code == 200, png
            assert r.headers["content-type"] == "image/png"
            assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get("/dashboard/data.json").json()["run"] == run.id
        assert client.get("/dashboard", params={"run": 999999}).status_code == 404
        assert client.get("/dashboard", params={"run": "x"}).status_code == 400


def test_cli_registers_eval():
    import argparse

    from evaluation.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--alphas", "0,0.5,1", "--families", "category,multimodal"])
    assert args.alphas == [0.0, 0.5, 1.0] and args.families == ["category", "multimodal"]
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--alphas", "2"])


@pytest.mark.slow
def test_cli_eval_prints_table_and_stores_run(settings, conn, tiny_index, capsys):
    from services.cli import main
    from services.store import evaluations as storage

    before = storage.latest_run(conn)
    conn.commit()
    code = main(["eval", "--alphas", "0,0.5,1", "--families", "category,colour_category"])
    out = capsys.readouterr().out
    assert code == 0, out
    latest = storage.latest_run(conn)
    conn.commit()
    assert latest is not None and (before is None or latest.id > before.id)
    assert f"evaluation run {latest.id} [succeeded]" in out
    assert "map@10" in out and "colour_category" in out and "report written to" in out
    assert main(["eval-report", str(latest.id)]) == 0


def test_dashboard_renders_without_runs():
    from evaluation import charts
    from evaluation.dashboard import DashboardData, render_page

    empty = DashboardData(
        runs=[],
        history={},
        run=None,
        rows=[],
        head=None,
        previous=None,
        comparison=[],
        alerts=[],
        current_default_alpha=0.5,
        margin=0.02,
    )
    page = render_page(empty, "/dashboard")
    assert "No evaluation run is stored yet" in page and "/dashboard/history.png" in page
    for png in (
        charts.history_chart([], {}),
        charts.alpha_chart({}, {}, 0.5, "none"),
        charts.family_chart([], {}, "none"),
    ):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


# --- the nightly DAG for real: dag.test() in a fresh interpreter -----------------------------
@pytest.mark.slow
def test_nightly_dag_stores_a_run_and_fails_loudly_on_regression(
    settings, conn, tiny_index, tmp_path, request
):
    """A previous run with hybrid MAP 1.0 makes tonight's run a regression: the DAG run
    fails at check_regression and the failure callback writes an eval_alerts row."""
    from dag_runner import dag_test

    from evaluation.queries import FAMILIES
    from services.store import evaluations as storage
    from services.store.evaluations import MetricRow

    perfect = storage.start_run(
        conn,
        index_version_id=None,
        dense_model="d",
        sparse_model="s",
        query_set_version="qs1-synthetic",
        details={
            "default_alpha": 0.5,
            "families": list(FAMILIES),
            "split": "test",
            "synthetic": True,
        },
    )
    storage.store_metrics(conn, perfect, [MetricRow("hybrid", 0.5, "all", "map@10", 1.0, 1)])
    storage.finish_run(conn, perfect, status="succeeded")
    alerts_before = len(storage.list_alerts(conn, 10_000))
    conn.commit()

    airflow_db = f"airflow_eval_test_{os.getpid()}"  # this session's own Airflow metadata DB
    request.addfinalizer(lambda: drop_airflow_db(settings, airflow_db))
    result = dag_test(
        {"margin": 0.02},
        settings,
        home=tmp_path / "airflow",
        dbname=airflow_db,
        timeout=600,
        dag_file=REPO / "dags" / "fashion_eval_nightly.py",
    )
    output = result["output"]
    assert result["tasks"]["evaluate"] == "success", output[-5000:]
    assert result["tasks"]["check_regression"] == "failed", output[-5000:]
    assert result["state"] == "failed"

    latest = storage.latest_run(conn)
    assert latest.id > perfect and latest.notes == "fashion_eval_nightly"
    alerts = storage.list_alerts(conn, 10_000)
    conn.commit()
    assert len(alerts) == alerts_before + 1
    assert alerts[0].run_id == latest.id, alerts[0].message
    assert alerts[0].source == "fashion_eval_nightly.check_regression"
    assert alerts[0].details["previous_run_id"] == perfect
    assert alerts[0].details["exception_type"] == "MapRegression"
