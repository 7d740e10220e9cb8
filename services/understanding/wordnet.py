"""Shopper words from WordNet 3.0: a small reader and the catalogue's senses in it.

Why: the ``paraphrase`` query family takes its shopper words from the team's own synonym
tables (``services.catalog.vocabulary``), so it can only confirm what the team already
thought of. The ``wordnet_*`` families (``evaluation/queries.py``) take their words from
a lexical resource nobody on the team wrote: WordNet 3.0 (Princeton University; the
WordNet 3.0 licence, a BSD-style permissive licence), as shipped by the Debian package
``wordnet-base`` in ``/usr/share/wordnet``.

Two parts:

1. :class:`WordNet`, a dependency-free reader of the WordNet database files (format:
   ``man 5 wndb``). ``index.<pos>`` lines are ``lemma pos synset_cnt p_cnt [ptr_symbol...]
   sense_cnt tagsense_cnt synset_offset...`` (offsets in sense order); ``data.<pos>``
   lines are ``offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt
   [ptr...] | gloss`` (``w_cnt`` hexadecimal, each pointer ``symbol offset pos
   source/target``), and a synset's offset is the byte offset of its line. ``@``/``@i``
   point to (instance) hypernyms, ``~``/``~i`` to (instance) hyponyms.
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from services.catalog import vocabulary as v
from services.config import get_settings

DEFAULT_DIR = "/usr/share/wordnet"
ENV_DIR = "FASHION_WORDNET_DIR"
DEBIAN_PACKAGE = "wordnet-base"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
HYPERNYM = ("@", "@i")
HYPONYM = ("~", "~i")
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


class WordNetMissing(FileNotFoundError):
    """The WordNet database files are not where they were looked for."""


@dataclass(frozen=True)
class Pointer:
    symbol: str  # "@" hypernym, "~" hyponym, "@i"/"~i" instance, ...
    offset: int
    pos: str
    source_target: str  # "0000" = between synsets, else word numbers (hex)


@dataclass(frozen=True)
class Synset:
    offset: int
    pos: str  # ss_type: n, v, a, s, r
    lex_filenum: int
    words: tuple[str, ...]  # normalised: lower case, spaces, no adjective markers
    pointers: tuple[Pointer, ...]
    gloss: str

    @property
    def key(self) -> str:
        """The offset as WordNet prints it, with the part of speech: ``04370048-n``."""
        return f"{self.offset:08d}-{self.pos}"

    def related(self, symbols: Iterable[str]) -> list[tuple[int, str]]:
        """(offset, pos) of the synsets this one points to with any of ``symbols``."""
        wanted = set(symbols)
        return [(p.offset, p.pos) for p in self.pointers if p.symbol in wanted]


def normalise_word(word: str) -> str:
    """``Turkish_towel(a)`` -> ``turkish towel``: spaces, lower case, no syntactic marker."""
    return _ADJ_MARKER.sub("", word).replace("_", " ").lower().strip()


def _lemma_key(lemma: str) -> str:
    return lemma.strip().lower().replace(" ", "_")


def parse_data_line(line: str) -> Synset:
    """One ``data.<pos>`` line -> :class:`Synset` (raises ValueError on a malformed line)."""
    body, _, gloss = line.partition(" | ")
    f = body.split()
    offset, lex_filenum, ss_type = int(f[0]), int(f[1]), f[2]
    w_cnt = int(f[3], 16)
    words = tuple(normalise_word(f[4 + 2 * i]) for i in range(w_cnt))
    i = 4 + 2 * w_cnt
    p_cnt = int(f[i])
    pointers = tuple(
        Pointer(f[i + 1 + 4 * j], int(f[i + 2 + 4 * j]), f[i + 3 + 4 * j], f[i + 4 + 4 * j])
        for j in range(p_cnt)
    )
    return Synset(offset, ss_type, lex_filenum, words, pointers, gloss.strip())


class WordNet:
    """Read-only access to one WordNet database directory (index + data files)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path or get_settings().wordnet_dir)
        needed = [
            self.path / f"{kind}.{name}" for name in ("noun", "adj") for kind in ("index", "data")
        ]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise WordNetMissing(
                f"WordNet 3.0 database files not found: {', '.join(missing)}. Install the "
                f"Debian package '{DEBIAN_PACKAGE}' (apt-get install {DEBIAN_PACKAGE}; "
                f"scripts/setup.sh does) or point ${ENV_DIR} at a directory holding "
                f"index.noun and data.noun."
            )
        self._index: dict[str, dict[str, tuple[int, ...]]] = {}
        self._synsets: dict[tuple[int, str], Synset] = {}

    # --- files -----------------------------------------------------------------------------
    def _file(self, kind: str, pos: str) -> Path:
        path = self.path / f"{kind}.{POS_FILES[pos]}"
        if not path.is_file():
            raise WordNetMissing(f"{path} not found (Debian package '{DEBIAN_PACKAGE}')")
        return path

    def _lemma_index(self, pos: str) -> dict[str, tuple[int, ...]]:
        name = POS_FILES[pos]
        if name not in self._index:
            table: dict[str, tuple[int, ...]] = {}
            with open(self._file("index", pos), encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith(" "):  # the licence header
                        continue
                    f = line.split()
                    p_cnt = int(f[3])
                    sense_cnt = int(f[4 + p_cnt])
                    offsets = f[6 + p_cnt : 6 + p_cnt + sense_cnt]
                    table[f[0]] = tuple(int(o) for o in offsets)
            self._index[name] = table
        return self._index[name]

    # --- look-ups --------------------------------------------------------------------------
    def synset(self, offset: int, pos: str = "n") -> Synset:
        """The synset at byte ``offset`` of ``data.<pos>``; KeyError if none starts there."""
        key = (int(offset), "a" if pos == "s" else pos)
        if key not in self._synsets:
            with open(self._file("data", pos), "rb") as fh:
                fh.seek(key[0])
                line = fh.readline().decode("utf-8")
            try:
                synset = parse_data_line(line)
            except (ValueError, IndexError):
                synset = None
            if synset is None or synset.offset != key[0]:
                raise KeyError(f"no {POS_FILES[pos]} synset at offset {offset:08d}")
            self._synsets[key] = synset
        return self._synsets[key]

    def synsets(self, lemma: str, pos: str = "n") -> list[Synset]:
        """Every sense of ``lemma`` (exact lemma, no morphology), most frequent first."""
        return [self.synset(o, pos) for o in self._lemma_index(pos).get(_lemma_key(lemma), ())]

    def sense(self, lemma: str, number: int, pos: str = "n") -> Synset:
        """Sense ``number`` (1-based, as WordNet numbers them) of ``lemma``."""
        senses = self.synsets(lemma, pos)
        if not 1 <= number <= len(senses):
            raise KeyError(
                f"{lemma!r} has {len(senses)} {POS_FILES[pos]} senses, not a sense {number}"
            )
        return senses[number - 1]

    def _walk(
        self, synset: Synset, symbols: Sequence[str], depth: int
    ) -> Iterator[tuple[Synset, int]]:
        """Breadth-first (synset, distance) along ``symbols``, each synset once, <= depth."""
        seen = {(synset.offset, synset.pos)}
        frontier = [synset]
        for d in range(1, depth + 1):
            nxt = []
            for s in frontier:
                for offset, pos in s.related(symbols):
                    target = self.synset(offset, pos)
                    if (target.offset, target.pos) in seen:
                        continue
                    seen.add((target.offset, target.pos))
                    nxt.append(target)
                    yield target, d
            frontier = nxt

    def hypernyms(self, synset: Synset, depth: int = 1) -> list[tuple[Synset, int]]:
        """(hypernym, distance) up to ``depth`` steps up (instance hypernyms included)."""
        return list(self._walk(synset, HYPERNYM, depth))

    def hyponyms(self, synset: Synset, depth: int = 1) -> list[tuple[Synset, int]]:
        """(hyponym, distance) up to ``depth`` steps down (instance hyponyms included)."""
        return list(self._walk(synset, HYPONYM, depth))


@lru_cache(maxsize=4)
def _open(path: str) -> WordNet:
    return WordNet(path)


def _resolved_path(path: str | os.PathLike | None) -> str:
    return str(Path(path or get_settings().wordnet_dir).resolve())


def open_wordnet(path: str | os.PathLike | None = None) -> WordNet:
    """A (cached) :class:`WordNet` for ``path``, else ``$FASHION_WORDNET_DIR``, else
    ``/usr/share/wordnet``; raises :class:`WordNetMissing` naming the Debian package."""
    return _open(_resolved_path(path))


# --- the hand-written part: one WordNet noun sense per catalogue value -----------------------
@dataclass(frozen=True)
class Sense:
    """A catalogue value's WordNet noun sense: ``lemma`` sense ``number`` at ``offset``.

    ``gloss`` is the start of the sense's gloss, checked on resolution so that another
    WordNet release (different offsets or senses) fails loudly instead of mapping
    silently to something else. ``exact=False`` marks the nearest *broader* sense where
    WordNet has none for the catalogue value: it places the value in the hierarchy
    (hypernym queries, pruning of the other values' subtrees) but its words and hyponyms
    are not kinds of the value, so it contributes no words.
    """

    lemma: str
    number: int
    offset: int
    gloss: str
    exact: bool = True
    note: str = ""


# Every article type in vocabulary.ARTICLE_TYPES (tested), chosen by reading the glosses.
ARTICLE_SENSES: dict[str, Sense] = {
    "Tshirts": Sense("t-shirt", 1, 3595614, "a close-fitting pullover shirt"),
    "Tops": Sense("top", 10, 4453666, "a garment (especially for women) that extends from"),
    "Shirts": Sense("shirt", 1, 4197391, "a garment worn on the upper half of the body"),
    "Sweaters": Sense("sweater", 1, 4370048, "a crocheted or knitted garment covering"),
    "Sweatshirts": Sense("sweatshirt", 1, 4370456, "cotton knit pullover with long sleeves"),
    "Jackets": Sense("jacket", 1, 3589791, "a short coat"),
    "Trousers": Sense("trouser", 1, 4489008, "(usually in the plural) a garment extending"),
    "Jeans": Sense("jean", 1, 3594734, "(usually plural) close-fitting trousers of heavy"),
    "Track Pants": Sense(
        "sweatpants",
        1,
        4370288,
        "loose-fitting trousers with elastic cuffs",
        note="WordNet has no 'track pants'; sweatpants is the same garment",
    ),
    "Dresses": Sense("dress", 1, 3236735, "a one-piece garment for a woman"),
    "Sandals": Sense("sandal", 1, 4133789, "a shoe consisting of a sole fastened by straps"),
    "Sports Shoes": Sense(
        "sneaker",
        1,
        3472535,
        "a canvas shoe with a pliable rubber sole",
        note="gym shoe / sneaker / tennis shoe; WordNet has no athletic shoe",
    ),
    "Casual Shoes": Sense(
        "shoe",
        1,
        4199027,
        "footwear shaped to fit the foot (below the",
        exact=False,
        note="no casual-shoe sense; shoe's hyponyms include running shoes, "
        "cleats, pumps and swim fins, which are not casual shoes",
    ),
    "Boots": Sense("boot", 1, 2872752, "footwear that covers the whole foot and lower leg"),
    "Handbags": Sense("handbag", 1, 2774152, "a container used for carrying money and small"),
}

# Catalogue colours with a colour sense (lex file noun.attribute). Skipped: Khaki (WordNet's
# only sense is the cloth).
COLOUR_SENSES: dict[str, Sense] = {
    "Black": Sense("black", 1, 4960277, "the quality or state of the achromatic color of least"),
    "White": Sense("white", 2, 4960729, "the quality or state of the achromatic color of great"),
    "Blue": Sense("blue", 1, 4968895, "blue color or pigment"),
    "Navy Blue": Sense("navy blue", 1, 4969703, "a dark shade of blue"),
    "Grey": Sense("grey", 5, 4961691, "a neutral achromatic color midway between white and"),
    "Charcoal": Sense("charcoal", 3, 4962240, "a very dark grey color"),
    "Red": Sense("red", 1, 4962784, "red color or pigment"),
    "Maroon": Sense("maroon", 2, 4964878, "a dark purplish-red to dark brownish-red color"),
    "Green": Sense("green", 1, 4967191, "green color or pigment"),
    "Olive": Sense("olive", 5, 4974340, "a yellow-green color of low brightness"),
    "Brown": Sense("brown", 1, 4971928, "an orange of low brightness and saturation"),
    "Tan": Sense("tan", 2, 4973020, "a light brown the color of topaz"),
    "Beige": Sense("beige", 1, 4973291, "a very light brown"),
    "Cream": Sense(
        "off-white",
        1,
        4961331,
        "a shade of white the color of bleached bones",
        note="no cream colour sense; off-white (ivory, bone, pearl) is the nearest",
    ),
    "Pink": Sense("pink", 1, 4970916, "a light shade of red"),
    "Magenta": Sense("magenta", 1, 4964586, "a primary subtractive color for light"),
    "Purple": Sense("purple", 1, 4970059, "a purple color or pigment"),
    "Lavender": Sense("lavender", 2, 4970470, "a pale purple color"),
    "Yellow": Sense("yellow", 1, 4965661, "yellow color or pigment"),
    "Mustard": Sense(
        "brownish yellow",
        1,
        4966428,
        "a yellow color of low lightness with a",
        note="no mustard colour sense; this gloss describes mustard. Its one word "
        "reads as Yellow and is dropped, but the sense keeps it out of "
        "Yellow's words",
    ),
    "Orange": Sense("orange", 2, 4965179, "orange color or pigment"),
    "Peach": Sense("peach", 4, 4971675, "a shade of pink tinged with yellow"),
    "Teal": Sense("teal", 1, 4968426, "a blue-green color or pigment"),
    "Turquoise Blue": Sense("turquoise", 2, 4969798, "a shade of blue tinged with green"),
    "Silver": Sense("silver", 3, 4962062, "a light shade of grey"),
    "Gold": Sense("gold", 2, 4966240, "a deep yellow color"),
}

# Synsets (with everything below them) whose relevance judgement would be wrong for this
# catalogue. The list only removes: every word still comes from WordNet. It is for wrong
# judgements, not for words that are rare or hard for the models.
EXCLUDED_SYNSETS: dict[int, str] = {
    # hypernyms
    3419014: "garment: WordNet files dress and top under woman's clothing, not garment, so "
    "dresses and tops would be judged not relevant to 'garment'",
    4596852: "woman's clothing: a gender, not a kind of article; a woman's jacket would be "
    "judged not relevant",
    # hyponyms of a catalogue type's sense that the catalogue type does not hold
    4205318: "shorts (short pants, trunks, hot pants, ...): the catalogue's Trousers are "
    "full length; long trousers are not relevant to 'shorts'",
    2896442: "breeches / knickers: trousers ending above the knee ('knickers' is also "
    "British underwear)",
    3877674: "pajama: nightwear, not trousers",
    3357081: "flannel / gabardine / tweed / white: fabric (and colour) names first; in a "
    "shop 'flannel' means flannel shirts as much as trousers",
    3978966: "polo shirt / sport shirt: shops (and the real dataset) sell polos as T-shirts",
    4390577: "tank top: sold as a top or vest, not as a shirt",
    3629231: "kurta: a garment of its own (the real dataset has a Kurtas type), not a shirt",
    2861387: "bodice: 'part of a dress above the waist', not a product",
    4136161: "sari: a draped garment of its own (the real dataset has a Sarees type)",
}

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
    wn = _open(path)
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
    wn = _open(path)
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
    _open(_resolved_path(path))  # raises WordNetMissing first
    return {k: tuple(v) for k, v in _article_words(_resolved_path(path))[0].items()}


def colour_words(path: str | os.PathLike | None = None) -> dict[str, tuple[DerivedWord, ...]]:
    """baseColour -> its WordNet colour words (each maps to that colour only)."""
    _open(_resolved_path(path))
    return {k: tuple(v) for k, v in _colour_words(_resolved_path(path))[0].items()}


def dropped_words(path: str | os.PathLike | None = None) -> dict[str, dict[str, str]]:
    """{"article": {word: reason}, "colour": {word: reason}}: what the rules removed."""
    p = _resolved_path(path)
    _open(p)
    return {"article": dict(_article_words(p)[1]), "colour": dict(_colour_words(p)[1])}


@lru_cache(maxsize=4)
def _hypernym_candidates(path: str) -> tuple[HypernymGroup, ...]:
    wn = _open(path)
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

    p = _resolved_path(path)
    wn = _open(p)
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
