"""A search in an online experiment (issue #24): the two arms' rankings, team-draft
interleaved into the one page the shopper sees (services.analytics.interleave).

An arm is a JSON object of what it changes from the search as asked: ``alpha`` (a number in
[0, 1]) and/or ``understanding`` (true or false). Costs, per search in the experiment (the
others pay nothing): two fused statements instead of one (two alphas rank the same
candidates but each takes its own top n from the HNSW lists, so each arm runs its own
statement); an arm that changes understanding also encodes the text a second way (its
query vectors are cached like any other). Only first pages of text searches in relevance
order take part; the next pages of an interleaved page are the search as asked (its cursor
lists the interleaved products as shown, so none comes twice).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from services.analytics.interleave import TEAM_A, team_draft
from services.search import Ranking, SearchQuery
from services.store.analytics import Experiment
from services.store.index_versions import IndexVersion


def draft_rng(experiment: Experiment, session_id: str | None, search: str) -> random.Random:
    """The coin of a team draft: the same session asking the same search (``search``: its
    fingerprint) in the same experiment (by name) sees the same page, and a seeded
    simulation against an experiment of the same name is reproducible."""
    digest = hashlib.sha256(f"{experiment.name}:{session_id}:{search}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def arm_query(
    arm: dict[str, Any], query: SearchQuery, vectors_for: Callable[[bool], Any]
) -> SearchQuery:
    """The search as arm ``arm`` runs it. ``vectors_for(literal)``: the query's vectors
    with understanding off (True) or on (False)."""
    q = query
    if "alpha" in arm:
        q = replace(q, alpha=float(arm["alpha"]))
    if "understanding" in arm:
        vectors = vectors_for(not arm["understanding"])
        q = replace(q, dense=vectors.dense, sparse=vectors.sparse)
    return q


def interleaved(
    experiment: Experiment,
    query: SearchQuery,
    ranked: Callable[[SearchQuery], tuple[IndexVersion, Ranking, float]],
    vectors_for: Callable[[bool], Any],
    rng: random.Random | None = None,
) -> tuple[IndexVersion, Ranking, float, list[int]]:
    """(version, the interleaved page as a Ranking, ms waited, the team of each position).
    The page is never called exact: it is no single fused ranking."""
    version, a, wait_a = ranked(arm_query(experiment.arm_a, query, vectors_for))
    _, b, wait_b = ranked(arm_query(experiment.arm_b, query, vectors_for))
    ids, teams = team_draft(
        [h.product_id for h in a.hits],
        [h.product_id for h in b.hits],
        query.k,
        rng or random.Random(),
    )
    hits_a = {h.product_id: h for h in a.hits}
    hits_b = {h.product_id: h for h in b.hits}
    hits = [(hits_a if t == TEAM_A else hits_b)[p] for p, t in zip(ids, teams, strict=True)]
    certificate = replace(
        a.certificate,
        exact=False,
        reason=f"interleaved: experiment {experiment.name!r} shows two rankings merged",
    )
    page = replace(
        a,
        hits=hits,
        certificate=certificate,
        alpha=query.alpha,
        remaining=max(a.remaining, b.remaining),
    )
    return version, page, wait_a + wait_b, teams
