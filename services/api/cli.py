"""``fashion-search serve``: run the API with uvicorn (loopback by default, graceful shutdown).

The serving itself (timeouts for slow clients, header limits, the connection cap) is in
:mod:`services.api.server`; this module only parses the command line.
"""

from __future__ import annotations

import argparse
import logging

from services.api import server
from services.api.app import create_app
from services.api.logs import configure_logging
from services.config import get_settings


def _serve(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(
        logging.DEBUG if args.verbose else logging.INFO, json_lines=not args.plain_logs
    )
    limits = server.resolve_limits(
        server.Limits(
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            max_head_bytes=args.max_head_bytes,
            max_headers=args.max_headers,
            backlog=args.backlog,
        ),
        max_connections=args.max_connections,
    )
    if args.torch_threads:
        import torch  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

        torch.set_num_threads(args.torch_threads)
    server.run(
        create_app(settings),
        host=args.host or settings.api_host,
        port=args.port or settings.api_port,
        limits=limits,
        graceful_timeout=args.graceful_timeout,
    )
    return 0


def _positive(kind: type) -> object:
    def parse(text: str) -> object:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0: {text}")
        return value

    return parse


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
        default=1,
        help="torch intra-op threads (default 1: the two query encoders run side by side, one "
        "core each; 0: torch's choice)",
    )
    p.add_argument("--plain-logs", action="store_true", help="text logs instead of JSON lines")
    limits = p.add_argument_group("client limits (docs/operations/limits-and-security.md)")
    limits.add_argument(
        "--header-timeout",
        type=_positive(float),
        default=server.HEADER_TIMEOUT_S,
        help="seconds to receive a request's line and headers (default %(default)g)",
    )
    limits.add_argument(
        "--body-timeout",
        type=_positive(float),
        default=server.BODY_TIMEOUT_S,
        help="seconds to receive a request body after its headers (default %(default)g)",
    )
    limits.add_argument(
        "--keep-alive-timeout",
        type=_positive(float),
        default=server.KEEP_ALIVE_TIMEOUT_S,
        help="seconds an idle keep-alive connection stays open (default %(default)g)",
    )
    limits.add_argument(
        "--max-head-bytes",
        type=_positive(int),
        default=server.MAX_HEAD_BYTES,
        help="largest request line + headers, else 431 (default %(default)d)",
    )
    limits.add_argument(
        "--max-headers",
        type=_positive(int),
        default=server.MAX_HEADERS,
        help="most request headers, else 431 (default %(default)d)",
    )
    limits.add_argument(
        "--max-connections",
        type=_positive(int),
        default=None,
        help=(
            "most concurrent connections (default: the open-file limit, raised to its hard "
            f"limit, less {server.FD_RESERVE}; at most {server.MAX_CONNECTIONS_CAP})"
        ),
    )
    limits.add_argument(
        "--backlog",
        type=_positive(int),
        default=server.BACKLOG,
        help="listen backlog (default %(default)d; the kernel caps it at somaxconn)",
    )
    p.set_defaults(func=_serve)
