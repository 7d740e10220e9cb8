"""A real Airflow 3 for the platform, on this machine: settings, setup, start/stop, REST client.

Supervision: **supervisord** (``infra/supervisord.conf``) runs the three components, because
``fashion-search airflow start`` must return once the api-server answers and ``stop`` must
leave no process behind. supervisord daemonises itself, keeps per-program logs and pids,
restarts a crashed component, answers ``status`` and stops each program's whole process
group (``stopasgroup``/``killasgroup``: LocalExecutor workers and task processes included).
Airflow's own ``-D --pid`` flags start daemons but have no stop or status command, and
honcho runs in the foreground (we would still need our own backgrounding, pid file and
kill), so both would keep a home-made supervisor around.

Settings: one source, ``infra/airflow.env`` (also compose's ``env_file:``), plus what depends
on this machine, set by :func:`airflow_env`: ``AIRFLOW_HOME = FASHION_HOME/airflow`` (logs,
supervisord's socket and pid file, secrets, the SimpleAuthManager passwords file), the
metadata database ``airflow`` on the project's PostgreSQL (psycopg 3 driver for both the sync
and async SQLAlchemy URLs), and 127.0.0.1 for every listener:

- ``airflow api-server --host 127.0.0.1`` (UI + REST + execution API);
- ``airflow scheduler --skip-serve-logs`` with the LocalExecutor (the worker log server
  would bind every interface: Airflow 3.3 hard-codes ``host=""``; with a LocalExecutor the
  api-server reads task logs straight from ``AIRFLOW_HOME/logs``);
- ``airflow dag-processor`` parsing the repo's ``dags/`` folder.

No triggerer (no deferrable tasks); ``airflow standalone`` is not used (its log servers listen
on all interfaces). The ``gpu`` pool (1 slot) serialises the encoders.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx

from services.config import REPO_ROOT, Settings, get_settings
from services.store import embedded, migrate
from services.store.migrate import sqlalchemy_url

DAG_ID = "fashion_reindex"
ENV_FILE = REPO_ROOT / "infra" / "airflow.env"
SUPERVISORD_CONF = REPO_ROOT / "infra" / "supervisord.conf"
COMPONENTS = ("api-server", "scheduler", "dag-processor")  # the programs of SUPERVISORD_CONF
GPU_POOL = ("gpu", "1", "GPU encoders (CLIP/SPLADE); CPU fallback on this machine")


# --------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------
@cache
def shared_settings() -> dict[str, str]:
    """``infra/airflow.env``: the AIRFLOW__* settings compose and the local Airflow share."""
    out = {}
    for n, line in enumerate(ENV_FILE.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{ENV_FILE}:{n}: expected KEY=VALUE, got {line!r}")
        out[key.strip()] = value.strip()
    return out


def admin_user() -> str:
    return shared_settings()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(":")[0]


def airflow_home(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / "airflow"


def base_url(port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or get_settings().airflow_port}"


def metadata_url(settings: Settings | None = None, dbname: str = "airflow") -> str:
    """SQLAlchemy URL of Airflow's metadata DB on the project's server (psycopg 3 driver)."""

    settings = settings or get_settings()
    return sqlalchemy_url(settings.database_url_for(dbname))


def _secret(home: Path, name: str) -> str:
    """A random secret kept in AIRFLOW_HOME, the same for every component and restart."""
    path = home / f".{name}"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def airflow_env(
    settings: Settings | None = None,
    *,
    home: Path | None = None,
    dbname: str = "airflow",
    port: int | None = None,
) -> dict[str, str]:
    """The full environment for every Airflow command: os.environ + ``infra/airflow.env`` +
    this machine's values (paths, metadata DB, loopback listeners, secrets) + the project's
    settings for the task processes."""
    settings = settings or get_settings()
    home = Path(home or airflow_home(settings))
    port = port or settings.airflow_port
    url = metadata_url(settings, dbname)
    env = dict(os.environ)
    env.update(shared_settings())
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": url,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base_url(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url(port)}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home, "jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": _secret(home, "api_secret"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.airflow_log_port),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "8794",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
            # task processes see the same project settings as the CLI that started Airflow
            "FASHION_HOME": str(settings.home),
            "DATABASE_URL": settings.database_url,
            "FASHION_MODEL_CACHE": str(settings.model_cache),
            "PYTHONPATH": os.pathsep.join(
                p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p
            ),
            # supervisord finds `airflow` (and tasks find python) in this interpreter's bin
            "PATH": os.pathsep.join(
                p for p in [str(Path(sys.executable).parent), os.environ.get("PATH", "")] if p
            ),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    return env


# --------------------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------------------
def _airflow_bin() -> list[str]:
    exe = Path(sys.executable).with_name("airflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "airflow"]


def run_airflow(
    args: list[str], env: dict[str, str], *, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    res = subprocess.run(
        _airflow_bin() + args,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and res.returncode != 0:
        raise RuntimeError(
            f"`airflow {' '.join(args)}` failed ({res.returncode}):\n"
            f"{(res.stderr or res.stdout)[-3000:]}"
        )
    return res


def write_passwords(home: Path) -> None:
    """The SimpleAuthManager passwords file with the known admin password."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "passwords.json"
    path.write_text(json.dumps({admin_user(): get_settings().airflow_password}) + "\n")
    path.chmod(0o600)


