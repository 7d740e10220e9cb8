"""Request and response bodies of the HTTP API (msgspec Structs, also the OpenAPI schema).

Limits a client can rely on (documented here and in the OpenAPI description):
- ``text``: at most :data:`MAX_TEXT_CHARS` characters; longer text is refused with 422
  rather than silently truncated (a shop's search box never needs more, and a silent
  cut would make results depend on an invisible boundary).
- ``k``: 1..:data:`MAX_K` results; ``alpha`` in [0, 1], and an alpha below
  :data:`~services.search.MIN_ALPHA` counts as 0 (echoed as 0).
- text and filter values: no NUL character (U+0000; PostgreSQL text cannot hold one): 422.
- uploads: at most ``settings.max_upload_bytes`` (413 above that).

Every error is an :class:`ErrorBody`; :func:`error_responses` documents them per operation
(and :class:`DocumentedOperation` the ``Retry-After`` header of a 503).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIHeader, OpenAPIResponse, Operation, Schema

from services.catalog.schema import METADATA_FIELDS
from services.search import (
    DEFAULT_BUDGET,
    DEFAULT_CANDIDATES,
    MAX_CANDIDATES,
    MAX_DEPTH,
    MAX_K,
    MIN_ALPHA,
    RELEVANT_POOL,
    SORTS,
)

MAX_TEXT_CHARS = 1000
DEFAULT_K = 12

Mode = Literal["hybrid", "dense", "sparse"]
Sort = Literal.__getitem__(SORTS)  # "relevance", then the schema's sortable fields
MAX_CURSOR_CHARS = 4096
FilterValue = str | list[str] | int


# A per-index candidate count of a request (first stage or deepening budget).
CandidateCount = Annotated[int, msgspec.Meta(ge=1, le=MAX_CANDIDATES)]
# A recognised attribute as a shopper removes it: "<field>:<value>".
MAX_IGNORED = 20
AttributeKey = Annotated[
    str, msgspec.Meta(min_length=3, max_length=80, pattern=r"^[A-Za-z]+:[^\x00]+$")
]


class SearchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A search: text, an image (multipart only), or both."""

    text: str | None = None
    alpha: Annotated[
        Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] | None,
        msgspec.Meta(
            description="Weight of the dense (CLIP) side; 1 - alpha goes to SPLADE. "
            f"A value below {MIN_ALPHA:g} counts as 0 (the response echoes 0). "
            "Default: the server's default_alpha."
        ),
    ] = None
    k: Annotated[int, msgspec.Meta(ge=1, le=MAX_K)] = DEFAULT_K
    filters: dict[str, FilterValue] | None = None
    mode: Mode = "hybrid"
    exact: bool = False
    candidates: Annotated[
        CandidateCount | None,
        msgspec.Meta(
            description="Candidates per HNSW index in the first stage (default "
            f"{DEFAULT_CANDIDATES}, or k if larger)."
        ),
    ] = None
    budget: Annotated[
        CandidateCount | None,
        msgspec.Meta(
            description="Candidates per HNSW index when the first stage cannot certify its "
            f"answer (default {DEFAULT_BUDGET}; at most `candidates`: no deepening)."
        ),
    ] = None
    literal: Annotated[
        bool,
        msgspec.Meta(
            description="true: search the text exactly as sent (no spelling correction, "
            "synonyms, shade names or occasions); the ranking is then the one the platform "
            "gave before query understanding existed."
        ),
    ] = False
    ignore: Annotated[
        Annotated[list[AttributeKey], msgspec.Meta(max_length=MAX_IGNORED)] | None,
        msgspec.Meta(
            description="Recognised attributes to leave out of understanding, as their "
            '`key` in `understood.attributes` (e.g. "baseColour:Green"): a shopper removing a '
            "chip.",
        ),
    ] = None
    offset: Annotated[
        int,
        msgspec.Meta(
            ge=0,
            le=MAX_DEPTH - 1,
            description=f"Results before this page (offset + k <= {MAX_DEPTH}). A next page "
            "is better asked for with `cursor`, which also never repeats a product.",
        ),
    ] = 0
    cursor: Annotated[
        Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CURSOR_CHARS)] | None,
        msgspec.Meta(
            description="`page.next_cursor` of the previous page, sent with the same search "
            "(422 if it belongs to another search or is altered; 410 once the index it "
            "belongs to is no longer live). Not with `offset`."
        ),
    ] = None
    sort: Annotated[
        Sort,
        msgspec.Meta(
            description="relevance (fused score), or newest (latest year first): a sort "
            f"other than relevance orders the query's relevant set, the filtered top "
            f"{RELEVANT_POOL} by fused score, not the whole catalogue."
        ),
    ] = "relevance"
    facets: Annotated[
        bool,
        msgspec.Meta(
            description="true: add `facet_counts`, per facet field how many of the query's "
            f"relevant set (the filtered top {RELEVANT_POOL}) carry each value, a field's "
            "own filter left off (one more database round trip)."
        ),
    ] = False


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
    literal: bool = False
    sort: Sort = "relevance"


