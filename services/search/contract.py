"""The search contract: what a query may ask (limits, filters, alpha) and what it gets back.

Every caller (the API, the evaluation, the benchmarks, the pipeline's checks) builds a
:class:`SearchQuery` and gets a :class:`Ranking` from ``services.search.ranking``. The rules
live here, once: the limits (the API's request types declare the same bounds from these
constants), the filter grammar (:meth:`Filters.from_mapping`), and the alpha rule
(:func:`query_alpha`, applied once, by :func:`validate`; :func:`resolve_alpha` only picks
what a request asks for: its mode's, its own, or the default). A :class:`Ranking` says the
alpha it ran with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pgvector import SparseVector

from services.catalog.schema import (
    BY_COLUMN,
    FILTER_FIELDS,
    RANGE_FILTER_FIELDS,
    SORT_FIELDS,
    VALUE_FILTER_FIELDS,
    range_keys,
)
from services.store.index_versions import MAX_SPARSE_NNZ, IndexVersion

# Limits of a query, for every caller (the API's request types declare the same ones).
MAX_K = 100
MAX_CANDIDATES = 10_000
MAX_FILTER_VALUES = 100
# Per index, in fast mode (docs/benchmarks.md: recall@10 >= 0.99 at 44k rows).
DEFAULT_CANDIDATES = 150
# Per index, when the first candidates cannot certify the answer (the deep stage).
DEFAULT_BUDGET = 1000
# An answer still uncertified after deepening falls back to the exact scan when the
# filtered rows are at most this many; 0: never (docs/benchmarks.md: what a row costs).
EXACT_MAX_ROWS = 20_000
# An alpha in (0, MIN_ALPHA) runs as 0: a weight that small cannot move a ranking (scores are
# cosines in [-1, 1]), and a subnormal one (5e-324) times a score underflows, which
# PostgreSQL refuses ("value out of range: underflow") instead of rounding to 0.
MIN_ALPHA = 1e-6
MODES = ("hybrid", "dense", "sparse")
# How deep results go: a page of k results at offset o needs o + k <= MAX_DEPTH.
MAX_DEPTH = 1000
# The query's relevant set: the filtered top RELEVANT_POOL products by fused score. A sort
# other than relevance orders this set (not the whole catalogue); facet counts count it.
RELEVANT_POOL = 200
# "relevance" (fused score), then one sort per field the schema marks sortable (descending).
SORTS = ("relevance", *(f.sort for f in SORT_FIELDS))
SORT_COLUMNS = {f.sort: f.column for f in SORT_FIELDS}


class SearchValidationError(ValueError):
    """A query the platform refuses before any SQL runs."""


class NoLiveIndex(LookupError):
    """No index version is live yet."""


# --- the alpha rule ----------------------------------------------------------------------------
def resolve_alpha(
    mode: str,
    alpha: float | None,
    has_text: bool,
    has_image: bool,
    default_alpha: float,
    default_alpha_multimodal: float | None = None,
) -> float:
    """The alpha a request asks for: its mode's ("sparse" 0, "dense" 1), else the request's
    own, else the default for its kind (text, or image + text). What a query then runs with
    is :func:`query_alpha`'s, applied once, by :func:`validate`."""
    if mode not in MODES:
        raise SearchValidationError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "sparse":
        if not has_text:
            raise SearchValidationError("sparse mode needs text (SPLADE encodes text only)")
        return 0.0
    if mode == "dense":
        return 1.0
    if alpha is not None:
        return alpha
    if has_image and has_text and default_alpha_multimodal is not None:
        return default_alpha_multimodal
    return default_alpha


def query_alpha(alpha: Any, has_dense: bool, has_sparse: bool) -> float:
    """THE alpha rule, the weight a query runs with: ``alpha`` must be a number in [0, 1]; a
    side without a query vector cannot carry weight (no sparse vector: 1, no dense one: 0);
    an alpha below :data:`MIN_ALPHA` runs as 0."""
    alpha = _checked_alpha(alpha)
    if not has_sparse:
        return 1.0
    if not has_dense:
        return 0.0
    return 0.0 if alpha < MIN_ALPHA else alpha


