"""Roles by job (issue #27): the API reads and cannot write, the pipeline cannot create
databases or drop the migrated tables, Airflow and the catalogue cannot reach each other's
database, and a cluster of the previous version (one role doing everything) is upgraded in
place with its data kept. Against the embedded server, with the roles it makes."""

from __future__ import annotations

import dataclasses
import os

import psycopg
import pytest
from psycopg import sql

from services.config import (
    AIRFLOW_ROLE,
    EVENTS_ROLE,
    OWNER_ROLE,
    PIPELINE_ROLE,
    SCRATCH_ROLE,
    SEARCH_ROLE,
)
from services.store import embedded, roles

DENIED = psycopg.errors.InsufficientPrivilege


@pytest.fixture(scope="module")
def base(test_server):
    if test_server is None:
        pytest.skip("TEST_DATABASE_URL: an external server, not the embedded one")
    return test_server[0]


def _tables(conn: psycopg.Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        )
    ]


def _first_column(conn: psycopg.Connection, table: str) -> str:
    return conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum LIMIT 1",
        (table,),
    ).fetchone()[0]


def _refused(conn: psycopg.Connection, statement: sql.Composable) -> None:
    """Run ``statement`` as the connection's role: it must be refused for privilege (an
    error of another kind, a NOT NULL violation say, means it got past the privilege check)."""
    try:
        conn.execute(statement)
    except DENIED:
        return
    except psycopg.Error as exc:
        pytest.fail(f"{statement.as_string(conn)} got past the privilege check: {exc}")
    pytest.fail(f"{statement.as_string(conn)} was allowed")


def test_the_search_role_reads_everything_and_writes_nothing(settings, live):
    """On every table of a database with a live index (catalogue, index versions, the live
    version's own table, evaluations, pipeline state, analytics aggregates): SELECT works
    (not on the raw analytics rows); INSERT, UPDATE,
    DELETE, TRUNCATE, DROP and ALTER are refused, and so are CREATE TABLE, CREATE INDEX,
    CREATE DATABASE, CREATE ROLE and a temporary table."""
    with psycopg.connect(settings.search_url, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (SEARCH_ROLE,)
        tables = _tables(conn)
        assert {"products", "index_versions", "alembic_version"} <= set(tables)
        assert any(t.startswith("index_v") and t[7:].isdigit() for t in tables), tables
        assert {"analytics_events", "analytics_daily"} <= set(tables)
        for table in tables:
            t = sql.Identifier(table)
            if table.startswith(("analytics_searches", "analytics_events")):
                # the raw analytics rows (and their day partitions): not even read
                _refused(conn, sql.SQL("SELECT count(*) FROM {}").format(t))
            else:
                conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t)).fetchone()
            col = sql.Identifier(_first_column(conn, table))
            for statement in (
                sql.SQL("INSERT INTO {} DEFAULT VALUES"),
                sql.SQL("UPDATE {} SET {c} = {c}"),
                sql.SQL("DELETE FROM {}"),
                sql.SQL("TRUNCATE {}"),
                sql.SQL("DROP TABLE {}"),
                sql.SQL("ALTER TABLE {} ADD COLUMN intruder int"),
                sql.SQL("CREATE INDEX ON {} ({c})"),
            ):
                _refused(conn, statement.format(t, c=col))
        _refused(conn, sql.SQL("CREATE TABLE intruder (id int)"))
        _refused(conn, sql.SQL("CREATE TEMPORARY TABLE intruder (id int)"))
        _refused(conn, sql.SQL("CREATE DATABASE intruder"))
        _refused(conn, sql.SQL("CREATE ROLE intruder"))
        assert _tables(conn) == tables  # nothing was created or dropped


def test_the_api_connects_as_the_search_role(settings, live):
    from services.api.app import create_app

    app = create_app(settings, load_models=False)
    runtime = app.state.runtime
    runtime.pool.open(wait=True)
    try:
        with runtime.pool.connection() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (SEARCH_ROLE,)
    finally:
        runtime.pool.close()


