"""``POST /v1/search``: JSON, or multipart/form-data with an ``image`` file plus the same fields.

Litestar binds one body type per handler, so this one handler reads the body itself (JSON
or multipart, 415 for anything else). Its OpenAPI request bodies are generated, not typed
by hand: the JSON body is msgspec's JSON Schema of :class:`SearchRequest`, the multipart
body that of :class:`SearchForm` (the same fields, ``filters`` as a JSON string, plus the
``image`` file), so every field, default, limit and enum is written once, in the models.

Hostile bodies end as 4xx here, at the edge: bytes that are not UTF-8 (JSON or a multipart
text field) are a 400; a form of more than :data:`MAX_FORM_PARTS` parts a 413; the multipart
``filters`` JSON is decoded straight into the flat filter type, so a nested value is a 422
at its first level (no recursion into a 1,000-deep document).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.enums import ParamType
from litestar.exceptions import ClientException
from litestar.openapi.spec import Encoding, OpenAPIMediaType, RequestBody
from litestar.openapi.spec import Parameter as OpenAPIParameter

from services.analytics.privacy import valid_session_id
from services.api import search_service
from services.api.errors import ApiError
from services.api.runtime import Runtime
from services.api.schemas import (
    MAX_TEXT_CHARS,
    SESSION_PATTERN,
    DocumentedOperation,
    FilterValue,
    SearchRequest,
    SearchResponse,
    error_responses,
)
from services.api.visible import visible_char_class

SESSION_DESCRIPTION = (
    "the client's session id: 8 to 128 of A-Z a-z 0-9 _ - (a storefront makes a random one "
    "per visit). Kept only as a hash under a salt that rotates daily; sessions are assigned "
    "to experiments by it. Optional."
)

# The filter keys and their meaning, from the product schema (the one place that lists them).
from services.catalog.schema import filters_doc
from services.search import MAX_FILTER_VALUES, RANGE_FILTER_KEYS, VALUE_FILTER_KEYS

FILTERS_DOC = filters_doc()
# Parts of one multipart search (the app's multipart_form_part_limit): the form has 9 fields.
MAX_FORM_PARTS = 64
# Litestar's ClientException when the multipart parser hits a limit (parts, header size).
_PARSER_LIMIT = "Request Entity Too Large"
NOT_UTF8 = "body is not valid UTF-8"
ACCEPTED_MEDIA_TYPES = (
    "send a search as Content-Type application/json or multipart/form-data (with its boundary)"
)

# Descriptions of SearchRequest's fields for the OpenAPI, used where the model has none (types,
# defaults, limits and enums always come from the model). They would sit best on the model
# itself, as ``msgspec.Meta(description=...)`` in services/api/schemas.py.
_DESCRIPTIONS = {
    "text": f"What to look for (at most {MAX_TEXT_CHARS} characters, no NUL). "
    "Optional when an image is sent.",
    "mode": "dense = alpha 1, sparse = alpha 0 (needs text).",
    "exact": "Score every row instead of HNSW candidates + exact re-rank.",
    "filters": FILTERS_DOC,
}


class SearchForm(SearchRequest):
    """A search sent as multipart/form-data: the fields of a JSON search as form fields,
    filters as a JSON object in a string, and an optional image file."""

    filters: Annotated[str, msgspec.Meta(description="JSON object. " + FILTERS_DOC)] | None = None
    image: (
        Annotated[
            bytes,
            msgspec.Meta(
                description="JPEG, PNG, WebP, GIF, BMP or TIFF; size limited by "
                "max_upload_bytes (413 above)."
            ),
        ]
        | None
    ) = None


# Text that ``normalise_text`` keeps: a visible character (services.api.visible), no NUL.
_SOME_TEXT = rf"^[^\x00]*{visible_char_class()}[^\x00]*$"


# A filter value: something besides whitespace, no NUL.
_FILLED = r"[^\x00]*[^\s\x00][^\x00]*"
# A cursor says where its page starts: with it, no offset but 0.
_NOT_BOTH_CURSOR_AND_OFFSET = {
    "anyOf": [
        {"properties": {"cursor": {"type": "null"}}},
        {"properties": {"offset": {"const": 0}}},
    ]
}


def _filters_schema(description: str) -> dict[str, Any]:
    """The filter object exactly as ``Filters.from_mapping`` accepts it: the known keys only,
    a value filter a string or a list of strings, a range bound an integer."""
    value = {
        "anyOf": [
            {"type": "string", "pattern": rf"^(|{_FILLED})$"},  # "" is no filter
            {
                "type": "array",
                "items": {"type": "string", "pattern": rf"^{_FILLED}$"},
                "maxItems": MAX_FILTER_VALUES,
            },
        ]
    }
    properties = {key: value for key in VALUE_FILTER_KEYS}
    properties |= {key: {"type": "integer"} for key in RANGE_FILTER_KEYS}
    return {
        "anyOf": [
            {"type": "object", "properties": properties, "additionalProperties": False},
            {"type": "null"},
        ],
        "default": None,
        "description": description,
    }


def _model_schema(model: type[msgspec.Struct]) -> dict[str, Any]:
    """msgspec's JSON Schema of ``model`` (a Struct of plain fields), inline."""
    schema = msgspec.json.schema(model)
    definitions = schema.pop("$defs")
    if list(definitions) != [model.__name__]:  # nested models would need OpenAPI components
        raise TypeError(f"{model.__name__} must not nest other models: {list(definitions)}")
    body = definitions[model.__name__]
    for name, prop in body["properties"].items():
        if name in _DESCRIPTIONS and "description" not in prop:
            prop["description"] = _DESCRIPTIONS[name]
    if model is SearchRequest:  # a JSON body: no image, so text is required
        props = body["properties"]
        props["text"] = {
            "type": "string",
            "pattern": _SOME_TEXT,
            "description": f"What to look for (at most {MAX_TEXT_CHARS} characters once "
            "whitespace runs are collapsed; no NUL character). Required: a JSON search has "
            "no image.",
        }
        body["required"] = sorted({*body.get("required", ()), "text"})
        body["allOf"] = [_NOT_BOTH_CURSOR_AND_OFFSET]
        # msgspec says dict[str, ...]; the keys and their value types are fixed.
        props["filters"] = _filters_schema(props["filters"]["description"])
    return body


