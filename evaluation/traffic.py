"""A traffic simulator: shoppers without shoppers (issue #24).

``fashion-search simulate-traffic`` sends seeded searches to a running API over HTTP, the
texts drawn from the generated query families (evaluation.queries), each from one of a
pool of sessions (``X-Session-Id``), and answers each with the events a position-biased
shopper would send (``POST /v1/events``):

- **examination**: the shopper looks at position ``i`` (1-based on the page) with
  probability ``(1 / i) ** eta`` (``eta`` = 1 by default: the usual position-bias form);
- **click**: a product looked at is clicked with probability ``attractiveness`` when it is
  relevant *by catalogue metadata* (the query's criteria, the same judgments as the offline
  evaluation), never when it is not;
- a click becomes an add-to-cart with probability ``cart``, and that a purchase with
  ``purchase``.

Every draw comes from a generator seeded by (seed, search number): the same seed sends
the same searches and, given the same answers, the same events, whatever the number of
client threads. The click model is the simulator's own: it does not drive the ranking, and
the queries are the evaluation's generated families, so the analytics and the experiments
it feeds are graded by catalogue metadata, not by the ranking's own words.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from evaluation.queries import FAMILIES, EvalQuery, generate_queries
from services.analytics.interleave import credit, sign_test, team_draft

# Families whose queries are text only (the simulator sends no photos).
PHOTO_FAMILIES = ("multimodal",)


@dataclass(frozen=True)
class ClickModel:
    eta: float = 1.0
    attractiveness: float = 0.8
    cart: float = 0.2
    purchase: float = 0.3

    def events(
        self, page: Sequence[int], relevant: set[int], rng: random.Random, offset: int = 0
    ) -> list[tuple[str, int, int]]:
        """(kind, product id, position in the ranking) of what the shopper does on a page."""
        out: list[tuple[str, int, int]] = []
        for i, product in enumerate(page, start=1):
            if rng.random() >= (1.0 / i) ** self.eta:
                continue  # not looked at
            if product not in relevant or rng.random() >= self.attractiveness:
                continue
            out.append(("click", product, offset + i))
            if rng.random() < self.cart:
                out.append(("add_to_cart", product, offset + i))
                if rng.random() < self.purchase:
                    out.append(("purchase", product, offset + i))
        return out


@dataclass
class TrafficReport:
    searches: int = 0
    with_results: int = 0
    with_clicks: int = 0
    events: Counter = field(default_factory=Counter)
    interleaved: int = 0
    errors: Counter = field(default_factory=Counter)  # HTTP status -> count
    dropped: int = 0  # events the API's full queue dropped

    def lines(self) -> list[str]:
        return [
            (
                f"searches sent: {self.searches} ({self.with_results} with results, "
                f"{self.interleaved} interleaved by an experiment)"
            ),
            f"searches with a click: {self.with_clicks}",
            "events sent: " + ", ".join(f"{k} {v}" for k, v in sorted(self.events.items())),
            f"errors: {dict(self.errors) or 'none'}; events dropped by the API: {self.dropped}",
        ]


def text_queries(
    products: Sequence[Mapping], seed: int, families: Sequence[str] | None = None
) -> list[tuple[EvalQuery, set[int]]]:
    """The generated text queries that have at least one relevant product, with it."""
    chosen = [f for f in (families or FAMILIES) if f not in PHOTO_FAMILIES]
    qs = generate_queries(products, seed=seed, families=chosen)
    out = []
    for q in qs.queries:
        if q.is_multimodal:
            continue
        rel = q.relevant(products)
        if rel:
            out.append((q, rel))
    return out


def simulate(
    client: httpx.Client,
    queries: Sequence[tuple[EvalQuery, set[int]]],
    *,
    searches: int,
    seed: int = 0,
    sessions: int = 200,
    k: int = 24,
    clients: int = 1,
    model: ClickModel | None = None,
    body: Mapping | None = None,
) -> TrafficReport:
    """Sends ``searches`` searches (and their events) through ``client`` (base URL set)."""
    if not queries:
        raise ValueError("no query with a relevant product: is the catalogue empty?")
    model = model or ClickModel()
    report = TrafficReport()
    lock = threading.Lock()

    def one(n: int) -> None:
        rng = random.Random(f"{seed}:{n}")
        query, relevant = queries[rng.randrange(len(queries))]
        session = f"sim-{seed}-{rng.randrange(sessions):06d}"
        resp = client.post(
            "/v1/search",
            json={"text": query.text, "k": k, **(body or {})},
            headers={"X-Session-Id": session},
        )
        if resp.status_code != 200:
            with lock:
                report.searches += 1
                report.errors[resp.status_code] += 1
            return
        data = resp.json()
        page = [r["id"] for r in data["results"]]
        events = model.events(page, relevant, rng)
        sent = Counter()
        dropped = 0
        if events and data.get("search_id"):
            batch = [
                {"search_id": data["search_id"], "product_id": p, "position": pos, "type": kind}
                for kind, p, pos in events
            ]
            r = client.post("/v1/events", json={"events": batch, "session_id": session})
            if r.status_code == 202:
                sent.update(kind for kind, _, _ in events)
                dropped = r.json()["dropped"]
            else:
                with lock:
                    report.errors[r.status_code] += 1
        with lock:
            report.searches += 1
            report.with_results += bool(page)
            report.with_clicks += sent["click"] > 0
            report.events.update(sent)
            report.dropped += dropped
            report.interleaved += "interleaved" in (data["certificate"].get("reason") or "")

    if clients <= 1:
        for n in range(searches):
            one(n)
    else:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, range(searches)))
    return report


def a_a_p_values(
    pages: Sequence[tuple[Sequence[int], set[int]]],
    seeds: Sequence[int],
    model: ClickModel | None = None,
    k: int = 10,
) -> list[float]:
    """A/A replays: each seed interleaves every page (a real ranking and its relevant
    products) with itself and clicks with ``model``; the sign test's p-value per seed. With
    identical arms, p < 0.05 should come in about 5 % of seeds (fewer: the test is exact)."""
    model = model or ClickModel()
    out = []
    for seed in seeds:
        rng = random.Random(seed)
        wins = losses = 0
        for ranking, relevant in pages:
            ids, teams = team_draft(ranking, ranking, k, rng)
            clicked = [
                pos - 1 for kind, _, pos in model.events(ids, relevant, rng) if kind == "click"
            ]
            outcome = credit(teams, clicked)
            wins += outcome > 0
            losses += outcome < 0
        out.append(sign_test(wins, losses))
    return out