def setup(
    settings: Settings | None = None,
    *,
    home: Path | None = None,
    dbname: str = "airflow",
    migrate_platform: bool = True,
) -> dict[str, str]:
    """Create the metadata DB, migrate it, write the passwords file, create the gpu pool.

    Idempotent. Returns the environment to run Airflow with.
    """

    settings = settings or get_settings()
    home = Path(home or airflow_home(settings))
    if settings.embedded:
        embedded.start(settings)
    embedded.ensure_database(settings, dbname)  # CREATE DATABASE if missing (any server)
    if migrate_platform:
        migrate.upgrade("head", settings.database_url)  # the schema the tasks write to
    env = airflow_env(settings, home=home, dbname=dbname)
    write_passwords(home)
    for sub in ("logs", "run"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    run_airflow(["db", "migrate"], env)
    run_airflow(["pools", "set", *GPU_POOL], env)
    return env


# --------------------------------------------------------------------------------------
# the components, under supervisord
# --------------------------------------------------------------------------------------
@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    log: Path
    state: str = "STOPPED"  # supervisord's state (RUNNING, STARTING, BACKOFF, FATAL, ...)


def _supervisor_env(settings: Settings | None = None) -> dict[str, str]:
    """What supervisorctl needs to expand infra/supervisord.conf (no secrets, no setup)."""
    settings = settings or get_settings()
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home(settings)),
            "AIRFLOW__API__PORT": str(settings.airflow_port),
        }
    )
    return env


def _supervisorctl(
    args: list[str], settings: Settings | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(SUPERVISORD_CONF), *args],
        env=_supervisor_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _supervisord_running(settings: Settings | None = None) -> bool:
    return _supervisorctl(["pid"], settings, timeout=30).stdout.strip().isdigit()


def status(settings: Settings | None = None) -> list[ComponentStatus]:
    """Each component as supervisord reports it (all stopped when supervisord is not up)."""
    logs = airflow_home(settings) / "logs"
    found: dict[str, tuple[str, int | None]] = {}
    res = _supervisorctl(["status"], settings, timeout=30)
    for line in res.stdout.splitlines():  # "api-server   RUNNING   pid 123, uptime 0:01:02"
        parts = line.split()
        if len(parts) >= 2 and parts[0] in COMPONENTS:
            pid = None
            if len(parts) >= 4 and parts[2] == "pid":
                pid = int(parts[3].rstrip(","))
            found[parts[0]] = (parts[1], pid)
    out = []
    for name in COMPONENTS:
        state, pid = found.get(name, ("STOPPED", None))
        out.append(ComponentStatus(name, pid, state == "RUNNING", logs / f"{name}.log", state))
    return out


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(settings: Settings | None = None, *, timeout: float = 180) -> dict:
    """Set up (idempotent), start supervisord with the components, wait for the API."""
    settings = settings or get_settings()
    home = airflow_home(settings)
    port = get_settings().airflow_port
    env = setup(settings)
    if _supervisord_running(settings):
        _supervisorctl(["start", "all"], settings)  # whatever was stopped; no-op otherwise
    else:
        if _port_open(port):
            raise RuntimeError(
                f"port 127.0.0.1:{port} is taken by another process; "
                "set FASHION_AIRFLOW_PORT to a free port"
            )
        res = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(SUPERVISORD_CONF)],
            env=env,
            cwd=str(home),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # forks a daemon (its stdio goes to /dev/null) and returns
        if res.returncode != 0:
            raise RuntimeError(
                f"supervisord did not start ({res.returncode}): {(res.stderr or res.stdout)[-2000:]}"
                f"\nsee {home / 'logs' / 'supervisord.log'}"
            )
    wait_for_api(timeout=timeout, settings=settings)
    return {
        "url": base_url(),
        "user": admin_user(),
        "password": get_settings().airflow_password,
        "home": str(home),
        "logs": str(home / "logs"),
    }


