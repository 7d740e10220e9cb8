"""The benchmarks' printing: percentiles and markdown tables (bench_understanding.py,
bench_suggest.py)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np


def pct(xs: Sequence[float], p: float) -> float:
    return float(np.percentile(xs, p)) if len(xs) else float("nan")


def table(heading: str, columns: Sequence[str], rows: Sequence[Sequence], left: int = 1) -> None:
    """A markdown table under a one-line heading; the first ``left`` columns left-aligned."""
    print(f"\n{heading}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("---" if i < left else "---:" for i in range(len(columns))) + "|")
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    sys.stdout.flush()
