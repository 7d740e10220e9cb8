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

Database outages: every component starts as ``python -m services.ops.airflow wait-db airflow
...``, which waits (without limit, with backoff) until Airflow's metadata database answers and
then execs the Airflow command (same pid, so supervisord's signals reach Airflow). The
scheduler and dag-processor exit (status 1) when PostgreSQL goes away; supervisord restarts
them, and the waiting restart stays up instead of failing fast, so supervisord never gives up
(FATAL) however long the outage lasts; when the database is back they resume on their own.
More ``startretries`` alone would not do: a restart that fails fast burns one retry per
backoff step (1 s, 2 s, ...), so any count is a limit on the outage's length.

Login: user ``admin`` of the SimpleAuthManager. Its password is ``FASHION_AIRFLOW_PASSWORD``,
or else one generated on the first start and kept in ``AIRFLOW_HOME/admin-password`` (0600);
``fashion-search airflow start`` prints it once, when it is created.

Host header: the api-server answers only requests addressed to ``127.0.0.1`` or ``localhost``
(any port), or to a name listed in Airflow's ``[fashion] allowed_hosts`` setting
(``AIRFLOW__FASHION__ALLOWED_HOSTS=name1,name2``); anything else gets HTTP 400, so a web page
cannot reach it through DNS rebinding. Airflow 3 has no such option; the check is Starlette's
``TrustedHostMiddleware``, added through Airflow's plugin interface (``fastapi_root_middlewares``)
by the plugin ``infra/airflow_plugins/fashion_host_check.py``. :func:`start` verifies that
the check is in force (a request with a foreign Host header must get 400) and stops Airflow
otherwise.
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
import psycopg
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import URL, make_url

from services.config import REPO_ROOT, Settings, get_settings
from services.store import embedded, migrate

DAG_ID = "fashion_reindex"
ENV_FILE = REPO_ROOT / "infra" / "airflow.env"
SUPERVISORD_CONF = REPO_ROOT / "infra" / "supervisord.conf"
COMPONENTS = ("api-server", "scheduler", "dag-processor")  # the programs of SUPERVISORD_CONF
# --executor celery: the programs of CELERY_CONF, added to SUPERVISORD_CONF's
CELERY_CONF = REPO_ROOT / "infra" / "supervisord-celery.conf"
CELERY_COMPONENTS = ("redis", "worker-cpu", "worker-gpu")
# Celery workers: name -> (queues, concurrency). The encode tasks of the reindex DAG are
# routed to queue "gpu" (dags/fashion_reindex.py); every other task to "default".
CELERY_WORKERS = {"cpu": ("default", 2), "gpu": ("gpu", 1)}
EXECUTORS = {"local": "LocalExecutor", "celery": "CeleryExecutor"}
ADMIN_PASSWORD_FILE = "admin-password"  # in AIRFLOW_HOME, when FASHION_AIRFLOW_PASSWORD is unset
PLUGINS_DIR = REPO_ROOT / "infra" / "airflow_plugins"  # AIRFLOW__CORE__PLUGINS_FOLDER
HOST_CHECK_PLUGIN = "fashion_host_check.py"  # the Host header check, in PLUGINS_DIR
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
    params = conninfo_to_dict(settings.database_url_for(dbname))
    port = params.pop("port", None)
    return URL.create(
        "postgresql+psycopg",
        username=params.pop("user", None),
        password=params.pop("password", None),
        host=params.pop("host", None),
        port=int(port) if port else None,
        database=params.pop("dbname", None),
        query=params,  # passfile=..., sslmode=...: libpq parameters, kept as they are
    ).render_as_string(hide_password=False)


def _write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write ``text`` to ``path``, mode 0600 from the first byte (never readable by others,
    not even briefly). ``exclusive``: create it whole or not at all, FileExistsError if it
    exists (a concurrent reader never sees it empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        tmp.chmod(0o600)  # a leftover tmp file kept its old mode through O_TRUNC
        if exclusive:
            os.link(tmp, path)  # atomic, and fails if path exists
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _secret(home: Path, name: str) -> str:
    """A random secret kept in AIRFLOW_HOME, the same for every component and restart."""
    path = home / f".{name}"
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32))
    return path.read_text().strip()