def _checked_alpha(alpha: Any) -> float:
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, (int, float))
        or not math.isfinite(alpha)
        or not 0.0 <= alpha <= 1.0
    ):
        raise SearchValidationError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


# Request key -> schema field: a value filter answers to its dataset name and its column;
# a range filter to <name>_min / <name>_max (and the camelCase <name>Min / <name>Max).
_VALUE_KEYS = {k: f for f in VALUE_FILTER_FIELDS for k in (f.name, f.column)}
_RANGE_KEYS = {
    key: (f, end)
    for f in RANGE_FILTER_FIELDS
    for end, keys in zip(("min", "max"), zip(range_keys(f), (f"{f.name}Min", f"{f.name}Max")))
    for key in keys
}
# Every key a filter object may carry (documented in the API's OpenAPI).
VALUE_FILTER_KEYS = tuple(_VALUE_KEYS)
RANGE_FILTER_KEYS = tuple(_RANGE_KEYS)


@dataclass(frozen=True)
class Filters:
    """Metadata filters of the product schema's filter fields; each value filter matches any
    of its values (OR), fields are ANDed. ``values``: column -> values; ``ranges``: column ->
    (min, max), either None."""

    values: tuple[tuple[str, tuple[str, ...]], ...] = ()
    ranges: tuple[tuple[str, int | None, int | None], ...] = ()

    @classmethod
    def from_mapping(cls, data: dict[str, Any] | None) -> Filters:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise SearchValidationError("filters must be an object of field -> value(s)")
        values: dict[str, tuple[str, ...]] = {}
        bounds: dict[str, dict[str, int]] = {}
        for key, value in data.items():
            # An unknown name is refused whatever its value (an empty one too: the schema
            # admits no other names); an empty value of a known field is no filter.
            if key not in _RANGE_KEYS and key not in _VALUE_KEYS:
                allowed = [g.name for g in VALUE_FILTER_FIELDS]
                allowed += [k for g in RANGE_FILTER_FIELDS for k in range_keys(g)]
                raise SearchValidationError(
                    f"unknown filter '{key}'; allowed: {', '.join(allowed)}"
                )
            if value is None:
                continue
            if key in _RANGE_KEYS:
                f, end = _RANGE_KEYS[key]
                if isinstance(value, float) and value.is_integer():  # JSON's 2012.0 is 2012
                    value = int(value)
                if isinstance(value, bool) or not isinstance(value, int):
                    raise SearchValidationError(f"filter {key} must be an integer {f.name}")
                bounds.setdefault(f.column, {})[end] = value
                continue
            if value == "" or value == []:
                continue
            f = _VALUE_KEYS[key]
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or not all(
                isinstance(v, str) and v.strip() for v in items
            ):
                raise SearchValidationError(
                    f"filter {key} must be a non-empty string or a list of strings"
                )
            if any("\x00" in v for v in items):  # PostgreSQL text cannot hold one
                raise SearchValidationError(f"filter {key} contains a NUL character (U+0000)")
            if len(items) > MAX_FILTER_VALUES:
                raise SearchValidationError(
                    f"filter {key} has too many values (max {MAX_FILTER_VALUES})"
                )
            values[f.column] = tuple(v.strip() for v in items)
        ranges = []
        for column, b in bounds.items():
            low, high = b.get("min"), b.get("max")
            if low is not None and high is not None and low > high:
                name = BY_COLUMN[column].name
                raise SearchValidationError(f"{name}_min is greater than {name}_max")
            ranges.append((column, low, high))
        order = [f.column for f in FILTER_FIELDS]
        return cls(
            values=tuple(sorted(values.items(), key=lambda kv: order.index(kv[0]))),
            ranges=tuple(sorted(ranges, key=lambda r: order.index(r[0]))),
        )


