"""A real Airflow 3 for the platform, on this machine: environment, setup, start/stop, trigger.

Layout: ``AIRFLOW_HOME = FASHION_HOME/airflow`` holds ``airflow.cfg``-free configuration
(everything is ``AIRFLOW__*`` environment, built by :func:`airflow_env`), logs and pid files
of the components, and the SimpleAuthManager passwords file. The metadata database is
``airflow`` on the project's PostgreSQL server (psycopg 3 driver for both the sync and the
async SQLAlchemy URLs). Components, all bound to 127.0.0.1:

- ``airflow api-server --host 127.0.0.1 --port 8080`` (UI + REST + execution API);
- ``airflow scheduler --skip-serve-logs`` with the LocalExecutor (parallelism 2 for two
  cores). The worker log server would bind every interface (Airflow 3.3 hard-codes
  ``host=""``), so it is skipped: with a LocalExecutor the api-server reads task logs
  straight from ``AIRFLOW_HOME/logs``;
- ``airflow dag-processor`` parsing the repo's ``dags/`` folder.

No triggerer is started (no deferrable tasks), ``airflow standalone`` is not used (its log
servers listen on all interfaces). The ``gpu`` pool (1 slot) serialises the encoders.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from services.config import REPO_ROOT, Settings, get_settings

DAG_ID = "fashion_reindex"
ADMIN_USER = "admin"
ADMIN_PASSWORD = os.environ.get("FASHION_AIRFLOW_PASSWORD", "admin")
COMPONENTS = {
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
}
GPU_POOL = ("gpu", "1", "GPU encoders (CLIP/SPLADE); CPU fallback on this machine")


def airflow_home(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / "airflow"


def airflow_port() -> int:
    return int(os.environ.get("FASHION_AIRFLOW_PORT", "8080"))


def base_url(port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or airflow_port()}"


def metadata_url(settings: Settings | None = None, dbname: str = "airflow") -> str:
    """SQLAlchemy URL of Airflow's metadata DB on the project's server (psycopg 3 driver)."""
    from services.store.migrate import sqlalchemy_url

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


def airflow_env(settings: Settings | None = None, *, home: Path | None = None,
                dbname: str = "airflow", port: int | None = None) -> dict[str, str]:
    """The full environment for every Airflow command (os.environ + AIRFLOW__* + project)."""
    settings = settings or get_settings()
    home = Path(home or airflow_home(settings))
    port = port or airflow_port()
    url = metadata_url(settings, dbname)
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": url,
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url(port)}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home, "jwt_secret"),
        "AIRFLOW__API__SECRET_KEY": _secret(home, "api_secret"),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": os.environ.get(
            "FASHION_AIRFLOW_LOG_PORT", "8793"),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "8794",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
        # task processes see the same project settings as the CLI that started Airflow
        "FASHION_HOME": str(settings.home),
        "DATABASE_URL": settings.database_url,
        "FASHION_MODEL_CACHE": str(settings.model_cache),
        "PYTHONPATH": os.pathsep.join(
            p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    return env


def _airflow_bin() -> list[str]:
    exe = Path(sys.executable).with_name("airflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "airflow"]


def run_airflow(args: list[str], env: dict[str, str], *, check: bool = True,
                timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run(_airflow_bin() + args, env=env, capture_output=True, text=True,
                         timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"`airflow {' '.join(args)}` failed ({res.returncode}):\n"
                           f"{(res.stderr or res.stdout)[-3000:]}")
    return res


def write_passwords(home: Path) -> None:
    """The SimpleAuthManager passwords file with the known admin password."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "passwords.json"
    path.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}) + "\n")
    path.chmod(0o600)


def setup(settings: Settings | None = None, *, home: Path | None = None,
          dbname: str = "airflow", migrate_platform: bool = True) -> dict[str, str]:
    """Create the metadata DB, migrate it, write the passwords file, create the gpu pool.

    Idempotent. Returns the environment to run Airflow with.
    """
    settings = settings or get_settings()
    home = Path(home or airflow_home(settings))
    if settings.embedded:
        from services.store import embedded

        embedded.start(settings)
    _ensure_database(settings, dbname)
    if migrate_platform:
        from services.store import migrate

        migrate.upgrade("head", settings.database_url)  # the schema the tasks write to
    env = airflow_env(settings, home=home, dbname=dbname)
    write_passwords(home)
    (home / "logs").mkdir(parents=True, exist_ok=True)
    run_airflow(["db", "migrate"], env)
    run_airflow(["pools", "set", *GPU_POOL], env)
    return env


def _ensure_database(settings: Settings, dbname: str) -> None:
    from services.store.embedded import ensure_database

    ensure_database(settings, dbname)  # CREATE DATABASE if missing (any server we may)


# --------------------------------------------------------------------------------------
# background components
# --------------------------------------------------------------------------------------
@dataclass
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    log: Path


def _pidfile(home: Path, name: str) -> Path:
    return home / "run" / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def status(settings: Settings | None = None) -> list[ComponentStatus]:
    home = airflow_home(settings)
    out = []
    for name in COMPONENTS:
        pf = _pidfile(home, name)
        pid = int(pf.read_text()) if pf.exists() and pf.read_text().strip().isdigit() else None
        out.append(ComponentStatus(name, pid, bool(pid) and _alive(pid),
                                   home / "logs" / f"{name}.log"))
    return out


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(settings: Settings | None = None, *, timeout: float = 180) -> dict:
    """Set up (idempotent) and start the components in the background; wait for the API."""
    settings = settings or get_settings()
    home = airflow_home(settings)
    env = setup(settings)
    (home / "run").mkdir(parents=True, exist_ok=True)
    running = {c.name for c in status(settings) if c.running}
    port = airflow_port()
    if "api-server" not in running and _port_open(port):
        raise RuntimeError(f"port 127.0.0.1:{port} is taken by another process; "
                           "set FASHION_AIRFLOW_PORT to a free port")
    for name, args in COMPONENTS.items():
        if name in running:
            continue
        extra = ["--host", "127.0.0.1", "--port", str(port)] if name == "api-server" else []
        with open(home / "logs" / f"{name}.log", "ab") as log:  # the child keeps its own fd
            proc = subprocess.Popen(_airflow_bin() + args + extra, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=str(home))
        _pidfile(home, name).write_text(str(proc.pid))
    wait_for_api(timeout=timeout)
    return {"url": base_url(), "user": ADMIN_USER, "password": ADMIN_PASSWORD,
            "home": str(home), "logs": str(home / "logs")}


