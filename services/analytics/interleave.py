"""Team-draft interleaving (Radlinski, Kurup and Joachims, "How does clickthrough data
reflect retrieval quality?", CIKM 2008) and the sign test that reads its outcome.

Two rankings A and B of the same query make one list: in each round the team that has
picked fewer products so far picks next (a coin decides when they are even), taking its
highest-ranked product not yet in the list. Each position remembers its team; a click
credits the team whose product it is. An impression is a win for A when A's products got
more clicks than B's, a loss when fewer, a tie when as many (but some); impressions without
clicks say nothing. Under "A and B are equally good", wins and losses are equally likely, so
a two-sided sign test over them gives the p-value.

**Stop rule** (docs/analytics.md): an experiment fixes its number of impressions when it
starts; the p-value is read once, when that many impressions have been recorded (fixed
horizon). Reading it after every impression and stopping at the first p < 0.01 would make
"significant" results of identical arms far more often than 1 in 100.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

TEAM_A, TEAM_B = 1, 2


def team_draft(
    a: Sequence[int], b: Sequence[int], k: int, rng: random.Random
) -> tuple[list[int], list[int]]:
    """The interleaved list of at most ``k`` products from rankings ``a`` and ``b`` (ids in
    rank order), and the team of each position (TEAM_A or TEAM_B)."""
    out: list[int] = []
    teams: list[int] = []
    seen: set[int] = set()
    ia = ib = 0
    count_a = count_b = 0
    while len(out) < k:
        while ia < len(a) and a[ia] in seen:
            ia += 1
        while ib < len(b) and b[ib] in seen:
            ib += 1
        has_a, has_b = ia < len(a), ib < len(b)
        if not has_a and not has_b:
            break
        pick_a = has_a and (
            not has_b or count_a < count_b or (count_a == count_b and rng.random() < 0.5)
        )
        if pick_a:
            product, team = a[ia], TEAM_A
            count_a += 1
        else:
            product, team = b[ib], TEAM_B
            count_b += 1
        seen.add(product)
        out.append(product)
        teams.append(team)
    return out, teams


def credit(teams: Sequence[int], clicked: Sequence[int]) -> int:
    """+1 when A wins the impression, -1 when B does, 0 for a tie or no click. ``clicked``:
    0-based positions of the page that were clicked (each counted once)."""
    positions = set(clicked)
    a = sum(1 for p in positions if teams[p] == TEAM_A)
    b = sum(1 for p in positions if teams[p] == TEAM_B)
    return (a > b) - (b > a)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test of ``wins`` against ``losses`` (ties left out): the
    probability, if both sides were equally likely, of a split at least this uneven."""
    n = wins + losses
    if n == 0:
        return 1.0
    low = min(wins, losses)
    # P(X <= low) for X ~ Binomial(n, 1/2), summed in log space (n may be large)
    logs = [
        math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
        for i in range(low + 1)
    ]
    top = max(logs)
    tail = math.exp(top) * sum(math.exp(x - top) for x in logs)
    return min(1.0, 2.0 * tail)


SIGNIFICANCE = 0.01


def verdict(wins: int, losses: int, impressions: int, planned: int) -> str:
    """What the stop rule lets one say: nothing before the planned impressions; at them,
    the arm that won if p < SIGNIFICANCE, else that no difference was shown."""
    if impressions < planned:
        return f"running: {impressions} of {planned} impressions"
    p = sign_test(wins, losses)
    if p < SIGNIFICANCE:
        return f"arm {'A' if wins > losses else 'B'} wins (p = {p:.2g})"
    return f"no difference shown (p = {p:.2g})"
