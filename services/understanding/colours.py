"""Shade names -> catalogue colours, by perceptual distance (CIELAB, CIEDE2000).

Named colours with RGB values come from matplotlib (installed with the project): the XKCD
colour survey's 949 names (CC0) and the 148 CSS Color Module 4 names (written as one word
there, "darkolivegreen"; split into words here by the table's own vocabulary). A
catalogue colour's RGB is the one the offline catalogue paints with
(:data:`services.catalog.vocabulary.COLOURS`); a colour of another catalogue ("Rust",
"Mauve", "Taupe") takes its RGB from the named-colour table, and a colour found in
neither ("Multi") is never a target.

A shade maps to the catalogue colours nearest to it in CIELAB (D65) by CIEDE2000,
weighted by how much nearer the nearest is than the others (:func:`nearest_colours`):
"emerald" -> Green, "coral" -> Orange 0.6 / Peach 0.4, never a hard choice where the
table is ambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from services.catalog.vocabulary import COLOURS
from services.understanding.text import FUNCTION_WORDS, key

# Names that are modifiers or too general to mean one colour on their own.
_NOT_A_SHADE = frozenset(
    {"dark", "pale", "light", "bright", "deep", "dull", "dusty", "dirty", "ugly", "nasty",
     "royal", "pastel", "neon", "medium", "warm", "cool", "electric", "vivid", "muted"}
)  # fmt: skip


@dataclass(frozen=True)
class NamedColour:
    name: str  # lower case words: "dark olive green"
    rgb: tuple[int, int, int]
    source: str  # "xkcd" | "css4"


@dataclass(frozen=True)
class ShadeMatch:
    """One catalogue colour a shade may mean, with its share of the shade's weight."""

    colour: str
    weight: float  # the shares of one shade sum to 1
    delta_e: float  # CIEDE2000 distance from the shade


