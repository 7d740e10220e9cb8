"""The API's search, "more like this", facets and index lookups: blocking code, run in threads.

A search encodes the query first (cached), then sends ONE statement on a pooled
connection: the fused SQL (``services.search``), which also returns the ranking's
certificate, whether the (cached) live version is still live, and the hits' sparse
vectors; those explain each hit:
the vocabulary terms with the largest ``q_i * d_i`` contributions to the sparse inner
product.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import psycopg
from pgvector import SparseVector

from services.api import experiments, paging
from services.api.runtime import (
    ModelsNotReady,
    QueryVectors,
    Runtime,
)
from services.api.schemas import (
    MAX_TEXT_CHARS,
    AttributeBody,
    Certificate,
    CorrectionBody,
    FacetCount,
    FacetCounts,
    Facets,
    HnswRecall,
    IndexInfo,
    Page,
    Product,
    ProductMetadata,
    QueryEcho,
    RuleBody,
    SearchRequest,
    SearchResponse,
    SearchResult,
    SimilarResponse,
    Term,
    UnderstoodBody,
)
from services.api.visible import has_visible
from services.catalog.schema import FACET_FIELDS, metadata_of
from services.encoders.images import InvalidImageError, UnsupportedImageFormat
from services.search import (
    MAX_K,
    RELEVANT_POOL,
    Filters,
    NoLiveIndex,
    Ranking,
    SearchHit,
    SearchQuery,
    SearchValidationError,
    certified_search,
    facet_counts,
    facet_values,
    resolve_alpha,
    stored_vectors,
)
from services.store.index_versions import IndexVersion, live_version
from services.store.products import get_product

EXPLAIN_TERMS = 5
# Facet values are recomputed after this long: a catalogue sync changes the live version in place.
FACETS_TTL_S = 60.0
# File signatures of the image formats the encoders read; anything else is a 415.
_IMAGE_MAGIC = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


class ProductNotFound(LookupError):
    """No such product (or not in the live index)."""


class IndexModelMismatch(RuntimeError):
    """The live index was built with other models than the API serves."""


def image_url(product_id: int) -> str:
    return f"/v1/products/{product_id}/image"


def check_image_format(data: bytes) -> None:
    if not data:
        raise InvalidImageError("the uploaded image is empty")
    if data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return
    raise UnsupportedImageFormat(
        "the upload is not a supported image (JPEG, PNG, WebP, GIF, BMP or TIFF)"
    )


def normalise_text(text: str | None) -> str | None:
    if text is None:
        return None
    if "\x00" in text:
        raise SearchValidationError("text contains a NUL character (U+0000)")
    text = " ".join(text.split())
    if not has_visible(text):  # blank: whitespace, or only characters that show nothing
        return None
    if len(text) > MAX_TEXT_CHARS:
        raise SearchValidationError(
            f"text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}"
        )
    return text


def _live(conn: psycopg.Connection) -> IndexVersion:
    version = live_version(conn)
    if version is None:
        raise NoLiveIndex("no index version is live yet; run the indexing pipeline first")
    return version


def _check_models(version: IndexVersion, runtime: Runtime) -> None:
    enc = runtime.encoders
    if (version.dense_model, version.sparse_model) != (enc.clip.name, enc.splade.name):
        raise IndexModelMismatch(
            f"the live index v{version.id} was built with {version.dense_model} + "
            f"{version.sparse_model} but this API serves {enc.clip.name} + "
            f"{enc.splade.name}; restart the API with the index's models"
        )


def _metadata(record: dict) -> ProductMetadata:
    """The API's metadata of a product, from a record of the schema's metadata columns."""
    return ProductMetadata(**metadata_of(record))


def _certificate(ranking: Ranking) -> Certificate:
    c = ranking.certificate
    return Certificate(
        exact=c.exact,
        reason=c.reason,
        hnsw_recall=msgspec.convert(c.hnsw_recall, HnswRecall) if c.hnsw_recall else None,
        threshold_met=c.threshold_met,
        path=c.path,
        candidates=c.candidates,
        budget=c.budget,
        bound=None if c.bound is None else round(float(c.bound), 6),
        kth_score=None if c.kth_score is None else round(float(c.kth_score), 6),
        estimated_rows=c.estimated_rows,
        routed=c.routed,
    )


def _understood(vectors: QueryVectors) -> UnderstoodBody | None:
    u = vectors.understood
    if u is None:
        return None
    return UnderstoodBody(
        status=vectors.status,
        original=u.original,
        query=u.text,
        rewrite=u.rewrite,
        corrections=[CorrectionBody(c.original, c.corrected, c.confidence) for c in u.corrections],
        attributes=[
            AttributeBody(a.key, a.field, a.value, a.words, a.confidence, a.source, a.rewritten)
            for a in u.attributes
        ],
        rules=[RuleBody(r.id, r.rule, r.words) for r in u.rules],
        ignored=list(u.ignored),
    )


def _results(
    hits: list[SearchHit], query_sparse: SparseVector | None, splade: Any | None
) -> list[SearchResult]:
    out = []
    for hit in hits:
        terms: list[Term] = []
        doc = hit.sparse_vector
        if splade is not None and query_sparse is not None and doc is not None:
            terms = [
                Term(t, round(w, 5))
                for t, w in splade.explain(query_sparse, doc, top=EXPLAIN_TERMS)
            ]
        out.append(
            SearchResult(
                id=hit.product_id,
                name=hit.product_display_name,
                metadata=_metadata(hit.metadata),
                image_url=image_url(hit.product_id),
                score=round(float(hit.score), 6),
                dense_score=None if hit.dense_score is None else round(float(hit.dense_score), 6),
                sparse_score=None
                if hit.sparse_score is None
                else round(float(hit.sparse_score), 6),
                terms=terms,
            )
        )
    return out


def _ranked(runtime: Runtime, query: SearchQuery) -> tuple[IndexVersion, Ranking, float]:
    """(the live version, its ranking of ``query``, ms waited for a connection): one
    round trip in the common case, the live version being cached (Runtime.live_version)
    and checked by the statement itself. A version swapped out since it was cached
    (no longer "live", or its table dropped) is looked up again and the query rerun."""
    wait = 0.0

    def run(conn: psycopg.Connection) -> tuple[IndexVersion, Ranking]:
        nonlocal wait
        wait = time.perf_counter() - asked
        for refresh in (False, True):
            version = runtime.live_version(conn, refresh=refresh)
            _check_models(version, runtime)
            try:
                ranking = certified_search(conn, query, version)
            except psycopg.errors.UndefinedTable:
                if refresh:
                    raise
                continue  # retired and dropped since it was cached
            if ranking.version_status == "live" or refresh:
                return version, ranking
        raise AssertionError("unreachable")

    asked = time.perf_counter()
    version, ranking = runtime.read(run)
    return version, ranking, wait * 1000


def search(
    runtime: Runtime,
    req: SearchRequest,
    image: bytes | None,
    timings: dict[str, float] | None = None,
    session_id: str | None = None,
) -> SearchResponse:
    """Run one search. ``timings``, when given, gets the phases in ms (encode, wait for a
    connection, the database round trip, building the response): the API sends them as
    ``Server-Timing``. ``session_id``: the client's (X-Session-Id), for analytics and
    experiments (services.api.analytics)."""
    start = time.perf_counter()
    text = normalise_text(req.text)
    if text is None and image is None:
        raise SearchValidationError("give a text, an image, or both")
    if image is not None:
        check_image_format(image)
    filters = Filters.from_mapping(req.filters)
    alpha = resolve_alpha(
        req.mode,
        req.alpha,
        text is not None,
        image is not None,
        runtime.settings.default_alpha,
        runtime.settings.default_alpha_multimodal,
    )
    if req.cursor is not None and req.offset:
        raise SearchValidationError("send either cursor or offset, not both")
    key = paging.cursor_key(runtime.settings)
    cursor = paging.decode_cursor(req.cursor, key) if req.cursor is not None else None
    bound_to = paging.fingerprint(
        text, image, req.mode, alpha, filters, req.literal, req.ignore, req.sort
    )
    if cursor is not None:
        paging.check_search(cursor, bound_to)
    vectors = runtime.query_vectors(
        text, image, literal=req.literal, ignore=frozenset(req.ignore or ())
    )
    splade = runtime.encoders.splade
    offset = cursor.offset if cursor is not None else req.offset
    query = SearchQuery(
        dense=vectors.dense,
        sparse=vectors.sparse,
        alpha=alpha,
        k=req.k,
        filters=filters,
        exact=req.exact,
        candidates=req.candidates,
        budget=req.budget,
        offset=offset,
        sort=req.sort,
        after=cursor.after if cursor is not None else None,
        shown=cursor.shown if cursor is not None else (),
        peek=True,
    )
    analytics = runtime.analytics
    experiment = teams = None
    first_text_page = text is not None and offset == 0 and cursor is None
    if analytics is not None and first_text_page and req.sort == "relevance" and not req.exact:
        experiment = analytics.experiment_for(runtime.read, session_id)
    encoded = time.perf_counter()
    if experiment is not None:
        version, ranking, wait_ms, teams = experiments.interleaved(
            experiment,
            query,
            lambda q: _ranked(runtime, q),
            lambda literal: runtime.query_vectors(
                text, image, literal=literal, ignore=frozenset(req.ignore or ())
            ),
            experiments.draft_rng(experiment, session_id, bound_to),
        )
    else:
        version, ranking, wait_ms = _ranked(runtime, query)
    if cursor is not None:
        paging.check_version(cursor, version.id)
    counts = None
    if req.facets:
        counts = runtime.read(lambda conn: facet_counts(conn, query, version))
    ranked = time.perf_counter()
    state = paging.page_state(ranking, offset, req.sort, cursor, version.id, bound_to, key)
    response = SearchResponse(
        query=QueryEcho(
            text=text,
            image=image is not None,
            mode=req.mode,
            alpha=ranking.alpha,
            k=req.k,
            exact=req.exact,
            filters=dict(req.filters or {}),
            literal=req.literal,
            sort=req.sort,
        ),
        index_version=version.id,
        took_ms=round((ranked - start) * 1000, 2),
        cached_embedding=vectors.cached,
        certificate=_certificate(ranking),
        results=_results(ranking.hits, vectors.sparse, splade),
        understood=_understood(vectors),
        page=Page(
            offset=offset,
            k=req.k,
            sort=req.sort,
            ranked=ranking.ranked,
            has_more=state.has_more,
            next_offset=state.next_offset,
            next_cursor=state.next_cursor,
            late=state.late,
        ),
        facet_counts=None
        if counts is None
        else FacetCounts(
            pool=RELEVANT_POOL,
            counts={
                name: [FacetCount(v, c) for v, c in values.items()]
                for name, values in counts.items()
            },
        ),
    )
    if analytics is not None:
        u = vectors.understood
        response.search_id = analytics.record_search(
            session_id=session_id,
            text=text,
            has_image=image is not None,
            mode=req.mode,
            alpha=ranking.alpha,
            filters=dict(req.filters or {}),
            offset=offset,
            sort=req.sort,
            ranked=ranking.ranked,
            product_ids=[h.product_id for h in ranking.hits],
            exact=ranking.certificate.exact,
            understood=bool(u is not None and (u.rewrite or u.corrections)),
            latency_ms=(time.perf_counter() - start) * 1000,
            index_version=version.id,
            experiment_id=None if experiment is None else experiment.id,
            teams=teams,
        )
    if timings is not None:
        timings.update(
            encode=(encoded - start) * 1000,
            wait=wait_ms,
            db=(ranked - encoded) * 1000 - wait_ms,
            build=(time.perf_counter() - ranked) * 1000,
        )
    return response


def product(runtime: Runtime, product_id: int) -> Product:
    row = runtime.read(lambda conn: get_product(conn, product_id))
    if row is None:
        raise ProductNotFound(f"product {product_id} not found")
    return Product(
        id=row["id"],
        name=row["product_display_name"],
        metadata=_metadata(row),
        image_url=image_url(row["id"]) if row["has_image"] else None,
    )


def similar(runtime: Runtime, product_id: int, alpha: float | None, k: int) -> SimilarResponse:
    """Products nearest to a product's own stored vectors (itself excluded)."""
    start = time.perf_counter()
    # a product's own vectors: both sides, as a text query has
    alpha = resolve_alpha("hybrid", alpha, True, False, runtime.settings.default_alpha)

    def run(conn: psycopg.Connection):
        row = get_product(conn, product_id)
        if row is None:
            raise ProductNotFound(f"product {product_id} not found")
        version = _live(conn)
        stored = stored_vectors(conn, product_id, version)
        if stored is None:
            raise ProductNotFound(f"product {product_id} is not in the live index v{version.id}")
        dense, sparse = stored
        # Itself ranks first (its own vectors): one more than k, or at the k limit the k
        # after the first (the one case where k + 1 is no valid query).
        deep = {"k": k + 1} if k < MAX_K else {"k": k, "offset": 1}
        ranking = certified_search(
            conn, SearchQuery(dense=dense, sparse=sparse, alpha=alpha, **deep), version
        )
        return row, version, sparse, ranking

    row, version, sparse, ranking = runtime.read(run)
    hits = [h for h in ranking.hits if h.product_id != product_id][:k]
    try:
        splade = runtime.encoders.splade
    except ModelsNotReady:  # explanations are optional here: similar needs no query encoding
        splade = None
    return SimilarResponse(
        product=Product(
            id=row["id"],
            name=row["product_display_name"],
            metadata=_metadata(row),
            image_url=image_url(row["id"]) if row["has_image"] else None,
        ),
        alpha=ranking.alpha,
        index_version=version.id,
        took_ms=round((time.perf_counter() - start) * 1000, 2),
        certificate=_certificate(ranking),
        results=_results(hits, sparse, splade),
    )