def test_the_pipeline_writes_the_catalogue_but_cannot_reshape_it(settings, live):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        user, createdb, createrole, superuser = conn.execute(
            "SELECT current_user, rolcreatedb, rolcreaterole, rolsuper FROM pg_roles "
            "WHERE rolname = current_user"
        ).fetchone()
        assert (user, createdb, createrole, superuser) == (PIPELINE_ROLE, False, False, False)
        _refused(conn, sql.SQL("CREATE DATABASE intruder"))
        for table in ("products", "index_versions", "eval_runs", "alembic_version"):
            _refused(conn, sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
            _refused(conn, sql.SQL("ALTER TABLE {} ADD COLUMN x int").format(sql.Identifier(table)))
        with conn.transaction(force_rollback=True):  # it may write, and make its own tables
            conn.execute("UPDATE products SET brand = brand WHERE id < 0")
            conn.execute("CREATE TABLE index_v999999 (product_id bigint PRIMARY KEY)")
            conn.execute("DROP TABLE index_v999999")


def test_the_owner_and_the_scratch_role_are_what_they_say(base):
    with psycopg.connect(base.admin_url_for("postgres"), autocommit=True) as admin:
        rows = {
            r[0]: r[1:]
            for r in admin.execute(
                "SELECT rolname, rolcreatedb, rolcreaterole, rolsuper, rolreplication "
                "FROM pg_roles WHERE rolname = ANY(%s)",
                (list(roles.LOGIN_ROLES),),
            )
        }
    assert rows == {
        OWNER_ROLE: (False, False, False, False),
        PIPELINE_ROLE: (False, False, False, False),
        SEARCH_ROLE: (False, False, False, False),
        EVENTS_ROLE: (False, False, False, False),
        AIRFLOW_ROLE: (False, False, False, False),
        SCRATCH_ROLE: (True, False, False, False),
    }


def test_airflow_and_the_catalogue_cannot_reach_each_other(base):
    airflow_db = f"airflow_roles_test_{os.getpid()}"
    embedded.ensure_airflow_database(base, airflow_db)
    try:
        with psycopg.connect(base.airflow_db_url(airflow_db), autocommit=True) as conn:
            conn.execute("CREATE TABLE dag_run_probe (id int)")  # its own database: all of it
        for role in (OWNER_ROLE, PIPELINE_ROLE, SEARCH_ROLE, EVENTS_ROLE, SCRATCH_ROLE):
            with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                psycopg.connect(base.role_url(role, airflow_db), connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(base.role_url(AIRFLOW_ROLE, base.pg_database), connect_timeout=5)
    finally:
        embedded.drop_scratch_database(base, airflow_db, airflow=True)


def test_a_cluster_of_the_previous_version_is_upgraded_in_place(base):
    """The previous version had one role, ``fashion`` with CREATEDB, owning the catalogue
    (index tables included) and Airflow's database. One start later: ``fashion`` cannot
    create databases, the index table belongs to the pipeline, the search role reads it, the
    Airflow database belongs to Airflow's role, and every row is still there."""
    catalogue = f"fashion_legacy_{os.getpid()}"
    airflow_db = f"airflow_legacy_{os.getpid()}"
    admin_url = base.admin_url_for("postgres")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for db in (catalogue, airflow_db):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(db)))
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER fashion").format(sql.Identifier(db)))
    legacy = dataclasses.replace(base, pg_database=catalogue)
    try:
        with psycopg.connect(base.role_url(OWNER_ROLE, catalogue), autocommit=True) as conn:
            conn.execute("CREATE TABLE products (id bigint PRIMARY KEY, name text)")
            conn.execute("INSERT INTO products VALUES (1, 'red dress')")
            conn.execute(
                "CREATE TABLE index_v3 (product_id bigint PRIMARY KEY REFERENCES products(id))"
            )
            conn.execute("INSERT INTO index_v3 VALUES (1)")
        with psycopg.connect(base.role_url(OWNER_ROLE, airflow_db), autocommit=True) as conn:
            conn.execute("CREATE TABLE dag_run (id int)")
            conn.execute("INSERT INTO dag_run VALUES (7)")
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("ALTER ROLE fashion CREATEDB")  # as the previous version had it

        embedded.start(legacy)  # running already: the roles and grants are made anew
        embedded.ensure_airflow_database(legacy, airflow_db)  # as `airflow setup` does

        with psycopg.connect(admin_url, autocommit=True) as admin:
            assert admin.execute(
                "SELECT rolcreatedb FROM pg_roles WHERE rolname = 'fashion'"
            ).fetchone() == (False,)
        with psycopg.connect(legacy.owner_url) as conn:
            owners = dict(
                conn.execute(
                    "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"
                ).fetchall()
            )
            assert owners == {"products": OWNER_ROLE, "index_v3": PIPELINE_ROLE}
        with psycopg.connect(legacy.search_url) as conn:
            got = conn.execute(
                "SELECT p.name FROM products p JOIN index_v3 v ON v.product_id = p.id"
            ).fetchall()
            assert got == [("red dress",)]
            _refused(conn, sql.SQL("DELETE FROM index_v3"))
        with psycopg.connect(legacy.database_url, autocommit=True) as conn:
            conn.execute("DROP TABLE index_v3")  # the pipeline's now: it may retire it
        with psycopg.connect(legacy.airflow_db_url(airflow_db)) as conn:
            assert conn.execute("SELECT id FROM dag_run").fetchall() == [(7,)]
            assert conn.execute(
                "SELECT tableowner FROM pg_tables WHERE tablename = 'dag_run'"
            ).fetchone() == (AIRFLOW_ROLE,)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("ALTER ROLE fashion NOCREATEDB")
            for db in (catalogue, airflow_db):
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
                )
