"""Database roles by job (issue #27): each part of the platform logs in with what its job
needs and nothing more.

=====================  ==========================================================================
role                   may
=====================  ==========================================================================
``fashion``            own the catalogue database and its schema; run migrations
(:data:`OWNER`)        (``fashion-search db migrate`` only). No CREATEDB. It is a member of the
                       pipeline role, so a migration may alter the index tables the pipeline owns.
``fashion_pipeline``   the indexing pipeline, the incremental sync, the evaluation runs, the DAG
(:data:`PIPELINE`)     tasks: read and write the catalogue, create, index and drop its own
                       per-version index tables (CREATE on schema ``public``). Cannot create
                       databases or roles, alter the migrated tables, or drop them.
``fashion_search``     the API: SELECT on the catalogue, index and evaluation tables, nothing
(:data:`SEARCH`)       else (no INSERT, UPDATE, DELETE, TRUNCATE, DROP, CREATE).
``fashion_events``     the API's analytics writer (issue #24): INSERT into ``analytics_searches``
(:data:`EVENTS`)       and ``analytics_events``, nothing else (not even SELECT). The search role
                       reads the analytics aggregates but not these raw rows.
``fashion_airflow``    owns Airflow's metadata database and may connect to nothing else of ours;
(:data:`AIRFLOW`)      the catalogue roles may not connect to Airflow's database.
``fashion_scratch``    CREATEDB, for the tests and benchmarks that make scratch databases (each
(:data:`SCRATCH`)      owned by ``fashion``, so the other roles work in them as in production).
                       Used nowhere else.
=====================  ==========================================================================

On the embedded server the superuser makes the roles and Airflow's database (:func:`bootstrap`,
:func:`ensure_airflow_database`); who may connect to a catalogue database and the grants
inside it are set by its owner after every migration and on every start (:func:`grant`, from
``migrate.upgrade`` and ``embedded.start``), and on every scratch copy of a migrated template. On another
PostgreSQL, ``db/roles.sql`` is the same as SQL for an administrator to run; where the roles
do not exist (one ``DATABASE_URL`` for everything) :func:`grant` does nothing.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from services.config import (
    AIRFLOW_ROLE,
    EVENTS_ROLE,
    OWNER_ROLE,
    PIPELINE_ROLE,
    SCRATCH_ROLE,
    SEARCH_ROLE,
)

OWNER = OWNER_ROLE
PIPELINE = PIPELINE_ROLE
SEARCH = SEARCH_ROLE
AIRFLOW = AIRFLOW_ROLE
SCRATCH = SCRATCH_ROLE
EVENTS = EVENTS_ROLE
# What the analytics writer may insert into, and the partition functions the pipeline runs.
EVENT_TABLES = ("analytics_searches", "analytics_events")
PARTITION_FUNCTIONS = (
    "analytics_ensure_partitions(date, integer)",
    "analytics_drop_partitions(date)",
)

# Login roles and their attributes (none is a superuser or may create roles).
_BASE = "LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS"
ATTRIBUTES: dict[str, str] = {
    OWNER: f"{_BASE} NOCREATEDB",
    PIPELINE: f"{_BASE} NOCREATEDB",
    SEARCH: f"{_BASE} NOCREATEDB",
    EVENTS: f"{_BASE} NOCREATEDB",
    AIRFLOW: f"{_BASE} NOCREATEDB",
    SCRATCH: f"{_BASE} CREATEDB",
}
LOGIN_ROLES = tuple(ATTRIBUTES)

# Privileges of the pipeline on the migrated tables (MAINTAIN: ANALYZE, VACUUM; PostgreSQL 17+).
PIPELINE_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, MAINTAIN"


def bootstrap(admin: psycopg.Connection, passwords: dict[str, str]) -> None:
    """As the superuser: every login role with its attributes and password (kept in step
    with the password file), and the memberships: the owner acts for the pipeline (a
    migration may alter the index tables), the scratch role for the owner (it makes
    databases owned by ``fashion`` and copies and drops them; ``pg_signal_backend`` ends the
    sessions left in a scratch database it drops)."""
    for role, attributes in ATTRIBUTES.items():
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        admin.execute(
            sql.SQL(verb + " ROLE {} " + attributes + " PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(passwords[role])
            )
        )
    for granted, member in ((PIPELINE, OWNER), (OWNER, SCRATCH), ("pg_signal_backend", SCRATCH)):
        admin.execute(
            sql.SQL("GRANT {} TO {} WITH INHERIT TRUE, SET TRUE").format(
                sql.Identifier(granted), sql.Identifier(member)
            )
        )


def roles_exist(conn: psycopg.Connection) -> bool:
    """True where the server has the job roles (the embedded server, or one set up with
    ``db/roles.sql``)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", ([PIPELINE, SEARCH],)
    ).fetchone()
    return row[0] == 2


