"""The components under supervisord: its configuration, their status, start (set up, wait for
the API, the Host check, the security headers and the Celery workers) and stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from services.config import Settings, get_settings
from services.ops.airflow.celery import celery_env, redis_url, write_redis_conf
from services.ops.airflow.client import check_host_header, check_security_headers, wait_for_api
from services.ops.airflow.provision import setup
from services.ops.airflow.settings import (
    CELERY_COMPONENTS,
    CELERY_CONF,
    CELERY_WORKERS,
    COMPONENTS,
    EXECUTORS,
    SUPERVISORD_CONF,
    _write_private,
    admin_login,
    airflow_home,
    base_url,
)


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
    that it refuses foreign Host headers and sends the security headers.

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
        check_security_headers(settings)
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