def _hex_rgb(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _segment(word: str, vocabulary: set[str]) -> str:
    """``darkolivegreen`` -> ``dark olive green`` when every piece is a known colour word
    (the longest split wins ties); otherwise ``word`` unchanged."""
    n = len(word)
    best: list[list[str] | None] = [None] * (n + 1)
    best[0] = []
    for i in range(1, n + 1):
        for j in range(max(0, i - 12), i):
            if best[j] is not None and word[j:i] in vocabulary:
                cand = [*best[j], word[j:i]]
                if best[i] is None or len(cand) < len(best[i]):
                    best[i] = cand
    return " ".join(best[n]) if best[n] else word


@lru_cache(maxsize=1)
def named_colours() -> tuple[NamedColour, ...]:
    """Every usable named colour: XKCD names as written, CSS4 names split into words; no
    names with "/" (mixtures), no bare modifiers ("dark"), no function words."""
    import matplotlib.colors as mcolors  # noqa: PLC0415 - deferred: matplotlib is only needed to build the table once

    out: dict[str, NamedColour] = {}
    for raw, hexv in mcolors.XKCD_COLORS.items():
        name = raw.removeprefix("xkcd:").strip().lower()
        if "/" in name or name in _NOT_A_SHADE or name in FUNCTION_WORDS:
            continue
        out.setdefault(name, NamedColour(name, _hex_rgb(hexv), "xkcd"))
    words = {w for n in out for w in n.split()} | {
        "alice",
        "blanched",
        "dodger",
        "floral",
        "ghost",
        "lawn",
        "misty",
        "papaya",
        "navajo",
        "old",
        "peru",
        "powder",
        "gray",
        "whip",
        "slate",
        "smoke",
        "lemon",
        "chiffon",
        "lace",
        "puff",
        "saddle",
        "rebecca",
        "antique",
        "corn",
        "silk",
        "burly",
        "wood",
        "almond",
    }
    for raw, hexv in mcolors.CSS4_COLORS.items():
        name = _segment(raw.lower(), words)
        if name in _NOT_A_SHADE:
            continue
        out.setdefault(name, NamedColour(name, _hex_rgb(hexv), "css4"))
    return tuple(sorted(out.values(), key=lambda c: c.name))


# --- CIELAB and CIEDE2000 -----------------------------------------------------------------
def rgb_to_lab(rgb: Iterable[int]) -> np.ndarray:
    """sRGB (0-255) -> CIELAB (D65)."""
    c = np.asarray(list(rgb), dtype=np.float64) / 255.0
    c = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array(
        [[0.4124564, 0.3575761, 0.1804375],
         [0.2126729, 0.7151522, 0.0721750],
         [0.0193339, 0.1191920, 0.9503041]]
    )  # fmt: skip
    xyz = m @ c / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e2000(lab1: np.ndarray, lab2: np.ndarray) -> float:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005)."""
    l1, a1, b1 = lab1
    l2, a2, b2 = lab2
    c1, c2 = math.hypot(a1, b1), math.hypot(a2, b2)
    cbar = (c1 + c2) / 2
    g = 0.5 * (1 - math.sqrt(cbar**7 / (cbar**7 + 25**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360
    h2p = math.degrees(math.atan2(b2, a2p)) % 360
    dlp, dcp = l2 - l1, c2p - c1p
    if c1p * c2p == 0:
        dhp = 0.0
    elif abs(h2p - h1p) <= 180:
        dhp = h2p - h1p
    elif h2p - h1p > 180:
        dhp = h2p - h1p - 360
    else:
        dhp = h2p - h1p + 360
    dhp_big = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dhp / 2))
    lbar, cbarp = (l1 + l2) / 2, (c1p + c2p) / 2
    if c1p * c2p == 0:
        hbarp = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hbarp = (h1p + h2p) / 2
    elif h1p + h2p < 360:
        hbarp = (h1p + h2p + 360) / 2
    else:
        hbarp = (h1p + h2p - 360) / 2
    t = (
        1
        - 0.17 * math.cos(math.radians(hbarp - 30))
        + 0.24 * math.cos(math.radians(2 * hbarp))
        + 0.32 * math.cos(math.radians(3 * hbarp + 6))
        - 0.20 * math.cos(math.radians(4 * hbarp - 63))
    )
    sl = 1 + 0.015 * (lbar - 50) ** 2 / math.sqrt(20 + (lbar - 50) ** 2)
    sc = 1 + 0.045 * cbarp
    sh = 1 + 0.015 * cbarp * t
    dtheta = 30 * math.exp(-(((hbarp - 275) / 25) ** 2))
    rc = 2 * math.sqrt(cbarp**7 / (cbarp**7 + 25**7))
    rt = -math.sin(math.radians(2 * dtheta)) * rc
    return math.sqrt(
        (dlp / sl) ** 2 + (dcp / sc) ** 2 + (dhp_big / sh) ** 2 + rt * (dcp / sc) * (dhp_big / sh)
    )


def catalogue_colour_rgb(colours: Iterable[str]) -> dict[str, tuple[int, int, int]]:
    """RGB of each catalogue colour: the offline catalogue's paint, else the named-colour
    table's entry of the same name; colours with neither are left out."""
    table = {key(c.name): c.rgb for c in named_colours()}
    out = {}
    for colour in colours:
        if colour in COLOURS:
            out[colour] = COLOURS[colour]
        elif key(colour) in table:
            out[colour] = table[key(colour)]
    return out


def nearest_colours(
    rgb: tuple[int, int, int],
    catalogue: Mapping[str, tuple[int, int, int]],
    *,
    spread: float = 4.0,
    keep: int = 2,
) -> list[ShadeMatch]:
    """The catalogue colours ``rgb`` may mean: the nearest by CIEDE2000, and up to
    ``keep - 1`` more whose distance is within a few ``spread`` units of it, each weighted
    by ``exp(-(dE - dE_nearest) / spread)``, the weights normalised to sum to 1."""
    lab = rgb_to_lab(rgb)
    dist = sorted(
        (delta_e2000(lab, rgb_to_lab(c_rgb)), colour) for colour, c_rgb in catalogue.items()
    )
    if not dist:
        return []
    d0 = dist[0][0]
    kept = [(d, c, math.exp(-(d - d0) / spread)) for d, c in dist[:keep]]
    kept = [(d, c, w) for d, c, w in kept if w >= 0.25]
    total = sum(w for _, _, w in kept)
    return [ShadeMatch(c, w / total, d) for d, c, w in kept]
