"""The fashion_reindex DAG run for real with Airflow 3's ``dag.test()``.

Airflow reads its configuration at import time, so each run happens in a fresh interpreter
(``tests/dag_runner.py``) with ``AIRFLOW_HOME`` in a temp folder, every
``AIRFLOW__*`` variable set, and the metadata DB ``airflow_test`` on the test server
(``airflow db migrate`` first). Tasks run the real stages and encoders against this test
session's database; afterwards we search the swapped-in version and look for the Asset event.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from conftest import drop_airflow_db
from dag_runner import dag_test

from services.config import get_settings

pytestmark = pytest.mark.slow

CONF = {"source": "offline", "size": 300, "shard_size": 100}
# Airflow's metadata DB of this test session (concurrent sessions never share one).
AIRFLOW_DB = f"airflow_test_{os.getpid()}"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory, settings):
    """AIRFLOW_HOME of this module; its metadata DB is dropped at the end."""
    yield tmp_path_factory.mktemp("airflow-home")
    drop_airflow_db(settings, AIRFLOW_DB)


def _dense_model() -> str:
    return "fashion-clip-offline"


def _asset_events(settings, run_id: str) -> list:
    with psycopg.connect(settings.airflow_db_url(AIRFLOW_DB)) as c:
        return c.execute(
            "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
            "WHERE a.uri = 'fashion://index/live' AND e.source_run_id = %s",
            (run_id,),
        ).fetchall()


@pytest.fixture(scope="module")
def first_run(settings, airflow_home):
    """One DAG run into this module's fresh database (migrates the Airflow metadata DB too);
    every test that needs a live version built by Airflow asks for this, in any order."""
    return dag_test(
        {**CONF, "dense_model": _dense_model()}, settings, home=airflow_home, dbname=AIRFLOW_DB
    )


def test_dag_run_swaps_in_a_new_version(settings, first_run, conn):
    from services.encoders.clip import load_clip
    from services.encoders.splade import load_splade
    from services.search import SearchQuery, fused_search
    from services.store.index_versions import list_versions

    empty_db = conn  # the module's database, empty before first_run
    result = first_run
    assert result["state"] == "success", result["output"][-4000:]
    assert all(s == "success" for s in result["tasks"].values()), result["tasks"]
    assert sum(t.startswith("encode_images[") for t in result["tasks"]) == 3
    assert sum(t.startswith("load[") for t in result["tasks"]) == 3

    # the version this run built (another test of this module may have swapped a later one in)
    (live,) = [
        v for v in list_versions(empty_db) if v.params.get("run_key", "").endswith(result["run_id"])
    ]
    assert live.status in ("live", "previous") and live.live_at is not None
    assert live.row_count == 300
    assert live.params["runner"] == "airflow"
    assert live.report["validation"]["valid"] == 300
    assert live.report["checks"]["recall_at_10_fast_vs_exact"] >= 0.9

    name = empty_db.execute(
        f"SELECT p.product_display_name FROM {live.table} e JOIN products p ON p.id = "
        "e.product_id ORDER BY e.product_id LIMIT 1"
    ).fetchone()[0]
    qd = load_clip(live.dense_model).encode_texts([name])[0]
    qs = load_splade(live.sparse_model).encode([name])[0]
    hits = fused_search(empty_db, SearchQuery(dense=qd, sparse=qs, k=10), live)
    empty_db.commit()
    assert len(hits) == 10
    assert any(h.product_display_name == name for h in hits)

    events = _asset_events(settings, result["run_id"])
    assert len(events) == 1 and events[0][0]["version"] == live.id


@pytest.fixture
def broken_clip(tmp_path, monkeypatch):
    """A registered CLIP model whose checkpoint is missing: it passes the registry lookup
    (so the run creates its version) and then every encode_images try fails."""
    from services.encoders.registry import ModelSpec, register_model

    real = get_settings().model_cache
    cache = tmp_path / "models"
    cache.mkdir()
    for entry in real.iterdir():
        if entry.name != "registry.d":
            (cache / entry.name).symlink_to(entry)
    monkeypatch.setenv("FASHION_MODEL_CACHE", str(cache))
    get_settings.cache_clear()  # settings are read once per process
    register_model(
        ModelSpec(
            name="broken-clip-test",
            kind="clip",
            source="fashion-clip-tiny",
            dim=256,
            licence="test",
            note="test: checkpoint missing",
            pretrained=str(tmp_path / "missing.pt"),
            offline=True,
        ),
        cache,
    )
    return "broken-clip-test"


def test_failed_encoding_keeps_live_version_then_rerun_finishes(
    settings, first_run, conn, airflow_home, broken_clip
):
    from services.store.index_versions import get_version, list_versions, live_version

    assert first_run["state"] == "success", first_run["output"][-4000:]
    before = live_version(conn)
    conn.commit()
    assert before is not None
    conf = {**CONF, "size": 200, "shard_size": 100}
    bad = dag_test(
        {**conf, "dense_model": broken_clip},
        get_settings(),
        home=airflow_home,
        dbname=AIRFLOW_DB,
        migrate=False,
    )
    assert bad["state"] == "failed"
    assert bad["tasks"]["encode_images[0]"] == "failed"
    assert bad["tasks"]["swap"] != "success"
    assert bad["tries"]["encode_images[0]"] == 3  # retries=2, then the run fails
    failed = [v for v in list_versions(conn) if v.params.get("run_key", "").endswith(bad["run_id"])]
    conn.commit()
    assert len(failed) == 1 and failed[0].status == "failed"
    assert live_version(conn).id == before.id  # still serving
    conn.commit()

    good = dag_test(
        {**conf, "dense_model": before.dense_model},
        get_settings(),
        home=airflow_home,
        dbname=AIRFLOW_DB,
        migrate=False,
    )
    assert good["state"] == "success", good["output"][-4000:]
    live = live_version(conn)
    assert live.id != before.id and live.row_count == 200
    assert get_version(conn, before.id).status == "previous"
    conn.commit()
