"""The CeleryExecutor's pieces: the Redis broker (URL, config), the executor's settings and the
two Celery workers (their own homes, environment, hostname and command)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from services.config import Settings, get_settings
from services.ops.airflow.provision import _airflow_bin
from services.ops.airflow.settings import (
    CELERY_WORKERS,
    EXECUTORS,
    _secret,
    _write_private,
    airflow_home,
    metadata_url,
)


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
