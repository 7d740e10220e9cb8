"""``fashion-search simulate-traffic``: seeded searches and position-biased clicks sent to a
running API (evaluation.traffic)."""

from __future__ import annotations

import argparse

import httpx

from evaluation.queries import FAMILIES
from evaluation.traffic import ClickModel, simulate, text_queries
from services.config import get_settings
from services.store.db import connect
from services.store.products import iter_products


def _simulate(args: argparse.Namespace) -> int:
    settings = get_settings()
    url = args.url or f"http://{settings.api_host}:{settings.api_port}"
    with connect(settings.database_url) as conn:
        products = list(iter_products(conn))
    families = args.families.split(",") if args.families else None
    queries = text_queries(products, args.seed, families)
    model = ClickModel(eta=args.eta, attractiveness=args.attractiveness)
    print(
        f"{len(queries)} text queries with a relevant product; {args.searches} searches "
        f"from {args.sessions} sessions to {url} (seed {args.seed})"
    )
    with httpx.Client(base_url=url, timeout=60) as client:
        report = simulate(
            client,
            queries,
            searches=args.searches,
            seed=args.seed,
            sessions=args.sessions,
            k=args.k,
            clients=args.clients,
            model=model,
        )
    print("\n".join(report.lines()))
    print(
        "the analytics page shows them once the fashion_search_analytics DAG has run "
        "(or: fashion-search analytics aggregate)"
    )
    return 1 if report.errors else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate-traffic",
        help="send seeded searches and position-biased clicks to a running API",
        description="Seeded searches from the generated query families, each from one of "
        "a pool of sessions, answered by a position-biased shopper who clicks only products "
        "relevant by catalogue metadata (evaluation/traffic.py says how).",
    )
    p.add_argument("--url", help="the API (default http://FASHION_API_HOST:FASHION_API_PORT)")
    p.add_argument("--searches", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sessions", type=int, default=200, help="distinct shoppers")
    p.add_argument("--k", type=int, default=24, help="products per page")
    p.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    p.add_argument("--eta", type=float, default=1.0, help="position bias: look at i w.p. 1/i^eta")
    p.add_argument("--attractiveness", type=float, default=0.8, help="click a relevant product")
    p.add_argument(
        "--families", help=f"comma-separated (default all text ones): {', '.join(FAMILIES)}"
    )
    p.set_defaults(func=_simulate)
