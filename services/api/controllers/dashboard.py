"""``GET /dashboard``: the analysts' MAP dashboard, served by the API.

Routes (all read-only, the numbers of ``evaluation.dashboard.load_data``):

- ``GET /dashboard``              the HTML page (``evaluation.dashboard.render_page``);
- ``GET /dashboard/history.png``  MAP@10 per mode across runs;
- ``GET /dashboard/alpha.png``    the run's alpha curve, best alpha starred, the service's
  current ``settings.default_alpha`` as a dashed line;
- ``GET /dashboard/families.png`` MAP@10 per query family and mode;
- ``GET /dashboard/data.json``    the same numbers as JSON.

``?run=<id>`` selects another run than the latest (an id >= 1; Litestar answers 400 to
anything else; an unknown run is a 404). The database connection comes from the API's
runtime (injected with ``Provide``, the replica first like every read); an unreachable
database is a 503 with ``Retry-After`` (``services.api.errors``).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from litestar import Controller, MediaType, Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import QueryParameter

from evaluation import dashboard
from services.api.runtime import Runtime
from services.api.schemas import DocumentedOperation, error_responses

PNG = "image/png"
# ``?run=<id>``: another run than the latest (Litestar validates it: 400 if not an id).
RunParam = Annotated[
    int | None,
    QueryParameter(ge=1, description="Evaluation run id; default: the latest run."),
]
# Every route: 400 (run is not an id), 404 (no such run), 503 (database).
_ROUTE = {
    "sync_to_thread": True,
    "operation_class": DocumentedOperation,
    "responses": error_responses(400, 404, 503),
}


def _load(runtime: Runtime, run: int | None) -> dashboard.DashboardData:
    alpha = float(runtime.settings.default_alpha)
    try:
        return runtime.read(lambda conn: dashboard.load_data(conn, run, alpha))
    except LookupError as exc:
        raise NotFoundException(str(exc)) from None


def _png(data: bytes) -> Response[bytes]:
    return Response(content=data, media_type=PNG, headers={"Cache-Control": "no-store"})


class DashboardController(Controller):
    """Analysts' MAP dashboard (HTML + PNG charts); see the module docstring."""

    path = "/dashboard"
    tags: ClassVar[list[str]] = ["dashboard"]

    @get("/", media_type=MediaType.HTML, summary="The dashboard page (HTML)", **_ROUTE)
    def page(
        self, request: Request, runtime: NamedDependency[Runtime], run: RunParam = None
    ) -> str:
        base = request.url.path.rstrip("/") or "/dashboard"
        return dashboard.render_page(_load(runtime, run), base)

    @get("/history.png", media_type=PNG, summary="MAP@10 per mode across runs", **_ROUTE)
    def history(self, runtime: NamedDependency[Runtime], run: RunParam = None) -> Response[bytes]:
        return _png(dashboard.history_png(_load(runtime, run)))

    @get("/alpha.png", media_type=PNG, summary="The run's MAP@10 against alpha", **_ROUTE)
    def alpha(self, runtime: NamedDependency[Runtime], run: RunParam = None) -> Response[bytes]:
        return _png(dashboard.alpha_png(_load(runtime, run)))

    @get("/families.png", media_type=PNG, summary="The run's MAP@10 per query family", **_ROUTE)
    def families(self, runtime: NamedDependency[Runtime], run: RunParam = None) -> Response[bytes]:
        return _png(dashboard.families_png(_load(runtime, run)))

    @get("/data.json", summary="The dashboard's numbers as JSON", **_ROUTE)
    def data(self, runtime: NamedDependency[Runtime], run: RunParam = None) -> dict[str, Any]:
        return dashboard.data_json(_load(runtime, run))
