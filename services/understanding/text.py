"""How query understanding reads words: tokens, their matching keys, and function words.

A *token* is a run of letters and digits, possibly joined by an inner hyphen or apostrophe
("t-shirt", "women's"). Its *key* is what matching compares: lower case, letters and digits
only, with a regular plural ending removed ("T-Shirts" -> "tshirt", "dresses" -> "dress",
"women's" -> "women"), so a phrase matches in the singular or the plural, with or without
its hyphen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"[^\W_]+(?:['’\-][^\W_]+)*", re.UNICODE)
_NOT_ALNUM = re.compile(r"[^a-z0-9]")

# Words that carry no product meaning (WordNet lists content words only, so these are
# known English words that are never corrected and never left for the semantic step).
FUNCTION_WORDS: frozenset[str] = frozenset(
    """
    a an the and or but nor of for to in on at by with without from into onto over under
    up down off out about above below near like as than so too very just only also
    i me my mine we us our you your yours he him his she her hers it its they them their
    this that these those what which who whom whose where when why how
    is am are was were be been being do does did have has had will would shall should
    can could may might must
    some any all each every no not none both either neither few many much more most
    something anything everything nothing someone anyone one ones
    please show find get want need looking look buy me im i'm id i'd
    new nice good great best cheap pair pairs set piece item items stuff thing things
    wear wearing worn outfit outfits clothes clothing
    """.split()  # noqa: SIM905 - a word list reads best as words
)


@dataclass(frozen=True)
class Token:
    """One word of a query: its text as typed (lower case), its key, and where it was."""

    text: str
    key: str
    start: int
    end: int


def stem(word: str) -> str:
    """``word`` (already compacted) without a regular plural ending: dresses -> dress,
    watches -> watch, shoes -> shoe, jeans -> jean, glass -> glass, bus -> bus."""
    if len(word) > 4 and word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def compact(word: str) -> str:
    """Lower case, letters and digits only: ``T-Shirt`` -> ``tshirt``."""
    return _NOT_ALNUM.sub("", word.lower().replace("’", "'").replace("'s", ""))


def key(word: str) -> str:
    """The matching key of a word or a multi-word phrase (each word's key, space-joined)."""
    return " ".join(stem(compact(w)) for w in word.split() if compact(w))


def tokens(text: str) -> list[Token]:
    """The words of ``text``, with their keys and character spans (empty keys dropped)."""
    out = []
    for m in _TOKEN.finditer(text.lower()):
        k = stem(compact(m.group()))
        if k:
            out.append(Token(m.group(), k, m.start(), m.end()))
    return out


def words(text: str) -> list[str]:
    """The lower-case words of ``text`` as typed (:func:`tokens`' texts)."""
    return [t.text for t in tokens(text)]