@dataclass(frozen=True)
class AdminLogin:
    user: str
    password: str
    source: str  # "FASHION_AIRFLOW_PASSWORD" or the file that keeps the generated password
    created: bool  # True only the first time: the one moment the password is printed


def admin_login(settings: Settings | None = None, *, home: Path | None = None) -> AdminLogin:
    """The Airflow login: FASHION_AIRFLOW_PASSWORD when set, else the password generated on
    first use and kept in ``AIRFLOW_HOME/admin-password`` (mode 0600)."""
    settings = settings or get_settings()
    if settings.airflow_password:
        return AdminLogin(
            admin_user(), settings.airflow_password, "FASHION_AIRFLOW_PASSWORD", False
        )
    path = Path(home or airflow_home(settings)) / ADMIN_PASSWORD_FILE
    created = False
    try:
        _write_private(path, secrets.token_urlsafe(18) + "\n", exclusive=True)
        created = True
    except FileExistsError:
        pass  # generated before (or by a concurrent start): reuse it
    password = path.read_text().strip()
    if not password:
        raise RuntimeError(f"{path} is empty; delete it to have a new password generated")
    return AdminLogin(admin_user(), password, str(path), created)


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
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_DIR),  # the Host header check
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


def write_passwords(home: Path, login: AdminLogin) -> None:
    """The SimpleAuthManager passwords file (0600) with the admin password."""
    _write_private(home / "passwords.json", json.dumps({login.user: login.password}) + "\n")


