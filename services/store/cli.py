"""``fashion-search db ...``: the embedded server and schema migrations."""

from __future__ import annotations

import argparse

from services.config import get_settings
from services.store import embedded, migrate, replica
from services.store.db import connect, redact
from services.store.index_versions import live_version


def _start(args: argparse.Namespace) -> int:

    s = get_settings()
    if not s.embedded:
        print("DATABASE_URL is set: using the external server, nothing to start")
        return 0
    st = embedded.start(s)
    print(
        f"embedded PostgreSQL {st.message} on 127.0.0.1:{st.port} (pid {st.pid}), data {st.pgdata}"
    )
    print(f"DATABASE_URL={s.database_url}")  # the pipeline's login
    print(f"DATABASE_SEARCH_URL={s.search_url}")  # the API's: reads only
    print(f"DATABASE_OWNER_URL={s.owner_url}")  # migrations only (services/store/roles.py)
    return 0


def _stop(args: argparse.Namespace) -> int:

    st = embedded.stop(get_settings())
    print(f"embedded PostgreSQL {st.message}")
    return 0


def _status(args: argparse.Namespace) -> int:

    s = get_settings()
    if s.embedded:
        st = embedded.status(s)
        print(f"embedded server: {st.message} (port {st.port}, pid {st.pid}, data {st.pgdata})")
    print(f"database: {redact(s.database_url)}")
    with connect() as conn:
        ver = conn.execute("SHOW server_version").fetchone()[0]
        vec = conn.execute("SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()
        revision = migrate.current()
        print(
            f"PostgreSQL {ver}, pgvector {vec[0] if vec else 'not installed'}, "
            f"schema revision {revision or 'none (run: fashion-search db migrate)'}"
        )
        if revision is None:
            return 1
        live = live_version(conn)
        print(f"live index version: {live.describe() if live else 'none'}")
    return 0


def _replica(args: argparse.Namespace) -> int:

    s = get_settings()
    if args.replica_command == "start":
        st = replica.start_replica(s)
        print(st.describe())
        print(f"DATABASE_READ_URL={s.replica_url}")
        if s.database_read_url != s.replica_url:
            print("the API reads from it with FASHION_PG_REPLICA=1 (or DATABASE_READ_URL above)")
    elif args.replica_command == "stop":
        print(replica.stop_replica(s).describe())
    else:
        print(replica.replica_status(s).describe())
        print(
            f"API reads from: {redact(s.database_read_url) if s.database_read_url else 'the primary'}"
        )
    return 0


def _migrate(args: argparse.Namespace) -> int:

    if args.downgrade:
        migrate.downgrade(args.downgrade)
    else:
        migrate.upgrade(args.revision)
    print(f"schema at revision {migrate.current()}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="embedded PostgreSQL server and schema migrations")
    dbsub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    dbsub.add_parser(
        "start", help="initialise (first time) and start the embedded server"
    ).set_defaults(func=_start)
    dbsub.add_parser("stop", help="stop the embedded server (data persists)").set_defaults(
        func=_stop
    )
    dbsub.add_parser("status", help="server, pgvector, schema and live index").set_defaults(
        func=_status
    )
    rep = dbsub.add_parser("replica", help="the embedded read replica (streaming hot standby)")
    rep.add_argument(
        "replica_command",
        choices=("start", "stop", "status"),
        metavar="start|stop|status",
        help="start (first time: base backup of the running primary), stop, or status and lag",
    )
    rep.set_defaults(func=_replica)
    m = dbsub.add_parser("migrate", help="upgrade (default: head) or downgrade the schema")
    m.add_argument("revision", nargs="?", default="head")
    m.add_argument("--downgrade", metavar="REV", help="downgrade to REV (e.g. base, 0001)")
    m.set_defaults(func=_migrate)
