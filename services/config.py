"""Settings for every part of the platform, read from the environment once, in this module only.

:func:`get_settings` builds one :class:`Settings` from ``os.environ`` and caches it; the API
injects it (through its Runtime), the CLIs and pipeline stages call :func:`get_settings`.
Nothing else in the project reads the environment for configuration (processes the project
starts, such as Airflow's, get their environment built from these settings).

Every path the project writes lives under ``FASHION_HOME`` (default ``<repo>/.fashion``):
the embedded PostgreSQL data directory, the model cache, catalogues, shards and reports.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

REPO_ROOT = Path(__file__).resolve().parent.parent

# The embedded server's login roles, one per job (services/store/roles.py says what each may do).
OWNER_ROLE = "fashion"  # owns the catalogue database; runs migrations only
PIPELINE_ROLE = "fashion_pipeline"  # indexing, sync, evaluation, DAG tasks
SEARCH_ROLE = "fashion_search"  # the API: reads only
AIRFLOW_ROLE = "fashion_airflow"  # Airflow's metadata database only
SCRATCH_ROLE = "fashion_scratch"  # scratch databases of tests and benchmarks only
EVENTS_ROLE = "fashion_events"  # the API's analytics writer: INSERT into two tables only


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value or default


def _flag(env: Mapping[str, str], name: str, default: str = "") -> bool:
    return (env.get(name) or default).strip().lower() in ("1", "true", "yes", "on")


def _number(env: Mapping[str, str], name: str, default: str, kind=float, minimum=None):
    raw = _get(env, name, default)
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = _get(env, name, default)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _memory(env: Mapping[str, str], name: str, default: str) -> str:
    """A PostgreSQL memory setting: a whole number and a unit (kB, MB, GB, TB)."""
    value = _get(env, name, default).replace(" ", "")
    if not re.fullmatch(r"[1-9][0-9]*(kB|MB|GB|TB)", value):
        raise ValueError(f"{name} must be a size such as 512MB or 8GB, got {value!r}")
    return value


def _graph(env: Mapping[str, str], m_name: str, ef_name: str) -> tuple[int, int]:
    """An HNSW graph's (m, ef_construction), in the bounds pgvector accepts (m 2-100,
    ef_construction 4-1000 and at least 2 m); the defaults are the project's 16 and 64."""
    m = _number(env, m_name, "16", int, 2)
    ef = _number(env, ef_name, "64", int, 4)
    if m > 100 or ef > 1000 or ef < 2 * m:
        raise ValueError(
            f"{m_name} must be 2-100 and {ef_name} 4-1000 and at least 2 x {m_name}, "
            f"got {m} and {ef}"
        )
    return m, ef


