"""Which characters of a query show: a text of invisible characters only is no text.

A search or type-ahead text made only of characters that draw nothing (spaces of every
width, controls, format characters such as U+200B ZERO WIDTH SPACE or U+202E RIGHT-TO-LEFT
OVERRIDE, combining marks with nothing to combine with, Hangul fillers) is treated exactly
as whitespace: blank. A text with at least one visible character is searched as sent.

The same set is written as a regular-expression class (:func:`visible_char_class`) for the
OpenAPI ``pattern`` of the search text, so the contract and the API agree character by
character (both from this Python's ``unicodedata``).
"""

from __future__ import annotations

import functools
import unicodedata

# Spaces (Zs) and line/paragraph separators, controls (Cc), format characters (Cf),
# non-spacing marks (Mn; alone they draw nothing), lone surrogates (Cs).
INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Mn", "Cs"})
# Letters by category that render as nothing (Unicode's default-ignorable fillers).
INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")


def is_invisible(char: str) -> bool:
    return char in INVISIBLE_LETTERS or unicodedata.category(char) in INVISIBLE_CATEGORIES


def has_visible(text: str) -> bool:
    """Whether ``text`` has a character that shows (see the module docstring)."""
    return any(not is_invisible(char) for char in text)


@functools.cache
def invisible_ranges() -> tuple[tuple[int, int], ...]:
    """The invisible code points as inclusive (first, last) ranges."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x110000):
        if is_invisible(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    return tuple(ranges)


def _escape(code: int) -> str:
    # \uXXXX reads the same in Python's re, ECMAScript and Rust's regex; a character past
    # the BMP is written as itself (ECMAScript without the u flag has no escape for it).
    return f"\\u{code:04X}" if code <= 0xFFFF else chr(code)


@functools.cache
def visible_char_class() -> str:
    """A regex class matching exactly one visible character (the complement of the set)."""
    parts = [
        _escape(lo) if lo == hi else f"{_escape(lo)}-{_escape(hi)}"
        for lo, hi in invisible_ranges()
        if not 0xD800 <= lo <= 0xDFFF  # surrogates: no UTF-8 text holds one, no regex names one
    ]
    return "[^" + "".join(parts) + "]"
