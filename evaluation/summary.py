"""Headline numbers of a run (from its metric rows), run-to-run comparison, regression check.

"hybrid" in a headline is the best alpha of the run's sweep (selected on the same
queries, so it is optimistic; the value at the service's default alpha is reported
beside it). "multi" likewise: the best alpha for image + text queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg

from evaluation.metrics import PRIMARY
from services.config import get_settings
from services.store import evaluations as storage
from services.store.evaluations import ALL, MetricRow

DEFAULT_MARGIN = 0.02
MARGIN_ENV = "FASHION_EVAL_MAP_MARGIN"


def alpha_curve(
    rows: Iterable[MetricRow], mode: str = "hybrid", metric: str = PRIMARY, family: str = ALL
) -> list[tuple[float, float]]:
    return sorted(
        (r.alpha, r.value)
        for r in rows
        if r.mode == mode and r.metric == metric and r.family == family
    )


def best_alpha(
    rows: Iterable[MetricRow], mode: str = "hybrid", metric: str = PRIMARY
) -> tuple[float, float] | None:
    """(alpha, value) with the highest value; ties go to the alpha nearest 0.5."""
    curve = alpha_curve(rows, mode, metric)
    if not curve:
        return None
    return max(curve, key=lambda av: (round(av[1], 12), -abs(av[0] - 0.5)))


def value(
    rows: Iterable[MetricRow],
    mode: str,
    alpha: float | None = None,
    metric: str = PRIMARY,
    family: str = ALL,
) -> float | None:
    for r in rows:
        if (
            r.mode == mode
            and r.metric == metric
            and r.family == family
            and (alpha is None or abs(r.alpha - alpha) < 1e-9)
        ):
            return r.value
    return None


@dataclass(frozen=True)
class Headline:
    dense: float | None
    sparse: float | None
    hybrid: float | None
    hybrid_alpha: float | None
    hybrid_default: float | None
    multi: float | None
    multi_alpha: float | None
    multi_default: float | None
    default_alpha: float | None
    fast_recall: float | None
    certified_fast: float | None = None

    def items(self) -> list[tuple[str, float | None]]:
        """The comparable numbers, by name (for the run-to-run comparison)."""
        return [
            ("dense MAP@10", self.dense),
            ("sparse MAP@10", self.sparse),
            ("hybrid MAP@10 (best alpha)", self.hybrid),
            ("hybrid MAP@10 (default alpha)", self.hybrid_default),
            ("multi MAP@10 (best alpha)", self.multi),
            ("multi MAP@10 (default alpha)", self.multi_default),
            ("fast-mode recall@10 vs exact", self.fast_recall),
            ("threshold met, first candidates (top 10)", self.certified_fast),
        ]


def headline(
    rows: list[MetricRow],
    default_alpha: float | None = None,
    default_alpha_multi: float | None = None,
) -> Headline:
    """Headline numbers; photo + text at ``default_alpha_multi`` (older runs: ``default_alpha``)."""
    multi_alpha = default_alpha_multi if default_alpha_multi is not None else default_alpha
    hb = best_alpha(rows, "hybrid")
    mb = best_alpha(rows, "multi")
    return Headline(
        dense=value(rows, "dense"),
        sparse=value(rows, "sparse"),
        hybrid=hb[1] if hb else None,
        hybrid_alpha=hb[0] if hb else None,
        hybrid_default=value(rows, "hybrid", default_alpha) if default_alpha is not None else None,
        multi=mb[1] if mb else None,
        multi_alpha=mb[0] if mb else None,
        multi_default=value(rows, "multi", multi_alpha) if multi_alpha is not None else None,
        default_alpha=default_alpha,
        fast_recall=value(rows, "hybrid", default_alpha, metric="fast_recall@10")
        if default_alpha is not None
        else None,
        certified_fast=value(rows, "hybrid", default_alpha, metric="certified_fast@10")
        if default_alpha is not None
        else None,
    )


def run_headline(conn: psycopg.Connection, run: storage.EvalRun) -> Headline:
    return headline(
        storage.metrics_for(conn, run.id),
        run.details.get("default_alpha"),
        run.details.get("default_alpha_multi"),
    )


@dataclass(frozen=True)
class Comparison:
    name: str
    previous: float | None
    current: float | None
    delta: float | None
    regressed: bool


def compare(
    current: Headline, previous: Headline | None, margin: float = DEFAULT_MARGIN
) -> list[Comparison]:
    """Each headline number now vs the previous run; a drop of more than ``margin`` regresses."""
    prev = dict(previous.items()) if previous else {}
    out = []
    for name, cur in current.items():
        before = prev.get(name)
        delta = cur - before if cur is not None and before is not None else None
        out.append(Comparison(name, before, cur, delta, delta is not None and delta < -margin))
    return out


def margin_from_env(default: float = DEFAULT_MARGIN) -> float:
    """The regression margin of ``settings.eval_map_margin`` (FASHION_EVAL_MAP_MARGIN)."""
    return get_settings().eval_map_margin


class MapRegression(RuntimeError):
    """Hybrid MAP@10 dropped by more than the allowed margin against the previous run."""

    def __init__(self, message: str, check: RegressionCheck):
        super().__init__(message)
        self.check = check


@dataclass(frozen=True)
class RegressionCheck:
    run_id: int
    previous_run_id: int | None
    current: float | None
    previous: float | None
    margin: float

    @property
    def drop(self) -> float | None:
        if self.current is None or self.previous is None:
            return None
        return self.previous - self.current

    @property
    def regressed(self) -> bool:
        return self.drop is not None and self.drop > self.margin

    def message(self) -> str:
        if self.previous_run_id is None:
            return f"run {self.run_id}: hybrid MAP@10 {_fmt(self.current)} (no previous run)"
        verdict = "REGRESSION" if self.regressed else "ok"
        return (
            f"run {self.run_id}: hybrid MAP@10 {_fmt(self.current)} vs run "
            f"{self.previous_run_id} {_fmt(self.previous)} (drop {_fmt(self.drop)}, "
            f"allowed {self.margin:.3f}): {verdict}"
        )


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def check_regression(
    conn: psycopg.Connection, run_id: int, margin: float = DEFAULT_MARGIN
) -> RegressionCheck:
    """Hybrid MAP@10 (best alpha) of ``run_id`` against the previous succeeded run."""
    run = storage.get_run(conn, run_id)
    if run is None:
        raise LookupError(f"evaluation run {run_id} does not exist")
    prev = storage.previous_run(conn, run_id)
    cur = run_headline(conn, run).hybrid
    before = run_headline(conn, prev).hybrid if prev else None
    return RegressionCheck(run_id, prev.id if prev else None, cur, before, margin)
