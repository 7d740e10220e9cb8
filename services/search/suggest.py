"""Type-ahead: completions of what a shopper is typing, from the catalogue's own vocabulary.

Pure Python, no database: :func:`build_index` takes the live version's facet values with
their product counts (article types, colours, brands, sub-categories, usages) and its
products' display names, and returns a :class:`SuggestIndex` that answers
:meth:`SuggestIndex.suggest` in microseconds (the API builds one per live version and
keeps it: ``services.api.suggest``).

The vocabulary (the *entries*):

- every facet value of :data:`FACET_KINDS`, counted by the products that have it; its
  ``kind`` is the field's dataset name, so a client can turn a picked suggestion into a
  filter (``{"articleType": "Jackets"}``);
- *frequent name phrases* (``kind`` ``"phrase"``): word n-grams of 1 to
  :data:`MAX_PHRASE_WORDS` words of the display names, counted by the products whose name
  contains them, kept when at least :data:`MIN_PHRASE_PRODUCTS` products do. A phrase made
  only of stop words or digits, one that starts or ends with a stop word ("Colors of"), or
  one with a word without a letter or digit ("&") is not a phrase. A phrase is dropped when
  a longer entry that contains it matches as many products ("Peter" inside the brand
  "Peter England"): typing it finds the longer entry anyway; so is the singular of a facet
  value that matches as many products ("Jacket" beside the article type "Jackets").
- the same text twice (case-insensitively: the phrase "Jackets" and the article type
  "Jackets") is one entry, the one with the higher count (a tie keeps the facet value).

Matching: an entry is found by a prefix of its whole label and by a prefix of the label
from any of its words on ("jac" finds "Jackets" and "Denim Jacket"; "denim ja" finds
"Denim Jacket"). Matching ignores case and repeated spaces; earlier words must be typed in
full, the last one is completed. Exact prefix matches come first, by product count
(descending) then label. When fewer than ``limit`` match exactly and the last typed word
has more than :data:`TYPO_AFTER` characters, typo-tolerant matches follow: entries where
the last word is within Damerau-Levenshtein (optimal string alignment) distance 1 of a
word's prefix, 2 from :data:`LONG_WORD` characters on ("jakc" and "jaket" find "Jackets";
"jkc" finds nothing). Those carry ``typo=True`` and rank by distance, then product count.
The candidates come from a SymSpell-style index of the deletions of every word prefix, so
a lookup costs a few dictionary probes, not a scan of the vocabulary.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz.distance import OSA

MAX_SUGGESTIONS = 10
# The facet fields whose values are suggested (dataset names; the API's filter keys).
FACET_KINDS: tuple[str, ...] = ("articleType", "baseColour", "brand", "subCategory", "usage")
PHRASE = "phrase"
MAX_PHRASE_WORDS = 3
# A name phrase is suggested when at least this many products' names contain it.
MIN_PHRASE_PRODUCTS = 5
# Typo tolerance starts after this many characters of the last word; distance 2 from
# LONG_WORD characters on (distance 1 below).
TYPO_AFTER = 3
LONG_WORD = 8
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "of",
        "for",
        "with",
        "in",
        "on",
        "at",
        "by",
        "to",
        "from",
        "or",
        "as",
        "is",
        "it",
        "its",
        "this",
        "that",
    ]
)
# Punctuation trimmed from the ends of a display name's words ("(Pack", "Set,").
_TRIM = "\"'()[]{},.;:!?*"
_LETTER_OR_DIGIT = re.compile(r"[^\W_]")
_RESULTS_CACHE_MAX = 8192


@dataclass(frozen=True)
class Suggestion:
    """One completion: its text, where it comes from (a facet field's name or "phrase"),
    how many products of the index match it, and whether it was found despite a typo."""

    text: str
    kind: str
    count: int
    typo: bool = False


def normalise(text: str) -> str:
    """What matching compares: case-folded, whitespace runs as one space, trimmed."""
    return " ".join(text.casefold().split())


def _name_words(name: str) -> list[str]:
    words = []
    for raw in name.split():
        word = raw.strip(_TRIM)
        if word:
            words.append(word)
    return words


def _is_phrase(key: tuple[str, ...]) -> bool:
    if not all(_LETTER_OR_DIGIT.search(w) for w in key):
        return False
    if key[0] in STOPWORDS or key[-1] in STOPWORDS:
        return False
    return not all(w in STOPWORDS or w.isdigit() for w in key)


def name_phrases(
    names: Iterable[str],
    *,
    min_products: int = MIN_PHRASE_PRODUCTS,
    max_words: int = MAX_PHRASE_WORDS,
) -> dict[tuple[str, ...], tuple[str, int]]:
    """Frequent phrases of display names: ``lower-cased words -> (label, products)``, the
    label being the phrase's most frequent spelling; a product counts once per phrase."""
    spellings: Counter[tuple[str, ...]] = Counter()
    for name in names:
        if not isinstance(name, str):
            continue
        words = _name_words(name)
        lowered = [w.casefold() for w in words]
        seen: dict[tuple[str, ...], tuple[str, ...]] = {}
        for n in range(1, max_words + 1):
            for i in range(len(words) - n + 1):
                key = tuple(lowered[i : i + n])
                if key not in seen:
                    seen[key] = tuple(words[i : i + n])
        spellings.update(seen.values())
    counts: Counter[tuple[str, ...]] = Counter()
    best: dict[tuple[str, ...], tuple[int, str]] = {}
    for spelling, count in spellings.items():
        key = tuple(w.casefold() for w in spelling)
        counts[key] += count
        label = " ".join(spelling)
        if key not in best or (count, label) > best[key]:
            best[key] = (count, label)
    return {
        key: (best[key][1], count)
        for key, count in counts.items()
        if count >= min_products and _is_phrase(key)
    }


def _deletes(word: str, distance: int) -> set[str]:
    """``word`` and every string made by deleting up to ``distance`` of its characters."""
    out = {word}
    frontier = {word}
    for _ in range(distance):
        frontier = {w[:i] + w[i + 1 :] for w in frontier for i in range(len(w))}
        out |= frontier
    return out


def _max_distance(word: str) -> int:
    return 2 if len(word) >= LONG_WORD else 1


class SuggestIndex:
    """The vocabulary's entries, findable by prefix (exact) and by a mistyped last word.

    Build with :func:`build_index`. Thread-safe for reading (answers are also cached)."""

    def __init__(self, entries: Iterable[tuple[str, str, int]]):
        # One entry per case-insensitive label: the higher count, a facet value on a tie.
        kind_rank = {kind: i for i, kind in enumerate(FACET_KINDS)}
        chosen: dict[str, tuple[str, str, int]] = {}
        for label, kind, count in entries:
            label = " ".join(str(label).split())
            key = normalise(label)
            if not key or count <= 0:
                continue
            old = chosen.get(key)
            rank = (count, -kind_rank.get(kind, len(FACET_KINDS)))
            if old is None or rank > (old[2], -kind_rank.get(old[1], len(FACET_KINDS))):
                chosen[key] = (label, kind, int(count))
        # Entry ids in rank order (count desc, then label): the best of a set is its min id.
        ordered = sorted(chosen.values(), key=lambda e: (-e[2], e[0].casefold(), e[0], e[1]))
        self.entries: tuple[Suggestion, ...] = tuple(Suggestion(*e) for e in ordered)
        # Every label from each of its words on, sorted: a prefix is a range of keys.
        keyed: list[tuple[str, int]] = []
        vocabulary: set[str] = set()
        for i, entry in enumerate(self.entries):
            words = normalise(entry.text).split(" ")
            vocabulary.update(words)
            keyed.extend((" ".join(words[j:]), i) for j in range(len(words)))
        keyed.sort()
        self._keys = [k for k, _ in keyed]
        self._ids = [i for _, i in keyed]
        # SymSpell-style: each deletion variant of a word prefix -> the prefixes it comes
        # from. Prefixes shorter than TYPO_AFTER are never compared (the typed word is
        # longer than TYPO_AFTER, at most 2 away from the prefix, 2 only for long words).
        variants: dict[str, set[str]] = defaultdict(set)
        prefixes = {w[:n] for w in vocabulary for n in range(TYPO_AFTER, len(w) + 1)}
        for prefix in prefixes:
            distance = 2 if len(prefix) >= LONG_WORD - 2 else 1
            for variant in _deletes(prefix, distance):
                variants[variant].add(prefix)
        self._variants = {v: tuple(sorted(p)) for v, p in variants.items()}
        self._longest = max((len(w) for w in vocabulary), default=0)
        self._cache: dict[tuple[str, int], tuple[Suggestion, ...]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def _prefix_ids(self, prefix: str) -> list[int]:
        """Ids of the entries with a key starting with ``prefix`` (unordered, may repeat)."""
        lo = bisect.bisect_left(self._keys, prefix)
        hi = bisect.bisect_left(self._keys, prefix + "\U0010ffff", lo)
        return self._ids[lo:hi]

    def typo_prefixes(self, word: str) -> list[tuple[int, str]]:
        """``(distance, prefix)`` of the word prefixes within the typo distance of ``word``
        (0 excluded), closest first; none for a word of TYPO_AFTER characters or fewer."""
        limit = _max_distance(word)
        if len(word) <= TYPO_AFTER or len(word) > self._longest + limit:
            return []
        found: dict[str, int] = {}
        for variant in _deletes(word, limit):
            for prefix in self._variants.get(variant, ()):
                if prefix in found or abs(len(prefix) - len(word)) > limit:
                    continue
                d = OSA.distance(word, prefix, score_cutoff=limit)
                if 0 < d <= limit:
                    found[prefix] = d
        return sorted((d, p) for p, d in found.items())

    def suggest(self, text: str, limit: int = MAX_SUGGESTIONS) -> list[Suggestion]:
        """Up to ``limit`` (1..MAX_SUGGESTIONS) completions of ``text``: exact prefix
        matches by count, then typo-tolerant ones (see the module's docstring)."""
        if not 1 <= limit <= MAX_SUGGESTIONS:
            raise ValueError(f"limit must be in 1..{MAX_SUGGESTIONS}, got {limit}")
        query = normalise(text)
        if not query:
            return []
        key = (query, limit)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._suggest(query, limit)
            if len(self._cache) >= _RESULTS_CACHE_MAX:
                self._cache.clear()
            self._cache[key] = cached
        return list(cached)

    def _suggest(self, query: str, limit: int) -> tuple[Suggestion, ...]:
        exact = sorted(set(self._prefix_ids(query)))[:limit]
        out = [self.entries[i] for i in exact]
        if len(out) >= limit:
            return tuple(out)
        head, _, last = query.rpartition(" ")
        head = head + " " if head else ""
        taken = set(exact)
        fuzzy: dict[int, int] = {}  # entry id -> its best distance
        for distance, prefix in self.typo_prefixes(last):
            for i in self._prefix_ids(head + prefix):
                if i not in taken and distance < fuzzy.get(i, distance + 1):
                    fuzzy[i] = distance
        ranked = sorted(fuzzy, key=lambda i: (fuzzy[i], i))[: limit - len(out)]
        out.extend(_typo(self.entries[i]) for i in ranked)
        return tuple(out)


def _typo(entry: Suggestion) -> Suggestion:
    return Suggestion(entry.text, entry.kind, entry.count, typo=True)


def build_index(
    facet_counts: dict[str, Sequence[tuple[str, int]]],
    names: Iterable[str],
    *,
    min_phrase_products: int = MIN_PHRASE_PRODUCTS,
) -> SuggestIndex:
    """The index of a version: ``facet_counts`` (a field's dataset name -> ``(value,
    products)``, fields of FACET_KINDS) and the display names of its products."""
    entries: list[tuple[str, str, int]] = []
    facet_keys: list[tuple[tuple[str, ...], int]] = []
    for kind in FACET_KINDS:
        for value, count in facet_counts.get(kind, ()):
            if isinstance(value, str) and value.strip() and count > 0:
                entries.append((value, kind, int(count)))
                facet_keys.append((tuple(normalise(value).split(" ")), int(count)))
    phrases = name_phrases(names, min_products=min_phrase_products)
    # A phrase inside a longer entry that matches as many products adds nothing.
    longer = [(key, count) for key, (_, count) in phrases.items() if len(key) > 1] + facet_keys
    redundant: set[tuple[str, ...]] = set()
    for key, count in longer:
        for n in range(1, len(key)):
            for i in range(len(key) - n + 1):
                sub = key[i : i + n]
                found = phrases.get(sub)
                if found is not None and found[1] <= count:
                    redundant.add(sub)
    # So does the singular of a facet value ("Jacket" beside the article type "Jackets").
    for key, count in facet_keys:
        last = key[-1]
        for suffix in ("s", "es"):
            if last.endswith(suffix) and len(last) > len(suffix) + 2:
                singular = (*key[:-1], last[: -len(suffix)])
                found = phrases.get(singular)
                if found is not None and found[1] <= count:
                    redundant.add(singular)
    entries.extend(
        (label, PHRASE, count) for key, (label, count) in phrases.items() if key not in redundant
    )
    return SuggestIndex(entries)
