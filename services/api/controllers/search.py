"""``POST /v1/search``: JSON, or multipart/form-data with an ``image`` file plus the same fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import anyio.to_thread
import msgspec
from litestar import Controller, Request, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema

from services.api import search_service
from services.api.errors import ApiError
from services.api.runtime import Runtime
from services.api.schemas import MAX_K, MAX_TEXT_CHARS, SearchRequest, SearchResponse

_FIELDS = {
    "text": Schema(
        type=OpenAPIType.STRING,
        max_length=MAX_TEXT_CHARS,
        description="What to look for. Optional when an image is sent.",
    ),
    "alpha": Schema(
        type=OpenAPIType.NUMBER,
        minimum=0,
        maximum=1,
        description="Weight of the dense (CLIP) side; 1 - alpha goes to SPLADE. "
        "Default: the server's default_alpha.",
    ),
    "k": Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=MAX_K, default=12),
    "mode": Schema(
        type=OpenAPIType.STRING,
        enum=["hybrid", "dense", "sparse"],
        default="hybrid",
        description="dense = alpha 1, sparse = alpha 0 (needs text).",
    ),
    "exact": Schema(
        type=OpenAPIType.BOOLEAN,
        default=False,
        description="Score every row instead of HNSW candidates + exact re-rank.",
    ),
}
_FILTERS_DOC = (
    "Field -> value or list of values (OR within a field, AND across fields): "
    "gender, masterCategory, subCategory, articleType, baseColour, season, usage, "
    "year_min, year_max."
)


@dataclass
class SearchOperation(Operation):
    """The OpenAPI operation with both request bodies (JSON and multipart)."""

    def __post_init__(self) -> None:
        json_schema = Schema(
            type=OpenAPIType.OBJECT,
            properties={
                **_FIELDS,
                "filters": Schema(type=OpenAPIType.OBJECT, description=_FILTERS_DOC),
            },
        )
        multipart_schema = Schema(
            type=OpenAPIType.OBJECT,
            properties={
                **_FIELDS,
                "filters": Schema(
                    type=OpenAPIType.STRING, description="JSON object. " + _FILTERS_DOC
                ),
                "image": Schema(
                    type=OpenAPIType.STRING,
                    format="binary",
                    description="JPEG, PNG, WebP, GIF, BMP or TIFF; size limited "
                    "by max_upload_bytes (413 above).",
                ),
            },
        )
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(schema=json_schema),
                "multipart/form-data": OpenAPIMediaType(schema=multipart_schema),
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
