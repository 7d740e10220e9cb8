"""The local Airflow's operations files (services/ops/airflow.py, infra/airflow.env,
infra/supervisord.conf, infra/compose.yaml) agree with each other. Fast: nothing is started
here; `fashion-search airflow start/status/stop` is exercised by hand (README)."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

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
        assert prog["command"].startswith(f"airflow {name}"), name
        assert prog.getboolean("stopasgroup") and prog.getboolean("killasgroup"), name
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
