"""A product's fields, written once: every other schema of a product is derived from this table.

One :class:`Field` per field, with its spelling in each place it appears:

- ``name``: the real dataset's field name (``ashraq/fashion-product-images-small``,
  camelCase), also the API's name in JSON answers and filters;
- ``column``: the PostgreSQL column (snake_case) of ``products`` and, for metadata fields,
  of each index version's table;
- ``pg_type`` / ``copy_type``: the column's DDL type and its binary-COPY type;
- ``arrow``: the Arrow type in the catalogue's Parquet files, or None for a field that is
  not in the dataset (derived by :attr:`Field.derive`, or kept by the database only);
- ``filter``: ``"any"`` (a value or a list of values, OR-ed) or ``"range"``
  (``<name>_min`` / ``<name>_max``); ``facet``: its distinct values are served by
  ``/v1/facets`` (and listed by the search page);
- ``metadata``: part of a product's metadata in answers and copied into each index
  version's table (so a filtered HNSW scan never joins).

Derived here: the Arrow/Parquet schema with its Hugging Face features
(:data:`CATALOG_ARROW_SCHEMA`), the dataset's column list, and the field groups used by the
store (COPY lists, the DDL of a version's table, the filter allow-list), the API
(``ProductMetadata``) and the OpenAPI text (:func:`filters_doc`). Rows are always mapped by
name, never by position.

Adding a field = one entry below + one migration (its column in ``products`` and in existing
version tables) + a test.

``content_hash`` (a column, kept by the database only) is the fingerprint of a product's
dataset fields (:func:`content_hash`): the incremental catalogue sync compares it with the
source's rows to find what changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

IMAGE_ARROW_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

# The gender word that follows the brand in the catalogue's display names
# ("Peter England Men Navy Blue Shirt", "Gini and Jony Girls Pink Top").
_GENDER_WORDS = frozenset(
    {"men", "women", "boys", "girls", "unisex", "mens", "womens", "men's", "women's"}
)
_WORD = re.compile(r"\S+")


def brand_from_name(name: str | None) -> str | None:
    """The brand of a product: the words of its display name before the gender word.

    Both the real dataset's names and the offline catalogue's follow "<brand> <gender> ...";
    a name with no gender word after its first word has no brand (None).
    """
    if not isinstance(name, str):
        return None
    words = _WORD.findall(name)
    for i, word in enumerate(words):
        if i > 0 and word.lower() in _GENDER_WORDS:
            return " ".join(words[:i])
    return None


def sniff_mime(data: bytes | None) -> str | None:
    """The MIME type of image bytes, from their signature."""
    if not data:
        return None
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


def image_bytes(value: Any) -> bytes | None:
    """Image bytes from a row's ``image`` (raw bytes, or the dataset's ``{bytes, path}``)."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return None if value is None else bytes(value)


@dataclass(frozen=True)
class Field:
    name: str
    column: str
    pg_type: str
    copy_type: str
    arrow: pa.DataType | None
    python: type
    hf_feature: dict | None = None
    nullable: bool = True
    filter: str | None = None  # "any" | "range"
    facet: bool = False
    metadata: bool = False
    derive: Callable[[dict], Any] | None = None
    description: str = ""
    label: str = ""  # shown to shoppers (the search page's filter names)
    # A sort order of search results this field gives (descending: larger first), by name.
    sort: str | None = None

    @property
    def in_dataset(self) -> bool:
        return self.arrow is not None

    def value(self, row: dict) -> Any:
        """This field's database value from a row in dataset spelling (derived if it is)."""
        if self.derive is not None:
            return self.derive(row)
        value = row.get(self.name)
        if value is None:
            return None
        if self.python is int:
            return int(value)
        if self.python is bytes:
            return image_bytes(value)
        return value


def _text(name: str, column: str, description: str, **kw) -> Field:
    return Field(name, column, "text", "text", pa.string(), str,
                 {"dtype": "string", "_type": "Value"}, description=description, **kw)  # fmt: skip


def _attribute(name: str, column: str, label: str, description: str) -> Field:
    return _text(name, column, description, filter="any", facet=True, metadata=True, label=label)


_INT64 = {"dtype": "int64", "_type": "Value"}

