"""The local Airflow's settings: the shared ``infra/airflow.env``, homes, URLs, the admin login
and the full environment of every Airflow command (:func:`airflow_env`)."""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict
from sqlalchemy.engine import URL

from services.config import REPO_ROOT, Settings, get_settings

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
    params = conninfo_to_dict(settings.airflow_db_url(dbname))
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