def host_check_plugin() -> Path:
    """The Airflow plugin with the Host header check (a file of infra/airflow_plugins, the
    folder AIRFLOW__CORE__PLUGINS_FOLDER names)."""
    return PLUGINS_DIR / HOST_CHECK_PLUGIN


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
    write_passwords(home, admin_login(settings, home=home))
    for sub in ("logs", "run"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    run_airflow(["db", "migrate"], env)
    run_airflow(["pools", "set", *GPU_POOL], env)
    return env


# --------------------------------------------------------------------------------------
# CeleryExecutor: a Redis broker, PostgreSQL result backend, two workers of their own
# --------------------------------------------------------------------------------------
def redis_url(settings: Settings | None = None, *, home: Path | None = None) -> str:
    """The broker's URL: the local redis-server on 127.0.0.1, with its generated password."""
    settings = settings or get_settings()
    password = _secret(Path(home or airflow_home(settings)), "redis_password")
    return f"redis://:{password}@127.0.0.1:{settings.redis_port}/0"


def celery_env(settings: Settings | None = None, *, home: Path | None = None) -> dict[str, str]:
    """What the CeleryExecutor adds to :func:`airflow_env`: executor, broker, result backend
    (Airflow's metadata database, through SQLAlchemy: ``db+postgresql+psycopg://...``)."""
    settings = settings or get_settings()
    return {
        "AIRFLOW__CORE__EXECUTOR": EXECUTORS["celery"],
        "AIRFLOW__CELERY__BROKER_URL": redis_url(settings, home=home),
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url(settings),
    }


def write_redis_conf(settings: Settings | None = None, *, home: Path | None = None) -> Path:
    """``AIRFLOW_HOME/run/redis.conf`` (0600: it holds the password): loopback only, a
    password, no snapshots (a lost queue is re-queued by the scheduler)."""
    settings = settings or get_settings()
    home = Path(home or airflow_home(settings))
    data = home / "redis"
    data.mkdir(parents=True, exist_ok=True)
    password = _secret(home, "redis_password")
    path = home / "run" / "redis.conf"
    _write_private(
        path,
        "\n".join(
            [
                "bind 127.0.0.1",
                "protected-mode yes",
                f"port {settings.redis_port}",
                f"requirepass {password}",
                f"dir {data}",
                'save ""',
                "appendonly no",
                "daemonize no",
                "",
            ]
        ),
    )
    return path


def worker_home(settings: Settings, name: str) -> Path:
    """A Celery worker's own FASHION_HOME: it shares nothing with the other worker or the
    scheduler but the database and the broker (and the installed models)."""
    return settings.home / "workers" / name


def worker_env(env: dict[str, str], name: str, settings: Settings | None = None) -> dict[str, str]:
    """The environment of Celery worker ``name``, from the one supervisord hands its programs.

    Its own FASHION_HOME and AIRFLOW_HOME (``FASHION_HOME/workers/<name>``), with its own
    copy of the database password file (as a container gets its secret); its task logs go
    to the shared logs folder, so the api-server shows them (one machine; beyond it, remote
    logging); Airflow records the worker's name as the task's hostname (``<name>@<host>``)."""
    if name not in CELERY_WORKERS:
        raise ValueError(f"unknown worker {name!r}; one of {', '.join(CELERY_WORKERS)}")
    settings = settings or get_settings()
    home = worker_home(settings, name)
    (home / "airflow").mkdir(parents=True, exist_ok=True)
    out = dict(env)
    passfile = settings.pg_passfile
    if passfile.exists():
        own = home / passfile.name
        _write_private(own, passfile.read_text())
        out = {k: v.replace(str(passfile), str(own)) for k, v in out.items()}
    out.update(
        {
            "FASHION_HOME": str(home),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(Path(env["AIRFLOW_HOME"]) / "logs"),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "services.ops.airflow.worker_hostname",
            "FASHION_WORKER_NAME": name,
        }
    )
    return out


def worker_hostname() -> str:
    """Airflow's ``hostname_callable`` in the Celery workers: ``<worker>@<host>``, so that the
    UI and the REST API say which worker ran a task (both run on one host here)."""
    name = os.environ.get("FASHION_WORKER_NAME")
    host = socket.getfqdn()
    return f"{name}@{host}" if name else host


def worker_command(name: str) -> list[str]:
    queues, concurrency = CELERY_WORKERS[name]
    return [
        *_airflow_bin(),
        "celery",
        "worker",
        "--queues",
        queues,
        "--concurrency",
        str(concurrency),
        "--celery-hostname",
        f"{name}@%h",
        "--skip-serve-logs",  # the log server would bind every interface; logs are shared
        "--without-mingle",
        "--without-gossip",
    ]


def supervisord_conf(executor: str, settings: Settings | None = None) -> Path:
    """The configuration supervisord starts with: SUPERVISORD_CONF, plus CELERY_CONF's
    programs with the CeleryExecutor (written to ``AIRFLOW_HOME/run/supervisord.conf``;
    supervisorctl needs only the shared socket section of SUPERVISORD_CONF)."""
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; one of {', '.join(EXECUTORS)}")
    text = SUPERVISORD_CONF.read_text()
    if executor == "celery":
        text += "\n" + CELERY_CONF.read_text()
    path = airflow_home(settings) / "run" / "supervisord.conf"
    _write_private(path, text)
    return path


def running_executor(settings: Settings | None = None) -> str | None:
    """The executor the running supervisord was started with (None when not recorded)."""
    path = airflow_home(settings) / "run" / "executor"
    return path.read_text().strip() if path.exists() else None


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
        if len(parts) >= 2 and parts[0] in COMPONENTS + CELERY_COMPONENTS:
            pid = None
            if len(parts) >= 4 and parts[2] == "pid":
                pid = int(parts[3].rstrip(","))
            found[parts[0]] = (parts[1], pid)
    out = []
    names = COMPONENTS + (CELERY_COMPONENTS if set(CELERY_COMPONENTS) & set(found) else ())
    for name in names:
        state, pid = found.get(name, ("STOPPED", None))
        out.append(ComponentStatus(name, pid, state == "RUNNING", logs / f"{name}.log", state))
    return out


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(
    settings: Settings | None = None, *, executor: str = "local", timeout: float = 180
) -> dict:
    """Set up (idempotent), start supervisord with the components, wait for the API, check
    that it refuses foreign Host headers.

    ``executor``: "local" (LocalExecutor: tasks run under the scheduler) or "celery"
    (CeleryExecutor: also a redis-server broker and two Celery workers, ``cpu`` on queue
    ``default`` and ``gpu`` on queue ``gpu``, each with its own FASHION_HOME; waits until both
    answer a ping through the broker). A running Airflow started with the other executor is
    stopped first.

    Returns the UI address, the login (``password_created``: generated just now, the only
    time a caller should show it) and the paths."""
    settings = settings or get_settings()
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; one of {', '.join(EXECUTORS)}")
    home = airflow_home(settings)
    port = settings.airflow_port
    login = admin_login(settings)  # before setup(): only this call sees ``created``
    env = setup(settings)
    if executor == "celery":
        env.update(celery_env(settings, home=home))
        write_redis_conf(settings, home=home)
    if _supervisord_running(settings) and (running_executor(settings) or "local") != executor:
        stop(settings)
    if _supervisord_running(settings):
        _supervisorctl(["start", "all"], settings)  # whatever was stopped; no-op otherwise
    else:
        taken = [("FASHION_AIRFLOW_PORT", port)]
        if executor == "celery":
            taken.append(("FASHION_REDIS_PORT", settings.redis_port))
        for name, p in taken:
            if _port_open(p):
                raise RuntimeError(
                    f"port 127.0.0.1:{p} is taken by another process; set {name} to a free port"
                )
        conf = supervisord_conf(executor, settings)
        _write_private(home / "run" / "executor", executor)
        res = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)],
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
    try:
        check_host_header(settings)
    except RuntimeError:
        stop(settings)  # fail closed: never leave an api-server that any Host reaches
        raise
    workers = wait_for_workers(timeout=timeout, settings=settings) if executor == "celery" else []
    return {
        "executor": EXECUTORS[executor],
        "workers": workers,
        "url": base_url(port),
        "user": login.user,
        "password": login.password,
        "password_source": login.source,
        "password_created": login.created,
        "home": str(home),
        "logs": str(home / "logs"),
    }


