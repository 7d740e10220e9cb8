"""The local Airflow for real (``services/ops/airflow/``: supervisord running api-server,
scheduler and dag-processor) on an embedded PostgreSQL of this module's own (its own
FASHION_HOME and ports): the generated login, the Host header check, the nightly
evaluation's skip on a fresh install, and recovery from a database outage with nobody
restarting anything. Slow: one Airflow start (a minute or two) for the whole module."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from api_harness import free_port
from conftest import TEST_HOME

pytestmark = pytest.mark.slow

NIGHTLY = "fashion_eval_nightly"  # schedule-only DAG; with no live index both tasks skip
OUTAGE_S = 8


@pytest.fixture(scope="module")
def stack(request):
    """(settings, what airflow.start returned) for a fresh FASHION_HOME: nothing indexed."""
    from services.config import Settings, get_settings
    from services.ops import airflow
    from services.store import embedded

    # Not under pytest's tmp folder: other pytest sessions reset its root to 0700, which
    # locks out the server's OS user. Short: supervisord's socket path must stay < 108 bytes.
    home = TEST_HOME / f"af-{os.getpid()}"
    shutil.rmtree(home, ignore_errors=True)
    failed_before = request.session.testsfailed
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FASHION_HOME", str(home))
        mp.setenv("FASHION_PG_PORT", str(free_port()))
        mp.setenv("FASHION_AIRFLOW_PORT", str(free_port()))
        mp.setenv("FASHION_AIRFLOW_LOG_PORT", str(free_port()))
        for name in ("DATABASE_URL", "FASHION_AIRFLOW_PASSWORD", "AIRFLOW__FASHION__ALLOWED_HOSTS"):
            mp.delenv(name, raising=False)
        get_settings.cache_clear()
        settings = Settings.from_env()
        try:
            yield settings, airflow.start(settings)
        finally:
            try:
                airflow.stop(settings)
            finally:
                embedded.stop(settings)
                get_settings.cache_clear()
                if request.session.testsfailed == failed_before:
                    shutil.rmtree(home, ignore_errors=True)  # kept (logs) when a test failed


def test_generated_admin_password(stack):
    from services.ops import airflow

    settings, info = stack
    path = Path(info["password_source"])
    assert info["password_created"] and path.parent == airflow.airflow_home(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((path.parent / "passwords.json").stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert password == info["password"] and password != "admin" and len(password) >= 16
    again = airflow.admin_login(settings)  # what a later start or the REST client gets
    assert (again.password, again.created) == (password, False)

    airflow.AirflowClient()  # logs in with the stored password
    with pytest.raises(RuntimeError, match="login failed"):
        airflow.AirflowClient(password="admin")


def test_only_loopback_host_headers_are_answered(stack):
    settings, _ = stack
    port = settings.airflow_port
    base = f"http://127.0.0.1:{port}"
    for path in ("/api/v2/monitor/health", "/"):
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            r = httpx.get(base + path, headers={"Host": host}, trust_env=False, timeout=30)
            assert r.status_code == 400, (path, host, r.status_code)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        r = httpx.get(base + "/api/v2/monitor/health", headers={"Host": host}, trust_env=False)
        assert r.status_code == 200, (host, r.text[:300])


def _run_nightly(client) -> tuple[str, dict]:
    from services.ops import airflow

    run_id = client.trigger(NIGHTLY)["dag_run_id"]
    final = client.wait(NIGHTLY, run_id, timeout=300, poll=2)
    tasks = {ti["task_id"]: ti["state"] for ti in client.task_instances(NIGHTLY, run_id)}
    log = airflow.airflow_home() / "logs"
    assert final["state"] == "success", (final, tasks, log)
    return run_id, tasks


def test_recovers_from_a_database_outage_by_itself(stack):
    from services.ops import airflow
    from services.store import embedded
    from services.store.db import connect

    settings, _ = stack
    client = airflow.AirflowClient()
    before, tasks = _run_nightly(client)
    # a fresh install (no live index): the nightly evaluation skips, it does not fail
    assert tasks == {"evaluate": "skipped", "check_regression": "skipped"}

    embedded.stop(settings)
    down_since = time.monotonic()
    # what supervisord starts each component with, started while the database is down
    waiter = subprocess.Popen(
        [sys.executable, "-m", "services.ops.airflow", "wait-db"]
        + [sys.executable, "-c", "print('exec after the outage')"],
        env=airflow.airflow_env(settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))
    assert waiter.poll() is None, waiter.communicate()[0]  # still waiting, not failed
    embedded.start(settings)
    up_again = time.monotonic()
    out = waiter.communicate(timeout=120)[0]
    assert waiter.returncode == 0 and "exec after the outage" in out, out
    assert "waiting for the database" in out, out

    # no manual action: the same client triggers a run, and the scheduler runs it
    after, tasks = _run_nightly(client)
    assert after != before and tasks == {"evaluate": "skipped", "check_regression": "skipped"}
    recovered_s = time.monotonic() - up_again
    assert client.run(NIGHTLY, before)["state"] == "success"  # nothing lost in the outage
    # what supervisord saw (printed for the record; pytest -s or -rP shows it)
    log = (airflow.airflow_home(settings) / "logs" / "supervisord.log").read_text()
    events = [
        ln for ln in log.splitlines() if any(w in ln for w in ("exited:", "spawned:", "FATAL"))
    ]
    print(f"\noutage {OUTAGE_S}s; a run succeeded {recovered_s:.0f}s after the database was back")
    print("\n".join(events[3:]))  # after the first 3 spawns
    states = {c.name: c.state for c in airflow.status(settings)}
    assert states == dict.fromkeys(airflow.COMPONENTS, "RUNNING"), states
    with connect(settings.database_url) as conn:  # skipped: no alert for the dashboard
        assert conn.execute("SELECT count(*) FROM eval_alerts").fetchone()[0] == 0
    assert not (settings.reports_dir / "alerts.jsonl").exists()
