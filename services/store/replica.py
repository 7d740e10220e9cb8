"""A read replica of the embedded server: a second PostgreSQL, a streaming hot standby of
the first, made with ``pg_basebackup`` from the same binaries (``services.store.embedded``).

``fashion-search db replica start`` (:func:`start_replica`), on first use:

- on the primary, as its superuser: the replication role (:data:`~services.store.embedded.
  REPLICATION_ROLE`, ``REPLICATION`` and nothing else) with a generated password kept in
  the same 0600 password file as the other roles'; one ``host replication`` line in
  ``pg_hba.conf`` for that role from 127.0.0.1 with ``scram-sha-256`` (no ``trust``,
  no other address); a replication slot (:data:`SLOT`), so the primary keeps the WAL the
  replica has not received while it is stopped, at most ``max_slot_wal_keep_size``
  (:data:`MAX_SLOT_WAL_KEEP`; past that the slot is dropped by PostgreSQL and the replica
  must be made again: stop it, remove ``FASHION_HOME/pgdata-replica``, start it);
- ``pg_basebackup -X stream -C -S fashion_replica`` into ``FASHION_HOME/pgdata-replica``,
  run as the server's OS user, then ``standby.signal`` and ``fashion-replica.conf``
  (``primary_conninfo``, ``primary_slot_name``, ``hot_standby``), whose password is read
  from a 0600 password file of the OS user's own inside that folder (the walreceiver runs
  as that user and cannot read ``FASHION_HOME/secrets``).

Every start (idempotent) rewrites ``fashion-replica.conf`` (the primary's port may have
changed) and starts the standby on 127.0.0.1:``FASHION_PG_REPLICA_PORT``. An initialised
replica starts with the primary down too: it serves what it has replayed, and follows the
primary again when it returns.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from services.config import Settings
from services.store import embedded, roles
from services.store.db import replication_lag
from services.store.embedded import ADMIN_ROLE, REPLICATION_ROLE

SLOT = "fashion_replica"  # the replication slot, and the standby's application_name
MAX_SLOT_WAL_KEEP = "4GB"  # WAL the primary keeps for a stopped replica, at most
CONF_NAME = "fashion-replica.conf"
PASSFILE_NAME = "fashion-replication.pgpass"
HBA_LINE = f"host    replication  {REPLICATION_ROLE}  127.0.0.1/32   scram-sha-256"
BASEBACKUP_TIMEOUT_S = 3600


@dataclass
class ReplicaStatus:
    running: bool
    pid: int | None
    port: int
    pgdata: Path
    message: str
    state: str | None = None  # the primary's pg_stat_replication.state (e.g. "streaming")
    lag_bytes: int | None = None  # see services.store.db.ReplicationLag
    lag_s: float | None = None
    replay_lag_s: float | None = None  # the primary's pg_stat_replication.replay_lag

    def describe(self) -> str:
        out = f"replica {self.message} (port {self.port}, pid {self.pid}, data {self.pgdata})"
        if self.running:
            lag_b = "unknown" if self.lag_bytes is None else f"{self.lag_bytes} bytes"
            lag_s = "unknown" if self.lag_s is None else f"{self.lag_s:.3f} s"
            out += f"\nreplication: {self.state or 'not connected to the primary'}"
            out += f"\nlag: {lag_b}, {lag_s}"
            if self.replay_lag_s is not None:
                out += f" (primary's replay_lag {self.replay_lag_s:.3f} s)"
        return out


def _chown(path: Path, user: str | None) -> None:
    if user:
        info = pwd.getpwnam(user)
        os.chown(path, info.pw_uid, info.pw_gid)


def _write_owned(path: Path, text: str, user: str | None, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` (mode ``mode``) owned by the server's OS user."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    _chown(tmp, user)
    os.replace(tmp, path)


def _passfile_text(password: str) -> str:
    return f"127.0.0.1:*:*:{REPLICATION_ROLE}:{password}\n"


def _enable_replication(settings: Settings, password: str) -> None:
    """On the primary: the replication role, its ``pg_hba.conf`` line, the WAL cap of
    the slot, and the slot made anew (a slot left by an earlier replica is dropped)."""
    hba = settings.pgdata / "pg_hba.conf"
    lines = [line.split("#", 1)[0].split() for line in hba.read_text().splitlines()]
    if HBA_LINE.split() not in lines:
        with hba.open("a") as f:
            f.write("# the embedded streaming replica (fashion-search db replica start)\n")
            f.write(HBA_LINE + "\n")
    with embedded._connect(settings.admin_url_for("postgres")) as conn:
        role = sql.Identifier(REPLICATION_ROLE)
        exists = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (REPLICATION_ROLE,)
        ).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(
                verb + " ROLE {} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE "
                "NOINHERIT NOBYPASSRLS PASSWORD {}"
            ).format(role, sql.Literal(password))
        )
        conn.execute(
            sql.SQL("ALTER SYSTEM SET max_slot_wal_keep_size = {}").format(
                sql.Literal(MAX_SLOT_WAL_KEEP)
            )
        )
        conn.execute("SELECT pg_reload_conf()")
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            (SLOT,),
        )


def _base_backup(settings: Settings, user: str | None) -> None:
    primary = embedded.status(settings)
    if not primary.running:
        raise RuntimeError(
            "the primary is not running: `fashion-search db start` first (the replica's "
            "first start copies it)"
        )
    wanted = (ADMIN_ROLE, *roles.LOGIN_ROLES, REPLICATION_ROLE)
    password = embedded._ensure_passwords(settings, wanted)[REPLICATION_ROLE]
    _enable_replication(settings, password)
    pgdata = settings.pgdata_replica
    if pgdata.exists():  # no PG_VERSION: what an interrupted base backup left
        shutil.rmtree(pgdata)
    pgdata.mkdir(parents=True)
    pgdata.chmod(0o700)
    _chown(pgdata, user)
    if user:
        embedded._open_path_for(user, pgdata.parent)
    folder = Path(tempfile.mkdtemp(prefix="fashion-basebackup-"))
    passfile = folder / "pgpass"
    try:
        _write_owned(passfile, _passfile_text(password), user)
        _chown(folder, user)
        conninfo = make_conninfo(
            host="127.0.0.1",
            port=settings.pg_port,
            user=REPLICATION_ROLE,
            passfile=str(passfile),
            application_name="fashion_basebackup",
        )
        res = embedded._run(
            [
                str(embedded._bin_dir() / "pg_basebackup"),
                "-d",
                conninfo,
                "-D",
                str(pgdata),
                "-X",
                "stream",
                "-C",
                "-S",
                SLOT,
                "-c",
                "fast",
                "-w",  # never prompt: the password comes from the password file
            ],
            user,
            timeout=BASEBACKUP_TIMEOUT_S,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if res.returncode != 0:
        raise RuntimeError(f"pg_basebackup failed:\n{res.stderr or res.stdout}")
    _write_owned(pgdata / PASSFILE_NAME, _passfile_text(password), user)
    _write_owned(pgdata / "server.log", "", user)  # the copy of the primary's log
    _write_owned(pgdata / "standby.signal", "", user)
    conf = pgdata / "postgresql.conf"
    with conf.open("a") as f:
        f.write(f"\n# fashion-search streaming replica\ninclude_if_exists = '{CONF_NAME}'\n")


def _write_replica_conf(settings: Settings, user: str | None) -> None:
    pgdata = settings.pgdata_replica
    conninfo = make_conninfo(
        host="127.0.0.1",
        port=settings.pg_port,
        user=REPLICATION_ROLE,
        passfile=str(pgdata / PASSFILE_NAME),
        application_name=SLOT,
    )
    quoted = conninfo.replace("'", "''")
    _write_owned(
        pgdata / CONF_NAME,
        "# written by fashion-search db replica start (every start)\n"
        f"primary_conninfo = '{quoted}'\n"
        f"primary_slot_name = '{SLOT}'\n"
        "hot_standby = on\n"
        # The primary keeps rows a running search on the replica still sees: vacuum on
        # the primary cancels no search here.
        "hot_standby_feedback = on\n",
        user,
    )


def _pid(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def replica_status(settings: Settings, *, lag: bool = True) -> ReplicaStatus:
    """Whether the replica runs, and (``lag``) how far behind the primary it is, measured
    as the superusers of both (a primary that is down leaves ``lag_bytes`` None)."""
    pgdata, port = settings.pgdata_replica, settings.pg_replica_port
    if not (pgdata / "PG_VERSION").exists():
        return ReplicaStatus(False, None, port, pgdata, "not initialised")
    pid = _pid(pgdata)
    if pid is None:
        return ReplicaStatus(False, None, port, pgdata, "stopped")
    st = ReplicaStatus(True, pid, port, pgdata, "running")
    if not lag:
        return st
    primary = None
    try:
        primary = psycopg.connect(
            settings.admin_url_for("postgres"), autocommit=True, connect_timeout=3
        )
        row = primary.execute(
            "SELECT state, extract(epoch FROM replay_lag) FROM pg_stat_replication "
            "WHERE application_name = %s",
            (SLOT,),
        ).fetchone()
        if row is not None:
            st.state = row[0]
            st.replay_lag_s = None if row[1] is None else float(row[1])
    except psycopg.OperationalError:
        st.state = "primary unreachable"
    try:
        with psycopg.connect(
            settings.replica_admin_url_for("postgres"), autocommit=True, connect_timeout=3
        ) as conn:
            measured = replication_lag(conn, primary)
            if not measured.in_recovery:
                st.message = "running, but not a standby (promoted?)"
            st.lag_bytes, st.lag_s = measured.bytes, measured.seconds
    except psycopg.OperationalError as exc:
        st.message = f"running, not answering: {str(exc).strip().splitlines()[-1]}"
    finally:
        if primary is not None:
            primary.close()
    return st


def start_replica(settings: Settings, timeout: float = 60) -> ReplicaStatus:
    """Make the replica (first time: a base backup of the running primary) and start it;
    idempotent. The primary must be the embedded server."""
    if not settings.embedded:
        raise RuntimeError(
            "DATABASE_URL is set: the embedded replica follows the embedded server only "
            "(point DATABASE_READ_URL at your own replica instead)"
        )
    if settings.pg_replica_port == settings.pg_port:
        raise RuntimeError("FASHION_PG_REPLICA_PORT must differ from FASHION_PG_PORT")
    user = embedded._os_user()
    pgdata = settings.pgdata_replica
    if not (pgdata / "PG_VERSION").exists():
        _base_backup(settings, user)
    elif not (pgdata / "standby.signal").exists():
        raise RuntimeError(
            f"{pgdata} is not a standby any more (promoted?); move it away to make a new replica"
        )
    if user:
        embedded._open_path_for(user, pgdata.parent)
    _write_replica_conf(settings, user)
    if _pid(pgdata) is None:
        if embedded._port_open(settings.pg_replica_port):
            raise RuntimeError(
                f"port 127.0.0.1:{settings.pg_replica_port} is taken by another process; "
                "set FASHION_PG_REPLICA_PORT to a free port"
            )
        embedded.pg_ctl_start(pgdata, settings.pg_replica_port, user, timeout, "replica")
    return replica_status(settings)


def stop_replica(settings: Settings) -> ReplicaStatus:
    """Stop the replica (its data stays; the primary keeps its WAL through the slot)."""
    if _pid(settings.pgdata_replica) is not None:
        embedded.pg_ctl_stop(settings.pgdata_replica, "replica")
    return replica_status(settings, lag=False)
