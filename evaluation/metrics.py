"""Ranking metrics with binary relevance: AP@10 (for MAP@10), RR@10, nDCG@10, P@10, Recall@100.

Definitions (``ranking`` = product ids best first, ``R`` = the set of relevant ids,
``rel_i`` = 1 when the product at rank i is in R, else 0; a product id that appears a
second time in a ranking counts as not relevant, so duplicates can never inflate a score):

- ``P@k      = (sum_{i<=k} rel_i) / k``
- ``AP@k     = (sum_{i<=k} rel_i * P@i) / min(k, |R|)``; MAP@k is its mean over queries.
  Normalising by ``min(k, |R|)`` (not ``|R|``) lets a perfect top-k score 1.0 when a
  category has hundreds of relevant products.
- ``RR@k     = 1 / (rank of the first relevant product)`` if it is within k, else 0.
- ``nDCG@k   = DCG@k / IDCG@k``, ``DCG@k = sum_{i<=k} rel_i / log2(i + 1)``, IDCG the DCG of
  ``min(k, |R|)`` relevant products at the top.
- ``Recall@k = |top k ∩ R| / min(k, |R|)`` — capped like AP so a broad query ("jackets",
  600 relevant) can reach 1.0; with ``|R| <= k`` it is ordinary recall.

Empty relevance (``|R| = 0``): every function returns ``None``; such queries are reported
and skipped, never scored 0 or 1. Ties in score are broken by the ranker, not here: the
store's SQL orders ``score DESC, product_id`` and :func:`rank_by_score` does the same,
so a ranking is a total order and every metric is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence

METRICS: tuple[str, ...] = ("map@10", "mrr@10", "ndcg@10", "p@10", "recall@100")
PRIMARY = "map@10"


def rank_by_score(scores: Mapping[int, float]) -> list[int]:
    """Ids by descending score, ties broken by ascending id (the store's SQL order)."""
    return [pid for pid, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))]


def _rels(ranking: Sequence[Hashable], relevant: set, k: int) -> list[int]:
    """rel_i for the first k ranks; a repeated id is not relevant the second time."""
    seen: set = set()
    out = []
    for pid in ranking[:k]:
        out.append(1 if pid in relevant and pid not in seen else 0)
        seen.add(pid)
    return out


def precision_at_k(ranking: Sequence[Hashable], relevant: Iterable, k: int = 10) -> float | None:
    rel = set(relevant)
    if not rel:
        return None
    return sum(_rels(ranking, rel, k)) / k


def average_precision_at_k(
    ranking: Sequence[Hashable], relevant: Iterable, k: int = 10
) -> float | None:
    rel = set(relevant)
    if not rel:
        return None
    hits = 0
    total = 0.0
    for i, r in enumerate(_rels(ranking, rel, k), start=1):
        if r:
            hits += 1
            total += hits / i
    return total / min(k, len(rel))


def reciprocal_rank_at_k(
    ranking: Sequence[Hashable], relevant: Iterable, k: int = 10
) -> float | None:
    rel = set(relevant)
    if not rel:
        return None
    for i, r in enumerate(_rels(ranking, rel, k), start=1):
        if r:
            return 1.0 / i
    return 0.0


def ndcg_at_k(ranking: Sequence[Hashable], relevant: Iterable, k: int = 10) -> float | None:
    rel = set(relevant)
    if not rel:
        return None
    dcg = sum(r / math.log2(i + 1) for i, r in enumerate(_rels(ranking, rel, k), start=1))
    idcg = sum(1.0 / math.log2(i + 1) for i in range(1, min(k, len(rel)) + 1))
    return dcg / idcg


def recall_at_k(ranking: Sequence[Hashable], relevant: Iterable, k: int = 100) -> float | None:
    rel = set(relevant)
    if not rel:
        return None
    return sum(_rels(ranking, rel, k)) / min(k, len(rel))


def query_metrics(ranking: Sequence[Hashable], relevant: Iterable) -> dict[str, float] | None:
    """All reported metrics for one query, or None when nothing is relevant."""
    rel = set(relevant)
    if not rel:
        return None
    return {
        "map@10": average_precision_at_k(ranking, rel, 10),
        "mrr@10": reciprocal_rank_at_k(ranking, rel, 10),
        "ndcg@10": ndcg_at_k(ranking, rel, 10),
        "p@10": precision_at_k(ranking, rel, 10),
        "recall@100": recall_at_k(ranking, rel, 100),
    }


def overlap_at_k(fast: Sequence[Hashable], exact: Sequence[Hashable], k: int = 10) -> float | None:
    """Recall of an approximate top-k against the exact top-k (None when exact is empty)."""
    truth = list(dict.fromkeys(exact[:k]))
    if not truth:
        return None
    return len(set(fast[:k]) & set(truth)) / len(truth)


def mean(values: Iterable[float | None]) -> tuple[float | None, int]:
    """(mean of the non-None values, how many there were); (None, 0) when there are none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None, 0
    return sum(vals) / len(vals), len(vals)
