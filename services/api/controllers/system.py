"""Operations endpoints: liveness, readiness, the live index, and filter facets."""

from __future__ import annotations

from typing import ClassVar

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from services.api import readiness, search_service
from services.api.runtime import Runtime
from services.api.schemas import (
    DatabaseSides,
    DocumentedOperation,
    Facets,
    Health,
    IndexInfo,
    Readiness,
    error_responses,
)


class SystemController(Controller):
    tags: ClassVar[list[str]] = ["system"]

    # 400 everywhere: a Host that is not served (services.api.edges).
    @get("/healthz", sync_to_thread=False, summary="Process alive", responses=error_responses(400))
    def healthz(self) -> Health:
        return Health(status="ok")

    @get(
        "/readyz",
        sync_to_thread=True,
        summary="Database reachable (primary or read replica), live index, models loaded",
        responses={
            **error_responses(400),
            503: ResponseSpec(
                data_container=Readiness,
                description="Not ready: ``checks`` says which check failed.",
                generate_examples=False,
            ),
        },
    )
    def readyz(self, runtime: NamedDependency[Runtime]) -> Response[Readiness]:
        checks, sides = readiness.readiness_report(runtime)
        ready = readiness.is_ready(checks)
        return Response(
            Readiness(
                status="ready" if ready else "not ready",
                checks=checks,
                database=DatabaseSides(**sides),
            ),
            status_code=200 if ready else 503,
        )

    @get(
        "/v1/index",
        sync_to_thread=True,
        summary="The live index version",
        operation_class=DocumentedOperation,
        responses=error_responses(400, 503),
    )
    def index(self, runtime: NamedDependency[Runtime]) -> IndexInfo:
        return search_service.index_info(runtime)

    @get(
        "/v1/facets",
        sync_to_thread=True,
        summary="Filter values present in the live index",
        operation_class=DocumentedOperation,
        responses=error_responses(400, 503),
    )
    def facets(self, runtime: NamedDependency[Runtime]) -> Facets:
        return search_service.facets(runtime)
