"""The fashion_reindex DAG through a real CeleryExecutor: ``fashion-search airflow start
--executor celery`` on an embedded PostgreSQL of this module's own (its own FASHION_HOME and
ports): Debian's redis-server as the broker, PostgreSQL as the result backend, and two Celery
workers, ``cpu`` (queue ``default``) and ``gpu`` (queue ``gpu``), each with its own
FASHION_HOME. The run must go green with the encode tasks on the gpu worker and every other
task on the cpu worker: which can only work if what a task hands the next travels through
the database, not a worker's disk. Slow: one Airflow start and one DAG run."""

from __future__ import annotations

import os
import shutil

import pytest
from api_harness import free_port
from conftest import TEST_HOME

pytestmark = pytest.mark.slow

DAG_ID = "fashion_reindex"
CONF = {"source": "offline", "size": 240, "shard_size": 120, "dense_model": "fashion-clip-offline"}
ENCODE_TASKS = ("encode_images", "encode_texts")


@pytest.fixture(scope="module")
def celery_stack(request):
    """(settings, what airflow.start returned) for a fresh FASHION_HOME, CeleryExecutor."""
    from services.config import Settings, get_settings
    from services.ops import airflow
    from services.store import embedded

    # Short: supervisord's socket path must stay < 108 bytes (see test_airflow_outage.py).
    home = TEST_HOME / f"ce-{os.getpid()}"
    shutil.rmtree(home, ignore_errors=True)
    failed_before = request.session.testsfailed
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASHION_HOME", str(home))
        for name in (
            "FASHION_PG_PORT",
            "FASHION_AIRFLOW_PORT",
            "FASHION_AIRFLOW_LOG_PORT",
            "FASHION_REDIS_PORT",
        ):
            mp.setenv(name, str(free_port()))
        for name in ("DATABASE_URL", "FASHION_AIRFLOW_PASSWORD", "AIRFLOW__FASHION__ALLOWED_HOSTS"):
            mp.delenv(name, raising=False)
        get_settings.cache_clear()
        settings = Settings.from_env()
        try:
            yield settings, airflow.start(settings, executor="celery", timeout=300)
        finally:
            try:
                airflow.stop(settings)
            finally:
                embedded.stop(settings)
                get_settings.cache_clear()
                if request.session.testsfailed == failed_before:
                    shutil.rmtree(home, ignore_errors=True)  # kept (logs) when a test failed


def test_reindex_dag_runs_green_through_two_celery_workers(celery_stack):
    from services.ops import airflow
    from services.store import shard_store
    from services.store.db import connect
    from services.store.index_versions import live_version, row_count

    settings, info = celery_stack
    assert info["executor"] == "CeleryExecutor"
    assert sorted(w.split("@")[0] for w in info["workers"]) == ["cpu", "gpu"]
    components = {c.name: c.state for c in airflow.status(settings)}
    assert {components[n] for n in airflow.CELERY_COMPONENTS} == {"RUNNING"}, components
    homes = {n: airflow.worker_home(settings, n) for n in airflow.CELERY_WORKERS}
    assert len(set(homes.values())) == 2 and all(h.is_dir() for h in homes.values())

    client = airflow.AirflowClient()
    client.wait_for_dag(DAG_ID, timeout=300)
    run_id = client.trigger(DAG_ID, CONF)["dag_run_id"]
    final = client.wait(DAG_ID, run_id, timeout=1200, poll=3)
    tis = client.task_instances(DAG_ID, run_id)
    where = {
        f"{ti['task_id']}[{ti['map_index']}]": (ti["state"], ti["queue"], ti["hostname"])
        for ti in tis
    }
    assert final["state"] == "success", (where, settings.home / "airflow" / "logs")
    assert all(state == "success" for state, _, _ in where.values()), where
    for task, (_, queue, host) in where.items():
        if task.split("[")[0] in ENCODE_TASKS:
            assert (queue, host.split("@")[0]) == ("gpu", "gpu"), (task, queue, host)
        else:
            assert (queue, host.split("@")[0]) == ("default", "cpu"), (task, queue, host)
    assert sum(t.startswith("encode_images[") for t in where) == 2

    with connect(settings.database_url) as conn:
        live = live_version(conn)
        assert live is not None and live.params.get("runner") == "airflow"
        assert row_count(conn, live.id) == live.row_count == CONF["size"]
        # the hand-offs were rows: this run's shards and both kinds of encoded vectors
        run_key = f"{DAG_ID}__{run_id}"
        shards = conn.execute(
            "SELECT fingerprint FROM pipeline_shards WHERE run_key = %s ORDER BY shard",
            (run_key,),
        ).fetchall()
        assert len(shards) == 2
        for (fingerprint,) in shards:
            kinds = conn.execute(
                "SELECT kind, model, rows FROM encoded_shards WHERE fingerprint = %s ORDER BY 1",
                (fingerprint,),
            ).fetchall()
            assert [(k, r) for k, _, r in kinds] == [("dense", 120), ("sparse", 120)]
    # XCom carried shard refs, not paths
    refs = client.xcom(DAG_ID, run_id, "ingest")
    assert [shard_store.parse_ref(r) for r in refs] == [(run_key, 0), (run_key, 1)]
