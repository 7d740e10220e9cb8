"""``fashion-search serve``: run the API with uvicorn (loopback by default, graceful shutdown)."""

from __future__ import annotations

import argparse
import logging

from services.api.app import create_app
from services.api.logs import configure_logging
from services.config import get_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    settings = get_settings()
    configure_logging(
        logging.DEBUG if args.verbose else logging.INFO, json_lines=not args.plain_logs
    )
    if args.torch_threads:
        import torch  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

        torch.set_num_threads(args.torch_threads)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        log_config=None,  # keep our JSON handler; uvicorn's loggers propagate to it
        access_log=False,  # the request-id middleware writes the access log
        timeout_graceful_shutdown=args.graceful_timeout,
        lifespan="on",
    )
    uvicorn.Server(config).run()  # SIGINT/SIGTERM: stop accepting, finish requests, shutdown hooks
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the HTTP API and storefront page (uvicorn)")
    p.add_argument("--host", help="bind address (default: FASHION_API_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: FASHION_API_PORT or 8000)")
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=10.0,
        help="seconds to finish in-flight requests on shutdown (default 10)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads (default: torch's choice)",
    )
    p.add_argument("--plain-logs", action="store_true", help="text logs instead of JSON lines")
    p.set_defaults(func=_serve)