def stop(settings: Settings | None = None, *, timeout: float = 60) -> list[str]:
    """Stop every component (whole process groups), then supervisord itself."""
    if not _supervisord_running(settings):
        return []
    running = [c.name for c in status(settings) if c.state not in ("STOPPED", "EXITED", "FATAL")]
    _supervisorctl(["stop", "all"], settings)  # waits for each program (stopwaitsecs, then KILL)
    _supervisorctl(["shutdown"], settings)
    pidfile = airflow_home(settings) / "run" / "supervisord.pid"
    deadline = time.monotonic() + timeout
    while pidfile.exists() and time.monotonic() < deadline:  # supervisord removes it on exit
        time.sleep(0.2)
    if pidfile.exists():
        raise RuntimeError(f"supervisord did not exit within {timeout:.0f}s (pid file {pidfile})")
    return running


# --------------------------------------------------------------------------------------
# REST API client (Airflow 3: /api/v2, JWT from /auth/token)
# --------------------------------------------------------------------------------------
def wait_for_api(timeout: float = 180, settings: Settings | None = None) -> None:

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{base_url()}/api/v2/monitor/health", timeout=5, trust_env=False)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(2)
    raise RuntimeError(
        f"Airflow api-server did not answer at {base_url()} within {timeout:.0f}s ({last}); "
        f"see {airflow_home(settings) / 'logs' / 'api-server.log'}"
    )


class AirflowClient:
    """Just enough of the Airflow 3 REST API to trigger and watch a DAG run."""

    def __init__(
        self, url: str | None = None, user: str | None = None, password: str | None = None
    ):

        self.url = url or base_url()
        self.http = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        r = self.http.post(
            "/auth/token",
            json={
                "username": user or admin_user(),
                "password": password or get_settings().airflow_password,
            },
        )
        if r.status_code >= 400:
            raise RuntimeError(f"Airflow login failed ({r.status_code}): {r.text[:300]}")
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def _call(self, method: str, path: str, **kw):
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            raise RuntimeError(f"Airflow API {method} {path}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else {}

    def wait_for_dag(self, dag_id: str = DAG_ID, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.http.get(f"/api/v2/dags/{dag_id}")
            if r.status_code == 200:
                return r.json()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"DAG {dag_id} was not parsed within {timeout:.0f}s; see "
                    f"{airflow_home() / 'logs' / 'dag-processor.log'}"
                )
            time.sleep(3)

    def trigger(self, dag_id: str = DAG_ID, conf: dict | None = None) -> dict:
        self.wait_for_dag(dag_id)
        self._call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        return self._call(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"logical_date": None, "conf": conf or {}},
        )

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        out = self._call(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
        )
        return out.get("task_instances", [])

    def wait(
        self, dag_id: str, run_id: str, timeout: float = 1800, poll: float = 5, echo=None
    ) -> dict:
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            run = self.run(dag_id, run_id)
            if echo:
                for ti in self.task_instances(dag_id, run_id):
                    key = ti["task_id"] + (
                        f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""
                    )
                    if ti.get("state") and seen.get(key) != ti["state"]:
                        seen[key] = ti["state"]
                        echo(f"  {key:<28} {ti['state']}")
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)
