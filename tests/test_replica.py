"""The read replica, for real: a primary and its streaming standby of this module's own
(a temporary FASHION_HOME, free ports; the shared test server is never touched), and the
real API served by uvicorn reading through the replica.

The index is built with the store's own functions (products, a version, COPY, HNSW,
swap) under the names and dimensions of the encoders the API loads, with random vectors:
the searches run the real query encoders and the real fused SQL, cheaply.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
from api_harness import ServerThread, free_port
from pgvector import SparseVector

from services.config import Settings
from services.store import embedded, hnsw, migrate, replica
from services.store import index_versions as iv
from services.store.db import DatabaseUnavailable, connect, replication_lag

N = 40
TIMEOUT_S = 90  # generous bound on waits for replication and reconnection (never asserted)


def _wait(predicate, what: str, timeout: float = TIMEOUT_S, interval: float = 0.2):
    """Poll ``predicate`` until it returns a truthy value (returned), else fail."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what} (last error: {last_error!r})")


@pytest.fixture(scope="module")
def pair():
    """Settings of a primary + streaming replica pair of this module's own, both running;
    both stopped (and their data removed) at the end. Not under pytest's tmp_path: every
    pytest session (another engineer's too) resets its root to 0700, which would lock the
    servers' OS user out of their data."""
    home = Path(tempfile.mkdtemp(prefix="fashion-replica-test-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_READ_URL")}
    env.update(
        FASHION_HOME=str(home),
        FASHION_PG_PORT=str(free_port()),
        FASHION_PG_REPLICA_PORT=str(free_port()),
        FASHION_PG_REPLICA="1",
    )
    settings = Settings.from_env(env)
    assert settings.database_read_url == settings.replica_url
    try:
        embedded.start(settings)
        migrate.upgrade("head", settings.owner_url)
        started = replica.start_replica(settings)
        assert started.running, started
        yield settings
    finally:
        for stop in (replica.stop_replica, embedded.stop):
            try:
                stop(settings)
            except Exception as exc:  # noqa: BLE001 - stop the other one all the same
                print(f"stopping failed: {exc}")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def api(pair):
    """The real app, reading through the replica, with its encoders loaded."""
    from services.api.app import create_app

    app = create_app(pair, pool_timeout=1.0)
    runtime = app.state.runtime
    assert runtime.read_pool is not None
    srv = ServerThread(app).start()
    try:
        assert runtime.wait_for_models(180), runtime.models_state
        yield srv, runtime
    finally:
        srv.stop()


