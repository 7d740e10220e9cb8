"""Every failure leaves the API as JSON ``{status_code, error, detail, request_id}``; never a trace.

Status codes:
- 400: the body cannot be parsed (malformed JSON, broken multipart, not valid UTF-8).
- 404: unknown product (or route).
- 413: body or upload over the size limit, a multipart form with too many parts.
- 415: the upload is not an image format we read (a zip renamed .jpg, a PDF...).
- 422: parsed but invalid: no text and no image, alpha/k out of range, unknown filter,
  text too long, a NUL character in a text or filter value, a corrupt or oversized image.
- 503 (with ``Retry-After``): the database is unreachable or at an older schema revision
  (``db migrate``), no index is live, the encoders are not loaded, every image-decode slot
  is busy (:class:`~services.encoders.images.DecodersBusy`), or the index was built with
  other models. Nothing is cached about the outage: the next request after the database
  returns succeeds.
- 499 (nginx's "client closed request", logged at INFO as "client disconnected"): the
  client went away before its body was read; nobody receives this response.
- 500: a bug; the body carries only the request id, the trace goes to the log.

The statuses are documented per operation in the OpenAPI (``schemas.error_responses``).
"""

from __future__ import annotations

import logging

import psycopg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, InternalServerException
from psycopg_pool import PoolTimeout

from services.api.logs import current_request_id
from services.api.paging import CursorRejected
from services.api.runtime import ModelsNotReady
from services.api.search_service import IndexModelMismatch, ProductNotFound
from services.encoders.images import DecodersBusy, InvalidImageError, UnsupportedImageFormat
from services.search import NoLiveIndex, SearchValidationError
from services.store.db import DatabaseUnavailable

log = logging.getLogger("services.api.errors")

# Litestar's words when the client disconnects while the request body is read.
_DISCONNECTED = "client disconnected prematurely"
RETRY_AFTER_S = "2"

_REASONS = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    499: "client_disconnected",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error with its HTTP status, raised by the API's own validation."""

    def __init__(self, status_code: int, detail: str, error: str | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.error = error or _REASONS.get(status_code, "error")


def error_response(
    status_code: int, detail: str, error: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    rid = current_request_id()
    body = {
        "status_code": status_code,
        "error": error or _REASONS.get(status_code, "error"),
        "detail": detail,
        "request_id": rid,
    }
    hdrs = dict(headers or {})
    if rid:
        hdrs.setdefault("X-Request-ID", rid)
    return Response(content=body, status_code=status_code, media_type=MediaType.JSON, headers=hdrs)


def _cursor_rejected(request: Request, exc: CursorRejected) -> Response:
    return error_response(exc.status_code, exc.detail, exc.error)


def _api_error(request: Request, exc: ApiError) -> Response:
    headers = {"Retry-After": RETRY_AFTER_S} if exc.status_code == 503 else None
    return error_response(exc.status_code, exc.detail, exc.error, headers=headers)


def _describe(extra: object) -> str:
    """Litestar's validation details as ``key: message`` text (no Python reprs)."""
    if isinstance(extra, list) and all(isinstance(e, dict) for e in extra):
        return "; ".join(
            f"{e['key']}: {e.get('message', 'invalid')}" if e.get("key") else str(e.get("message"))
            for e in extra
        )
    return str(extra)


def _http_exception(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail
    headers = dict(getattr(exc, "headers", None) or {})
    if isinstance(exc, InternalServerException) and exc.detail == _DISCONNECTED:
        # Not a server error: the client went away mid-body (nobody reads this response).
        log.info("client disconnected on %s %s", request.method, request.url.path)
        return error_response(499, "client disconnected before the request body was read")
    if exc.status_code == 413:
        detail = "request body too large"
    if exc.status_code == 503:
        # Raised by a handler for a known outage (the dashboard's database): its own words.
        log.warning(
            "service unavailable on %s %s: %s", request.method, request.url.path, exc.detail
        )
        headers.setdefault("Retry-After", RETRY_AFTER_S)
    elif exc.status_code >= 500:
        log.error(
            "server error %s on %s %s: %s",
            exc.status_code,
            request.method,
            request.url.path,
            exc.detail,
        )
        detail = "internal server error"
    extra = getattr(exc, "extra", None)
    if exc.status_code == 400 and extra:
        detail = f"{detail}: {_describe(extra)}"
    return error_response(exc.status_code, str(detail), headers=headers)


def _validation(request: Request, exc: SearchValidationError) -> Response:
    return error_response(422, str(exc))


def _unsupported_image(request: Request, exc: UnsupportedImageFormat) -> Response:
    return error_response(415, str(exc))


def _invalid_image(request: Request, exc: InvalidImageError) -> Response:
    """Any other unusable image (corrupt, truncated, too many pixels, empty)."""
    return error_response(422, str(exc))


def _not_found(request: Request, exc: ProductNotFound) -> Response:
    return error_response(404, str(exc))


def _model_mismatch(request: Request, exc: IndexModelMismatch) -> Response:
    # Lasts until an index built with the served models goes live (or a restart): retry later.
    return error_response(503, str(exc), "index_model_mismatch", headers={"Retry-After": "30"})


def _decoders_busy(request: Request, exc: DecodersBusy) -> Response:
    """Every image-decode slot is taken: server load, not the client's fault."""
    log.warning("image decoders busy on %s %s", request.method, request.url.path)
    return error_response(
        503,
        str(exc) or "every image decoder is busy; retry shortly",
        "decoders_busy",
        headers={"Retry-After": str(max(1, exc.retry_after))},
    )


def _schema_mismatch(request: Request, exc: psycopg.Error) -> Response:
    """A column or table this code expects is missing: the database is at an older schema
    revision (or a retired version table vanished mid-request)."""
    log.error("schema mismatch on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503,
        "the database schema does not match this API (a column or table is missing); "
        "run `fashion-search db migrate`, or retry if an index swap was under way",
        "schema_mismatch",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def _unavailable(request: Request, exc: Exception) -> Response:
    if isinstance(exc, (NoLiveIndex, ModelsNotReady)):
        detail = str(exc)
    else:
        log.warning(
            "database unavailable on %s %s: %s",
            request.method,
            request.url.path,
            str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__,
        )
        detail = "the database is unavailable; retry shortly"
    return error_response(503, detail, headers={"Retry-After": RETRY_AFTER_S})


def _internal(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; quote the request id when reporting it")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    CursorRejected: _cursor_rejected,
    HTTPException: _http_exception,
    SearchValidationError: _validation,
    # Litestar picks the handler of the most specific class in the exception's MRO.
    UnsupportedImageFormat: _unsupported_image,
    InvalidImageError: _invalid_image,
    DecodersBusy: _decoders_busy,
    ProductNotFound: _not_found,
    IndexModelMismatch: _model_mismatch,
    NoLiveIndex: _unavailable,
    ModelsNotReady: _unavailable,
    DatabaseUnavailable: _unavailable,
    PoolTimeout: _unavailable,
    psycopg.OperationalError: _unavailable,
    psycopg.errors.UndefinedColumn: _schema_mismatch,
    psycopg.errors.UndefinedTable: _schema_mismatch,
    Exception: _internal,
}
