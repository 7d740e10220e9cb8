"""``POST /v1/events``: what shoppers did with a search's products (issue #24), and
``GET /v1/events/stats``: the analytics writer's counters, for operators.

A batch is 1 to :data:`MAX_BATCH` events: ``click``, ``add_to_cart`` or ``purchase`` of a
product at a position (1-based in the whole ranking: the first product of the second page
of 24 is 25) of a search, named by the ``search_id`` its response carried. The batch is
taken whole or refused whole: an unknown or expired search id, or a position its page did
not show, is a 422; more than ``MAX_EVENTS_PER_SEARCH`` events for one search a 429. An
accepted batch answers 202 with how many events were queued and how many the full queue
dropped (services.analytics.writer).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, RequestBody

from services.api.analytics import MAX_EVENTS_PER_SEARCH, EventRejected
from services.api.controllers.search import NOT_UTF8, _integral_floats
from services.api.errors import ApiError
from services.api.runtime import Runtime
from services.api.schemas import (
    SESSION_PATTERN,
    DocumentedOperation,
    ErrorBody,
    error_responses,
)

MAX_BATCH = 100


class Event(msgspec.Struct, forbid_unknown_fields=True):
    search_id: Annotated[
        str,
        msgspec.Meta(
            max_length=64,
            description="The `search_id` of the search response that showed the product",
        ),
    ]
    product_id: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
    position: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=1000,
            description="1-based, in the whole ranking (page offset + place on the page)",
        ),
    ]
    type: Literal["click", "add_to_cart", "purchase"] = "click"
    at: Annotated[
        datetime | None,
        msgspec.Meta(
            description="When it happened (RFC 3339 with a time zone); default: when received"
        ),
    ] = None


class EventsRequest(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[Event], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    session_id: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=SESSION_PATTERN,
                description="The client's session id (kept only as a salted hash, salt "
                "rotated daily); the same as the searches' X-Session-Id header",
            ),
        ]
        | None
    ) = None


class EventsAccepted(msgspec.Struct):
    accepted: int
    dropped: Annotated[
        int, msgspec.Meta(description="Events the full analytics queue could not take")
    ]


class WriterStatsBody(msgspec.Struct):
    enabled: bool
    offered: int = 0
    written: int = 0
    dropped: int = 0
    rejected: int = 0
    queued: int = 0
    retries: int = 0
    capacity: int = 0
    last_error: str | None = None


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """msgspec's JSON Schema with its ``$defs`` references written in place."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                return walk(defs[ref.rsplit("/", 1)[-1]])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)


@dataclass
class EventsOperation(DocumentedOperation):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.request_body = RequestBody(
            required=True,
            content={
                "application/json": OpenAPIMediaType(
                    schema=_inline(msgspec.json.schema(EventsRequest))
                )
            },
        )


async def _parse(request: Request) -> EventsRequest:
    content_type = request.content_type[0]
    if content_type != "application/json":
        sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise ApiError(415, f"send events as application/json; got {sent}")
    body = await request.body()
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"{NOT_UTF8} (byte {exc.start})") from None
    try:
        return msgspec.convert(_integral_floats_deep(data), EventsRequest)
    except msgspec.ValidationError as exc:
        raise ApiError(422, str(exc)) from None


def _integral_floats_deep(data: Any) -> Any:
    """``12.0`` is the integer 12 (JSON Schema), in each event too."""
    data = _integral_floats(data)
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        data["events"] = [_integral_floats(e) for e in data["events"]]
    return data


class EventsController(Controller):
    path = "/v1/events"
    tags: ClassVar[list[str]] = ["analytics"]

    @post(
        "/",
        status_code=202,
        operation_class=EventsOperation,
        summary="Record shoppers' events",
        description=__doc__.split("\n\n")[1].replace("\n", " "),
        responses={
            **error_responses(400, 413, 415, 422, 503),
            429: ResponseSpec(
                data_container=ErrorBody,
                description=f"More than {MAX_EVENTS_PER_SEARCH} events for one search.",
                generate_examples=False,
            ),
        },
    )
    async def record(
        self, request: Request, runtime: NamedDependency[Runtime]
    ) -> Response[EventsAccepted]:
        batch = await _parse(request)
        if runtime.analytics is None:
            raise ApiError(503, "analytics are off on this server (FASHION_ANALYTICS=0)")
        try:
            accepted, dropped = runtime.analytics.record_events(batch.session_id, batch.events)
        except EventRejected as exc:
            raise ApiError(exc.status_code, exc.detail, exc.error) from None
        return Response(EventsAccepted(accepted, dropped), status_code=202)

    @get(
        "/stats",
        summary="The analytics writer's counters",
        description="Rows offered, written, dropped (queue full), rejected, queued, retries.",
        operation_class=DocumentedOperation,
        responses=error_responses(400),
    )
    async def stats(self, runtime: NamedDependency[Runtime]) -> WriterStatsBody:
        if runtime.analytics is None:
            return WriterStatsBody(enabled=False)
        s = runtime.analytics.stats()
        return WriterStatsBody(
            enabled=True,
            offered=s.offered,
            written=s.written,
            dropped=s.dropped,
            rejected=s.rejected,
            queued=s.queued,
            retries=s.retries,
            capacity=s.capacity,
            last_error=s.last_error,
        )
