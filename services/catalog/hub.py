"""The real catalogue: ``ashraq/fashion-product-images-small`` from the Hugging Face hub.

``download_hub_catalog`` fetches only the dataset's Parquet files with ``snapshot_download``
(resumable; the hub client's cache makes a second call free and lets an offline machine
reuse an earlier download), then verifies them: each file must open as Parquet and carry
every column of the catalogue schema; the row count is logged and returned by
``verify_parquet_files``. When the hub cannot be reached the error names the offline
fallback, ``--source offline``.

HF_ENDPOINT and HF_HUB_OFFLINE are read at call time (the hub client reads them at import).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from services.catalog.errors import CatalogError, CatalogSourceError
from services.catalog.reader import open_parquet
from services.catalog.vocabulary import COLUMNS
from services.config import get_settings

log = logging.getLogger(__name__)

HUB_REPO_ID = "ashraq/fashion-product-images-small"
HUB_EXPECTED_ROWS = 44_072  # the published dataset; a different count is logged, not fatal
OFFLINE_FALLBACK = (
    "use the built-in offline catalogue instead: --source offline "
    "(fashion-search catalog build-offline)"
)


@dataclass(frozen=True)
class HubCatalogInfo:
    """What verification found: the files, their total rows and their column names."""

    files: list[Path]
    rows: int
    columns: list[str]


def verify_parquet_files(files: list[Path]) -> HubCatalogInfo:
    """Check that every file is readable Parquet with all catalogue columns; count rows.

    Raises CatalogError naming the first bad file (or saying there are none).
    """
    if not files:
        raise CatalogError(f"no Parquet files found for {HUB_REPO_ID}")
    rows, columns = 0, []
    for path in files:
        parquet = open_parquet(path)
        columns = parquet.schema_arrow.names
        missing = [name for name in COLUMNS if name not in columns]
        if missing:
            raise CatalogError(
                f"{path} lacks catalogue column(s) {', '.join(missing)} (has {', '.join(columns)})"
            )
        rows += parquet.metadata.num_rows
    log.info("verified %d Parquet file(s) with %d rows", len(files), rows)
    if rows != HUB_EXPECTED_ROWS:
        log.info("row count %d differs from the published %d", rows, HUB_EXPECTED_ROWS)
    return HubCatalogInfo(files=list(files), rows=rows, columns=list(columns))


def download_hub_catalog(cache_dir: Path) -> list[Path]:
    """Download (or reuse from ``cache_dir``) the dataset's Parquet files and verify them.

    Raises CatalogSourceError naming ``--source offline`` when the hub is unreachable and
    nothing is cached, CatalogError when a downloaded file is broken.
    """
    from huggingface_hub import snapshot_download  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    settings = get_settings()
    offline, endpoint = settings.hf_offline, settings.hf_endpoint
    try:
        snapshot = snapshot_download(
            repo_id=HUB_REPO_ID,
            repo_type="dataset",
            allow_patterns=["*.parquet"],
            cache_dir=str(cache_dir),
            endpoint=endpoint,
            local_files_only=offline,
        )
    except Exception as exc:  # connection refused, DNS, offline mode, HTTP errors, ...
        where = "HF_HUB_OFFLINE is set" if offline else f"endpoint {endpoint or 'huggingface.co'}"
        raise CatalogSourceError(
            f"cannot download {HUB_REPO_ID} from the Hugging Face hub ({where}: "
            f"{type(exc).__name__}: {exc}); {OFFLINE_FALLBACK}"
        ) from exc
    files = sorted(Path(snapshot).rglob("*.parquet"))
    return verify_parquet_files(files).files
