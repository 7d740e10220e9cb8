"""Spelling correction of query words against the catalogue's vocabulary.

A word is corrected only when it is unknown (``Lexicon.is_known``, the one gate: not a
catalogue word of product names, brands or attribute values, not a word of the lexicon's
phrases, not English); this module only suggests. Short words (under :data:`MIN_CHARS`
letters) and words with digits are left alone: too many real words lie one edit from them. The correction is the vocabulary word at the smallest
optimal-string-alignment distance (a transposition counts one edit: "jakcet" -> "jacket"),
at most :func:`max_edits`; ties go to the word the catalogue uses most.

Engine: ``rapidfuzz`` (C++ edit distances over the vocabulary; chosen by measurement against
``symspellpy`` and PostgreSQL's ``pg_trgm``: ``benchmarks/bench_understanding.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from rapidfuzz import process
from rapidfuzz.distance import OSA, Levenshtein

MIN_CHARS = 4
# Keys next to each other on a QWERTY keyboard: a slip of the finger, a likely typo.
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_NEAR = {
    a: {
        _ROWS[r2][c2]
        for r2 in range(max(0, r - 1), min(3, r + 2))
        for c2 in range(max(0, c - 1), c + 2)
        if c2 < len(_ROWS[r2])
    }
    - {a}
    for r, row in enumerate(_ROWS)
    for c, a in enumerate(row)
}


def unlikely_edits(typed: str, word: str) -> int:
    """How many of the edits from ``typed`` to ``word`` are substitutions by a key that is
    not next to the right one: ties between candidates at the same distance go to the one a
    slip of the finger explains ("gren": green (a letter left out), not grey)."""
    return sum(
        1
        for op in Levenshtein.editops(typed, word)
        if op.tag == "replace" and word[op.dest_pos] not in _NEAR.get(typed[op.src_pos], ())
    )


def max_edits(word: str) -> int:
    """Edits allowed for a word of this length: 1 up to 6 letters, 2 from 7 ("sandels")."""
    return 1 if len(word) <= 6 else 2


@dataclass(frozen=True)
class Suggestion:
    word: str  # the vocabulary word, as the catalogue spells it (lower case)
    distance: int
    confidence: float


class SpellingCorrector:
    """Corrections towards ``vocabulary`` (compact word -> how often the catalogue uses it)."""

    def __init__(self, vocabulary: Mapping[str, int]):
        self._counts = dict(vocabulary)
        self._words = [w for w in self._counts if len(w) >= MIN_CHARS - 1]
        self._max_count = max(self._counts.values(), default=1)

    def __len__(self) -> int:
        return len(self._words)

    @property
    def counts(self) -> dict[str, int]:
        """The vocabulary: word -> how often the catalogue uses it."""
        return dict(self._counts)

    def suggest(self, word: str) -> Suggestion | None:
        """The nearest *other* vocabulary word to ``word`` (compact lower case), or None
        when it is too short, has digits, or has none within :func:`max_edits`. Whether a
        word needs correcting at all is the caller's to decide (``Lexicon.is_known``)."""
        if len(word) < MIN_CHARS or not word.isalpha():
            return None
        limit = max_edits(word)
        found = process.extract(
            word, self._words, scorer=OSA.distance, score_cutoff=limit, limit=None
        )
        found = [f for f in found if f[0] != word]
        if not found:
            return None

        def rank(item):
            cand, dist, _ = item
            return (dist, cand[0] != word[0], unlikely_edits(word, cand), -self._counts[cand], cand)

        cand, dist, _ = min(found, key=rank)
        # Confidence: one edit in a long word is near-certain; two edits, or a rare word,
        # less so. Shown to shoppers; corrections are applied whatever it is.
        frequency = math.log1p(self._counts[cand]) / math.log1p(self._max_count)
        confidence = max(0.3, min(1.0, 1.0 - 0.25 * (dist - 1) - 4.0 / len(word) * 0.1))
        confidence = round(confidence * (0.8 + 0.2 * frequency), 3)
        return Suggestion(cand, int(dist), confidence)
