"""The local Airflow's operations files (services/ops/airflow/, infra/airflow.env,
infra/supervisord.conf, infra/compose.yaml) agree with each other; the pieces around it (the
admin login, the Host header check, the wait-for-database wrapper, the CLI's refusal of a
second re-index, the nightly evaluation's skip) work. Fast: no Airflow is started here
(tests/test_airflow_outage.py runs a real one)."""

from __future__ import annotations

import configparser
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent


def test_shared_settings_are_the_single_source(tmp_path, monkeypatch):
    from services.ops import airflow

    shared = airflow.shared_settings()
    assert shared["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert all(k.startswith("AIRFLOW__") for k in shared)
    monkeypatch.setenv("FASHION_AIRFLOW_PORT", "18123")
    env = airflow.airflow_env(home=tmp_path / "airflow")
    for key, value in shared.items():
        assert env[key] == value, key
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "18123"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18123"
    assert env["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
    # the machine-dependent values are not in the shared file, and vice versa
    assert not {"AIRFLOW__API__HOST", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"} & set(shared)
    assert airflow.admin_user() == "admin"
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(airflow.host_check_plugin().parent)
    # the wait-db wrapper connects exactly where Airflow does (passfile and all)
    from psycopg.conninfo import conninfo_to_dict

    from services.config import get_settings

    url = airflow.libpq_url(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert conninfo_to_dict(url) == conninfo_to_dict(get_settings().airflow_db_url("airflow"))


def test_compose_reads_the_shared_file_and_does_not_repeat_it():
    from services.ops import airflow

    compose = (REPO / "infra" / "compose.yaml").read_text()
    assert "env_file: [airflow.env]" in compose
    for key in airflow.shared_settings():
        assert key not in compose, f"{key} is set in infra/airflow.env; not again in compose"


def test_supervisord_programs_stop_their_whole_process_group():
    from services.ops import airflow

    conf = configparser.RawConfigParser()
    conf.read(airflow.SUPERVISORD_CONF)
    programs = {s.split(":", 1)[1]: conf[s] for s in conf.sections() if s.startswith("program:")}
    assert set(programs) == set(airflow.COMPONENTS)
    for name, prog in programs.items():
        # each waits for the metadata database before it execs Airflow (database outages)
        wrapper = "python -m services.ops.airflow wait-db"
        assert prog["command"].startswith(f"{wrapper} airflow {name}"), name
        assert prog.getboolean("stopasgroup") and prog.getboolean("killasgroup"), name
        assert prog.getboolean("autorestart") and prog.getint("startretries") >= 10, name
    assert "--host 127.0.0.1" in programs["api-server"]["command"]
    assert "--skip-serve-logs" in programs["scheduler"]["command"]
    assert "inet_http_server" not in conf.sections()  # control over a Unix socket only


def test_status_without_supervisord_reports_everything_stopped(tmp_path, monkeypatch):
    from services.ops import airflow

    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    comps = airflow.status()
    assert [c.name for c in comps] == list(airflow.COMPONENTS)
    assert not any(c.running for c in comps)
    assert airflow.stop() == []


def test_no_private_modules_of_other_libraries_are_imported():
    private = re.compile(
        r"^\s*(?:from|import)\s+([A-Za-z0-9_]+)\.(?:[A-Za-z0-9_]+\.)*_[a-z]", re.MULTILINE
    )
    offenders = []
    for folder in ("services", "dags", "evaluation"):
        for path in (REPO / folder).rglob("*.py"):
            for m in private.finditer(path.read_text()):
                if m.group(1) not in ("services", "evaluation"):
                    offenders.append(f"{path.relative_to(REPO)}: {m.group(0).strip()}")
    assert not offenders, offenders


def test_admin_password_is_generated_once_kept_private_and_overridable(tmp_path, monkeypatch):
    from services.config import get_settings
    from services.ops import airflow

    monkeypatch.setenv("FASHION_HOME", str(tmp_path))
    monkeypatch.delenv("FASHION_AIRFLOW_PASSWORD", raising=False)
    first = airflow.admin_login()
    path = airflow.airflow_home() / airflow.ADMIN_PASSWORD_FILE
    assert first.created and first.source == str(path) and first.user == "admin"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.password == path.read_text().strip()
    assert first.password != "admin" and len(first.password) >= 16
    again = airflow.admin_login()
    assert (again.password, again.created) == (first.password, False)  # printed only once

    airflow.write_passwords(tmp_path / "airflow", again)
    passwords = tmp_path / "airflow" / "passwords.json"
    assert stat.S_IMODE(passwords.stat().st_mode) == 0o600
    assert first.password in passwords.read_text()

    monkeypatch.setenv("FASHION_AIRFLOW_PASSWORD", "chosen-by-me")
    get_settings.cache_clear()
    mine = airflow.admin_login()
    assert (mine.password, mine.source, mine.created) == (
        "chosen-by-me",
        "FASHION_AIRFLOW_PASSWORD",
        False,
    )


def _plugin_probe(tmp_path, body: str, **env_extra: str) -> str:
    """Run ``body`` in a fresh interpreter with Airflow's environment, after loading the
    plugin file the way Airflow does (``runpy``) and adding its root middlewares, in order, to
    a tiny FastAPI app ``app`` (``/ping``) with a TestClient ``c``. Returns its stdout."""
    from services.ops import airflow

    plugin = airflow.host_check_plugin()
    env = airflow.airflow_env(home=tmp_path / "airflow")
    env.update(env_extra)
    probe = f"""
import runpy
from fastapi import FastAPI
from fastapi.testclient import TestClient
from airflow.plugins_manager import AirflowPlugin

mod = runpy.run_path({str(plugin)!r})
(cls,) = [v for v in mod.values() if isinstance(v, type) and issubclass(v, AirflowPlugin)
          and v is not AirflowPlugin]
app = FastAPI()
app.get("/ping")(lambda: "pong")
for m in cls.fastapi_root_middlewares:
    app.add_middleware(m["middleware"], *m.get("args", []), **m.get("kwargs", {{}}))
c = TestClient(app)
{body}
"""
    res = subprocess.run(
        [sys.executable, "-c", probe],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_host_check_plugin_rejects_foreign_hosts(tmp_path):
    """The plugin file, loaded the way Airflow loads it, around a tiny app."""
    body = """
for host in ["127.0.0.1:8080", "localhost:8080", "fashion.lan", "airflow.fashion.lan:8080",
             "evil.example", "evil.example:8080", "localhost.evil.example", "fashion.lan.evil"]:
    print("HOST", host, c.get("/ping", headers={"Host": host}).status_code)
"""
    out = _plugin_probe(
        tmp_path, body, AIRFLOW__FASHION__ALLOWED_HOSTS="fashion.lan, airflow.fashion.lan"
    )
    codes = dict(line.split()[1:] for line in out.splitlines() if line.startswith("HOST "))
    assert codes == {
        "127.0.0.1:8080": "200",
        "localhost:8080": "200",
        "fashion.lan": "200",
        "airflow.fashion.lan:8080": "200",
        "evil.example": "400",
        "evil.example:8080": "400",
        "localhost.evil.example": "400",
        "fashion.lan.evil": "400",
    }, out


def test_plugin_adds_the_security_headers_to_every_answer(tmp_path):
    """Every answer, the Host check's 400 included, carries the headers of the project's own
    API (services/api/security.py) and a CSP that keeps the UI out of frames, allows script
    from the server's own origin only and no eval; a header the app sets itself is kept."""
    import json

    from services.api.security import SECURITY_HEADERS
    from services.ops import airflow
    from services.ops.airflow.client import REQUIRED_HEADERS

    body = """
import json
from fastapi.responses import HTMLResponse, StreamingResponse

app.get("/page", response_class=HTMLResponse)(lambda: "<p>hi</p>")
app.get("/own")(lambda: HTMLResponse("x", headers={"X-Frame-Options": "SAMEORIGIN"}))
app.get("/stream")(lambda: StreamingResponse(iter([b"a", b"b"]), media_type="text/plain"))
for name, host, path in [("ok", "127.0.0.1:8080", "/ping"), ("html", "localhost", "/page"),
                         ("stream", "localhost", "/stream"), ("foreign", "evil.example", "/ping"),
                         ("missing", "localhost", "/nothing-here"), ("own", "localhost", "/own")]:
    r = c.get(path, headers={"Host": host})
    print("ANSWER", json.dumps([name, r.status_code, dict(r.headers), r.text]))
"""
    out = _plugin_probe(tmp_path, body)
    answers = {
        a[0]: a[1:]
        for a in (json.loads(line[7:]) for line in out.splitlines() if line.startswith("ANSWER "))
    }
    assert {k: v[0] for k, v in answers.items()} == {
        "ok": 200,
        "html": 200,
        "stream": 200,
        "foreign": 400,
        "missing": 404,
        "own": 200,
    }, out
    assert answers["stream"][2] == "ab"
    assert REQUIRED_HEADERS == SECURITY_HEADERS  # the start-up check's copy
    for name, (status, headers, _) in answers.items():
        expected = dict(SECURITY_HEADERS)
        if name == "own":
            expected["x-frame-options"] = "SAMEORIGIN"  # the app's own, not overwritten
        assert {k: headers.get(k) for k in expected} == expected, (name, status, headers)
        csp = dict(d.strip().split(" ", 1) for d in headers["content-security-policy"].split(";"))
        assert csp["frame-ancestors"] == "'none'", csp
        assert csp["default-src"] == csp["script-src"] == "'self'", csp
        assert csp["object-src"] == "'none'", csp
        assert "unsafe-eval" not in headers["content-security-policy"], csp
        if name != "own":
            assert airflow.missing_security_headers(httpx.Headers(headers)) == [], name


def test_wait_db_wrapper_usage():
    from services.ops import airflow

    assert airflow.main([]) == 2
    assert airflow.main(["wait-db"]) == 2


def test_second_index_run_is_refused_with_one_line(settings, conn):
    """While another run holds the build lock, `fashion-search index` says so in one line
    on stderr and exits non-zero (EX_TEMPFAIL), with no traceback."""
    from services.pipeline.run_lock import BUILD_LOCK_NAME
    from services.store import locks

    conn.autocommit = True
    assert locks.acquire(conn, BUILD_LOCK_NAME, timeout=None)  # "the other run"
    try:
        res = subprocess.run(
            [sys.executable, "-m", "services.cli", "index", "--size", "50"],
            env=dict(os.environ),  # DATABASE_URL: this module's database
            cwd=str(REPO),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        locks.release(conn, BUILD_LOCK_NAME)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == os.EX_TEMPFAIL, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr + res.stdout
    assert len(lines) == 1 and lines[0].startswith("error: another indexing run"), lines


def test_nightly_evaluation_skips_while_no_index_is_live(empty_db):
    """A fresh install: the DAG's evaluate task skips (check_regression follows by the
    default trigger rule) instead of failing and raising a dashboard alert."""
    import importlib.util

    from airflow.sdk.exceptions import AirflowSkipException

    from evaluation import nightly
    from services.search import NoLiveIndex
    from services.store import evaluations as storage

    with pytest.raises(NoLiveIndex):
        nightly.evaluate_live()
    spec = importlib.util.spec_from_file_location(
        "fashion_eval_nightly_skip", REPO / "dags" / "fashion_eval_nightly.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    evaluate = module.DAG_OBJECT.task_dict["evaluate"]
    with pytest.raises(AirflowSkipException, match="no index version is live"):
        evaluate.python_callable()
    assert storage.list_alerts(empty_db, 10) == []
    assert storage.latest_run(empty_db) is None
