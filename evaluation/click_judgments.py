"""Click-derived judgments: shoppers' queries with enough clicks become the evaluation family
``clicks`` (issue #24), reported beside the generated families and never tuned on.

**What is read** (``services.store.click_judgments``): the first pages of text searches ranked
by relevance and outside any experiment, over the last :attr:`ClickConfig.days` days,
grouped by the normalised query (``lower(btrim(query))``); a click counts only where it
names the product shown at its position, at most once per (search, position).

**Which queries.** A query qualifies with at least :attr:`ClickConfig.min_clicked_searches`
(default 10) searches that got a matched click: fewer, and one shopper's clicks would be the
judgment. The family is evaluated when at least :attr:`ClickConfig.min_queries` (1) queries
qualify; otherwise the run says ``no click family: N queries qualify, need M`` and goes on.

**Position bias: inverse propensity weighting (IPS).** Shoppers click the top of a page more
whatever it shows. Under the position-based click model, P(click at p) = P(examine p) x
P(click | examined); the examination probability (the propensity) is taken as

    propensity(p) = (1 / p) ** eta,  eta = 1 by default (:attr:`ClickConfig.eta`),

so a click at position 8 weighs 8 and a click at position 1 weighs 1. eta is **assumed, not
estimated** from this data: estimating it needs the same product shown at several positions
to the same query by chance (randomised swaps, or the interleaved lists this module leaves
out), which these logs do not provide; eta = 1 is the usual choice for a ranked list
(Joachims et al., WSDM 2017) and the ``simulate-traffic`` click model's default. A weight is
clipped at :attr:`ClickConfig.max_weight` (10: positions past 10 are corrected as if at 10):
deep clicks are where the estimator's variance comes from, and under-correcting them can only
make a deep product harder to judge relevant, never easier.

A product's **weighted click-through** over its impressions (the searches of the query that
showed it on the first page) is

    wctr = sum over its clicks of 1 / propensity(position) / impressions,

an unbiased estimate of P(click | examined) when the propensities are right; it is capped at
1 (a probability) before it is compared.

**Relevant** (binary, like the generated families) when both hold:

1. it was clicked in at least :attr:`ClickConfig.min_clicks` (2) searches: one stray click
   at a deep position must not become a judgment by its weight alone;
2. its capped wctr is at least :attr:`ClickConfig.relative_threshold` (0.25) x the highest
   capped wctr among the query's products that pass 1.

Why a threshold **relative to the query's best product** rather than an absolute click-
through: the model fixes propensity(1) = 1, but the true examination of position 1 is
unknown and below 1, so every wctr is off by a constant factor; and queries differ in how
much shoppers click at all (browsing vs. buying). A share of the query's own best is
invariant to both; an absolute cut would mean something different for every query. 0.25 is
a choice (not tuned): a product must draw a quarter of the corrected click rate of the
query's favourite.

**Limits, said where the numbers are shown.** Only products that were shown can be judged:
a relevant product the service never put on a first page is unjudged and counts as not
relevant, so the family favours rankings like the one that served the traffic (the
service's default alpha). It is a reported family only: never in the "all" means, never in
the regression check, never used to choose alpha, weights or checkpoints. With simulated
traffic (``fashion-search simulate-traffic``) the clicks come from catalogue-metadata
relevance, so the family then re-measures the generated families' judgments through clicks.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from evaluation.queries import EvalQuery
from services.store import click_judgments as store
from services.store.click_judgments import Cell, QueryCount

CLICK_FAMILY = "clicks"
CLICK_KIND = "shoppers"  # where its judgments come from (the other families: FAMILY_KIND)
QUERIES_RECORDED = 200  # per-query entries kept in a run's details


@dataclass(frozen=True)
class ClickConfig:
    days: int = 28  # the window: searches of the last `days` days
    min_clicked_searches: int = 10  # a query qualifies with this many searches with a click
    min_queries: int = 1  # the family is evaluated with at least this many queries
    eta: float = 1.0  # propensity(p) = (1 / p) ** eta: assumed, not estimated
    max_weight: float = 10.0  # 1 / propensity is clipped here
    min_clicks: int = 2  # a relevant product was clicked in at least this many searches
    relative_threshold: float = 0.25  # ... and has this share of the query's best wctr

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError(f"days must be >= 1, got {self.days}")
        if self.min_clicked_searches < 1 or self.min_queries < 1 or self.min_clicks < 1:
            raise ValueError("min_clicked_searches, min_queries and min_clicks must be >= 1")
        if self.eta < 0 or self.max_weight < 1:
            raise ValueError(f"eta must be >= 0 and max_weight >= 1, got {self}")
        if not 0 < self.relative_threshold <= 1:
            raise ValueError(f"relative_threshold must be in (0, 1], got {self}")


def propensity(position: int, eta: float = 1.0) -> float:
    """The assumed probability that a shopper examines ``position`` (1-based)."""
    if position < 1:
        raise ValueError(f"positions are 1-based, got {position}")
    return (1.0 / position) ** eta


def weight(position: int, config: ClickConfig) -> float:
    """A click's inverse-propensity weight at ``position``, clipped at ``max_weight``."""
    return min(1.0 / propensity(position, config.eta), config.max_weight)