class HnswRecall(msgspec.Struct):
    """The index version's measured recall of each HNSW side's top ``n`` against that
    side's exact top ``n`` (its build check, over ``queries`` name queries)."""

    dense: float
    sparse: float
    n: int
    queries: int


class Certificate(msgspec.Struct):
    """What is proven about the ranking, and how it was found.

    ``exact``: the ranking IS the exact fused top k, proven: every product that passes the
    filters was scored (``path`` "exact"), or the dense side carries no weight (alpha 0) and
    the bound from the sparse side's impact-ordered postings is met. An answer with dense
    HNSW candidates is never called exact: an HNSW scan may miss products of its own top n,
    and no bound rules that out. ``reason``: why it is not proven (null when exact): "dense
    side from HNSW" ("from IVFFlat" on a version whose dense index is IVFFlat lists), or "sparse
    bound not met at m postings per term"; ``hnsw_recall``: how often each side's index (the
    dense one HNSW or IVFFlat) found its true top n when the index was built (quoted when the
    dense side came from its index; null for an older index). ``threshold_met``: no product
    outside the candidates can score above the k-th result, IF the dense HNSW list held its
    side's true top n (the bound ``alpha * d_N + (1 - alpha) * s_B``: the lowest dense
    candidate score and the sparse postings' proven bound, at most the k-th score); it
    decides whether the search deepens or falls back to the exact scan. ``path``: "fast"
    (the first candidates: the dense and sparse HNSW indexes and the postings), "deepened"
    (``budget`` candidates per side) or "exact" (selective filters go there at once; a small
    table when the threshold is not met). ``bound`` and ``kth_score`` are null on the exact
    path; ``routed``: the exact path was taken at once (``exact`` asked for, or a filter
    estimated to pass few rows), not as a fallback."""

    exact: bool
    reason: str | None
    threshold_met: bool
    path: Literal["fast", "deepened", "exact"]
    candidates: int | None
    budget: int
    bound: float | None
    kth_score: float | None
    estimated_rows: int
    routed: bool
    hnsw_recall: HnswRecall | None = None


class CorrectionBody(msgspec.Struct):
    original: str
    corrected: str
    confidence: float


class AttributeBody(msgspec.Struct):
    """A catalogue value the query was understood to ask for. Never a filter: it changes
    what the encoders see. ``key`` removes it (the request's ``ignore``)."""

    key: str
    field: str
    value: str
    words: Annotated[str, msgspec.Meta(description="The query's words it was recognised from")]
    confidence: float
    source: Annotated[
        str,
        msgspec.Meta(
            description="catalogue (the catalogue's own word), rule (a merchandiser rule), "
            "wordnet, wordnet hypernym, colour table (a named colour's nearest catalogue "
            "colour), semantic (a left-over word's nearest label)"
        ),
    ]
    rewritten: Annotated[bool, msgspec.Meta(description="Whether it changed the query")]


class RuleBody(msgspec.Struct):
    id: int | None
    rule: str
    words: str


class UnderstoodBody(msgspec.Struct):
    """What query understanding made of the text (``services.understanding``)."""

    status: Annotated[
        Literal["understood", "literal", "unavailable"],
        msgspec.Meta(
            description="understood; literal (asked for, or understanding is off); "
            "unavailable (not built yet: the text was searched literally)"
        ),
    ]
    original: str
    query: Annotated[str, msgspec.Meta(description="The text the encoders saw (corrected)")]
    rewrite: Annotated[
        str | None,
        msgspec.Meta(description="The query in the catalogue's words, encoded beside it"),
    ]
    corrections: list[CorrectionBody]
    attributes: list[AttributeBody]
    rules: list[RuleBody]
    ignored: list[str]


class Page(msgspec.Struct):
    """Where this page stands. ``next_cursor`` continues it (null: no more results, or the
    depth limit reached); ``ranked``: results the statement ranked for it (fewer than the
    depth when fewer products pass the filters). A page never repeats a product the
    earlier pages showed; ``late``: how many of its products sort before the previous
    page's last one (the earlier pages' candidates missed them: shown now rather than
    lost; 0 when this page continues them exactly)."""

    offset: int
    k: int
    sort: Sort
    ranked: int
    has_more: bool
    next_offset: int | None
    next_cursor: str | None
    late: int
    max_depth: int = MAX_DEPTH


