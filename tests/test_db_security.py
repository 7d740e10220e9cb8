"""Nobody else gets into the embedded database (issue #12).

The embedded server requires passwords (scram-sha-256) on loopback TCP only, keeps the
generated passwords in a 0600 libpq password file under FASHION_HOME, runs as its own OS
user and group, and the application connects as a role that is not a superuser. A cluster
made by an older version (``trust`` for everyone) is converted on its next start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from api_harness import free_port

from services.config import Settings
from services.store import embedded
from services.store import roles as job_roles

REPO = Path(__file__).resolve().parent.parent

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to another OS user needs root")


def _psql() -> Path:
    return embedded._bin_dir() / "psql"


def _server_pid(settings: Settings) -> int:
    return int((settings.pgdata / "postmaster.pid").read_text().splitlines()[0])


@pytest.fixture(scope="module")
def server(test_server):
    if test_server is None:
        pytest.skip("TEST_DATABASE_URL: an external server, not the embedded one")
    base, _template = test_server
    return base


def test_password_file_is_private(server):
    path = server.pg_passfile
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.stat().st_uid == os.geteuid()
    roles = embedded.read_passwords(server)
    assert set(roles) == {embedded.ADMIN_ROLE, *job_roles.LOGIN_ROLES}
    assert all(len(pw) >= 32 for pw in roles.values())
    assert "password" not in server.database_url and roles["fashion"] not in server.database_url


@pytest.mark.parametrize("role", ["fashion", "fashion_pipeline", "fashion_search"])
def test_the_application_roles_are_not_superusers(server, role):
    url = server.role_url(role)
    with psycopg.connect(url) as conn:
        user, superuser, createrole = conn.execute(
            "SELECT current_user, rolsuper, rolcreaterole FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert (user, superuser, createrole) == (role, False, False)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="external program"):
            conn.execute("COPY (SELECT 1) TO PROGRAM 'id'")
    with psycopg.connect(url) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT pg_read_file('postgresql.conf')")


def test_no_login_without_the_password_even_for_the_same_os_user(server):
    for role in ("postgres", "fashion"):
        url = f"postgresql://{role}@127.0.0.1:{server.pg_port}/postgres"
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(url, connect_timeout=5, passfile="/nonexistent")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(url, connect_timeout=5, password="admin")


@needs_root
def test_a_local_non_owner_os_user_cannot_log_in(server):
    """As ``nobody``: the password file cannot be read, and psql gets no login as either
    role (without a password, and naming our password file)."""
    nobody = pwd.getpwnam("nobody")
    cat = subprocess.run(
        ["cat", str(server.pg_passfile)],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cat.returncode != 0 and "Permission denied" in cat.stderr
    for role in ("postgres", "fashion"):
        for env in ({}, {"PGPASSFILE": str(server.pg_passfile)}):
            res = subprocess.run(
                [str(_psql()), "-h", "127.0.0.1", "-p", str(server.pg_port), "-U", role, "-w"]
                + ["-d", "postgres", "-c", "SELECT 1"],
                user=nobody.pw_uid,
                group=nobody.pw_gid,
                extra_groups=[],
                env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env},
                capture_output=True,
                text=True,
                check=False,
            )
            assert res.returncode != 0, res.stdout
            assert "no password supplied" in res.stderr, res.stderr


@needs_root
def test_the_server_runs_as_its_own_user_and_group(server):
    status = Path(f"/proc/{_server_pid(server)}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uids = fields["Uid"].split()
    gids = fields["Gid"].split()
    owner = pwd.getpwnam(embedded.PG_OS_USER)
    assert set(uids) == {str(owner.pw_uid)}
    assert set(gids) == {str(owner.pw_gid)} and "0" not in gids
    assert fields["Groups"].split() in ([], [str(owner.pw_gid)])


@needs_root
def test_an_old_trust_cluster_is_converted_on_start():
    """A cluster as an older version left it (trust logins, a database and a table owned
    by the superuser) is secured in place by the next ``start``, data kept."""
    scratch = Path(tempfile.mkdtemp(prefix="sec-", dir=os.environ["FASHION_HOME"]))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "FASHION_PG_DATABASE")}
    env.update(FASHION_HOME=str(scratch), FASHION_PG_PORT=str(free_port()))
    settings = Settings.from_env(env)
    try:
        embedded.start(settings)
        with psycopg.connect(settings.admin_url_for("postgres"), autocommit=True) as conn:
            conn.execute("CREATE DATABASE legacy")  # owned by postgres, as before
        with psycopg.connect(settings.admin_url_for("legacy"), autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO kept VALUES (1, 'red dress')")
            (settings.pgdata / "pg_hba.conf").write_text(
                "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"
            )
            conn.execute("SELECT pg_reload_conf()")
        settings.pg_passfile.unlink()  # the old version had no password file
        open_door = f"postgresql://postgres@127.0.0.1:{settings.pg_port}/legacy"
        psycopg.connect(open_door, passfile="/nonexistent").close()  # the hole is real

        embedded.start(settings)  # already running: converts in place

        assert not embedded._trusts_anyone(settings.pgdata)
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(open_door, passfile="/nonexistent", connect_timeout=5)
        app = settings.owner_url.replace("/fashion?", "/legacy?")
        with psycopg.connect(app) as conn:
            assert conn.execute("SELECT name FROM kept").fetchall() == [("red dress",)]
            owner = conn.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'kept'"
            ).fetchone()
            assert owner == ("fashion",)
            conn.execute("INSERT INTO kept VALUES (2, 'blue shirt')")  # it may write there
    finally:
        embedded.stop(settings)
        shutil.rmtree(scratch, ignore_errors=True)
