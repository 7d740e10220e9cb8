"""A general English word list, so that spelling correction never "corrects" a real word.

Read from the WordNet 3.0 database (Debian ``wordnet-base``): every lemma of the four
index files (nouns, verbs, adjectives, adverbs; single words only) and every inflected
form of its exception lists (``noun.exc``: "geese goose"), plus
:data:`~services.understanding.text.FUNCTION_WORDS`, which WordNet does not list. A word
is English when it is one of those, or reduces to a lemma by WordNet's own detachment
rules (``morphy``: "dresses" -> "dress", "running" -> "run", "bigger" -> "big").

This list only says whether a word exists; it carries no meaning and maps nothing to a
catalogue value, so it is read whole in every configuration (the held-out evaluation
splits only the sources that say what a word *means*: see ``services.understanding.sources``).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from services.understanding.text import FUNCTION_WORDS
from services.understanding.wordnet import DEBIAN_PACKAGE, WordNetMissing

_POS = ("noun", "verb", "adj", "adv")
# WordNet's detachment rules (morphy), per part of speech: (suffix, replacement).
_DETACH = (
    ("s", ""),
    ("ses", "s"),
    ("xes", "x"),
    ("zes", "z"),
    ("ches", "ch"),
    ("shes", "sh"),
    ("men", "man"),
    ("ies", "y"),
    ("es", "e"),
    ("es", ""),
    ("ed", "e"),
    ("ed", ""),
    ("ing", "e"),
    ("ing", ""),
    ("er", ""),
    ("est", ""),
    ("er", "e"),
    ("est", "e"),
)


class EnglishWords:
    """Membership in WordNet's English (with inflections) and the function words."""

    def __init__(self, lemmas: frozenset[str], exceptions: frozenset[str]):
        self._lemmas = lemmas
        self._known = lemmas | exceptions | FUNCTION_WORDS

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, word: str) -> bool:
        w = word.lower().replace("’", "'")
        if w in self._known:
            return True
        if w.endswith("'s") and w[:-2] in self._known:
            return True
        for suffix, repl in _DETACH:
            if (
                w.endswith(suffix)
                and len(w) > len(suffix) + 1
                and w[: -len(suffix)] + repl in self._lemmas
            ):
                return True
        # a doubled consonant before -ed/-ing/-er ("running" -> "runn" -> "run")
        for suffix in ("ing", "ed", "er", "est"):
            base = w[: -len(suffix)]
            if (
                w.endswith(suffix)
                and len(base) > 2
                and base[-1] == base[-2]
                and base[:-1] in self._lemmas
            ):
                return True
        return False


def load_english(path: str | os.PathLike) -> EnglishWords:
    """The word list of the WordNet database in ``path`` (raises WordNetMissing)."""
    return _load(str(Path(path).resolve()))


@lru_cache(maxsize=2)
def _load(path: str) -> EnglishWords:
    folder = Path(path)
    lemmas: set[str] = set()
    exceptions: set[str] = set()
    for pos in _POS:
        index = folder / f"index.{pos}"
        if not index.is_file():
            raise WordNetMissing(
                f"{index} not found: install the Debian package '{DEBIAN_PACKAGE}' "
                "(scripts/setup.sh does) or set FASHION_WORDNET_DIR"
            )
        with open(index, encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                lemma = line.split(" ", 1)[0]
                if "_" not in lemma:
                    lemmas.add(lemma)
        exc = folder / f"{pos}.exc"
        if exc.is_file():
            with open(exc, encoding="utf-8") as fh:
                for line in fh:
                    form = line.split(" ", 1)[0]
                    if form and "_" not in form:
                        exceptions.add(form)
    return EnglishWords(frozenset(lemmas), frozenset(exceptions))
