"""The quality gate a freshly built index version passes before it may go live.

- row count equals the number of valid catalogue rows, and both HNSW indexes exist;
- smoke: a product's own stored vectors find it (fast path), and its name as a text query
  returns hits with finite, descending scores;
- recall@10 of the fast (HNSW) path against the exact scan on ``RECALL_QUERIES`` name queries
  is at least ``min_recall``;
- measured, not gated: each HNSW side's recall of its exact top n (n the service's first
  candidates) on the same queries, ``hnsw_recall`` in the report: what every answer's
  certificate quotes when it is not proven exact (services.search.Certificate).

A version that fails stays out of service (:class:`CheckFailed`); one that passes is marked
'ready' with the checks in its report.
"""

from __future__ import annotations

import math
import random

import numpy as np

from services.config import get_settings
from services.search import DEFAULT_CANDIDATES, SearchQuery, fused_search, stored_vectors
from services.store import index_versions as iv
from services.store.db import connect
from services.store.search_sql import side_top_ids

DEFAULT_MIN_RECALL = 0.9
RECALL_QUERIES = 20
SMOKE_QUERIES = 5


class CheckFailed(RuntimeError):
    """A freshly built index version failed its checks; it will not go live."""


def require_building(conn, version_id: int) -> iv.IndexVersion:
    """The version, if it is still being built ('building' or 'ready'); else a clear error."""
    v = iv.get_version(conn, version_id)
    if v is None:
        raise LookupError(f"index version {version_id} does not exist")
    if v.status not in ("building", "ready"):
        raise RuntimeError(
            f"index version {version_id} is '{v.status}', not 'building' "
            "(another run superseded it, or it failed); start a new run - "
            "finished encoded shards are reused"
        )
    return v


def _self_retrieval(conn, version: iv.IndexVersion, picks: list[tuple[int, str]]) -> int:
    """How many of ``picks`` find themselves in the top 3 from their own stored vectors."""
    found = 0
    for pid, _ in picks:
        dense, sparse = stored_vectors(conn, pid, version)
        hits = fused_search(conn, SearchQuery(dense=dense, sparse=sparse, k=10), version)
        found += int(pid in [h.product_id for h in hits[:3]])
    return found


def search_checks(
    conn, version: iv.IndexVersion, picks: list[tuple[int, str]], *, min_recall: float
) -> tuple[dict, list[str]]:
    """The search checks of ``version`` on ``picks`` (``(product id, name)``): self-retrieval
    of the first ``SMOKE_QUERIES`` from their stored vectors, then each name as a text query
    through the version's encoders (hits with finite, descending scores) and the fast path's
    recall@10 against the exact scan. Returns ``(report, problems)``; shared by the full
    build's gate and the incremental sync (which runs it inside its transaction)."""
    # Deferred: the encoders import torch (seconds); the rest of the pipeline does not need it.
    from services.encoders.clip import load_clip  # noqa: PLC0415
    from services.encoders.splade import load_splade  # noqa: PLC0415

    report: dict = {}
    problems: list[str] = []
    smoke = picks[:SMOKE_QUERIES]
    self_found = _self_retrieval(conn, version, smoke)
    report["smoke_self_retrieval"] = f"{self_found}/{len(smoke)}"
    if self_found < len(smoke):
        problems.append(f"self-retrieval found only {report['smoke_self_retrieval']}")
    names = [name for _, name in picks]
    qd = load_clip(version.dense_model).encode_texts(names) if names else []
    qs = load_splade(version.sparse_model).encode(names) if names else []
    recalls, name_found = [], 0
    side_recalls: dict[str, list[float]] = {"dense": [], "sparse": []}
    for (pid, _), d, s in zip(picks, qd, qs):
        for side, vector in (("dense", d), ("sparse", s)):
            side_recalls[side].append(_side_recall(conn, version, side, vector))
        fast = fused_search(conn, SearchQuery(dense=d, sparse=s, k=10), version)
        exact = fused_search(conn, SearchQuery(dense=d, sparse=s, k=10, exact=True), version)
        scores = [h.score for h in fast]
        if (
            not fast
            or not all(math.isfinite(x) for x in scores)
            or scores != sorted(scores, reverse=True)
        ):
            problems.append(f"name query for {pid} returned no or unsorted hits")
            break
        exact_ids = {h.product_id for h in exact}
        name_found += int(pid in exact_ids)
        recalls.append(len(exact_ids & {h.product_id for h in fast}) / max(1, len(exact_ids)))
    recall = float(np.mean(recalls)) if recalls else 0.0
    report["recall_at_10_fast_vs_exact"] = round(recall, 4)
    report["recall_queries"] = len(recalls)
    report["name_query_hits_own_product_top10"] = f"{name_found}/{len(picks)}"
    report["min_recall"] = min_recall
    if recalls:
        report["hnsw_recall"] = {
            side: round(float(np.mean(values)), 4) for side, values in side_recalls.items()
        } | {"n": DEFAULT_CANDIDATES, "queries": len(recalls)}
    if recall < min_recall:
        problems.append(f"fast-vs-exact recall@10 {recall:.3f} < {min_recall}")
    return report, problems


def _side_recall(conn, version: iv.IndexVersion, side: str, vector) -> float:
    """The share of ``side``'s exact top n that its HNSW scan returns (n: DEFAULT_CANDIDATES)."""
    exact = side_top_ids(conn, version, side, vector, DEFAULT_CANDIDATES, exact=True)
    hnsw = side_top_ids(conn, version, side, vector, DEFAULT_CANDIDATES, exact=False)
    return len(set(exact) & set(hnsw)) / max(1, len(exact))


def check_and_mark_ready(
    version_id: int,
    expected_rows: int,
    *,
    min_recall: float = DEFAULT_MIN_RECALL,
    seed: int = 0,
    extra_report: dict | None = None,
) -> dict:
    """Check a built version (see the module docstring), then mark it 'ready'; returns the
    checks' report. Raises :class:`CheckFailed` when a check fails."""
    report: dict = {"expected_rows": expected_rows}
    with connect(get_settings().database_url) as conn:
        version = require_building(conn, version_id)
        rows = iv.row_count(conn, version_id)
        report["rows"] = rows
        problems = []
        if rows != expected_rows:
            problems.append(f"row count {rows} != {expected_rows} valid catalogue rows")
        if not iv.has_indexes(conn, version_id):
            problems.append("HNSW indexes or sparse postings are missing")
        sample = iv.product_names(conn, version_id)
        conn.commit()
        picks = random.Random(seed).sample(sample, min(RECALL_QUERIES, len(sample)))
        found, search_problems = search_checks(conn, version, picks, min_recall=min_recall)
        report.update(found)
        problems += search_problems
        report["problems"] = problems
        if problems:
            raise CheckFailed(
                f"index version {version_id} failed its checks: " + "; ".join(problems)
            )
        iv.mark_ready(conn, version_id, {"checks": report, **(extra_report or {})})
    return report
