"""Streaming catalogue rows out of Parquet files, one record batch at a time.

Rows come out in the real dataset's field names with ``image`` as the image file's bytes
(the Hugging Face struct ``{bytes, path}`` is unwrapped). Values are passed through as
stored, apart from one normalisation for hub files written by pandas: an integral float
``year`` (2012.0) becomes an int and NaN becomes None. Checking values is validate.py's job.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from services.catalog.errors import CatalogError

BATCH_SIZE = 512
_PANDAS_INDEX_COLUMNS = ("__index_level_0__",)


def _image_bytes(value: object) -> object:
    if isinstance(value, dict):
        return value.get("bytes")
    return value


def _year(value: object) -> object:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    return value


def _normalise(row: dict) -> dict:
    for name in _PANDAS_INDEX_COLUMNS:
        row.pop(name, None)
    if "image" in row:
        row["image"] = _image_bytes(row["image"])
    if "year" in row:
        row["year"] = _year(row["year"])
    return row


def open_parquet(path: Path) -> pq.ParquetFile:
    """Open ``path`` as Parquet; raises CatalogError naming the file when it is not readable."""
    path = Path(path)
    try:
        return pq.ParquetFile(path)
    except FileNotFoundError:
        raise CatalogError(f"catalogue file not found: {path}") from None
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"corrupt or unreadable Parquet file {path}: {exc}") from exc


def iter_rows(paths: Iterable[Path] | Path, limit: int | None = None) -> Iterator[dict]:
    """Yield product rows from the Parquet ``paths`` in order, at most ``limit`` in all.

    Reads record batches, so memory stays flat however large the files are. A file that is
    not Parquet, or breaks part-way through, raises CatalogError naming that file.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    remaining = limit
    for path in paths:
        if remaining == 0:
            return
        parquet = open_parquet(path)
        try:
            for batch in parquet.iter_batches(batch_size=BATCH_SIZE):
                for row in batch.to_pylist():
                    yield _normalise(row)
                    if remaining is not None:
                        remaining -= 1
                        if remaining == 0:
                            return
        except (pa.ArrowException, OSError) as exc:
            raise CatalogError(f"corrupt Parquet file {path}: {exc}") from exc
