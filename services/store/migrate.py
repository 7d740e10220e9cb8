"""Schema migrations (Alembic, scripts in db/migrations) driven from code and the CLI."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import make_url

from services.config import REPO_ROOT, get_settings

MIGRATIONS_DIR = REPO_ROOT / "db" / "migrations"


def sqlalchemy_url(url: str | None = None) -> str:
    """The libpq DSN as a SQLAlchemy URL on the psycopg 3 driver."""
    url = url or get_settings().database_url
    if "://" not in url:  # key=value conninfo
        p = conninfo_to_dict(url)
        auth = p.get("user", "")
        if p.get("password"):
            auth += ":" + p["password"]
        url = f"postgresql://{auth}@{p.get('host', '')}:{p.get('port', 5432)}/{p.get('dbname', '')}"
    u = make_url(url)
    return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(revision: str = "head", url: str | None = None) -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(revision: str, url: str | None = None) -> None:
    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:

    engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        rev = MigrationContext.configure(conn).get_current_revision()
    engine.dispose()
    return rev