def _as_form_field(prop: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema property as a multipart form field: a form cannot send null (an absent
    field takes its default), and bytes travel as a binary part, not base64 text."""
    options = [option for option in prop.get("anyOf", ()) if option != {"type": "null"}]
    if "anyOf" in prop and len(options) == 1:
        prop = {**{k: v for k, v in prop.items() if k != "anyOf"}, **options[0]}
    if "default" in prop and prop["default"] is None:
        del prop["default"]
    if prop.pop("contentEncoding", None) == "base64":
        prop |= {"format": "binary", "contentMediaType": "application/octet-stream"}
    return prop


# The image formats a search reads (services.encoders.images sniffs the bytes; 415 otherwise).
IMAGE_MEDIA_TYPES = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/tiff",
)
_INT_FIELDS = ("k", "offset", "candidates", "budget")
# Form fields that are numbers: the text "null" is no number (a form has no null).
_NUMBER_FIELDS = ("alpha", "candidates", "budget", "k", "offset")


def _form_schema(model: type[msgspec.Struct]) -> dict[str, Any]:
    """The multipart body: the JSON fields as form fields, ``filters`` a JSON part (the
    same object as in a JSON search), ``image`` a file of a format the API reads, and at
    least a visible text or an image (a sparse search needs the text)."""
    body = _model_schema(model)
    props = {k: _as_form_field(v) for k, v in body["properties"].items()}
    props["text"] = {
        "type": "string",
        "pattern": r"^[^\x00]*$",
        "description": _DESCRIPTIONS["text"] + " Blank (whitespace or invisible characters "
        "only) counts as no text.",
    }
    filters = _filters_schema(props["filters"]["description"])
    props["filters"] = {"description": filters["description"], **filters["anyOf"][0]}
    body["properties"] = props
    body["anyOf"] = [
        {"required": ["text"], "properties": {"text": {"pattern": _SOME_TEXT}}},
        {"required": ["image"], "properties": {"mode": {"enum": ["hybrid", "dense"]}}},
    ]
    # A form's cursor is never null: with one, offset is 0 (or absent).
    body["dependentSchemas"] = {"cursor": {"properties": {"offset": {"const": 0}}}}
    return body


# How the parts travel: filters as JSON text, the image as one of the formats read.
FORM_ENCODING = {
    "filters": Encoding(content_type="application/json"),
    "image": Encoding(content_type=", ".join(IMAGE_MEDIA_TYPES)),
}


@dataclass
class SearchOperation(DocumentedOperation):
    """The OpenAPI operation with both request bodies, generated from the models."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # JSON Schema dicts (OpenAPI 3.1 schemas are JSON Schema); Litestar serialises them as is.
        self.parameters = [
            *(self.parameters or ()),
            OpenAPIParameter(
                name="X-Session-Id",
                param_in=ParamType.HEADER,
                required=False,
                schema={"type": "string", "pattern": SESSION_PATTERN},
                description=SESSION_DESCRIPTION,
            ),
        ]
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(schema=_model_schema(SearchRequest)),
                "multipart/form-data": OpenAPIMediaType(
                    schema=_form_schema(SearchForm), encoding=FORM_ENCODING
                ),
            },
        )