@dataclass(frozen=True)
class Evidence:
    """One product's clicks for one query: impressions, matched clicks (= the searches that
    clicked it), its raw click-through, its weighted click-through (IPS, uncapped) and the
    mean position it was shown at."""

    product_id: int
    impressions: int
    clicks: int
    ctr: float
    wctr: float
    mean_position: float

    @property
    def score(self) -> float:
        """The weighted click-through capped at 1, what the threshold compares."""
        return min(1.0, self.wctr)


@dataclass(frozen=True)
class ClickQuery(EvalQuery):
    """A shoppers' query judged by clicks: an :class:`EvalQuery` of family ``clicks`` whose
    relevant set is the judged products (in the index under test), not criteria."""

    judged: frozenset[int] = frozenset()
    searches: int = 0
    clicked_searches: int = 0

    @property
    def kind(self) -> str:
        return CLICK_KIND

    @property
    def split(self) -> str:
        """Every click query is on the reported side: the family is never tuned on."""
        return "test"

    def matches(self, product: Mapping) -> bool:
        return int(product["id"]) in self.judged

    def relevant(self, products: Iterable[Mapping]) -> set[int]:
        return {int(p["id"]) for p in products if int(p["id"]) in self.judged}

    def describe_relevance(self) -> str:
        return (
            f"clicked by shoppers ({len(self.judged)} products judged relevant from "
            f"{self.clicked_searches} of {self.searches} searches with clicks)"
        )

    def to_json(self) -> dict:
        return {
            "qid": self.qid,
            "family": self.family,
            "text": self.text,
            "judged": sorted(self.judged),
            "searches": self.searches,
            "clicked_searches": self.clicked_searches,
        }


def click_qid(text: str) -> str:
    """A stable id for a shoppers' query (the same text, the same id in every run)."""
    return f"{CLICK_FAMILY}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


@dataclass
class ClickFamily:
    """The judgments of one window: the qualifying queries, those that qualified by clicks
    but kept no judged product in the index (``excluded``), and how they were made."""

    config: ClickConfig
    since: datetime
    queries: list[ClickQuery] = field(default_factory=list)
    excluded: list[dict] = field(default_factory=list)
    evidence: dict[str, list[Evidence]] = field(default_factory=dict)  # by query text

    @property
    def qualifies(self) -> bool:
        return len(self.queries) >= self.config.min_queries

    @property
    def version(self) -> str:
        blob = json.dumps([q.to_json() for q in self.queries], sort_keys=True).encode()
        return f"clicks-{hashlib.sha1(blob).hexdigest()[:10]}"

    def message(self) -> str:
        c = self.config
        rule = (
            f"a query qualifies with >= {c.min_clicked_searches} first-page text searches "
            f"with a click in the last {c.days} days"
        )
        if not self.qualifies:
            return (
                f"no click family: {len(self.queries)} queries qualify, need {c.min_queries} "
                f"({rule})"
            )
        n_rel = sum(len(q.judged) for q in self.queries)
        return (
            f"click family: {len(self.queries)} queries, {n_rel} products judged relevant "
            f"({rule}; IPS eta={c.eta:g}, relevant: clicked in >= {c.min_clicks} searches and "
            f">= {c.relative_threshold:g} x the query's best weighted click-through)"
        )

    def details(self) -> dict:
        """What a run stores under ``details.clicks``."""
        return {
            "family": CLICK_FAMILY,
            "evaluated": self.qualifies,
            "message": self.message(),
            "n_queries": len(self.queries),
            "needed": self.config.min_queries,
            "version": self.version,
            "since": self.since.isoformat(),
            "config": asdict(self.config),
            "queries": [
                {
                    "qid": q.qid,
                    "text": q.text,
                    "searches": q.searches,
                    "clicked_searches": q.clicked_searches,
                    "n_relevant": len(q.judged),
                }
                for q in self.queries[:QUERIES_RECORDED]
            ],
            "excluded": self.excluded[:QUERIES_RECORDED],
        }