def stop(settings: Settings | None = None, *, timeout: float = 30) -> list[str]:
    """Stop the components started by :func:`start` (their process groups), by pid file."""
    home = airflow_home(settings)
    stopped = []
    for comp in status(settings):
        if comp.pid and comp.running:
            try:
                os.killpg(comp.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + timeout
            while _alive(comp.pid) and time.monotonic() < deadline:
                time.sleep(0.5)
            if _alive(comp.pid):
                os.killpg(comp.pid, signal.SIGKILL)
            stopped.append(comp.name)
        _pidfile(home, comp.name).unlink(missing_ok=True)
    return stopped


# --------------------------------------------------------------------------------------
# REST API client (Airflow 3: /api/v2, JWT from /auth/token)
# --------------------------------------------------------------------------------------
def wait_for_api(timeout: float = 180) -> None:
    import httpx

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
    raise RuntimeError(f"Airflow api-server did not answer at {base_url()} within {timeout:.0f}s "
                       f"({last}); see {airflow_home() / 'logs' / 'api-server.log'}")


class AirflowClient:
    """Just enough of the Airflow 3 REST API to trigger and watch a DAG run."""

    def __init__(self, url: str | None = None, user: str = ADMIN_USER,
                 password: str = ADMIN_PASSWORD):
        import httpx

        self.url = url or base_url()
        self.http = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        r = self.http.post("/auth/token", json={"username": user, "password": password})
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
                raise RuntimeError(f"DAG {dag_id} was not parsed within {timeout:.0f}s; see "
                                   f"{airflow_home() / 'logs' / 'dag-processor.log'}")
            time.sleep(3)

    def trigger(self, dag_id: str = DAG_ID, conf: dict | None = None) -> dict:
        self.wait_for_dag(dag_id)
        self._call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        return self._call("POST", f"/api/v2/dags/{dag_id}/dagRuns",
                          json={"logical_date": None, "conf": conf or {}})

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        out = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                         params={"limit": 1000})
        return out.get("task_instances", [])

    def wait(self, dag_id: str, run_id: str, timeout: float = 1800, poll: float = 5,
             echo=None) -> dict:
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        while True:
            run = self.run(dag_id, run_id)
            if echo:
                for ti in self.task_instances(dag_id, run_id):
                    key = ti["task_id"] + (f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0
                                           else "")
                    if ti.get("state") and seen.get(key) != ti["state"]:
                        seen[key] = ti["state"]
                        echo(f"  {key:<28} {ti['state']}")
            if run["state"] in ("success", "failed"):
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['state']} after {timeout:.0f}s")
            time.sleep(poll)


# --------------------------------------------------------------------------------------
# dag.test() in a subprocess (tests, debugging): no scheduler, tasks run in-process
# --------------------------------------------------------------------------------------
_DAG_TEST_SCRIPT = r"""
import importlib.util, json, sys
from airflow.sdk import DAG
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
dag = next(v for v in vars(mod).values() if isinstance(v, DAG))
run = dag.test(run_conf=json.loads(sys.argv[2]))
from airflow.utils.session import create_session
from airflow.models.taskinstance import TaskInstance
with create_session() as s:
    tis = s.query(TaskInstance).filter(TaskInstance.dag_id == run.dag_id,
                                       TaskInstance.run_id == run.run_id).all()
    key = lambda ti: ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else "")
    states = {key(ti): str(ti.state) for ti in tis}
    tries = {key(ti): ti.try_number for ti in tis}
print("DAG_TEST_RESULT " + json.dumps({"state": str(run.state), "run_id": run.run_id,
                                       "tasks": states, "tries": tries}))
"""


def dag_test(conf: dict, settings: Settings | None = None, *, home: Path | None = None,
             dbname: str = "airflow", timeout: float = 900, migrate: bool = True,
             dag_file: Path | None = None) -> dict:
    """Run a DAG file's DAG (default ``fashion_reindex``) once with ``dag.test(run_conf=conf)``
    in a fresh interpreter configured by :func:`airflow_env` (metadata DB ``dbname``,
    migrated first).

    Returns ``{"state", "run_id", "tasks": {task: state}, "tries": {task: n}, "output"}``.
    """
    settings = settings or get_settings()
    home = Path(home or airflow_home(settings))
    if migrate:
        env = setup(settings, home=home, dbname=dbname, migrate_platform=False)
    else:
        env = airflow_env(settings, home=home, dbname=dbname)
    res = subprocess.run(
        [sys.executable, "-c", _DAG_TEST_SCRIPT,
         str(dag_file or REPO_ROOT / "dags" / "fashion_reindex.py"), json.dumps(conf)],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=str(REPO_ROOT),
        check=False)
    output = res.stdout + res.stderr
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("DAG_TEST_RESULT "):
            result = json.loads(line.split(" ", 1)[1])
            result["output"] = output
            return result
    raise RuntimeError(f"dag.test did not finish (exit {res.returncode}):\n{output[-5000:]}")