@dataclass(frozen=True)
class SearchQuery:
    dense: np.ndarray | None
    sparse: SparseVector | None
    alpha: float = 0.5
    k: int = 10
    filters: Filters = field(default_factory=Filters)
    exact: bool = False
    candidates: int | None = None  # per index in fast mode; default max(k, DEFAULT_CANDIDATES)
    # Per side when deepening; default max(candidates, DEFAULT_BUDGET); <= candidates: none.
    # A ranking by the sparse side alone deepens only when this is set (services.search.ranking).
    budget: int | None = None
    # hnsw.ef_search of both scans; default max(40, min(candidates, 1000)) (pgvector's range
    # is 1..1000). The certificate assumes each list is its side's true top n: a larger
    # ef_search makes that likelier (bench_search.py --ef-search measures it).
    ef_search: int | None = None
    # ivfflat.probes of an IVFFlat dense index; default the version's (hnsw.ivf_probes).
    probes: int | None = None
    # Fall back to the exact scan when uncertified and the filtered rows are at most this
    # many; 0 also turns off routing selective filters to it (ranking.route_exact).
    exact_max_rows: int = EXACT_MAX_ROWS
    # Pages. ``k`` is the page's size; ``offset`` the results before it. A relevance page is
    # the slice [offset, offset + k) of the ranking of depth offset + k (deeper pages deepen
    # the candidate lists); another sort's page the slice of the relevant set (RELEVANT_POOL)
    # in that order. What the earlier pages showed (a cursor): every product sorting at or
    # before ``after`` (a sort key), and the products ``shown`` after it; the page is then
    # the first k of the ranking's others (offset only says how deep to rank), so no
    # product comes twice and none the earlier pages missed is lost.
    # ``peek``: rank one more, to say whether a next page exists.
    offset: int = 0
    sort: str = "relevance"
    after: tuple | None = None
    shown: tuple[int, ...] = ()
    peek: bool = False
    with_vectors: bool = True  # return each hit's sparse vector (for explanations)
    whole_pool: bool = False  # the page is the whole relevant set (facet counts)

    @property
    def depth(self) -> int:
        """How many results the statement ranks for this page."""
        if self.sort != "relevance" or self.whole_pool:
            return RELEVANT_POOL
        return self.offset + self.k + (1 if self.peek else 0)

    @property
    def page_size(self) -> int:
        return RELEVANT_POOL if self.whole_pool else self.k


@dataclass(frozen=True)
class SearchHit:
    """One ranked product: its scores, name and metadata (column -> value, the schema's
    metadata fields)."""

    product_id: int
    score: float
    dense_score: float | None
    sparse_score: float | None
    product_display_name: str
    metadata: dict[str, Any]
    sparse_vector: SparseVector | None = None  # the product's stored SPLADE vector


@dataclass(frozen=True)
class Certificate:
    """How a ranking was found and what is proven about it.

    ``exact``: PROVEN to be the exact fused top k: on the exact path (every filtered row
    scored), or when the dense side carries no weight (alpha 0, e.g. the sparse mode) and
    the sparse side's bound from the impact-ordered postings is met. An answer with
    dense HNSW candidates is never called exact: an HNSW scan can miss rows of its own top n,
    which no bound can rule out. ``reason``: why an answer is not proven (None when it is):
    "dense side from HNSW" (or "from IVFFlat", a version whose dense index is IVFFlat lists:
    the lists it reads may miss rows of the top n alike), or "sparse bound not met at m
    postings per term".
    ``threshold_met``: the threshold test passed (the k-th fused score of the candidates is
    at least ``bound``, services/store/sql/search.sql): with dense weight it means exact IF
    the dense HNSW list held its side's true top n; it decides whether to deepen or fall
    back. ``hnsw_recall``: quoted when the dense side came from its index (HNSW or IVFFlat,
    the name kept for clients): the version's measured
    recall of that side's top n against its exact top n, from its build check
    ({"dense": .., "n": ..}; None when the version predates it). ``path``: "fast" (the first candidates), "deepened"
    (``budget`` candidates per index) or "exact". ``candidates``: per index at the stage
    that answered (None on the exact path). ``bound`` / ``kth_score``: None on the exact
    path. ``estimated_rows``: the rows the filters pass, estimated from per-value counts
    (the routing's input)."""

    path: str
    exact: bool
    reason: str | None
    threshold_met: bool
    candidates: int | None
    budget: int
    bound: float | None
    kth_score: float | None
    estimated_rows: int
    routed: bool = False
    hnsw_recall: dict | None = None


