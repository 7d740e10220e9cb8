"""Where catalogue rows come from: the offline catalogue, the Hugging Face hub, or local files.

``resolve_source`` turns a user's ``--source`` into a list of Parquet files for
:func:`services.catalog.reader.iter_rows`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from services.catalog.errors import CatalogSourceError
from services.catalog.hub import download_hub_catalog
from services.catalog.offline import build_offline_catalog, is_current_offline_catalog
from services.catalog.reader import open_parquet
from services.config import get_settings

log = logging.getLogger(__name__)

SOURCES_HELP = "'offline' (built-in sample catalogue), 'hub' (Hugging Face download) or a path"


def offline_catalog_path(size: int) -> Path:
    """Where the cached offline catalogue of ``size`` products lives."""
    return get_settings().catalog_dir / f"offline-{size}.parquet"


def ensure_offline_catalog(size: int = 10_000) -> Path:
    """The cached offline catalogue of ``size`` products, built on first use.

    A cached file from an older generator version (or not an offline catalogue) is rebuilt.
    """

    path = offline_catalog_path(size)
    if not is_current_offline_catalog(path, size):
        if path.exists():
            log.info("rebuilding stale offline catalogue %s", path)
        build_offline_catalog(path, size=size)
    return path


def local_parquet_files(path: Path) -> list[Path]:
    """A Parquet file, or the ``*.parquet`` files of a folder (recursively, in name order)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CatalogSourceError(f"catalogue source not found: {path} (expected {SOURCES_HELP})")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise CatalogSourceError(f"no .parquet files in folder {path}")
    return files


def _enough_files(files: list[Path], limit: int | None) -> list[Path]:
    """The leading files that together hold at least ``limit`` rows (all files without one)."""
    if limit is None:
        return files
    chosen, rows = [], 0
    for path in files:
        if rows >= limit:
            break
        chosen.append(path)
        rows += open_parquet(path).metadata.num_rows
    return chosen or files[:1]


def resolve_source(source: str, *, size: int = 10_000, limit: int | None = None) -> list[Path]:
    """Parquet files for ``source``: "offline", "hub", or a local Parquet file or folder.

    - "offline": the offline catalogue of ``size`` products at
      ``settings.catalog_dir/offline-<size>.parquet``, built on first use. With a ``limit``
      below ``size`` the smaller catalogue ``offline-<limit>`` is used: offline rows are
      prefix-stable, so it holds exactly the first ``limit`` rows of the larger one.
    - "hub": ``ashraq/fashion-product-images-small`` downloaded into
      ``settings.catalog_dir/hub`` (CatalogSourceError naming ``--source offline`` when the
      hub cannot be reached).
    - a path: that Parquet file, or every ``*.parquet`` under that folder.

    ``limit`` is the number of rows the caller will read; for files it trims the list to
    the leading files that hold them. The reader still applies the limit row by row.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if source == "offline":
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        return [ensure_offline_catalog(min(size, limit) if limit else size)]
    if source == "hub":
        return _enough_files(download_hub_catalog(get_settings().catalog_dir / "hub"), limit)
    if not source:
        raise CatalogSourceError(f"empty catalogue source; expected {SOURCES_HELP}")
    return _enough_files(local_parquet_files(Path(source)), limit)