@dataclass(frozen=True)
class Settings:
    """Resolved configuration (environment variable in brackets). Build with
    :func:`get_settings` or :meth:`from_env`."""

    home: Path  # FASHION_HOME
    model_cache: Path  # FASHION_MODEL_CACHE (default FASHION_HOME/models)
    pg_port: int  # FASHION_PG_PORT: the embedded server's port
    # DATABASE_URL: an external server instead (the pipeline's login there; the API and the
    # migrations use it too unless DATABASE_SEARCH_URL / DATABASE_OWNER_URL name their own)
    database_url_override: str | None
    pg_replica: bool  # FASHION_PG_REPLICA: the API reads from the embedded streaming replica
    pg_replica_port: int  # FASHION_PG_REPLICA_PORT: its port (default FASHION_PG_PORT + 1)
    database_read_url_override: str | None  # DATABASE_READ_URL: an external read replica
    dense_model: str  # FASHION_DENSE_MODEL
    sparse_model: str  # FASHION_SPARSE_MODEL
    api_host: str  # FASHION_API_HOST
    api_port: int  # FASHION_API_PORT
    default_alpha: float  # FASHION_DEFAULT_ALPHA
    default_alpha_multimodal: float  # FASHION_DEFAULT_ALPHA_MULTI
    dense_image_weight: float  # FASHION_DENSE_IMAGE_WEIGHT
    query_text_weight: float  # FASHION_QUERY_TEXT_WEIGHT
    max_upload_bytes: int  # FASHION_MAX_UPLOAD_BYTES
    image_decode_slots: int  # FASHION_IMAGE_DECODE_SLOTS: concurrent image decodes in the API
    api_pool_size: int  # FASHION_API_POOL_SIZE: database connections of one API process
    query_batch: int  # FASHION_QUERY_BATCH: most query texts encoded in one call (1: no batching)
    understanding: bool  # FASHION_UNDERSTANDING: query understanding in the API (off: literal)
    query_runtime: str  # FASHION_QUERY_RUNTIME: "onnx" (ONNX Runtime query towers) or "torch"
    rules_check_s: float  # FASHION_RULES_CHECK_S: how often the API looks for changed rules
    # FASHION_DENSE_INDEX: new versions' dense index: "vector" or "halfvec" HNSW, or "ivfflat"
    dense_index: str
    build_memory: str  # FASHION_BUILD_MEMORY: maintenance_work_mem of HNSW builds (e.g. 8GB)
    # FASHION_DENSE_HNSW_M, _EF_CONSTRUCTION: new versions' dense graph (m, ef_construction)
    dense_graph: tuple[int, int]
    build_lock_timeout: str  # FASHION_BUILD_LOCK_TIMEOUT (a PostgreSQL interval)
    encoder_workers: int | None  # FASHION_ENCODER_WORKERS (default: cores - 1, at most 8)
    eval_map_margin: float  # FASHION_EVAL_MAP_MARGIN: MAP drop that counts as a regression
    wordnet_dir: Path  # FASHION_WORDNET_DIR
    fashion_mnist_dir: Path  # FASHION_MNIST_DIR
    hf_offline: bool  # HF_HUB_OFFLINE
    hf_endpoint: str | None  # HF_ENDPOINT
    airflow_port: int  # FASHION_AIRFLOW_PORT
    airflow_log_port: int  # FASHION_AIRFLOW_LOG_PORT
    redis_port: int  # FASHION_REDIS_PORT: the Celery broker of `airflow start --executor celery`
    airflow_password: str | None  # FASHION_AIRFLOW_PASSWORD (unset: generated, see ops/airflow)
    # FASHION_CURSOR_SECRET: the key that signs search cursors (unset: a random key kept in
    # FASHION_HOME/secrets/cursor-key, shared by the API processes of one machine)
    cursor_secret: str | None = None
    # FASHION_ALLOWED_HOSTS: Host names the API serves besides loopback (comma-separated)
    allowed_hosts: tuple[str, ...] = ()
    pg_database: str = "fashion"  # FASHION_PG_DATABASE: the embedded server's catalogue database
    database_owner_url_override: str | None = None  # DATABASE_OWNER_URL: migrations' login
    database_search_url_override: str | None = None  # DATABASE_SEARCH_URL: the API's login
    database_events_url_override: str | None = None  # DATABASE_EVENTS_URL: analytics writer
    analytics: bool = True  # FASHION_ANALYTICS: record searches and events (off: nothing kept)
    analytics_queue: int = 20000  # FASHION_ANALYTICS_QUEUE: rows held for the writer at most
    analytics_retention_days: int = 90  # FASHION_ANALYTICS_RETENTION_DAYS: partitions kept

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(_get(env, "FASHION_HOME", str(REPO_ROOT / ".fashion"))).resolve()
        workers = env.get("FASHION_ENCODER_WORKERS", "").strip()
        pg_port = _number(env, "FASHION_PG_PORT", "54329", int, 1)
        return cls(
            home=home,
            model_cache=Path(_get(env, "FASHION_MODEL_CACHE", str(home / "models"))).resolve(),
            pg_port=pg_port,
            database_url_override=env.get("DATABASE_URL") or None,
            pg_replica=_flag(env, "FASHION_PG_REPLICA"),
            pg_replica_port=_number(env, "FASHION_PG_REPLICA_PORT", str(pg_port + 1), int, 1),
            database_read_url_override=env.get("DATABASE_READ_URL") or None,
            dense_model=_get(env, "FASHION_DENSE_MODEL", "fashion-lit-minilm"),
            sparse_model=_get(env, "FASHION_SPARSE_MODEL", "splade-tiny-offline"),
            api_host=_get(env, "FASHION_API_HOST", "127.0.0.1"),
            api_port=_number(env, "FASHION_API_PORT", "8000", int, 1),
            # The blend weights below were chosen together by `fashion-search eval-sweep` on
            # the TUNING half of the query set (fashion-lit-minilm + splade-tiny-offline,
            # docs/evaluation/index.md); the reported figures come from the test half.
            default_alpha=_number(env, "FASHION_DEFAULT_ALPHA", "0.5"),
            default_alpha_multimodal=_number(env, "FASHION_DEFAULT_ALPHA_MULTI", "0.8"),
            # Product dense vector = normalise(w * CLIP(photo) + (1 - w) * CLIP_text(name)) for
            # new index versions (recorded per version).
            dense_image_weight=_number(env, "FASHION_DENSE_IMAGE_WEIGHT", "0.2"),
            # Photo + text query: dense = normalise(t * CLIP_text(text) + (1 - t) * CLIP(photo)).
            query_text_weight=_number(env, "FASHION_QUERY_TEXT_WEIGHT", "0.5"),
            max_upload_bytes=_number(env, "FASHION_MAX_UPLOAD_BYTES", str(8 * 1024 * 1024), int, 1),
            image_decode_slots=_number(env, "FASHION_IMAGE_DECODE_SLOTS", "4", int, 1),
            api_pool_size=_number(env, "FASHION_API_POOL_SIZE", "16", int, 1),
            query_batch=_number(env, "FASHION_QUERY_BATCH", "16", int, 1),
            understanding=_choice(env, "FASHION_UNDERSTANDING", "on", ("on", "off")) == "on",
            query_runtime=_choice(env, "FASHION_QUERY_RUNTIME", "onnx", ("onnx", "torch")),
            rules_check_s=_number(env, "FASHION_RULES_CHECK_S", "2", float, 0.1),
            dense_index=_choice(
                env, "FASHION_DENSE_INDEX", "vector", ("vector", "halfvec", "ivfflat")
            ),
            build_memory=_memory(env, "FASHION_BUILD_MEMORY", "1GB"),
            dense_graph=_graph(env, "FASHION_DENSE_HNSW_M", "FASHION_DENSE_HNSW_EF_CONSTRUCTION"),
            build_lock_timeout=_get(env, "FASHION_BUILD_LOCK_TIMEOUT", "15min"),
            encoder_workers=max(0, int(workers)) if workers else None,
            eval_map_margin=_number(env, "FASHION_EVAL_MAP_MARGIN", "0.02", float, 0),
            wordnet_dir=Path(_get(env, "FASHION_WORDNET_DIR", "/usr/share/wordnet")),
            fashion_mnist_dir=Path(
                _get(env, "FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
            ),
            hf_offline=_flag(env, "HF_HUB_OFFLINE"),
            hf_endpoint=env.get("HF_ENDPOINT") or None,
            airflow_port=_number(env, "FASHION_AIRFLOW_PORT", "8080", int, 1),
            airflow_log_port=_number(env, "FASHION_AIRFLOW_LOG_PORT", "8793", int, 1),
            redis_port=_number(env, "FASHION_REDIS_PORT", "6390", int, 1),
            airflow_password=env.get("FASHION_AIRFLOW_PASSWORD", "").strip() or None,
            cursor_secret=env.get("FASHION_CURSOR_SECRET", "").strip() or None,
            allowed_hosts=tuple(
                h.strip() for h in env.get("FASHION_ALLOWED_HOSTS", "").split(",") if h.strip()
            ),
            pg_database=_get(env, "FASHION_PG_DATABASE", "fashion"),
            database_owner_url_override=env.get("DATABASE_OWNER_URL") or None,
            database_search_url_override=env.get("DATABASE_SEARCH_URL") or None,
            database_events_url_override=env.get("DATABASE_EVENTS_URL") or None,
            analytics=_flag(env, "FASHION_ANALYTICS", "1"),
            analytics_queue=_number(env, "FASHION_ANALYTICS_QUEUE", "20000", int, 1),
            analytics_retention_days=_number(env, "FASHION_ANALYTICS_RETENTION_DAYS", "90", int, 2),
        )

    # --- paths -------------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def pgdata_replica(self) -> Path:
        """The embedded streaming replica's data directory (``db replica start``)."""
        return self.home / "pgdata-replica"

    @property
    def catalog_dir(self) -> Path:
        return self.home / "catalog"

    @property
    def work_dir(self) -> Path:
        """Shards and other intermediate files of indexing runs."""
        return self.home / "work"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    # --- database ----------------------------------------------------------
    @property
    def embedded(self) -> bool:
        """True when the project's own embedded PostgreSQL is the database."""
        return self.database_url_override is None

    @property
    def cursor_key_file(self) -> Path:
        """The key that signs search cursors when FASHION_CURSOR_SECRET is unset (0600)."""
        return self.home / "secrets" / "cursor-key"

    @property
    def analytics_salt_dir(self) -> Path:
        """The day's random salts that session ids are hashed with (0700; each deleted two
        days after its day, so a stored hash cannot be tied to a session id afterwards)."""
        return self.home / "secrets" / "analytics-salts"

    @property
    def pg_passfile(self) -> Path:
        """The embedded server's passwords (libpq password file, 0600; see store/embedded)."""
        return self.home / "secrets" / "pgpass"

    def role_url(self, role: str, dbname: str | None = None, port: int | None = None) -> str:
        """The embedded server as ``role``, in ``dbname`` (default the catalogue database).
        The password comes from the 0600 password file, never from the URL itself."""
        port = self.pg_port if port is None else port
        dbname = dbname or self.pg_database
        return f"postgresql://{role}@127.0.0.1:{port}/{dbname}?passfile={self.pg_passfile}"

    @property
    def database_url(self) -> str:
        """The pipeline's connection (indexing, sync, evaluation, CLIs): DATABASE_URL, or the
        embedded server as ``fashion_pipeline``."""
        if self.database_url_override:
            return self.database_url_override
        return self.role_url(PIPELINE_ROLE)

    @property
    def owner_url(self) -> str:
        """The migrations' connection: DATABASE_OWNER_URL, else the embedded server as the
        owner ``fashion``, else DATABASE_URL."""
        if self.database_owner_url_override:
            return self.database_owner_url_override
        return self.database_url if self.database_url_override else self.role_url(OWNER_ROLE)

    @property
    def search_url(self) -> str:
        """The API's connection (it only reads): DATABASE_SEARCH_URL, else the embedded
        server as ``fashion_search``, else DATABASE_URL."""
        if self.database_search_url_override:
            return self.database_search_url_override
        return self.database_url if self.database_url_override else self.role_url(SEARCH_ROLE)

    @property
    def events_url(self) -> str:
        """The API's analytics writer (INSERT into the searches and events tables only):
        DATABASE_EVENTS_URL, else the embedded server as ``fashion_events``, else DATABASE_URL."""
        if self.database_events_url_override:
            return self.database_events_url_override
        return self.database_url if self.database_url_override else self.role_url(EVENTS_ROLE)

    @property
    def replica_url(self) -> str:
        """The embedded replica (hot standby on ``pg_replica_port``) as the search role."""
        return self.role_url(SEARCH_ROLE, port=self.pg_replica_port)

    def replica_admin_url_for(self, dbname: str) -> str:
        """The embedded replica's superuser: for ``db replica status`` only."""
        return self.role_url("postgres", dbname, self.pg_replica_port)

    @property
    def database_read_url(self) -> str | None:
        """Where the API's searches and lookups read: DATABASE_READ_URL; else the embedded
        replica when FASHION_PG_REPLICA is on (and the primary is the embedded server);
        else None: reads go to the primary (``database_url``). Writes always go there."""
        if self.database_read_url_override:
            return self.database_read_url_override
        if self.pg_replica and self.embedded:
            return self.replica_url
        return None

    def admin_url_for(self, dbname: str) -> str:
        """The embedded server's superuser (``postgres``), for setting the server up only;
        with DATABASE_URL, that URL's own role (we never assume more)."""
        if self.database_url_override:
            return self.database_url_for(dbname)
        return self.role_url("postgres", dbname)

    def database_url_for(self, dbname: str) -> str:
        """The same server and login as ``database_url``, another database."""
        params = conninfo_to_dict(self.database_url)
        params["dbname"] = dbname
        return make_conninfo(**params)

    def scratch_url_for(self, dbname: str) -> str:
        """Where tests and benchmarks make and drop their scratch databases: the embedded
        server as ``fashion_scratch``; with DATABASE_URL, that URL's own login."""
        if self.database_url_override:
            return self.database_url_for(dbname)
        return self.role_url(SCRATCH_ROLE, dbname)

    def airflow_db_url(self, dbname: str) -> str:
        """Airflow's metadata database: the embedded server as ``fashion_airflow``; with
        DATABASE_URL, that URL's own login."""
        if self.database_url_override:
            return self.database_url_for(dbname)
        return self.role_url(AIRFLOW_ROLE, dbname)


@functools.cache
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use.

    A process that changes its own environment afterwards (a test) calls
    ``get_settings.cache_clear()``.
    """
    return Settings.from_env()