def evidence(cells: Iterable[Cell], config: ClickConfig) -> dict[str, list[Evidence]]:
    """Per query text, each shown product's :class:`Evidence` (by product id)."""
    acc: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
    for c in cells:
        a = acc[(c.query, c.product_id)]
        a[0] += c.impressions
        a[1] += c.clicks
        a[2] += c.clicks * weight(c.position, config)
        a[3] += c.impressions * c.position
    out: dict[str, list[Evidence]] = defaultdict(list)
    for (query, pid), (imps, clicks, weighted, pos) in sorted(acc.items()):
        out[query].append(Evidence(pid, imps, clicks, clicks / imps, weighted / imps, pos / imps))
    return dict(out)


def relevant_products(products: list[Evidence], config: ClickConfig) -> set[int]:
    """The judged-relevant products of one query (module docstring: clicked in at least
    ``min_clicks`` searches, and a capped weighted click-through of at least
    ``relative_threshold`` x the best among those)."""
    clicked = [e for e in products if e.clicks >= config.min_clicks]
    if not clicked:
        return set()
    best = max(e.score for e in clicked)
    return {e.product_id for e in clicked if e.score >= config.relative_threshold * best}


def judge(
    counts: Iterable[QueryCount],
    cells: Iterable[Cell],
    config: ClickConfig,
    since: datetime,
    in_index: set[int] | None = None,
) -> ClickFamily:
    """The family from the counts (pure: :func:`load_click_family` reads them). A query whose
    judged products are all missing from ``in_index`` (when given) is ``excluded``."""
    family = ClickFamily(config, since, evidence=evidence(cells, config))
    for qc in counts:
        if qc.clicked_searches < config.min_clicked_searches:
            continue
        judged = relevant_products(family.evidence.get(qc.query, []), config)
        kept = judged if in_index is None else judged & in_index
        if not kept:
            family.excluded.append(
                {
                    "text": qc.query,
                    "clicked_searches": qc.clicked_searches,
                    "reason": (
                        "no product clicked in enough searches"
                        if not judged
                        else f"none of its {len(judged)} judged products is in the index"
                    ),
                }
            )
            continue
        family.queries.append(
            ClickQuery(
                click_qid(qc.query),
                CLICK_FAMILY,
                qc.query,
                (),
                judged=frozenset(kept),
                searches=qc.searches,
                clicked_searches=qc.clicked_searches,
            )
        )
    family.queries.sort(key=lambda q: (-q.clicked_searches, q.text))
    return family


def load_click_family(
    conn: psycopg.Connection,
    config: ClickConfig | None = None,
    in_index: set[int] | None = None,
    now: datetime | None = None,
) -> ClickFamily:
    """The click family of the window ending ``now`` (default: the current time), judged
    over the products ``in_index`` (None: every product)."""
    config = config or ClickConfig()
    since = (now or datetime.now(UTC)) - timedelta(days=config.days)
    counts = store.query_counts(conn, since, now, config.min_clicked_searches)
    cells = store.position_cells(conn, [c.query for c in counts], since, now)
    return judge(counts, cells, config, since, in_index)
