"""Settings for every part of the platform, read from the environment in one place.

Every path the project writes lives under ``FASHION_HOME`` (default ``<repo>/.fashion``):
the embedded PostgreSQL data directory, the model cache, catalogues, shards and reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build one with :func:`get_settings`."""

    home: Path
    pg_port: int
    database_url_override: str | None
    dense_model: str
    sparse_model: str
    api_host: str
    api_port: int
    default_alpha: float
    default_alpha_multimodal: float
    dense_image_weight: float
    query_text_weight: float
    max_upload_bytes: int
    extra: dict = field(default_factory=dict)

    # --- paths -------------------------------------------------------------
    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def model_cache(self) -> Path:
        override = os.environ.get("FASHION_MODEL_CACHE", "").strip()
        return Path(override).resolve() if override else self.home / "models"

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
    def database_url(self) -> str:
        if self.database_url_override:
            return self.database_url_override
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/fashion"

    def database_url_for(self, dbname: str) -> str:
        """The same server, another database (Airflow's metadata lives beside ours)."""
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(self.database_url)
        params["dbname"] = dbname
        return make_conninfo(**params)


def get_settings() -> Settings:
    return Settings(
        home=Path(_env("FASHION_HOME", str(REPO_ROOT / ".fashion"))).resolve(),
        pg_port=int(_env("FASHION_PG_PORT", "54329")),
        database_url_override=os.environ.get("DATABASE_URL") or None,
        dense_model=_env("FASHION_DENSE_MODEL", "fashion-lit-minilm"),
        sparse_model=_env("FASHION_SPARSE_MODEL", "splade-tiny-offline"),
        api_host=_env("FASHION_API_HOST", "127.0.0.1"),
        api_port=int(_env("FASHION_API_PORT", "8000")),
        # The blend weights below were chosen together by `fashion-search eval-sweep` on the
        # TUNING half of the query set (fashion-lit-minilm + splade-tiny-offline, README
        # "Evaluation"); the reported figures come from the test half.
        default_alpha=float(_env("FASHION_DEFAULT_ALPHA", "0.5")),
        default_alpha_multimodal=float(_env("FASHION_DEFAULT_ALPHA_MULTI", "0.8")),
        # Product dense vector = normalise(w * CLIP(photo) + (1 - w) * CLIP_text(name)) for new
        # index versions (recorded per version).
        dense_image_weight=float(_env("FASHION_DENSE_IMAGE_WEIGHT", "0.2")),
        # Photo + text query: dense = normalise(t * CLIP_text(text) + (1 - t) * CLIP(photo)).
        query_text_weight=float(_env("FASHION_QUERY_TEXT_WEIGHT", "0.5")),
        max_upload_bytes=int(_env("FASHION_MAX_UPLOAD_BYTES", str(8 * 1024 * 1024))),
    )