def wait_for_workers(timeout: float = 180, settings: Settings | None = None) -> list[str]:
    """Wait until every Celery worker of CELERY_WORKERS answers a ping through the broker;
    returns their names (``cpu@host``, ...)."""
    from celery import Celery  # noqa: PLC0415 (only with the CeleryExecutor)
    from kombu.exceptions import OperationalError  # noqa: PLC0415

    app = Celery(broker=redis_url(settings))
    want = {f"{name}@" for name in CELERY_WORKERS}
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    try:
        while time.monotonic() < deadline:
            try:
                replies = app.control.ping(timeout=2.0) or []
            except (OSError, OperationalError):  # the broker is not up yet
                replies = []
            seen = {name for reply in replies for name in reply}
            if all(any(n.startswith(w) for n in seen) for w in want):
                return sorted(seen)
            time.sleep(1.0)
    finally:
        app.close()
    raise RuntimeError(
        f"Celery workers did not answer within {timeout:.0f}s (answered: {sorted(seen)}); "
        f"see {airflow_home(settings) / 'logs'}/worker-*.log"
    )


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
    """Wait until the api-server answers, REST API and execution API both.

    The execution API (Cadwyn) builds its versioned routes on its first request, on the
    event loop: seconds of CPU during which the whole api-server answers nothing (40 s seen
    on a busy 2-core machine). This request pays for that, not a task's first call, whose
    timeouts would fail the task."""
    url = base_url((settings or get_settings()).airflow_port)
    deadline = time.monotonic() + timeout
    for path in ("/api/v2/monitor/health", "/execution/health"):
        last = ""
        while True:
            try:
                left = max(5.0, deadline - time.monotonic())
                r = httpx.get(url + path, timeout=left, trust_env=False)
                if r.status_code == 200:
                    break
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"Airflow api-server did not answer {url}{path} within {timeout:.0f}s "
                    f"({last}); see {airflow_home(settings) / 'logs' / 'api-server.log'}"
                )
            time.sleep(2)


def check_host_header(settings: Settings | None = None) -> None:
    """Raise unless the api-server refuses a request addressed to a foreign host name."""
    settings = settings or get_settings()
    url = f"{base_url(settings.airflow_port)}/api/v2/monitor/health"
    r = httpx.get(url, headers={"Host": "host-check.invalid"}, timeout=10, trust_env=False)
    if r.status_code != 400:
        raise RuntimeError(
            f"the Airflow api-server answered a foreign Host header with HTTP {r.status_code}, "
            f"not 400: the host check plugin ({host_check_plugin()}) is not "
            f"active; see {airflow_home(settings) / 'logs' / 'api-server.log'}"
        )


