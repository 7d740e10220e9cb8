"""``GET /analytics``: the analysts' search analytics page, served by the API (issue #24).

Routes (all read-only, the numbers of ``evaluation.analytics_page.load_data``):

- ``GET /analytics``                 the HTML page;
- ``GET /analytics/trend.png``       searches, zero-result rate and click-through per day;
- ``GET /analytics/positions.png``   clicks per position;
- ``GET /analytics/queries.png``     top queries and zero-result queries;
- ``GET /analytics/{table}``         a table as CSV (``daily.csv``, ``positions.csv``,
  ``top-queries.csv``, ``zero-result-queries.csv``, ``queries-to-fix.csv``,
  ``experiments.csv``; any other name is a 404), downloaded as an attachment.

``?days=N`` (1..366, default 28) is the window of UTC days ending today: a value that is not
an integer is a 400 (Litestar), an integer out of range a 422. The page sends its own
Content-Security-Policy: the app-wide one allows only the MAP dashboard's inline style
(``services.api.security``), this one allows the analytics template's (both static CSS).
An unreachable database is a 503 with ``Retry-After`` (``services.api.errors``).
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import PathParameter, QueryParameter

from evaluation import analytics_page as analytics
from services.api.errors import ApiError
from services.api.runtime import Runtime
from services.api.schemas import DocumentedOperation, error_responses
from services.api.security import content_security_policy, template_inline_hashes

PNG = "image/png"
CSV = "text/csv"
DaysParam = Annotated[
    int,
    QueryParameter(
        description=f"The window: the last N UTC days, today included, 1..{analytics.MAX_DAYS} "
        "(422 outside).",
        # The bounds in the contract; the handler's own check answers 422 outside.
        schema_extra={"minimum": 1, "maximum": analytics.MAX_DAYS},
    ),
]
_ROUTE = {
    "sync_to_thread": True,
    "operation_class": DocumentedOperation,
    "responses": error_responses(400, 422, 503),
}
_CSP = content_security_policy(
    style_hashes=template_inline_hashes(analytics.TEMPLATES, analytics.TEMPLATE)[1]
)
_CSV_NAMES = [f"{t}.csv" for t in analytics.CSV_TABLES]


def _load(runtime: Runtime, days: int, limit: int = analytics.SHOWN) -> analytics.AnalyticsData:
    if not 1 <= days <= analytics.MAX_DAYS:
        raise ApiError(422, f"days must be in 1..{analytics.MAX_DAYS}, got {days}")
    return runtime.read(lambda conn: analytics.load_data(conn, days, limit=limit))


def _png(data: bytes) -> Response[bytes]:
    return Response(content=data, media_type=PNG, headers={"Cache-Control": "no-store"})


class AnalyticsController(Controller):
    """Analysts' search analytics (HTML, PNG charts, CSV); see the module docstring."""

    path = "/analytics"
    tags: ClassVar[list[str]] = ["analytics"]

    @get("/", media_type=MediaType.HTML, summary="The analytics page (HTML)", **_ROUTE)
    def page(
        self,
        request: Request,
        runtime: NamedDependency[Runtime],
        days: DaysParam = analytics.DEFAULT_DAYS,
    ) -> Response[str]:
        base = request.url.path.rstrip("/") or "/analytics"
        return Response(
            analytics.render_page(_load(runtime, days), base),
            media_type=MediaType.HTML,
            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store"},
        )

    @get("/trend.png", media_type=PNG, summary="Searches and rates per day", **_ROUTE)
    def trend(
        self, runtime: NamedDependency[Runtime], days: DaysParam = analytics.DEFAULT_DAYS
    ) -> Response[bytes]:
        return _png(analytics.trend_png(_load(runtime, days)))

    @get("/positions.png", media_type=PNG, summary="Clicks per position", **_ROUTE)
    def positions(
        self, runtime: NamedDependency[Runtime], days: DaysParam = analytics.DEFAULT_DAYS
    ) -> Response[bytes]:
        return _png(analytics.positions_png(_load(runtime, days)))

    @get("/queries.png", media_type=PNG, summary="Top and zero-result queries", **_ROUTE)
    def queries(
        self, runtime: NamedDependency[Runtime], days: DaysParam = analytics.DEFAULT_DAYS
    ) -> Response[bytes]:
        return _png(analytics.queries_png(_load(runtime, days)))

    @get(
        "/{table:str}",
        media_type=CSV,
        summary="A table of the page as CSV",
        description="One of: " + ", ".join(_CSV_NAMES) + " (a header row; 404 for another name).",
        sync_to_thread=True,
        operation_class=DocumentedOperation,
        responses=error_responses(400, 404, 422, 503),
    )
    def table(
        self,
        table: Annotated[
            str,
            # The names in the contract; the handler answers 404 to another.
            PathParameter(description="The table's file name.", schema_extra={"enum": _CSV_NAMES}),
        ],
        runtime: NamedDependency[Runtime],
        days: DaysParam = analytics.DEFAULT_DAYS,
    ) -> Response[bytes]:
        if table not in _CSV_NAMES:
            raise NotFoundException(f"no analytics table {table!r}; the tables: {_CSV_NAMES}")
        name = table.removesuffix(".csv")
        text = analytics.csv_text(_load(runtime, days, analytics.CSV_ROWS), name)
        return Response(
            content=text.encode("utf-8"),
            media_type=CSV,
            headers={
                "Content-Disposition": f'attachment; filename="analytics-{name}-{days}d.csv"',
                "Cache-Control": "no-store",
            },
        )
