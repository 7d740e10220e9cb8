"""Writing catalogue rows to Parquet in the Hugging Face layout of the real dataset.

One Arrow schema for every Parquet file the project writes (offline catalogue, pipeline
shards): the columns of ``ashraq/fashion-product-images-small`` with ``image`` as the
``datasets`` Image struct ``{bytes: binary, path: string}``, plus the ``huggingface``
schema metadata so ``datasets.load_dataset("parquet", ...)`` decodes images too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from services.catalog.schema import CATALOG_ARROW_SCHEMA

ROW_GROUP_SIZE = 1000


def rows_to_table(rows: Iterable[dict]) -> pa.Table:
    """Rows in dataset field names (``image`` as file bytes) -> an Arrow table in CATALOG_ARROW_SCHEMA."""
    columns: dict[str, list] = {name: [] for name in CATALOG_ARROW_SCHEMA.names}
    for row in rows:
        for name in CATALOG_ARROW_SCHEMA.names:
            if name == "image":
                image = row.get("image")
                if isinstance(image, dict):  # already in struct form
                    columns["image"].append(image)
                else:
                    path = f"{row['id']}.jpg" if image is not None else None
                    columns["image"].append(
                        None if image is None else {"bytes": bytes(image), "path": path}
                    )
            else:
                columns[name].append(row.get(name))
    return pa.Table.from_pydict(columns, schema=CATALOG_ARROW_SCHEMA)


def write_parquet(rows: Iterable[dict], path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write ``rows`` to one Parquet file atomically (temp file + rename); returns ``path``.

    ``metadata`` adds key/value pairs to the file's schema metadata (e.g. provenance).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table = rows_to_table(rows)
    if metadata:
        table = table.replace_schema_metadata({**table.schema.metadata, **metadata})
    try:
        pq.write_table(
            table,
            tmp,
            row_group_size=ROW_GROUP_SIZE,
            compression="zstd",
            write_statistics=True,
        )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _chunks(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def write_shards(rows: Iterable[dict], out_dir: Path, shard_size: int = 2000) -> list[Path]:
    """Stream ``rows`` into ``out_dir/shard-00000.parquet``, ... of at most ``shard_size`` rows.

    Shards left in ``out_dir`` by an earlier run are removed first, so the folder holds exactly
    this run's rows. Returns the shard paths in order (an empty list for no rows).
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("shard-*.parquet"):
        old.unlink()
    paths = []
    for number, chunk in enumerate(_chunks(rows, shard_size)):
        paths.append(write_parquet(chunk, out_dir / f"shard-{number:05d}.parquet"))
    return paths