class AirflowAPIError(RuntimeError):
    """An HTTP error answer of the Airflow REST API."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _transient(exc: Exception) -> bool:
    """Worth polling again: no answer (yet), or a server error (the database restarting)."""
    if isinstance(exc, AirflowAPIError):
        return exc.status >= 500
    return isinstance(exc, httpx.TransportError)


class AirflowClient:
    """Just enough of the Airflow 3 REST API to trigger and watch a DAG run. The polling
    methods ride out a busy or briefly unavailable api-server (timeouts, 5xx) until their
    deadline."""

    def __init__(
        self, url: str | None = None, user: str | None = None, password: str | None = None
    ):
        login = admin_login() if password is None else None
        self.url = url or base_url()
        self.http = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        r = self.http.post(
            "/auth/token",
            json={
                "username": user or admin_user(),
                "password": password if password is not None else login.password,
            },
        )
        if r.status_code >= 400:
            raise RuntimeError(f"Airflow login failed ({r.status_code}): {r.text[:300]}")
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def _call(self, method: str, path: str, **kw):
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            raise AirflowAPIError(
                f"Airflow API {method} {path}: {r.status_code} {r.text[:500]}", r.status_code
            )
        return r.json() if r.content else {}

    def wait_for_dag(self, dag_id: str = DAG_ID, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                return self._call("GET", f"/api/v2/dags/{dag_id}")
            except (AirflowAPIError, httpx.TransportError) as exc:
                if not (_transient(exc) or getattr(exc, "status", None) == 404):
                    raise
                last = str(exc)[:300]
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"DAG {dag_id} was not parsed within {timeout:.0f}s ({last}); see "
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

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        """The value a task of a run pushed (its return value by default)."""
        return self._call(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
        )["value"]

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
        state, error = "unknown", ""
        while True:
            try:
                run = self.run(dag_id, run_id)
                state, error = run["state"], ""
                if echo:
                    for ti in self.task_instances(dag_id, run_id):
                        key = ti["task_id"] + (
                            f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""
                        )
                        if ti.get("state") and seen.get(key) != ti["state"]:
                            seen[key] = ti["state"]
                            echo(f"  {key:<28} {ti['state']}")
                if state in ("success", "failed"):
                    return run
            except (AirflowAPIError, httpx.TransportError) as exc:
                if not _transient(exc):
                    raise
                error = f"; last poll: {str(exc)[:200] or type(exc).__name__}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {state} after {timeout:.0f}s{error}")
            time.sleep(poll)


# --------------------------------------------------------------------------------------
# `python -m services.ops.airflow wait-db COMMAND...`: the programs of infra/supervisord.conf
# --------------------------------------------------------------------------------------
def libpq_url(sqlalchemy_conn: str) -> str:
    """Airflow's SQLAlchemy URL (``postgresql+psycopg://...``) as a libpq URL."""
    return (
        make_url(sqlalchemy_conn).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def wait_for_database(url: str, *, say=print, max_interval: float = 5.0) -> float:
    """Block until ``url`` accepts a connection and answers ``SELECT 1``, however long that
    takes (retrying with a backoff of 0.5 s up to ``max_interval``; one line every 30 s).
    Returns the seconds waited."""
    t0 = time.monotonic()
    interval, last_said = 0.5, None
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            now = time.monotonic()
            if last_said is None or now - last_said >= 30:
                reason = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                )
                say(f"waiting for the database ({now - t0:.0f}s so far): {reason}")
                last_said = now
            time.sleep(interval)
            interval = min(interval * 2, max_interval)
            continue
        waited = time.monotonic() - t0
        if last_said is not None:
            say(f"the database answers again after {waited:.0f}s")
        return waited


def main(argv: list[str] | None = None) -> int:
    """``wait-db COMMAND [ARG...]``: wait for Airflow's metadata database
    (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, the environment supervisord passes to its
    programs), then replace this process with COMMAND."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "celery-worker" and args[1] in CELERY_WORKERS:
        # supervisord's worker-<name> program: the worker's own homes, then wait-db + worker
        env = worker_env(dict(os.environ), args[1])
        os.environ.clear()
        os.environ.update(env)
        args = ["wait-db", *worker_command(args[1])]
    if len(args) < 2 or args[0] != "wait-db":
        print(
            "usage: python -m services.ops.airflow wait-db COMMAND [ARG...]\n"
            f"       python -m services.ops.airflow celery-worker {{{','.join(CELERY_WORKERS)}}}",
            file=sys.stderr,
        )
        return 2
    conn = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if not conn:
        print("wait-db: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not set", file=sys.stderr)
        return 2
    wait_for_database(libpq_url(conn), say=lambda m: print(f"wait-db: {m}", flush=True))
    sys.stdout.flush()
    os.execvp(args[1], args[1:])  # no return


if __name__ == "__main__":
    sys.exit(main())
