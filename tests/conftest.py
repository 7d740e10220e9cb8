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


_numbers = itertools.count()


@contextlib.contextmanager
def scratch_db(settings, prefix: str) -> Iterator[str]:
    """An empty database of the caller's own, made by the scratch role and owned by
    ``fashion`` (not migrated); yields the owner's URL of it, drops it afterwards."""
    from services.config import OWNER_ROLE
    from services.store import embedded

    dbname = embedded.scratch_database(settings, f"{prefix}_{os.getpid()}")
    try:
        yield settings.role_url(OWNER_ROLE, dbname)
    finally:
        embedded.drop_scratch_database(settings, dbname)


def drop_airflow_db(settings, dbname: str) -> None:
    """Drop a test's own Airflow metadata database (owned by Airflow's role)."""
    from services.store import embedded

    embedded.drop_scratch_database(settings, dbname, airflow=True)


@pytest.fixture(scope="session")
def test_server():
    """The test server's base settings, and a database migrated to head that every test
    database is cloned from (``CREATE DATABASE ... TEMPLATE``: fast, no per-test migration).
    None with ``TEST_DATABASE_URL`` (an external server: one database, wiped between uses)."""
    from services.config import OWNER_ROLE, get_settings
    from services.store import embedded, migrate

    if os.environ.get("TEST_DATABASE_URL"):
        yield None
        return
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("FASHION_PG_DATABASE", None)
    get_settings.cache_clear()
    base = get_settings()
    started_here = not embedded.status(base).running
    embedded.start(base)
    # Made by the scratch role, owned by `fashion`, migrated by it (with the job roles'
    # grants), so that every test database runs with the production roles.
    template = embedded.scratch_database(base, f"fashion_template_{os.getpid()}")
    migrate.upgrade("head", base.role_url(OWNER_ROLE, template))
    yield base, template
    embedded.drop_scratch_database(base, template)
    if started_here:  # stop what this session started (a server it found running stays)
        embedded.stop(base)


@contextlib.contextmanager
def _own_database(server) -> Iterator:
    """A database of the caller's own at schema head; ``FASHION_PG_DATABASE`` (so
    ``get_settings()``: the pipeline, the API and the migrations each with its own role)
    points at it while open, and is restored afterwards. With ``TEST_DATABASE_URL``,
    ``DATABASE_URL`` does."""
    from services.config import get_settings
    from services.store import embedded, migrate
    from services.store.db import connect
    from services.store.index_versions import drop_all_versions_and_products

    if server is None:  # external server: its one database, emptied
        key, value = "DATABASE_URL", os.environ["TEST_DATABASE_URL"]
        migrate.upgrade("head", value)
        with connect(value) as c:
            drop_all_versions_and_products(c)
    else:
        base, template = server
        key = "FASHION_PG_DATABASE"
        value = embedded.scratch_database(
            base, f"fashion_test_{os.getpid()}_{next(_numbers)}", template=template
        )
    previous = os.environ.get(key)
    os.environ[key] = value
    get_settings.cache_clear()
    try:
        yield get_settings()
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous
        get_settings.cache_clear()
        if server is not None:
            embedded.drop_scratch_database(base, value)


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
def app(live, app_settings):
    """The real app; its runtime is ``app.state.runtime`` (e.g. the analytics writer, to
    flush before reading what it wrote)."""
    from services.api.app import create_app

    return create_app(app_settings)


@pytest.fixture(scope="module")
def server(app):
    """The real app, served by uvicorn on a free loopback port."""
    from api_harness import ServerThread

    srv = ServerThread(app).start()
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
