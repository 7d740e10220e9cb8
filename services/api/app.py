"""The Litestar application factory: ``create_app(settings=None) -> Litestar``.

Wiring only: the :class:`~services.api.runtime.Runtime` (pool, encoders, caches) is built
here, started on startup (pool opened with ``wait=False``, models loaded in a thread) and
closed on shutdown, and injected into the controllers with ``Provide``. Errors are mapped
to JSON in :mod:`services.api.errors`; request ids and access logs in :mod:`services.api.logs`.
OpenAPI 3.1 is served at ``/schema`` (``/schema/openapi.json``, Swagger at ``/schema/swagger``).
"""

from __future__ import annotations

import logging
import threading

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.static_files import create_static_files_router

from services.api import suggest as suggest_service
from services.api.controllers.analytics import AnalyticsController
from services.api.controllers.dashboard import DashboardController
from services.api.controllers.events import EventsController
from services.api.controllers.page import STATIC_DIR, PageController
from services.api.controllers.products import ProductController
from services.api.controllers.search import MAX_FORM_PARTS, SearchController
from services.api.controllers.suggest import SuggestController
from services.api.controllers.system import SystemController
from services.api.edges import edge_guard
from services.api.errors import EXCEPTION_HANDLERS
from services.api.logs import request_id_middleware
from services.api.runtime import Runtime
from services.api.security import (
    SWAGGER_ASSETS_PATH,
    LocalSwaggerRenderPlugin,
    dashboard_style_hashes,
    security_headers_hook,
    swagger_ui_dir,
)
from services.config import Settings, get_settings

log = logging.getLogger(__name__)

# Multipart overhead and the other form fields on top of the image itself.
BODY_SLACK_BYTES = 256 * 1024


def _swagger_ui_assets() -> list:
    """Swagger UI's JS/CSS (the ``swagger-ui-py`` wheel's files) at ``/static/swagger-ui``."""
    directory = swagger_ui_dir()
    if directory is None:
        log.warning("swagger-ui-py is not installed: /schema/swagger will not load")
        return []
    return [
        create_static_files_router(
            path=SWAGGER_ASSETS_PATH, directories=[directory], include_in_schema=False
        )
    ]


def _warm_suggestions(runtime: Runtime) -> None:
    try:
        suggest_service.load(runtime)
    except Exception as exc:  # noqa: BLE001 - a warm-up only; requests report real errors
        log.info("type-ahead index not built at start (%s); the first request builds it", exc)


def create_app(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    pool_timeout: float = 3.0,
    load_models: bool = True,
) -> Litestar:
    """Build the API. ``pool_timeout``: seconds a request waits for a database connection."""
    settings = settings or get_settings()
    runtime = runtime or Runtime(settings, pool_timeout=pool_timeout, load_models=load_models)

    def provide_runtime() -> Runtime:
        return runtime

    def start() -> None:
        runtime.start()
        # The type-ahead's index, built before the first keystroke needs it (best effort:
        # without a live index or a database the first /v1/suggest builds it, or says 503).
        threading.Thread(
            target=_warm_suggestions, args=(runtime,), name="suggest-warmup", daemon=True
        ).start()

    def stop() -> None:
        runtime.stop()

    app = Litestar(
        route_handlers=[
            SearchController,
            SuggestController,
            EventsController,
            ProductController,
            SystemController,
            PageController,
            create_static_files_router(
                path="/static", directories=[STATIC_DIR], include_in_schema=False
            ),
            *_swagger_ui_assets(),
            DashboardController,
            AnalyticsController,
        ],
        dependencies={"runtime": Provide(provide_runtime, sync_to_thread=False)},
        on_startup=[start],
        on_shutdown=[stop],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_id_middleware],
        # Every response, 404s and errors included (services.api.security).
        before_send=[security_headers_hook(style_hashes=dashboard_style_hashes())],
        logging_config=None,  # the serving process configures logging (JSON lines, request ids)
        request_max_body_size=settings.max_upload_bytes + BODY_SLACK_BYTES,
        multipart_form_part_limit=MAX_FORM_PARTS,  # more parts: 413 (controllers.search)
        openapi_config=OpenAPIConfig(
            title="Fashion hybrid search API",
            version="1.0.0",
            description="CLIP dense + SPLADE sparse product search fused in PostgreSQL/pgvector.",
            path="/schema",
            # Swagger UI from this app's own files, no CDN (services.api.security).
            render_plugins=[LocalSwaggerRenderPlugin()],
        ),
    )
    app.state.runtime = runtime
    # Outside Litestar's router: unknown routes get the Host check too, HEAD is any GET
    # (services.api.edges); inside the before_send hooks, so its 400 has the security headers.
    app.asgi_handler = edge_guard(app.asgi_handler, settings.allowed_hosts)
    return app
