"""Search: the query contract, how a query is ranked, and what a search looks up.

- ``contract.py``: the limits, :class:`Filters`, :class:`SearchQuery`, the answer's types
  (:class:`Ranking`, :class:`SearchHit`, :class:`Certificate`) and the alpha rule, once;
- ``ranking.py``: the plan of the one fused statement and its certificate;
- ``lookups.py``: a product's stored vectors, facet values, filtered counts.

The SQL stays in the store: the statement is ``services/store/sql/search.sql`` (a reader can
open it whole), run by ``services/store/search_sql.py``. The API only translates HTTP to
this contract and back (``services.api.search_service``).
"""

from services.search.contract import (
    DEFAULT_BUDGET,
    DEFAULT_CANDIDATES,
    EXACT_MAX_ROWS,
    MAX_CANDIDATES,
    MAX_DEPTH,
    MAX_FILTER_VALUES,
    MAX_K,
    MIN_ALPHA,
    MODES,
    RANGE_FILTER_KEYS,
    RELEVANT_POOL,
    SORTS,
    VALUE_FILTER_KEYS,
    Certificate,
    Filters,
    NoLiveIndex,
    Ranking,
    SearchHit,
    SearchQuery,
    SearchValidationError,
    query_alpha,
    resolve_alpha,
    sort_key,
    validate,
)
from services.search.lookups import (
    count_matching,
    dense_vectors,
    facet_values,
    sparse_vectors,
    stored_vectors,
)
from services.search.ranking import (
    HALFVEC_SLACK,
    ROUTE_FACTOR,
    Plan,
    certified_search,
    estimated_rows,
    explain_search,
    facet_counts,
    fused_search,
    plan,
    route_exact,
)
from services.store.search_sql import SEARCH_SQL, dense_index, search_session, use_session_settings

__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_CANDIDATES",
    "EXACT_MAX_ROWS",
    "HALFVEC_SLACK",
    "MAX_CANDIDATES",
    "MAX_DEPTH",
    "MAX_FILTER_VALUES",
    "MAX_K",
    "MIN_ALPHA",
    "MODES",
    "RANGE_FILTER_KEYS",
    "RELEVANT_POOL",
    "ROUTE_FACTOR",
    "SEARCH_SQL",
    "SORTS",
    "VALUE_FILTER_KEYS",
    "Certificate",
    "Filters",
    "NoLiveIndex",
    "Plan",
    "Ranking",
    "SearchHit",
    "SearchQuery",
    "SearchValidationError",
    "certified_search",
    "count_matching",
    "dense_index",
    "dense_vectors",
    "estimated_rows",
    "explain_search",
    "facet_counts",
    "facet_values",
    "fused_search",
    "plan",
    "query_alpha",
    "resolve_alpha",
    "route_exact",
    "search_session",
    "sort_key",
    "sparse_vectors",
    "stored_vectors",
    "use_session_settings",
    "validate",
]
