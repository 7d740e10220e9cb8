"""``/v1/products/{id}``: a product, its image, and "more like this"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Schema
from litestar.params import FromPath, QueryParameter

from services.api import search_service
from services.api.errors import ApiError
from services.api.runtime import Runtime
from services.api.schemas import (
    DEFAULT_K,
    MAX_K,
    MIN_ALPHA,
    DocumentedOperation,
    Product,
    SimilarResponse,
    error_responses,
)
from services.store.products import get_image

_MAX_ID = 2**63 - 1
# What /image may answer: the stored image's MIME type (services.catalog.schema.sniff_mime).
IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "application/octet-stream")


@dataclass
class ImageOperation(DocumentedOperation):
    """The image's 200 in every media type a stored image can have."""

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse):
            binary = Schema(type="string", format="binary")
            ok.content = {mime: OpenAPIMediaType(schema=binary) for mime in IMAGE_TYPES}


def _check_id(product_id: int) -> None:
    if not 0 <= product_id <= _MAX_ID:
        raise ApiError(404, f"product {product_id} not found")


class ProductController(Controller):
    path = "/v1/products"
    tags: ClassVar[list[str]] = ["products"]

    @get(
        "/{product_id:int}",
        sync_to_thread=True,
        summary="One product",
        operation_class=DocumentedOperation,
        responses=error_responses(400, 404, 503),
    )
    def product(self, product_id: FromPath[int], runtime: NamedDependency[Runtime]) -> Product:
        _check_id(product_id)
        return search_service.product(runtime, product_id)

    @get(
        "/{product_id:int}/image",
        sync_to_thread=True,
        summary="The product's image file",
        media_type="image/jpeg",
        operation_class=ImageOperation,
        responses=error_responses(400, 404, 503),
    )
    def image(
        self, product_id: FromPath[int], runtime: NamedDependency[Runtime]
    ) -> Response[bytes]:
        _check_id(product_id)
        found = runtime.read(lambda conn: get_image(conn, product_id))
        if found is None:
            raise ApiError(404, f"product {product_id} not found or has no image")
        data, mime = found
        return Response(
            content=data, media_type=mime, headers={"Cache-Control": "public, max-age=86400"}
        )

    @get(
        "/{product_id:int}/similar",
        sync_to_thread=True,
        summary="More like this",
        description="Nearest products to this product's stored dense + sparse vectors, "
        "fused with alpha (default: the server's default_alpha).",
        operation_class=DocumentedOperation,
        responses=error_responses(400, 404, 422, 503),
    )
    def similar(
        self,
        product_id: FromPath[int],
        runtime: NamedDependency[Runtime],
        request: Request,
        alpha: Annotated[
            float | None,
            QueryParameter(
                description="Weight of the dense side in [0, 1] (422 outside); "
                f"below {MIN_ALPHA:g} counts as 0. Default: the server's default_alpha.",
                # The bounds in the contract; the handler's own check answers 422 outside.
                schema_extra={"oneOf": None, "type": "number", "minimum": 0, "maximum": 1},
            ),
        ] = None,
        k: Annotated[
            int,
            QueryParameter(
                description=f"Results, 1..{MAX_K} (422 outside).",
                schema_extra={"minimum": 1, "maximum": MAX_K},
            ),
        ] = DEFAULT_K,
    ) -> SimilarResponse:
        # The request's one validation (the API's documented kinds: a value that does not
        # parse is a 400 from Litestar; a parsed value out of range is a 422).
        _check_id(product_id)
        if request.query_params.get("alpha") == "null":  # Litestar reads it as None: the default
            raise ApiError(422, "alpha must be a number, not null (leave the parameter out)")
        if not 1 <= k <= MAX_K:
            raise ApiError(422, f"k must be in 1..{MAX_K}, got {k}")
        return search_service.similar(runtime, product_id, alpha, k)  # alpha: the contract's rule
