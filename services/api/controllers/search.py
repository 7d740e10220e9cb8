"""``POST /v1/search``: JSON, or multipart/form-data with an ``image`` file plus the same fields.

Litestar binds one body type per handler, so this one handler reads the body itself (JSON
or multipart, 415 for anything else). Its OpenAPI request bodies are generated, not typed
by hand: the JSON body is msgspec's JSON Schema of :class:`SearchRequest`, the multipart
body that of :class:`SearchForm` (the same fields, ``filters`` as a JSON string, plus the
``image`` file), so every field, default, limit and enum is written once, in the models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import anyio.to_thread
import msgspec
from litestar import Controller, Request, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody

from services.api import search_service
from services.api.errors import ApiError
from services.api.runtime import Runtime
from services.api.schemas import MAX_TEXT_CHARS, SearchRequest, SearchResponse

# The filter keys and their meaning, from the product schema (the one place that lists them).
from services.catalog.schema import filters_doc

FILTERS_DOC = filters_doc()

# Descriptions of SearchRequest's fields for the OpenAPI, used where the model has none (types,
# defaults, limits and enums always come from the model). They would sit best on the model
# itself, as ``msgspec.Meta(description=...)`` in services/api/schemas.py.
_DESCRIPTIONS = {
    "text": f"What to look for (at most {MAX_TEXT_CHARS} characters). "
    "Optional when an image is sent.",
    "alpha": "Weight of the dense (CLIP) side; 1 - alpha goes to SPLADE. "
    "Default: the server's default_alpha.",
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
class SearchOperation(Operation):
    """The OpenAPI operation with both request bodies, generated from the models."""

    def __post_init__(self) -> None:
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


async def _parse_multipart(request: Request, max_upload: int) -> tuple[SearchRequest, bytes | None]:
    form = await request.form()
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
        elif value != "" or key == "text":
            fields[key] = value
    if isinstance(fields.get("filters"), str):
        try:
            fields["filters"] = msgspec.json.decode(fields["filters"])
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
        summary="Search products",
        description="Text, image or both (multimodal). Returns fused, dense and sparse "
        "scores and the top contributing SPLADE terms of each product.",
    )
    async def search(self, request: Request, runtime: NamedDependency[Runtime]) -> SearchResponse:
        req, image = await parse_search_request(request, runtime.settings.max_upload_bytes)
        return await anyio.to_thread.run_sync(search_service.search, runtime, req, image)