@dataclass(frozen=True)
class Ranking:
    hits: list[SearchHit]
    certificate: Certificate
    alpha: float  # the weight the statement ran with (query_alpha)
    # The version's status when the statement ran ("live", "retired", ...): a caller that
    # cached the live version checks it in the same round trip (services.api.runtime).
    version_status: str | None = None
    # How many results the statement ranked (at most the query's depth: fewer when fewer
    # products pass the filters), and how many of them the earlier pages had not shown,
    # from this page's first on (more than the page holds: there is a next page).
    ranked: int = 0
    remaining: int = 0


def sort_key_columns(sort: str) -> tuple[str, ...]:
    """The columns of a page's sort key (services/store/sql/search.sql, ``{sort_key}``), all
    ascending: ("neg_score", "product_id") for relevance; a field's sort puts its negated
    value (a missing value as 0: last) before them."""
    if sort == "relevance":
        return ("neg_score", "product_id")
    return ("neg_value", "neg_score", "product_id")


def sort_key(sort: str, hit: SearchHit) -> tuple:
    """``hit``'s sort key under ``sort`` (as the statement computes it): the cursor of a page
    ending with it."""
    key: tuple = (-float(hit.score), int(hit.product_id))
    if sort == "relevance":
        return key
    value = hit.metadata.get(SORT_COLUMNS[sort])
    return (-(value or 0), *key)


def validate(query: SearchQuery, version: IndexVersion) -> tuple[float, np.ndarray | None]:
    """(the alpha ``query`` runs with (:func:`query_alpha`), its dense vector as float32)
    against ``version``; SearchValidationError for anything out of the contract."""
    if query.dense is None and query.sparse is None:
        raise SearchValidationError("a query needs text, an image, or both")
    alpha = query_alpha(query.alpha, query.dense is not None, query.sparse is not None)
    if isinstance(query.k, bool) or not isinstance(query.k, int) or not 1 <= query.k <= MAX_K:
        raise SearchValidationError(f"k must be an integer in 1..{MAX_K}, got {query.k!r}")
    if (
        isinstance(query.offset, bool)
        or not isinstance(query.offset, int)
        or not 0 <= query.offset <= MAX_DEPTH - query.k
    ):
        raise SearchValidationError(
            f"offset must be an integer in 0..{MAX_DEPTH - query.k} (offset + k <= "
            f"{MAX_DEPTH}: results go {MAX_DEPTH} deep), got {query.offset!r}"
        )
    if query.sort not in SORTS:
        raise SearchValidationError(f"sort must be one of {', '.join(SORTS)}, got {query.sort!r}")
    if len(query.shown) > MAX_DEPTH:
        raise SearchValidationError(f"at most {MAX_DEPTH} products shown before a page")
    if query.after is not None and len(query.after) != len(sort_key_columns(query.sort)):
        raise SearchValidationError("the cursor's sort key does not fit the sort")
    if query.candidates is not None and not 1 <= query.candidates <= MAX_CANDIDATES:
        raise SearchValidationError(f"candidates must be in 1..{MAX_CANDIDATES}")
    if query.budget is not None and not 1 <= query.budget <= MAX_CANDIDATES:
        raise SearchValidationError(f"budget must be in 1..{MAX_CANDIDATES}")
    if query.ef_search is not None and not 1 <= query.ef_search <= 1000:
        raise SearchValidationError("ef_search must be in 1..1000")
    if query.probes is not None and not 1 <= query.probes <= 32768:
        raise SearchValidationError("probes must be in 1..32768")
    dense = None
    if query.dense is not None:
        dense = np.asarray(query.dense, dtype=np.float32).reshape(-1)
        if dense.shape[0] != version.dense_dim:
            raise SearchValidationError(
                f"dense vector has {dense.shape[0]} dimensions, the live index expects "
                f"{version.dense_dim}"
            )
        if not np.all(np.isfinite(dense)):
            raise SearchValidationError("dense vector has non-finite values")
    if query.sparse is not None:
        if query.sparse.dimensions() != version.sparse_dim:
            raise SearchValidationError(
                f"sparse vector has {query.sparse.dimensions()} dimensions, the live index "
                f"expects {version.sparse_dim}"
            )
        if len(query.sparse.indices()) > MAX_SPARSE_NNZ:
            raise SearchValidationError(
                f"sparse vector has {len(query.sparse.indices())} non-zeros (max {MAX_SPARSE_NNZ})"
            )
    return alpha, dense
