"""The benchmarks' own databases: ``use_bench_database("fashion_bench")`` points this process
(and the API and pipeline processes it starts, through the environment) at a database kept
for one benchmark, never the main one.

On the embedded server it is created if missing by the scratch role and owned by ``fashion``
(services/store/roles.py), and selected with ``FASHION_PG_DATABASE``, so that the pipeline,
the API and the migrations each log in with their own role, as in production. With
``DATABASE_URL`` (another server) it is created by that URL's login and selected by a
``DATABASE_URL`` naming it.
"""

from __future__ import annotations

import os

from services.config import Settings, get_settings
from services.store import embedded, migrate


def use_bench_database(dbname: str) -> Settings:
    """Create (if missing), select and migrate the benchmark database ``dbname``."""
    base = get_settings()
    if base.embedded:
        embedded.start(base)
        os.environ["FASHION_PG_DATABASE"] = dbname
    else:
        os.environ["DATABASE_URL"] = base.database_url_for(dbname)
    embedded.ensure_database(base, dbname)
    get_settings.cache_clear()  # settings are read once per process; this one changed its own
    settings = get_settings()
    migrate.upgrade("head", settings.owner_url)
    return settings
