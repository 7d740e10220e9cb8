"""Shared fixtures: a real PostgreSQL + pgvector (the project's embedded server) for every test.

The test session uses its own FASHION_HOME (``.fashion/test-home``, kept between runs so
the model cache and catalogues are reused), its own server port, and a fresh database
``fashion_test_<pid>`` migrated to head (dropped at the end; the server is stopped at the
end when this session started it). ``DATABASE_URL`` points there for the whole session, so
code under test connects exactly as it does in production. Set ``TEST_DATABASE_URL`` to
run the suite against an external PostgreSQL with pgvector instead.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

pytest_plugins = ["ci_skips"]  # under CI an unexpected skip fails the run

REPO = Path(__file__).resolve().parent.parent
TEST_HOME = Path(os.environ.get("FASHION_TEST_HOME", REPO / ".fashion" / "test-home"))

# Set before any project module reads the environment.
os.environ["FASHION_HOME"] = str(TEST_HOME)
os.environ.setdefault("FASHION_MODEL_CACHE", str(REPO / ".fashion" / "models"))


def _test_port(pgdata: Path, preferred: int = 54339) -> str:
    """The test server's port: the running test server's own (its postmaster.pid), else
    ``preferred`` when free, else any free port, so that another PostgreSQL on 54339 (a
    clone's suite, a developer's server) never answers this session's connections."""
    import socket

    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        os.kill(int(lines[0]), 0)
        return lines[3].strip()
    except (OSError, ValueError, IndexError):
        pass
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return str(sock.getsockname()[1])
    raise RuntimeError("no free port for the test PostgreSQL")


if "FASHION_PG_PORT" not in os.environ:
    os.environ["FASHION_PG_PORT"] = _test_port(TEST_HOME / "pgdata")
os.environ.setdefault("XDG_RUNTIME_DIR", str(TEST_HOME / "run"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
TEST_HOME.mkdir(parents=True, exist_ok=True)
(TEST_HOME / "run").mkdir(exist_ok=True)
(TEST_HOME / "run").chmod(0o700)


def _fresh_database(admin_url: str, dbname: str) -> None:
    import psycopg

    _drop_database(admin_url, dbname)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')


def _drop_database(admin_url: str, dbname: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            # Only client sessions: the app role may not signal an autovacuum worker
            # (PostgreSQL 18 needs pg_signal_autovacuum_worker), and DROP DATABASE
            # cancels those itself.
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'",
            (dbname,),
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}"')


_numbers = itertools.count()


@pytest.fixture(scope="session")
def test_server():
    """The test server's base settings, and a database migrated to head that every test
    database is cloned from (``CREATE DATABASE ... TEMPLATE``: fast, no per-test migration).
    None with ``TEST_DATABASE_URL`` (an external server: one database, wiped between uses)."""
    from services.config import get_settings
    from services.store import embedded, migrate

    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    os.environ.pop("DATABASE_URL", None)
    get_settings.cache_clear()
    base = get_settings()
    started_here = not embedded.status(base).running
    embedded.start(base)
    admin = base.database_url_for("postgres")
    template = f"fashion_template_{os.getpid()}"
    _fresh_database(admin, template)
    migrate.upgrade("head", base.database_url_for(template))
    yield base, template
    _drop_database(admin, template)
    if started_here:  # stop what this session started (a server it found running stays)
        embedded.stop(base)


@contextlib.contextmanager
def _own_database(server) -> Iterator:
    """A database of the caller's own at schema head; ``DATABASE_URL`` (so
    ``get_settings()``) points at it while open, and is restored afterwards."""
    from services.config import get_settings
    from services.store import migrate
    from services.store.db import connect
    from services.store.index_versions import drop_all_versions_and_products

    previous = os.environ.get("DATABASE_URL")
    dbname = None
    if server is None:  # external server: its one database, emptied
        url = os.environ["TEST_DATABASE_URL"]
        migrate.upgrade("head", url)
        with connect(url) as c:
            drop_all_versions_and_products(c)
    else:
        base, template = server
        dbname = f"fashion_test_{os.getpid()}_{next(_numbers)}"
        admin = base.database_url_for("postgres")
        _drop_database(admin, dbname)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}" TEMPLATE "{template}"')
        url = base.database_url_for(dbname)
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous
        get_settings.cache_clear()
        if dbname is not None:
            _drop_database(base.database_url_for("postgres"), dbname)


@pytest.fixture(scope="module")
def settings(test_server):
    """Settings of this test module, with a fresh database of its own: nothing a module
    leaves behind (versions, products, a live index) is seen by another, in any order."""
    with _own_database(test_server) as s:
        yield s


@pytest.fixture(autouse=True)
def _settings_follow_the_environment():
    """A test may change the environment (monkeypatch.setenv): settings are read afresh
    for each test and after it."""
    from services.config import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def conn(settings):
    from services.store.db import connect

    c = connect(settings.database_url)
    yield c
    c.close()


@pytest.fixture
def empty_db(settings, test_server):
    """A database of this test's own with the schema but no products and no index versions;
    ``get_settings()`` points at it during the test (the module's database is untouched)."""
    from services.store.db import connect

    with _own_database(test_server) as own:
        c = connect(own.database_url)
        yield c
        c.close()


# --- the API served for real (tests/test_api.py, tests/test_browser.py) --------------------
@pytest.fixture(scope="module")
def app_settings(settings):
    return settings


@pytest.fixture(scope="module")
def live(app_settings):
    """A tiny live index built with the real offline encoders."""
    from api_harness import build_live_index

    return build_live_index(app_settings)


@pytest.fixture(scope="module")
def server(live, app_settings):
    """The real app, served by uvicorn on a free loopback port."""
    from api_harness import ServerThread

    from services.api.app import create_app

    srv = ServerThread(create_app(app_settings)).start()
    srv.wait_ready()
    yield srv
    srv.stop()


# --- the real headless browser of the page tests ------------------------------------------
@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Debian's, driven by Playwright), one per test module."""
    from api_harness import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        # CI installs Chromium (make test): there a missing browser is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (make test installs it)")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """The storefront at ``/`` in a fresh desktop-sized browser context, its filters loaded."""
    from api_harness import ARTIFACTS

    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(server.url + "/")
    pg.wait_for_selector("select[data-facet='gender'] option:nth-child(2)", state="attached")
    yield pg
    context.close()