def _build_and_swap(settings: Settings, encoders, seed: int) -> int:
    """A small version built on the PRIMARY with the store's functions and swapped live."""
    from services.store import products

    clip, splade = encoders.clip, encoders.splade
    rng = np.random.default_rng(seed)
    rows = [
        {
            "id": i,
            "gender": ["Men", "Women"][i % 2],
            "masterCategory": "Apparel",
            "subCategory": "Topwear",
            "articleType": "Tshirts",
            "baseColour": ["Red", "Blue"][i % 2],
            "season": "Summer",
            "year": 2015,
            "usage": "Casual",
            "productDisplayName": f"Replica Tshirt {i}",
            "image": b"\x89PNG\r\n\x1a\nxx",
        }
        for i in range(N)
    ]
    dense = rng.normal(size=(N, clip.dim)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    sparse = []
    for _ in range(N):
        idx = rng.choice(splade.vocab_size, 8, replace=False)
        sparse.append(SparseVector({int(i): 1.0 for i in idx}, splade.vocab_size))
    with connect(settings.database_url) as conn:
        products.upsert_products(conn, rows, source="test")
        vid = iv.create_version(
            conn,
            dense_model=clip.name,
            dense_dim=clip.dim,
            sparse_model=splade.name,
            sparse_dim=splade.vocab_size,
        )
        iv.load_embeddings(conn, vid, list(range(N)), dense, sparse)
        hnsw.build_indexes(conn, vid)
        iv.mark_ready(conn, vid, {"test": True})
        iv.swap_live(conn, vid)
    return vid


def _live_on_replica(settings: Settings) -> int | None:
    with connect(settings.replica_url, autocommit=True) as conn:
        version = iv.live_version(conn)
    return version.id if version else None


@pytest.fixture(scope="module")
def first_version(pair, api):
    _, runtime = api
    vid = _build_and_swap(pair, runtime.encoders, seed=1)
    _wait(lambda: _live_on_replica(pair) == vid, f"v{vid} live on the replica")
    return vid


def _both_up(pair) -> None:
    """Start whichever of the pair a test (in any order) left stopped, and wait until the
    replica streams from the primary again."""
    embedded.start(pair)
    replica.start_replica(pair)
    _wait(lambda: replica.replica_status(pair).state == "streaming", "the replica streaming")


def _search(srv, text: str = "red tshirt") -> httpx.Response:
    return httpx.post(srv.url + "/v1/search", json={"text": text, "k": 5}, timeout=30)


# --- tests ----------------------------------------------------------------------------
def test_a_swap_on_the_primary_is_served_by_the_replica_within_its_lag(pair, api, first_version):
    srv, runtime = api
    _both_up(pair)
    first = _search(srv)
    assert first.status_code == 200, first.text
    assert first.json()["index_version"] == first_version  # cached in the Runtime

    new = _build_and_swap(pair, runtime.encoders, seed=2)
    assert new != first_version
    with connect(pair.database_url, autocommit=True) as primary:
        assert iv.live_version(primary).id == new
        with connect(pair.replica_url, autocommit=True) as standby:
            lag = replication_lag(standby, primary)  # right after the swap: maybe behind
            assert lag.in_recovery and isinstance(lag.bytes, int) and lag.bytes >= 0
            assert lag.seconds is None or isinstance(lag.seconds, float)
    primary_reads = runtime.reads["primary"]
    replica_reads = runtime.reads["replica"]

    # The API's cached live version is checked by the search's own statement on the
    # replica: once the swap has been replayed there, the search reruns on the new version.
    def served_new() -> bool:
        r = _search(srv)
        assert r.status_code == 200, r.text
        return r.json()["index_version"] == new

    _wait(served_new, f"searches served on v{new}")
    assert _live_on_replica(pair) == new
    assert runtime.reads["replica"] > replica_reads
    assert runtime.reads["primary"] == primary_reads  # every read of it on the replica
    ids = {r["id"] for r in _search(srv).json()["results"]}
    assert ids and ids <= set(range(N))

    def caught_up():
        with (
            connect(pair.database_url, autocommit=True) as primary,
            connect(pair.replica_url, autocommit=True) as standby,
        ):
            lag = replication_lag(standby, primary)
        return lag if lag.bytes == 0 else None

    lag = _wait(caught_up, "the replica caught up")
    assert lag.seconds == 0.0


def test_b_with_the_primary_stopped_searches_are_served_by_the_replica(pair, api, first_version):
    srv, runtime = api
    _both_up(pair)
    assert _search(srv).status_code == 200
    live = _live_on_replica(pair)
    try:
        stopped = embedded.stop(pair)
        assert not stopped.running
        with pytest.raises(DatabaseUnavailable):  # the primary really is down
            connect(pair.database_url).close()
        replica_reads = runtime.reads["replica"]
        for text in ("red tshirt", "blue shirt", "summer casual"):
            r = _search(srv, text)
            assert r.status_code == 200, r.text
            assert r.json()["index_version"] == live and r.json()["results"]
        base = srv.url + "/v1"
        assert httpx.get(f"{base}/products/3", timeout=30).status_code == 200
        similar = httpx.get(f"{base}/products/3/similar?k=5", timeout=30)
        assert similar.status_code == 200 and similar.json()["results"], similar.text
        assert httpx.get(f"{base}/products/3/image", timeout=30).status_code == 200
        assert httpx.get(f"{base}/index", timeout=30).json()["version"] == live
        assert httpx.get(f"{base}/facets", timeout=30).status_code == 200
        assert runtime.reads["replica"] >= replica_reads + 7

        ready = httpx.get(srv.url + "/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["database"]["primary"].startswith("down")
        assert body["database"]["replica"] == "ok"
        assert body["database"]["replica_lag_bytes"] is None  # no primary to compare with
        assert isinstance(body["database"]["replica_lag_s"], float)
        assert (
            body["checks"]["database"].startswith("ok")
            and "primary down" in (body["checks"]["database"])
        )
        assert body["checks"]["index"] == f"ok: v{live} ({N} rows)"
    finally:
        embedded.start(pair)


def test_c_readyz_reports_both_sides_and_the_lag(pair, api, first_version):
    srv, _ = api
    _both_up(pair)

    def both_ok_and_caught_up():
        r = httpx.get(srv.url + "/readyz", timeout=30)
        db = r.json()["database"]
        ok = r.status_code == 200 and db["primary"] == db["replica"] == "ok"
        return r.json() if ok and db["replica_lag_bytes"] == 0 else None

    body = _wait(both_ok_and_caught_up, "/readyz with both sides ok and no lag")
    assert body["status"] == "ready" and body["checks"]["database"] == "ok"
    assert isinstance(body["database"]["replica_lag_bytes"], int)
    assert body["database"]["replica_lag_s"] == 0.0


def test_d_a_stopped_replica_hands_reads_to_the_primary(pair, api, first_version):
    srv, runtime = api
    _both_up(pair)
    try:
        assert not replica.stop_replica(pair).running
        primary_reads = runtime.reads["primary"]
        for _ in range(3):
            r = _search(srv)
            assert r.status_code == 200, r.text
        assert runtime.reads["primary"] >= primary_reads + 3
        ready = httpx.get(srv.url + "/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        db = ready.json()["database"]
        assert db["primary"] == "ok" and db["replica"].startswith("down")
        assert db["replica_lag_s"] is None and db["replica_lag_bytes"] is None
    finally:
        replica.start_replica(pair)


def test_e_cli_replica_status_prints_state_and_lag(pair, api, first_version, monkeypatch, capsys):
    from services.cli import main
    from services.config import get_settings

    _both_up(pair)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_READ_URL", raising=False)
    monkeypatch.setenv("FASHION_HOME", str(pair.home))
    monkeypatch.setenv("FASHION_PG_PORT", str(pair.pg_port))
    monkeypatch.setenv("FASHION_PG_REPLICA_PORT", str(pair.pg_replica_port))
    monkeypatch.setenv("FASHION_PG_REPLICA", "1")
    get_settings.cache_clear()
    assert main(["db", "replica", "status"]) == 0
    out = capsys.readouterr().out
    assert f"replica running (port {pair.pg_replica_port}" in out
    assert "replication: streaming" in out
    assert re.search(r"^lag: \d+ bytes, \d+\.\d{3} s", out, re.MULTILINE), out
    assert f"port={pair.pg_replica_port}" in out  # the API reads from the replica

    monkeypatch.setenv("FASHION_PG_REPLICA_PORT", str(free_port()))  # nothing there
    monkeypatch.setenv("FASHION_HOME", str(pair.home / "elsewhere"))
    get_settings.cache_clear()
    assert main(["db", "replica", "status"]) == 0
    assert "replica not initialised" in capsys.readouterr().out


def test_f_the_replication_login_keeps_the_security_posture(pair):
    """The replica logs in as a REPLICATION-only role with a password, from 127.0.0.1 only;
    no ``trust`` anywhere; its data and its password file are private to the server's user."""
    from services.store.embedded import ADMIN_ROLE, REPLICATION_ROLE, read_passwords

    with psycopg.connect(pair.admin_url_for("postgres"), autocommit=True) as conn:
        role = conn.execute(
            "SELECT rolreplication, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls "
            "FROM pg_roles WHERE rolname = %s",
            (REPLICATION_ROLE,),
        ).fetchone()
        assert role == (True, False, False, False, False)
        rules = conn.execute(
            "SELECT database, user_name, address, auth_method FROM pg_hba_file_rules"
        ).fetchall()
    assert all(method == "scram-sha-256" for *_, method in rules), rules
    assert (["replication"], [REPLICATION_ROLE], "127.0.0.1", "scram-sha-256") in rules
    assert not any("replication" in db and user != [REPLICATION_ROLE] for db, user, *_ in rules)
    assert REPLICATION_ROLE in read_passwords(pair) and ADMIN_ROLE in read_passwords(pair)
    # A replication connection without the password is refused.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1",
            port=pair.pg_port,
            user=REPLICATION_ROLE,
            dbname="replication",
            replication="true",
            passfile="/nonexistent",
            connect_timeout=5,
        ).close()
    for path, mode in (
        (pair.pgdata_replica, 0o700),
        (pair.pgdata_replica / replica.PASSFILE_NAME, 0o600),
        (pair.pg_passfile, 0o600),
    ):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    if os.geteuid() == 0:  # the server runs as its own OS user, which owns the replica
        assert pwd.getpwuid(pair.pgdata_replica.stat().st_uid).pw_name == embedded.PG_OS_USER
    assert (pair.pgdata_replica / "standby.signal").exists()
    with connect(pair.replica_url, autocommit=True) as standby:
        assert standby.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            standby.execute("CREATE TABLE nope (x int)")
