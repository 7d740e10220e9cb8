"""Schema migrations (Alembic, scripts in db/migrations) driven from code and the CLI."""

from __future__ import annotations

import functools

import psycopg
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import URL, make_url

from services.config import REPO_ROOT, get_settings
from services.store import roles

MIGRATIONS_DIR = REPO_ROOT / "db" / "migrations"


def sqlalchemy_url(url: str | None = None) -> str:
    """The libpq DSN as a SQLAlchemy URL on the psycopg 3 driver."""
    url = url or get_settings().owner_url
    if "://" not in url:  # key=value conninfo: the other keys (passfile, sslmode...) go
        p = conninfo_to_dict(url)  # to the driver as query parameters
        u = URL.create(
            "postgresql+psycopg",
            username=p.pop("user", None),
            password=p.pop("password", None),
            host=p.pop("host", None),
            port=int(p.pop("port", 5432)),
            database=p.pop("dbname", None),
            query={k: str(v) for k, v in p.items()},
        )
    else:
        u = make_url(url).set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest revision of db/migrations (what this code expects the database to be at)."""
    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()


def schema_revision(conn: psycopg.Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()[0]
    if not exists:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def upgrade(revision: str = "head", url: str | None = None) -> None:
    """Migrate to ``revision`` as the owner (``Settings.owner_url`` unless ``url``), then
    renew the job roles' grants (services.store.roles; nothing where they do not exist)."""
    command.upgrade(alembic_config(url), revision)
    with psycopg.connect(url or get_settings().owner_url, autocommit=True) as conn:
        roles.grant(conn)


def downgrade(revision: str, url: str | None = None) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:

    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
    engine.dispose()
    return rev