FIELDS: tuple[Field, ...] = (
    Field(
        "id",
        "id",
        "bigint",
        "int8",
        pa.int64(),
        int,
        _INT64,
        nullable=False,
        description="Product id (the catalogue's).",
    ),
    _attribute("gender", "gender", "Gender", "Men, Women, Boys, Girls or Unisex."),
    _attribute(
        "masterCategory", "master_category", "Category", "Apparel, Accessories, Footwear, ..."
    ),
    _attribute("subCategory", "sub_category", "Sub-category", "Topwear, Shoes, Bags, ..."),
    _attribute("articleType", "article_type", "Type", "Tshirts, Dresses, Sports Shoes, ..."),
    _attribute("baseColour", "base_colour", "Colour", "Black, Navy Blue, ..."),
    _attribute("season", "season", "Season", "Summer, Fall, Winter or Spring."),
    Field(
        "year",
        "year",
        "integer",
        "int4",
        pa.int64(),
        int,
        _INT64,
        filter="range",
        metadata=True,
        sort="newest",
        description="Catalogue year; filter with year_min / year_max; sort newest first.",
    ),
    _attribute("usage", "usage", "Usage", "Casual, Formal, Sports, ..."),
    _text(
        "productDisplayName", "product_display_name", "The product's display name.", nullable=False
    ),
    Field(
        "image",
        "image",
        "bytea",
        "bytea",
        IMAGE_ARROW_TYPE,
        bytes,
        {"_type": "Image"},
        description="The product photo.",
    ),
    # Not in the dataset: derived from the display name when a product is stored.
    Field(
        "brand",
        "brand",
        "text",
        "text",
        None,
        str,
        filter="any",
        facet=True,
        metadata=True,
        derive=lambda row: brand_from_name(row.get("productDisplayName")),
        label="Brand",
        description="Brand, read from the display name (Nike, Peter England, ...).",
    ),
    # Kept by the database only.
    Field(
        "image_mime",
        "image_mime",
        "text",
        "text",
        None,
        str,
        derive=lambda row: sniff_mime(image_bytes(row.get("image"))),
    ),
    Field("source", "source", "text", "text", None, str),
    # Kept by the database only: the fingerprint of the dataset fields above (content_hash).
    Field(
        "content_hash",
        "content_hash",
        "text",
        "text",
        None,
        str,
        derive=lambda row: content_hash(row),
        description="sha256 of the product's dataset fields (name, metadata, photo bytes).",
    ),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
BY_COLUMN: dict[str, Field] = {f.column: f for f in FIELDS}

DATASET_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.in_dataset)
DATASET_COLUMNS: tuple[str, ...] = tuple(f.name for f in DATASET_FIELDS)
METADATA_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.metadata)
FILTER_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.filter)
VALUE_FILTER_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.filter == "any")
RANGE_FILTER_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.filter == "range")
FACET_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.facet)
SORT_FIELDS: tuple[Field, ...] = tuple(f for f in FIELDS if f.sort)
# Dataset text attributes a row may carry (validation checks them as text).
TEXT_ATTRIBUTES: tuple[str, ...] = tuple(f.name for f in DATASET_FIELDS if f.facet)

CATALOG_ARROW_SCHEMA = pa.schema(
    [pa.field(f.name, f.arrow, nullable=f.nullable) for f in DATASET_FIELDS],
    metadata={
        "huggingface": json.dumps(
            {"info": {"features": {f.name: f.hf_feature for f in DATASET_FIELDS}}},
            sort_keys=True,
        )
    },
)


# Bumped when content_hash's encoding changes (every stored hash then differs: a full re-sync).
_HASH_SCHEME = b"fashion-product-content/1"


def content_hash(row: dict) -> str:
    """The fingerprint of a product: sha256 (hex) over every dataset field of the schema (id,
    name, metadata, the photo's bytes), as :meth:`Field.value` reads them from a row in dataset
    spelling. The same product read from a catalogue file or from ``products``
    (``iter_products(with_image=True)``) gives the same hash; any change to one of those
    fields gives another. Fields are framed (name, type tag, length), so no two different
    rows share an encoding."""
    digest = hashlib.sha256(_HASH_SCHEME)
    for f in DATASET_FIELDS:
        value = f.value(row)
        if value is None:
            data = b"n"
        elif isinstance(value, (bytes, bytearray, memoryview)):
            data = b"b" + bytes(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            data = b"i" + str(value).encode()
        else:
            data = b"s" + str(value).encode("utf-8")
        digest.update(f.name.encode() + b"\x1f" + len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def range_keys(f: Field) -> tuple[str, str]:
    """The request keys of a range filter: ``<name>_min``, ``<name>_max``."""
    return f"{f.name}_min", f"{f.name}_max"


def filters_doc() -> str:
    """The filter keys, for API descriptions."""
    keys = [f.name for f in VALUE_FILTER_FIELDS]
    keys += [k for f in RANGE_FILTER_FIELDS for k in range_keys(f)]
    return (
        "Field -> value or list of values (OR within a field, AND across fields): "
        + ", ".join(keys)
        + ". The values of each field are listed by GET /v1/facets."
    )


def metadata_of(record: dict) -> dict[str, Any]:
    """A product's metadata keyed by column, from a record keyed by column."""
    return {f.column: record.get(f.column) for f in METADATA_FIELDS}