def index_info(runtime: Runtime) -> IndexInfo:
    v = runtime.read(_live)
    try:
        enc = runtime.encoders
    except ModelsNotReady:
        enc = None
    return IndexInfo(
        version=v.id,
        status=v.status,
        dense_model=v.dense_model,
        dense_dim=v.dense_dim,
        sparse_model=v.sparse_model,
        sparse_dim=v.sparse_dim,
        row_count=v.row_count,
        built_at=v.built_at.isoformat() if v.built_at else None,
        live_at=v.live_at.isoformat() if v.live_at else None,
        serving_dense_model=enc.clip.name if enc else None,
        serving_sparse_model=enc.splade.name if enc else None,
    )


def facets(runtime: Runtime) -> Facets:
    """Distinct filter values among the live index's products, cached per version for
    FACETS_TTL_S seconds (a catalogue sync changes the live version's values in place)."""

    def run(conn: psycopg.Connection) -> tuple[IndexVersion, dict[str, list]]:
        version = _live(conn)
        now = time.monotonic()
        stamp, cached = runtime.facets_cache.get(version.id, (None, None))
        if cached is None or now - stamp > FACETS_TTL_S:
            cached = facet_values(conn, version)
            runtime.facets_cache[version.id] = (now, cached)
        return version, cached

    version, cached = runtime.read(run)
    return Facets(
        index_version=version.id, values=cached, labels={f.name: f.label for f in FACET_FIELDS}
    )
