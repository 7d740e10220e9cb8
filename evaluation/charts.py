"""The dashboard's pictures: matplotlib (Agg, object API: thread-safe per figure) -> PNG bytes.

Each chart function is cached (:func:`_cached`): the PNG bytes are kept per distinct input
(the numbers and labels drawn), at most :data:`CACHE_SIZE` of them, least recently used
first out. A chart costs ~0.5 s of CPU to draw; the same numbers are drawn once, and viewers
asking for one chart at the same moment wait for the one drawing (no stampede). New
evaluation runs change the inputs, hence the key: nothing is ever stale.
"""

from __future__ import annotations

import functools
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MODE_STYLE = {
    "dense": {"color": "#1f77b4", "marker": "o", "label": "dense (alpha 1)"},
    "sparse": {"color": "#ff7f0e", "marker": "s", "label": "sparse (alpha 0)"},
    "hybrid": {"color": "#2ca02c", "marker": "D", "label": "hybrid (best alpha)"},
    "hybrid_default": {"color": "#98df8a", "marker": "d", "label": "hybrid (default alpha)"},
    "multi": {"color": "#9467bd", "marker": "^", "label": "image + text (best alpha)"},
    "literal": {"color": "#7f7f7f", "marker": "x", "label": "literal (understanding off)"},
}


CACHE_SIZE = 64


@dataclass
class CacheInfo:
    hits: int
    misses: int
    size: int


_cache: OrderedDict[Hashable, bytes] = OrderedDict()
_drawing: dict[Hashable, threading.Event] = {}
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for chart inputs (lists, tuples, dicts of numbers and strings)."""
    if isinstance(value, dict):
        return ("dict", tuple((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return ("seq", tuple(_freeze(v) for v in value))
    if isinstance(value, float):
        return ("float", value.hex())  # NaN == NaN here; -0.0 and 0.0 differ as drawn
    return value


def _cached(render: Callable[..., bytes]) -> Callable[..., bytes]:
    """Memoise ``render`` by its frozen arguments; one drawing per key at a time."""

    @functools.wraps(render)
    def chart(*args: Any, **kwargs: Any) -> bytes:
        key = (render.__name__, _freeze(args), _freeze(kwargs))
        while True:
            with _lock:
                png = _cache.get(key)
                if png is not None:
                    _cache.move_to_end(key)
                    _stats["hits"] += 1
                    return png
                drawing = _drawing.get(key)
                if drawing is None:
                    drawing = _drawing[key] = threading.Event()
                    _stats["misses"] += 1
                    break
            drawing.wait()  # another thread draws it; then read it (or draw, if that failed)
        try:
            png = render(*args, **kwargs)
            with _lock:
                _cache[key] = png
                while len(_cache) > CACHE_SIZE:
                    _cache.popitem(last=False)
            return png
        finally:
            with _lock:
                del _drawing[key]
            drawing.set()

    return chart


def cache_info() -> CacheInfo:
    with _lock:
        return CacheInfo(_stats["hits"], _stats["misses"], len(_cache))


def cache_clear() -> None:
    with _lock:
        _cache.clear()
        _stats.update(hits=0, misses=0)


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _empty(message: str, size=(7.5, 3.6)) -> bytes:
    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=13, color="#555")
    return _png(fig)


@_cached
def history_chart(
    run_ids: Sequence[int],
    series: dict[str, Sequence[float | None]],
    labels: Sequence[str] | None = None,
) -> bytes:
    """MAP@10 per mode across runs (x: run id, tick labels: run dates)."""
    if not run_ids:
        return _empty("no evaluation runs yet — run `fashion-search eval`")
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    xs = list(range(len(run_ids)))
    for mode, values in series.items():
        pts = [(x, v) for x, v in zip(xs, values) if v is not None]
        if not pts:
            continue
        style = MODE_STYLE.get(mode, {"label": mode})
        ax.plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1.8, markersize=5, **style)
    ax.set_xticks(xs)
    ax.set_xticklabels(
        labels or [f"#{r}" for r in run_ids],
        rotation=45 if len(xs) > 8 else 0,
        ha="right" if len(xs) > 8 else "center",
        fontsize=8,
    )
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("MAP@10")
    ax.set_xlabel("evaluation run")
    ax.set_title("MAP@10 history per mode")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncol=2)
    return _png(fig)


@_cached
def alpha_chart(
    curves: dict[str, Sequence[tuple[float, float]]],
    best: dict[str, tuple[float, float] | None],
    default_alpha: float | None,
    run_label: str,
) -> bytes:
    """MAP@10 against alpha (0 = sparse only, 1 = dense only), best alpha marked."""
    if not any(curves.values()):
        return _empty("no alpha sweep stored yet")
    fig = Figure(figsize=(7.5, 3.6))
    ax = fig.add_subplot()
    names = {"hybrid": "text queries", "multi": "image + text queries"}
    colours = {"hybrid": MODE_STYLE["hybrid"]["color"], "multi": MODE_STYLE["multi"]["color"]}
    for mode, curve in curves.items():
        if not curve:
            continue
        ax.plot(
            [a for a, _ in curve],
            [v for _, v in curve],
            marker="o",
            markersize=4,
            linewidth=1.8,
            color=colours.get(mode),
            label=names.get(mode, mode),
        )
        b = best.get(mode)
        if b is not None:
            ax.plot(
                [b[0]],
                [b[1]],
                marker="*",
                markersize=16,
                color=colours.get(mode),
                markeredgecolor="black",
                linestyle="none",
            )
            ax.annotate(
                f"best {b[0]:.1f}: {b[1]:.3f}",
                b,
                textcoords="offset points",
                xytext=(6, 8),
                fontsize=8,
            )
    if default_alpha is not None:
        ax.axvline(
            default_alpha,
            color="#d62728",
            linestyle="--",
            linewidth=1.2,
            label=f"service default alpha {default_alpha:.2f}",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("alpha  (0 = sparse SPLADE only … 1 = dense CLIP only)")
    ax.set_ylabel("MAP@10")
    ax.set_title(f"Alpha sweep, {run_label}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower center", fontsize=8)
    return _png(fig)


@_cached
def family_chart(
    families: Sequence[str], series: dict[str, Sequence[float | None]], run_label: str
) -> bytes:
    """Grouped bars: MAP@10 per query family and mode."""
    if not families:
        return _empty("no per-family numbers yet")
    fig = Figure(figsize=(max(7.5, 0.6 * len(families)), 3.8))
    ax = fig.add_subplot()
    modes = [m for m, vals in series.items() if any(v is not None for v in vals)]
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        xs = [j + (i - (len(modes) - 1) / 2) * width for j in range(len(families))]
        vals = [v if v is not None else 0.0 for v in series[mode]]
        style = MODE_STYLE.get(mode, {"label": mode})
        ax.bar(xs, vals, width=width, color=style.get("color"), label=style.get("label", mode))
    ax.set_xticks(range(len(families)))
    ax.set_xticklabels([f.replace("_", "\n") for f in families], fontsize=6)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("MAP@10")
    ax.set_title(f"MAP@10 per query family, {run_label}")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    return _png(fig)
