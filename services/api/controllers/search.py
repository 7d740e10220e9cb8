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
from litestar.exceptions import ClientException
from litestar.openapi.spec import OpenAPIMediaType, RequestBody

from services.api import search_service
from services.api.errors import ApiError
from services.api.runtime import Runtime
from services.api.schemas import (
    MAX_TEXT_CHARS,
    DocumentedOperation,
    FilterValue,
    SearchRequest,
    SearchResponse,
    error_responses,
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


# Text that ``normalise_text`` keeps: something besides whitespace, and no NUL anywhere.
_SOME_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"


def _filters_schema(description: str) -> dict[str, Any]:
    """The filter object exactly as ``Filters.from_mapping`` accepts it: the known keys only,
    a value filter a string or a list of strings, a range bound an integer."""
    value = {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "maxItems": MAX_FILTER_VALUES},
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


def _form_schema(model: type[msgspec.Struct]) -> dict[str, Any]:
    body = _model_schema(model)
    body["properties"] = {k: _as_form_field(v) for k, v in body["properties"].items()}
    return body


@dataclass
class SearchOperation(DocumentedOperation):
    """The OpenAPI operation with both request bodies, generated from the models."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # JSON Schema dicts (OpenAPI 3.1 schemas are JSON Schema); Litestar serialises them as is.
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(schema=_model_schema(SearchRequest)),
                "multipart/form-data": OpenAPIMediaType(schema=_form_schema(SearchForm)),
            },
        )


async def parse_search_request(
    request: Request, max_upload: int
) -> tuple[SearchRequest, bytes | None]:
    content_type = request.content_type[0]
    if content_type == "multipart/form-data":
        return await _parse_multipart(request, max_upload)
    if content_type not in ("application/json", "", "text/plain"):
        raise ApiError(415, f"send application/json or multipart/form-data, not {content_type}")
    body = await request.body()
    if not body.strip():
        raise ApiError(400, 'empty request body; send a JSON object such as {"text": "red dress"}')
    try:
        return msgspec.json.decode(body, type=SearchRequest), None
    except msgspec.ValidationError as exc:
        raise ApiError(422, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec decodes strings as UTF-8
        raise ApiError(400, f"{NOT_UTF8} (byte {exc.start})") from None


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
_FORM_FILTERS = dict[str, FilterValue] | None


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
        self, request: Request, runtime: NamedDependency[Runtime]
    ) -> Response[SearchResponse]:
        queued = time.perf_counter()
        req, image = await parse_search_request(request, runtime.settings.max_upload_bytes)
        timings: dict[str, float] = {}
        thread: dict[str, float] = {}

        def run() -> SearchResponse:
            thread["started"] = time.perf_counter()
            return search_service.search(runtime, req, image, timings)

        body = await anyio.to_thread.run_sync(run)
        timings["thread"] = (thread["started"] - queued) * 1000  # parse + the hop to a thread
        return Response(body, headers={"Server-Timing": server_timing(timings)})


def server_timing(timings: dict[str, float]) -> str:
    """The ``Server-Timing`` header of a search: where its time went, in ms (browsers'
    developer tools draw it; ``benchmarks/bench_api.py --ceiling`` sums it)."""
    return ", ".join(f"{name};dur={ms:.2f}" for name, ms in timings.items())