def grant(conn: psycopg.Connection) -> bool:
    """As the catalogue database's owner, after a migration: the pipeline's and the search
    role's privileges on what exists and on what will be created, and index tables left
    owned by the owner (by an older version) handed to the pipeline. Idempotent; False (and
    nothing done) where the roles do not exist."""
    if not roles_exist(conn):
        return False
    pipeline, search = sql.Identifier(PIPELINE), sql.Identifier(SEARCH)
    user, dbname = conn.execute("SELECT current_user, current_database()").fetchone()
    owner, db = sql.Identifier(user), sql.Identifier(dbname)
    statements = [
        # Only the catalogue roles may connect (not Airflow's); the pipeline stages its
        # loads in temporary tables, the search role makes none.
        sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(db),
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, pipeline),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, search),
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(pipeline),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(search),
        sql.SQL(
            "GRANT " + PIPELINE_TABLE_PRIVILEGES + " ON ALL TABLES IN SCHEMA public TO {}"
        ).format(pipeline),
        sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}").format(
            pipeline
        ),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(search),
        # Tables made later: by a migration (owner) or by an indexing run (pipeline).
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT "
            + PIPELINE_TABLE_PRIVILEGES
            + " ON TABLES TO {}"
        ).format(owner, pipeline),
        sql.SQL(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
            "GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {}"
        ).format(owner, pipeline),
        *(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public GRANT SELECT ON TABLES TO {}"
            ).format(creator, search)
            for creator in (owner, pipeline)
        ),
    ]
    for statement in statements:
        conn.execute(statement)
    _grant_analytics(conn, db)
    legacy = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname ~ '^index_v[0-9]+$' "
        "AND c.relowner <> %s::regrole",
        (PIPELINE,),
    ).fetchall()
    for (table,) in legacy:
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), pipeline))
    return True


def _grant_analytics(conn: psycopg.Connection, db: sql.Identifier) -> None:
    """The analytics writer's INSERT on the two raw tables, and the pipeline's EXECUTE of
    the partition functions (once the migration that makes them has run)."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (EVENTS,)).fetchone()
    if (
        exists is None
        or conn.execute("SELECT to_regclass(%s)", (EVENT_TABLES[0],)).fetchone()[0] is None
    ):
        return
    events = sql.Identifier(EVENTS)
    conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(db, events))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(events))
    for table in EVENT_TABLES:
        conn.execute(sql.SQL("GRANT INSERT ON {} TO {}").format(sql.Identifier(table), events))
    # the API's read-only role reads the aggregates, never the raw rows (nor a partition)
    raw = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relname = ANY(%s) UNION "
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent IN ('analytics_searches'::regclass, 'analytics_events'::regclass)",
        (list(EVENT_TABLES),),
    ).fetchall()
    for (table,) in raw:
        conn.execute(
            sql.SQL("REVOKE ALL ON {} FROM {}").format(
                sql.Identifier(table), sql.Identifier(SEARCH)
            )
        )
    for function in PARTITION_FUNCTIONS:
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION " + function + " TO {}").format(
                sql.Identifier(PIPELINE)
            )
        )


def ensure_airflow_database(admin: psycopg.Connection, dbname: str) -> str | None:
    """As the superuser: Airflow's metadata database ``dbname`` owned by the Airflow role
    and open to it alone (created if missing). Returns the previous owner of a database an
    older version made (``fashion``), whose tables the caller hands over
    (``embedded.hand_over``), else None."""
    db, role = sql.Identifier(dbname), sql.Identifier(AIRFLOW)
    row = admin.execute(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dbname,)
    ).fetchone()
    if row is None:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(db, role))
    elif row[0] != AIRFLOW:
        admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(db, role))
    admin.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(db))
    admin.execute(sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(db, role))
    return row[0] if row is not None and row[0] != AIRFLOW else None


def hand_over(conn: psycopg.Connection, previous: str, role: str) -> None:
    """As the superuser, in the database of ``conn``: everything ``previous`` owns in its
    ``public`` schema (tables, views, sequences, types; an extension's own objects stay
    where they are) given to ``role``. Not ``REASSIGN OWNED``, which would hand over the
    other databases ``previous`` owns too."""
    target = sql.Identifier(role)
    rows = conn.execute(
        """
        SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                              WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND pg_get_userbyid(c.relowner) = %s
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                          AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i', 'e'))
        """,
        (previous,),
    ).fetchall()
    for kind, name in rows:
        conn.execute(
            sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), sql.Identifier(name), target)
        )
    types = conn.execute(
        """
        SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'c', 'd')
          AND pg_get_userbyid(t.typowner) = %s
          AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid AND c.relkind <> 'c')
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t.oid
                          AND d.classid = 'pg_type'::regclass AND d.deptype = 'e')
        """,
        (previous,),
    ).fetchall()
    for (name,) in types:
        conn.execute(sql.SQL("ALTER TYPE {} OWNER TO {}").format(sql.Identifier(name), target))