class FacetCount(msgspec.Struct):
    value: str
    count: int


class FacetCounts(msgspec.Struct):
    """Per facet field (API name), the values the query's relevant set holds and how many
    products carry each (most first); a field's own filter left off (disjunctive)."""

    pool: Annotated[int, msgspec.Meta(description="The relevant set's size: the filtered top N")]
    counts: dict[str, list[FacetCount]]


class SearchResponse(msgspec.Struct):
    query: QueryEcho
    index_version: int
    took_ms: float
    cached_embedding: bool
    certificate: Certificate
    results: list[SearchResult]
    understood: UnderstoodBody | None = None
    page: Page | None = None
    facet_counts: FacetCounts | None = None
    search_id: Annotated[
        str | None,
        msgspec.Meta(
            description="This response's id: send it back with the shopper's clicks, "
            "add-to-carts and purchases of its products (POST /v1/events). Null when "
            "analytics are off."
        ),
    ] = None


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
    certificate: Certificate
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


class DatabaseSides(msgspec.Struct):
    """The primary and the read replica (``DATABASE_READ_URL`` / the embedded replica)."""

    primary: Annotated[str, msgspec.Meta(description='"ok" or "down: <reason>"')]
    replica: Annotated[str, msgspec.Meta(description='"ok", "down: <reason>" or "not configured"')]
    replica_lag_s: Annotated[
        float | None,
        msgspec.Meta(description="Seconds the replica is behind (0: caught up); null: unknown"),
    ] = None
    replica_lag_bytes: Annotated[
        int | None,
        msgspec.Meta(description="WAL bytes the replica has not replayed; null: unknown"),
    ] = None


class Readiness(msgspec.Struct):
    status: str  # "ready" | "not ready"
    checks: dict[str, str]
    database: DatabaseSides | None = None


# A client's session id (X-Session-Id, the events' session_id): kept only as a salted hash.
SESSION_PATTERN = r"^[A-Za-z0-9_-]{8,128}$"


class ErrorBody(msgspec.Struct):
    """Every error response of the API (``services.api.errors``): never a trace."""

    status_code: int
    error: Annotated[str, msgspec.Meta(description="Machine-readable reason, e.g. invalid_request")]
    detail: Annotated[str, msgspec.Meta(description="What is wrong, for a person")]
    request_id: Annotated[
        str | None, msgspec.Meta(description="Quote it when reporting a problem")
    ] = None


# What each documented error status means, for the OpenAPI of every operation.
ERROR_DESCRIPTIONS = {
    400: "The request cannot be parsed: malformed JSON or multipart, a body that is not "
    "valid UTF-8, a parameter of the wrong type, multipart `filters` that are not JSON; or "
    "its Host is neither a loopback name nor one of FASHION_ALLOWED_HOSTS (any route).",
    404: "No such product (or evaluation run).",
    410: "The cursor belongs to an index version that is no longer live: start again from the "
    "first page.",
    413: "Body or upload over the size limit, or a multipart form with too many parts.",
    429: "Too many requests of one kind: e.g. more events for one search than allowed.",
    415: "A body that is neither application/json nor multipart/form-data (or has no "
    "Content-Type), or an uploaded image in a format the API does not read (a PDF, a zip).",
    422: "Parsed but invalid: no text and no image (a text of whitespace or invisible "
    "characters is no text), alpha/k/offset out of range, a form number sent as null, unknown or "
    "malformed filter, text too long, a NUL character in a text or filter value, "
    "a corrupt or oversized image, a cursor altered or sent with another search.",
    503: "The database is unreachable or at an older schema revision, no index is live, "
    "the encoders are not loaded yet, or every image decoder is busy. Retry after "
    "Retry-After seconds.",
}

RETRY_AFTER_HEADER = OpenAPIHeader(
    schema=Schema(type="string", pattern=r"^\d+$"),
    description="Seconds to wait before retrying.",
    required=True,
)


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI responses of the error ``codes`` an operation returns (``ErrorBody``)."""
    return {
        code: ResponseSpec(
            data_container=ErrorBody,
            description=ERROR_DESCRIPTIONS[code],
            generate_examples=False,
        )
        for code in codes
    }


@dataclass
class DocumentedOperation(Operation):
    """An operation whose 503 (an :class:`ErrorBody`) documents its ``Retry-After`` header,
    which Litestar's ``ResponseSpec`` cannot express."""

    def __post_init__(self) -> None:
        response = (self.responses or {}).get("503")
        if isinstance(response, OpenAPIResponse):
            response.headers = {**(response.headers or {}), "Retry-After": RETRY_AFTER_HEADER}
