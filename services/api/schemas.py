"""Request and response bodies of the HTTP API (msgspec Structs, also the OpenAPI schema).

Limits a client can rely on (documented here and in the OpenAPI description):
- ``text``: at most :data:`MAX_TEXT_CHARS` characters; longer text is refused with 422
  rather than silently truncated (a shop's search box never needs more, and a silent
  cut would make results depend on an invisible boundary).
- ``k``: 1..:data:`MAX_K` results; ``alpha`` in [0, 1].
- uploads: at most ``settings.max_upload_bytes`` (413 above that).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from services.catalog.schema import METADATA_FIELDS
from services.store.search import MAX_K

MAX_TEXT_CHARS = 1000
DEFAULT_K = 12

Mode = Literal["hybrid", "dense", "sparse"]
FilterValue = str | list[str] | int


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A search: text, an image (multipart only), or both."""

    text: str | None = None
    alpha: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None = None
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] = DEFAULT_K
    filters: dict[str, FilterValue] | None = None
    mode: Mode = "hybrid"
    exact: bool = False


class Term(msgspec.Struct):
    """One vocabulary term and its contribution to the sparse inner product."""

    term: str
    weight: float


# A product's metadata fields, from the product schema: attributes are named by column,
# encoded under their dataset (API) names.
ProductMetadata = msgspec.defstruct(
    "ProductMetadata",
    [(f.column, f.python | None) for f in METADATA_FIELDS],
    rename={f.column: f.name for f in METADATA_FIELDS},
    module=__name__,
)


class SearchResult(msgspec.Struct):
    id: int
    name: str
    metadata: ProductMetadata
    image_url: str
    score: float
    dense_score: float | None
    sparse_score: float | None
    terms: list[Term]


class QueryEcho(msgspec.Struct):
    """What was searched, after defaults: ``alpha`` is the weight actually used."""

    text: str | None
    image: bool
    mode: Mode
    alpha: float
    k: int
    exact: bool
    filters: dict[str, FilterValue]


class SearchResponse(msgspec.Struct):
    query: QueryEcho
    index_version: int
    took_ms: float
    cached_embedding: bool
    results: list[SearchResult]


class Product(msgspec.Struct):
    id: int
    name: str
    metadata: ProductMetadata
    image_url: str | None


class SimilarResponse(msgspec.Struct):
    product: Product
    alpha: float
    index_version: int
    took_ms: float
    results: list[SearchResult]


class IndexInfo(msgspec.Struct):
    version: int
    status: str
    dense_model: str
    dense_dim: int
    sparse_model: str
    sparse_dim: int
    row_count: int | None
    built_at: str | None
    live_at: str | None
    serving_dense_model: str | None
    serving_sparse_model: str | None


class Facets(msgspec.Struct):
    """The filter values of the live index: ``values`` per facet field, ``labels`` the
    fields' display names (in the order a page lists them)."""

    index_version: int
    values: dict[str, list[str]]
    labels: dict[str, str]


class Health(msgspec.Struct):
    status: str


class Readiness(msgspec.Struct):
    status: str  # "ready" | "not ready"
    checks: dict[str, str]