def unsupported_media_type(content_type: str) -> str:
    """The 415's words: what was sent, and the two media types a search accepts."""
    sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
    return f"{ACCEPTED_MEDIA_TYPES}; got {sent}"


async def parse_search_request(
    request: Request, max_upload: int
) -> tuple[SearchRequest, bytes | None]:
    content_type = request.content_type[0]  # lower-cased, parameters (charset) apart
    if content_type == "multipart/form-data":
        return await _parse_multipart(request, max_upload)
    if content_type != "application/json":
        raise ApiError(415, unsupported_media_type(content_type))
    body = await request.body()
    if not body.strip():
        raise ApiError(400, 'empty request body; send a JSON object such as {"text": "red dress"}')
    try:
        return msgspec.json.decode(body, type=SearchRequest), None
    except msgspec.ValidationError as exc:
        retried = _with_integral_floats(body)
        if retried is not None:
            return retried, None
        raise ApiError(422, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec decodes strings as UTF-8
        raise ApiError(400, f"{NOT_UTF8} (byte {exc.start})") from None


def _integral_floats(data: Any) -> Any:
    """JSON Schema's integers include ``12.0``: an integral float of an integer field (or a
    range filter) becomes the int it is; anything else is left for the model to judge."""
    if not isinstance(data, dict):
        return data

    def whole(value: Any) -> Any:
        return int(value) if isinstance(value, float) and value.is_integer() else value

    out = {key: whole(value) if key in _INT_FIELDS else value for key, value in data.items()}
    if isinstance(out.get("filters"), dict):
        out["filters"] = {
            key: whole(value) if key in RANGE_FILTER_KEYS else value
            for key, value in out["filters"].items()
        }
    return out


def _with_integral_floats(body: bytes) -> SearchRequest | None:
    """The search once integral floats are ints, or None when that changes nothing or is
    still invalid (the typed decoder's error stands: it stops a deep nesting at its first
    level, where this generic decode could not)."""
    try:
        data = msgspec.json.decode(body)
        fixed = _integral_floats(data)
        if msgspec.json.encode(fixed) == msgspec.json.encode(data):  # 12.0 == 12 in Python
            return None
        return msgspec.convert(fixed, SearchRequest)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        return None


async def _read_form(request: Request):
    """The multipart form, its parser's failures as the API's 4xx."""
    try:
        return await request.form()
    except ClientException as exc:
        if exc.detail == _PARSER_LIMIT:  # Litestar answers a parser limit with a 400
            limit = request.app.multipart_form_part_limit
            raise ApiError(
                413,
                f"multipart form too large: at most {limit} parts, each with a few short headers",
            ) from None
        raise
    except UnicodeDecodeError as exc:  # a text field (decoded as UTF-8 or its charset)
        raise ApiError(
            400, f"{NOT_UTF8}: a multipart text field has invalid bytes ({exc.reason})"
        ) from None
    except LookupError as exc:  # a part's charset=... names no text codec
        raise ApiError(400, f"a multipart field declares an unknown charset: {exc}") from None


# The multipart filters field: JSON decoded straight into the request's flat filter type.
_FORM_FILTERS = dict[str, FilterValue]


async def _parse_multipart(request: Request, max_upload: int) -> tuple[SearchRequest, bytes | None]:
    form = await _read_form(request)
    fields: dict[str, object] = {}
    image: bytes | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "image":
                raise ApiError(422, f"unexpected file field {key!r}; send the image as 'image'")
            data = await value.read()
            await value.close()
            if not data and not value.filename:
                continue  # an empty file input
            if len(data) > max_upload:
                raise ApiError(413, f"image is {len(data):,} bytes; the limit is {max_upload:,}")
            image = data
        elif key == "ignore":  # repeated form fields: one attribute key each
            if value != "":
                fields.setdefault("ignore", []).append(value)
        elif value != "" or key == "text":
            fields[key] = value
    for key in _NUMBER_FIELDS:
        if fields.get(key) == "null":  # msgspec would read it as None: the default
            raise ApiError(422, f"{key} must be a number, not null (leave the field out)")
    if isinstance(fields.get("filters"), str):
        try:
            fields["filters"] = msgspec.json.decode(fields["filters"], type=_FORM_FILTERS)
        except msgspec.ValidationError as exc:  # e.g. a nested value: refused at its level
            raise ApiError(422, f"filters must be a flat JSON object: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"filters is not valid JSON: {exc}") from None
    try:
        return msgspec.convert(fields, SearchRequest, strict=False), image
    except msgspec.ValidationError as exc:
        raise ApiError(422, str(exc)) from None


class SearchController(Controller):
    path = "/v1/search"
    tags: ClassVar[list[str]] = ["search"]

    @post(
        "/",
        status_code=200,
        operation_class=SearchOperation,
        responses=error_responses(400, 410, 413, 415, 422, 503),
        summary="Search products",
        description="Text, image or both (multimodal). Returns fused, dense and sparse "
        "scores and the top contributing SPLADE terms of each product.",
    )
    async def search(
        self,
        request: Request,
        runtime: NamedDependency[Runtime],
    ) -> Response[SearchResponse]:
        queued = time.perf_counter()
        session_id = request.headers.get("x-session-id")
        if session_id is not None and not valid_session_id(session_id):
            raise ApiError(400, f"X-Session-Id: {SESSION_DESCRIPTION}")
        req, image = await parse_search_request(request, runtime.settings.max_upload_bytes)
        timings: dict[str, float] = {}
        thread: dict[str, float] = {}

        def run() -> SearchResponse:
            thread["started"] = time.perf_counter()
            return search_service.search(runtime, req, image, timings, session_id)

        body = await anyio.to_thread.run_sync(run)
        timings["thread"] = (thread["started"] - queued) * 1000  # parse + the hop to a thread
        return Response(body, headers={"Server-Timing": server_timing(timings)})


def server_timing(timings: dict[str, float]) -> str:
    """The ``Server-Timing`` header of a search: where its time went, in ms (browsers'
    developer tools draw it; ``benchmarks/bench_api.py --ceiling`` sums it)."""
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings.items())
