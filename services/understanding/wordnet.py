"""Shopper words from WordNet 3.0: a small reader and the catalogue's senses in it.

Why: the ``paraphrase`` query family takes its shopper words from the team's own synonym
tables (``services.catalog.vocabulary``), so it can only confirm what the team already
thought of. The ``wordnet_*`` families (``evaluation/queries.py``) take their words from
a lexical resource nobody on the team wrote: WordNet 3.0 (Princeton University; the
WordNet 3.0 licence, a BSD-style permissive licence), as shipped by the Debian package
``wordnet-base`` in ``/usr/share/wordnet``.

Two parts:

1. :class:`WordNet`, the reader of the database files (``wordnet_db.py``, re-exported here);
2. The hand-written part: :data:`ARTICLE_SENSES` and :data:`COLOUR_SENSES`, one WordNet
   noun sense per catalogue article type and colour, chosen by reading the glosses (each
   entry keeps the gloss's start so a changed database is caught), and
   :data:`EXCLUDED_SYNSETS`, a short list of synsets whose judgement would be wrong for
   this catalogue (it only removes). Every *word* is derived from WordNet by
   :func:`article_words`, :func:`colour_words` and :func:`hypernym_groups`, with its
   provenance (relation and synset offset), by the rules in :func:`_derive`.

The directory is ``/usr/share/wordnet`` unless an argument or the environment variable
``FASHION_WORDNET_DIR`` names another; missing files raise :class:`WordNetMissing`,
whose message names the Debian package.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from services.catalog import vocabulary as v
from services.understanding.wordnet_db import (
    DEBIAN_PACKAGE,
    DEFAULT_DIR,
    ENV_DIR,
    HYPERNYM,
    HYPONYM,
    POS_FILES,
    Pointer,
    Synset,
    WordNet,
    WordNetMissing,
    normalise_word,
    open_cached,
    open_wordnet,
    parse_data_line,
    resolved_path,
)
from services.understanding.wordnet_senses import (
    ARTICLE_SENSES,
    COLOUR_SENSES,
    EXCLUDED_SYNSETS,
    Sense,
)

__all__ = [
    "ARTICLE_SENSES",
    "COLOUR_SENSES",
    "DEBIAN_PACKAGE",
    "DEFAULT_DIR",
    "ENV_DIR",
    "EXCLUDED_SYNSETS",
    "HYPERNYM",
    "HYPONYM",
    "POS_FILES",
    "Pointer",
    "Sense",
    "Synset",
    "WordNet",
    "WordNetMissing",
    "normalise_word",
    "open_wordnet",
    "parse_data_line",
]


ARTICLE_DEPTH = 2  # hyponym levels below an article type's / colour's sense
COLOUR_DEPTH = 2
HYPERNYM_DEPTH = 3  # hypernym levels above an article type's sense


# --- derived words ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DerivedWord:
    """A shopper word for one catalogue value, with where in WordNet it comes from."""

    word: str
    value: str  # the catalogue value: an articleType or a baseColour
    relation: str  # "synonym" (the value's own synset) or "hyponym"
    depth: int  # 0 for synonyms, else hyponym levels below the value's synset
    offset: int  # the synset the word is a member of

    @property
    def provenance(self) -> str:
        return f"{self.relation}:{self.offset:08d}-n"


@dataclass(frozen=True)
class HypernymGroup:
    """A hypernym word and the catalogue article types whose senses it subsumes."""

    word: str
    offset: int
    types: tuple[str, ...]  # every catalogue type it covers (not only those present)
    depth: int  # fewest hypernym levels from a covered type's sense

    @property
    def provenance(self) -> str:
        return f"hypernym:{self.offset:08d}-n"


def _compact(word: str) -> str:
    return re.sub(r"[^a-z0-9]", "", word.lower())


def word_forms(word: str) -> set[str]:
    """``word`` compacted (lower case, letters and digits only) with simple plural and
    singular forms: ``T-shirt`` -> {tshirt, tshirts, tshirtes}; ``dresses`` -> {..., dress}."""
    k = _compact(word)
    forms = {k, k + "s", k + "es"}
    if k.endswith("s"):
        forms.add(k[:-1])
    if k.endswith("es"):
        forms.add(k[:-2])
    return {f for f in forms if f}


def _same_word(a: str, b: str) -> bool:
    return bool(word_forms(a) & word_forms(b))


def resolve(wn: WordNet, sense: Sense) -> Synset:
    """The synset of ``sense``; ValueError when the database does not agree with the table."""
    synset = wn.sense(sense.lemma, sense.number)
    if synset.offset != sense.offset or not synset.gloss.startswith(sense.gloss):
        raise ValueError(
            f"WordNet at {wn.path} does not match the sense table: {sense.lemma!r} sense "
            f"{sense.number} is {synset.key} {synset.gloss[:60]!r}, expected "
            f"{sense.offset:08d}-n {sense.gloss!r} (WordNet 3.0 is expected)"
        )
    return synset


def _ancestors(wn: WordNet, synset: Synset) -> set[int]:
    return {s.offset for s, _ in wn.hypernyms(synset, depth=64)}


def _catalogue_names() -> tuple[set[str], set[str]]:
    """(article type names and display forms, every other closed-field value)."""

    types = set(v.ARTICLE_TYPES) | {a.display for a in v.ARTICLE_TYPES.values()}
    others = set(v.COLOURS) | set(v.GENDERS) | set(v.SEASONS) | set(v.USAGES)
    return types, others


def _contains_phrase(word: str, phrase: str) -> bool:
    """``phrase`` as whole words of ``word`` ("blue jean" has "blue"; "off-white" has no
    "white": a hyphenated compound is one word)."""
    return f" {phrase.lower()} " in f" {word.lower()} "


def _derive(
    wn: WordNet, senses: Mapping[str, Sense], depth: int, reserved: set[str]
) -> tuple[dict[str, list[DerivedWord]], dict[str, str]]:
    """Synonyms and hyponyms (<= ``depth``) of each value's sense, and why words were dropped.

    The walk down from one value does not enter another value's synset (a t-shirt is a
    shirt in WordNet, but the catalogue files it as Tshirts) nor an
    :data:`EXCLUDED_SYNSETS` one. A hyponym synset that subsumes another value's synset
    (pullover above sweatshirt; light brown above tan and beige) is *contested*, and so is
    every synset below a contested one: its words could mean either value. A word is kept
    for a value only if it is not contested, belongs to no other value's set, is not a
    catalogue name (``reserved``, compared with simple plural/singular forms) and is not
    a quality noun ("blackness", "viridity"). Only words of the value's own sense and its hyponyms
    are used, so every kept word means a kind of the value.
    """
    synsets = {value: resolve(wn, s) for value, s in senses.items()}
    own = {s.offset: value for value, s in synsets.items()}
    ancestors = {value: _ancestors(wn, s) for value, s in synsets.items()}

    def subsumes_other(offset: int, value: str) -> bool:
        return any(offset in anc for other, anc in ancestors.items() if other != value)

    candidates: list[tuple[DerivedWord, bool]] = []  # (word, contested)
    for value, root in synsets.items():
        if not senses[value].exact:
            continue
        # the sense's own words name the value, as the catalogue name does ("gray" = Grey,
        # though grey subsumes silver and charcoal in WordNet)
        candidates += [
            (DerivedWord(w, value, "synonym", 0, root.offset), False) for w in root.words
        ]
        frontier = [(root, False)]
        seen = {root.offset}
        for d in range(1, depth + 1):
            nxt = []
            for parent, parent_contested in frontier:
                for offset, pos in parent.related(HYPONYM):
                    if offset in seen or offset in own or offset in EXCLUDED_SYNSETS:
                        continue
                    seen.add(offset)
                    child = wn.synset(offset, pos)
                    contested = parent_contested or subsumes_other(offset, value)
                    nxt.append((child, contested))
                    candidates += [
                        (DerivedWord(w, value, "hyponym", d, offset), contested)
                        for w in child.words
                    ]
            frontier = nxt

    values_by_form: dict[str, set[str]] = {}
    for dw, _ in candidates:
        for f in word_forms(dw.word):
            values_by_form.setdefault(f, set()).add(dw.value)
    out: dict[str, list[DerivedWord]] = {value: [] for value in senses}
    dropped: dict[str, str] = {}
    for dw, contested in candidates:
        values = set().union(*(values_by_form[f] for f in word_forms(dw.word)))
        reason = ""
        if any(_same_word(dw.word, name) for name in reserved):
            reason = "a catalogue value"
        elif contested:
            reason = f"contested ({dw.provenance} subsumes another value's sense)"
        elif len(values) > 1:
            reason = f"shared by {', '.join(sorted(values))}"
        elif dw.word.endswith(("ness", "ity")):
            reason = "a quality noun (-ness, -ity), not a name"
        if reason:
            dropped.setdefault(dw.word, reason)
        elif all(not _same_word(dw.word, k.word) for k in out[dw.value]):
            out[dw.value].append(dw)
    return out, dropped


def _colour_names(wn: WordNet) -> dict[str, set[str]]:
    """Catalogue colour -> the phrases that name it: its catalogue name and the words of its
    own WordNet sense (Grey: "grey", "gray"; Navy Blue: "navy blue", "navy", "dark blue")."""

    names = {c: {c.lower()} for c in v.COLOURS}
    for colour, sense in COLOUR_SENSES.items():
        names[colour] |= {w for w in resolve(wn, sense).words if not w.endswith(("ness", "ity"))}
    return names


def _names_other_value(word: str, value: str, names: Mapping[str, set[str]]) -> str | None:
    """The other colour ``word`` names, unless it also names ``value`` (a part of its
    catalogue name or another of its own words): "brick red" for Brown -> "Red", "ash gray"
    for Silver -> "Grey", "charcoal gray" for Charcoal -> None."""
    own = set(value.lower().split()) | (names[value] - {word})
    if any(_contains_phrase(word, phrase) for phrase in own):
        return None
    return next(
        (
            other
            for other, phrases in names.items()
            if other != value and any(_contains_phrase(word, phrase) for phrase in phrases)
        ),
        None,
    )


@lru_cache(maxsize=4)
def _article_words(path: str) -> tuple[dict[str, list[DerivedWord]], dict[str, str]]:
    type_names, others = _catalogue_names()
    wn = open_cached(path)
    words, dropped = _derive(wn, ARTICLE_SENSES, ARTICLE_DEPTH, type_names | others)
    colours = _colour_names(wn)

    def names_a_colour(value: str, word: str) -> str | None:  # "blue jean" reads as a colour query
        colour = next(
            (
                c
                for c, phrases in colours.items()
                if any(_contains_phrase(word, p) for p in phrases)
            ),
            None,
        )
        return f"contains the colour {colour!r}" if colour else None

    _drop_where(words, dropped, names_a_colour)
    return words, dropped


def _drop_where(words: dict[str, list[DerivedWord]], dropped: dict[str, str], reason) -> None:
    """Remove (in place) every derived word for which ``reason(value, word)`` gives a reason;
    the first reason given for a word is recorded in ``dropped``."""
    for value, found in words.items():
        keep = []
        for dw in found:
            why = reason(value, dw.word)
            if why:
                dropped.setdefault(dw.word, why)
            else:
                keep.append(dw)
        words[value] = keep


@lru_cache(maxsize=4)
def _colour_words(path: str) -> tuple[dict[str, list[DerivedWord]], dict[str, str]]:
    type_names, others = _catalogue_names()
    wn = open_cached(path)
    words, dropped = _derive(wn, COLOUR_SENSES, COLOUR_DEPTH, type_names | others)
    names = _colour_names(wn)

    def names_another_colour(
        value: str, word: str
    ) -> str | None:  # "brick red" (a brown) reads as Red
        other = _names_other_value(word, value, names)
        return f"names the colour {other!r}, not {value!r}" if other else None

    _drop_where(words, dropped, names_another_colour)
    return words, dropped


def article_words(path: str | os.PathLike | None = None) -> dict[str, tuple[DerivedWord, ...]]:
    """articleType -> its WordNet shopper words (each maps to that type only)."""
    open_cached(resolved_path(path))  # raises WordNetMissing first
    return {k: tuple(v) for k, v in _article_words(resolved_path(path))[0].items()}


def colour_words(path: str | os.PathLike | None = None) -> dict[str, tuple[DerivedWord, ...]]:
    """baseColour -> its WordNet colour words (each maps to that colour only)."""
    open_cached(resolved_path(path))
    return {k: tuple(v) for k, v in _colour_words(resolved_path(path))[0].items()}


def dropped_words(path: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    """{"article": {word: reason}, "colour": {word: reason}}: what the rules removed."""
    p = resolved_path(path)
    open_cached(p)
    return {"article": dict(_article_words(p)[1]), "colour": dict(_colour_words(p)[1])}


@lru_cache(maxsize=4)
def _hypernym_candidates(path: str) -> tuple[HypernymGroup, ...]:
    wn = open_cached(path)
    synsets = {t: resolve(wn, s) for t, s in ARTICLE_SENSES.items()}
    ancestors = {t: _ancestors(wn, s) for t, s in synsets.items()}
    type_names, others = _catalogue_names()
    best: dict[int, tuple[Synset, int]] = {}
    for synset in synsets.values():
        for hyper, d in wn.hypernyms(synset, HYPERNYM_DEPTH):
            if hyper.offset not in best or d < best[hyper.offset][1]:
                best[hyper.offset] = (hyper, d)
    # an exact type's own sense is not a hypernym query: its words are that type's synonyms
    # (judged like the catalogue name: "pant" -> Trousers); a broader one (shoe) is
    exact_own = {synsets[t].offset for t, s in ARTICLE_SENSES.items() if s.exact}
    derived = [dw.word for found in _article_words(path)[0].values() for dw in found]
    derived += [dw.word for found in _colour_words(path)[0].values() for dw in found]
    groups = []
    for offset, (hyper, d) in sorted(best.items()):
        if offset in EXCLUDED_SYNSETS or offset in exact_own:
            continue
        covered = tuple(
            t for t in ARTICLE_SENSES if synsets[t].offset == offset or offset in ancestors[t]
        )
        for w in hyper.words:
            if not any(_same_word(w, n) for n in [*type_names, *others, *derived]):
                groups.append(HypernymGroup(w, offset, covered, d))
    return tuple(groups)


def hypernym_groups(
    present_types: Iterable[str], path: str | os.PathLike | None = None
) -> list[HypernymGroup]:
    """Hypernym words (<= 3 levels above the types' senses) usable for a catalogue with
    ``present_types``; each group's ``types`` is cut down to the present ones.

    Kept: covers >= 2 present types but not all of them, within one masterCategory
    ("covering" spans apparel and footwear); of hypernyms covering the same present
    types only the most specific (clothing, not consumer goods); none in
    :data:`EXCLUDED_SYNSETS`; no catalogue value or word of another family.
    """

    p = resolved_path(path)
    wn = open_cached(p)
    present = {t for t in present_types if t in ARTICLE_SENSES}
    by_set: dict[tuple[str, ...], list[HypernymGroup]] = {}
    for g in _hypernym_candidates(p):
        covered = tuple(t for t in g.types if t in present)
        masters = {v.ARTICLE_TYPES[t].master_category for t in covered}
        if len(covered) < 2 or set(covered) == present or len(masters) > 1:
            continue
        by_set.setdefault(covered, []).append(HypernymGroup(g.word, g.offset, covered, g.depth))
    out: list[HypernymGroup] = []
    for groups in by_set.values():
        offsets = {g.offset for g in groups}
        # most specific: drop a synset that is an ancestor of another one in the same set
        keep = {
            o
            for o in offsets
            if not any(o in _ancestors(wn, wn.synset(other)) for other in offsets - {o})
        }
        out += [g for g in groups if g.offset in keep]
    return sorted(out, key=lambda g: (g.types, g.word))
