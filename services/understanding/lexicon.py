"""The lexicon query understanding reads: what each word or phrase means in catalogue values.

Built from (in order of precedence, the first meaning of a phrase wins within a field):

1. **the catalogue itself** (the live index's products): every value of the recognised
   fields ("Sports Shoes", "Navy Blue", "Women", "Summer") and how product names spell
   article types ("T-shirt"); its words with their counts are also the spelling vocabulary;
2. **merchandiser rules** (``synonym_rules``: ``kicks -> sports shoes, casual shoes``);
3. **WordNet 3.0** words for article types and colours (``services.understanding.wordnet``:
   "cardigan" -> Sweaters, "crimson" -> Red; hypernyms: "footwear" -> the footwear types);
4. **named colours** (XKCD, CSS4; ``services.understanding.colours``: "emerald" -> Green by
   CIEDE2000).

**Sources and the held-out split.** Evaluation must not grade the rewriter on words it
read, so each source's words are split in two by a hash of the word
(:func:`side_of`, the same for every source, so a word held out of one is held out of all):
with ``sources="reader-half"`` the lexicon reads only the ``reader`` half of rules, WordNet
and colour names, and the evaluation's held-out families ask with the other half
(``evaluation.queries``). The shipped configuration (``sources="all"``) reads everything.
The English word list (spelling: "is this a real word?") and the catalogue are read whole
in both: neither says what a shopper's word means.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from services.catalog.vocabulary import ARTICLE_TYPES
from services.understanding import colours as colour_table
from services.understanding.english import EnglishWords, load_english
from services.understanding.rules import Rule
from services.understanding.rules import fingerprint as rules_fingerprint
from services.understanding.spelling import SpellingCorrector
from services.understanding.text import FUNCTION_WORDS, compact, key, tokens

log = logging.getLogger(__name__)

READER, HELD_OUT = "reader", "held-out"
SOURCES = ("all", "reader-half")
# Fields a phrase can be recognised as (dataset names), in the order chips are shown.
FIELDS = (
    "articleType",
    "baseColour",
    "gender",
    "usage",
    "season",
    "subCategory",
    "masterCategory",
    "brand",
)
# Fields whose recognised shopper words are rewritten to the catalogue's words.
REWRITE_FIELDS = ("articleType", "baseColour", "gender", "usage", "season")
MAX_PHRASE_WORDS = 4
# Confidence of a meaning by where it comes from (a colour name's also falls with its
# perceptual distance from the nearest catalogue colour).
CONFIDENCE = {"catalogue": 1.0, "rule": 1.0, "wordnet": 0.9, "wordnet hypernym": 0.8}
SHADE_CLOSE_DE = (
    10.0  # a named colour this close (CIEDE2000) to a catalogue colour: full confidence
)
SHADE_FAR_DE = 40.0  # ... this far: the lowest confidence
SHADE_MIN_CONFIDENCE = 0.3
# A word of WordNet or the colour table is a spelling correction's target only from this long.
MIN_SOURCE_CORRECTION_CHARS = 6


def side_of(word: str) -> str:
    """``reader`` or ``held-out``: a stable hash of the word's key (same for every source)."""
    digest = hashlib.sha256(f"lexicon-split:{key(word)}".encode()).digest()
    return HELD_OUT if int.from_bytes(digest[:8], "big") / 2**64 < 0.5 else READER


@dataclass(frozen=True)
class Meaning:
    """What a phrase means: catalogue values of one field (with shares), the words a rewrite
    puts in its place, how sure, and where the knowledge comes from."""

    field: str | None  # a FIELDS name; None: a rule that expands to words that are no value
    values: tuple[tuple[str, float], ...]  # (catalogue value, share); shares sum to 1
    canonical: str  # the catalogue's words for it ("sports shoes or casual shoes")
    confidence: float
    source: str  # "catalogue" | "rule" | "wordnet" | "wordnet hypernym" | "colour table"
    literal: bool = False  # the catalogue's own word: recognised, nothing to rewrite
    rule_id: int | None = None
    rule: str | None = None  # the rule as written, "kicks -> sneakers"


@dataclass
class Lexicon:
    """An immutable snapshot of everything understanding reads (rebuilt, never edited)."""

    phrases: dict[str, list[Meaning]]
    corrector: SpellingCorrector
    english: EnglishWords
    catalogue_words: dict[str, int]  # compact word -> occurrences in names and values
    values: dict[str, tuple[str, ...]]  # field -> catalogue values present
    sources: str = "all"
    rules_fingerprint: str = ""
    version_id: int | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.max_words = max((len(k.split()) for k in self.phrases), default=1)
        self.phrase_words = frozenset(w for k in self.phrases for w in k.split())

    @property
    def fingerprint(self) -> str:
        return f"v{self.version_id}:{self.sources}:{self.rules_fingerprint}"

    def meanings(self, phrase_key: str) -> list[Meaning]:
        return self.phrases.get(phrase_key, [])

    def is_known(self, word: str) -> bool:
        """A word that is never corrected: a catalogue word (brands included), a word of a
        lexicon phrase, a function word, or English."""
        c = compact(word)
        return (
            c in self.catalogue_words
            or key(word) in self.phrase_words
            or word in FUNCTION_WORDS
            or word in self.english
            or c in self.english
        )


# --- building --------------------------------------------------------------------------------
def _catalogue_phrases(values: Mapping[str, Iterable[str]]) -> _Phrases:
    out = _Phrases()
    for fld in FIELDS:
        for value in sorted(values.get(fld, ())):
            spellings = {value}
            if fld == "articleType" and value in ARTICLE_TYPES:
                spellings.add(ARTICLE_TYPES[value].display)
            if fld == "articleType" and value == "Tshirts":
                spellings |= {"t shirt", "tee shirt"}
            meaning = Meaning(fld, ((value, 1.0),), value.lower(), 1.0, "catalogue", literal=True)
            for s in spellings:
                _add(out, s, meaning)
    return out


def _resolve(
    words: Iterable[str], catalogue: Mapping[str, list[Meaning]]
) -> tuple[str | None, tuple]:
    """The one field the words name catalogue values of (article type first), with their
    values in equal shares; (None, ()) when they name no value or several fields."""
    found: dict[str, list[str]] = defaultdict(list)
    for w in words:
        for m in catalogue.get(key(w), ()):
            if m.values[0][0] not in found[m.field]:
                found[m.field].append(m.values[0][0])
    for fld in REWRITE_FIELDS:
        vals = found.get(fld)
        if vals and sum(len(v) for v in found.values()) == len(vals):
            return fld, tuple((v, 1.0 / len(vals)) for v in vals)
    return None, ()


class _Phrases(defaultdict):
    """phrase key -> meanings, remembering how each phrase was spelt (for spelling)."""

    def __init__(self) -> None:
        super().__init__(list)
        self.spellings: set[str] = set()


def _add(out: _Phrases, phrase: str, meaning: Meaning) -> bool:
    """Add ``meaning`` unless the phrase already has a meaning of that field (precedence)."""
    k = key(phrase)
    if not k or len(k.split()) > MAX_PHRASE_WORDS:
        return False
    if any(m.field == meaning.field for m in out[k]):
        return False
    if meaning.source not in ("catalogue", "rule") and any(m.source == "rule" for m in out[k]):
        return False  # a merchandiser's rule for the phrase overrides the other sources
    out[k].append(meaning)
    out.spellings.update(compact(w) for w in phrase.split())
    return True


def _canonical(values: tuple[tuple[str, float], ...], fld: str | None) -> str:
    def spell(v: str) -> str:
        if fld == "articleType" and v in ARTICLE_TYPES:
            return ARTICLE_TYPES[v].display.lower()
        return v.lower()

    return " or ".join(spell(v) for v, _ in values)


def _rule_meanings(out: dict[str, list[Meaning]], rules: Iterable[Rule], catalogue, reads) -> int:
    n = 0
    for rule in rules:
        for term_key, synonyms in rule.expansions().items():
            term = next(t for t in rule.terms if key(t) == term_key)
            if not synonyms or not reads(term):
                continue
            fld, values = _resolve(synonyms, catalogue)
            meaning = Meaning(
                fld,
                values,
                " or ".join(synonyms),
                CONFIDENCE["rule"],
                "rule",
                rule_id=rule.id,
                rule=str(rule),
            )
            n += _add(out, term, meaning)
    return n


def _wordnet_meanings(out, present: Mapping[str, tuple[str, ...]], wordnet_dir, reads) -> int:
    from services.understanding import wordnet  # noqa: PLC0415 - deferred: only lexicon builds read WordNet

    n = 0
    types = set(present.get("articleType", ()))
    colours = set(present.get("baseColour", ()))
    for fld, table, allowed in (
        ("articleType", wordnet.article_words(wordnet_dir), types),
        ("baseColour", wordnet.colour_words(wordnet_dir), colours),
    ):
        for value, found in table.items():
            if value not in allowed:
                continue
            vals = ((value, 1.0),)
            for dw in found:
                if reads(dw.word):
                    m = Meaning(fld, vals, _canonical(vals, fld), CONFIDENCE["wordnet"], "wordnet")
                    n += _add(out, dw.word, m)
    for group in wordnet.hypernym_groups(sorted(types), wordnet_dir):
        if reads(group.word):
            vals = tuple((t, 1.0 / len(group.types)) for t in group.types)
            m = Meaning(
                "articleType",
                vals,
                _canonical(vals, "articleType"),
                CONFIDENCE["wordnet hypernym"],
                "wordnet hypernym",
            )
            n += _add(out, group.word, m)
    return n


def shade_meaning(
    name: str, rgb: tuple[int, int, int], catalogue_rgb: Mapping[str, tuple[int, int, int]]
) -> Meaning | None:
    """A named colour's meaning: the catalogue colour its name contains ("sky blue" -> Blue:
    the shopper named it), else the nearest catalogue colours by CIEDE2000, with a
    confidence that falls with the distance."""
    words = f" {name} "
    named = [c for c in catalogue_rgb if f" {c.lower()} " in words]
    if named:
        # the head of an English compound is its last word; the longest name that ends
        # there ("dark fluorescent green": Fluorescent Green, not Green)
        head = max(named, key=lambda c: (words.rfind(f" {c.lower()} ") + len(c), len(c)))
        vals = ((head, 1.0),)
        return Meaning("baseColour", vals, _canonical(vals, "baseColour"), 1.0, "colour table")
    matches = colour_table.nearest_colours(rgb, catalogue_rgb)
    if not matches:
        return None
    d0 = matches[0].delta_e
    span = SHADE_FAR_DE - SHADE_CLOSE_DE
    conf = max(SHADE_MIN_CONFIDENCE, min(1.0, 1.0 - (d0 - SHADE_CLOSE_DE) / span))
    vals = tuple((m.colour, round(m.weight, 3)) for m in matches)
    return Meaning(
        "baseColour", vals, _canonical(vals, "baseColour"), round(conf, 3), "colour table"
    )


def _colour_meanings(out, present, catalogue_words, reads) -> int:
    catalogue_rgb = colour_table.catalogue_colour_rgb(present.get("baseColour", ()))
    n = 0
    for nc in colour_table.named_colours():
        if not reads(nc.name):
            continue
        single = " " not in nc.name
        if single and compact(nc.name) in catalogue_words:
            continue  # the catalogue uses the word for something else ("leather", "mango")
        meaning = shade_meaning(nc.name, nc.rgb, catalogue_rgb)
        if meaning is not None:
            n += _add(out, nc.name, meaning)
    return n


def catalogue_vocabulary(names: Iterable[str], products: Iterable[Mapping]) -> dict[str, int]:
    """Compact word -> how often the catalogue uses it (product names and field values)."""
    counts: Counter[str] = Counter()
    for name in names:
        counts.update(compact(t.text) for t in tokens(name or ""))
    for p in products:
        for fld in FIELDS:
            v = p.get(fld)
            if isinstance(v, str):
                counts.update(compact(t.text) for t in tokens(v))
    counts.pop("", None)
    return dict(counts)


def present_values(products: Iterable[Mapping]) -> dict[str, tuple[str, ...]]:
    found: dict[str, set[str]] = defaultdict(set)
    for p in products:
        for fld in FIELDS:
            v = p.get(fld)
            if isinstance(v, str) and v.strip():
                found[fld].add(v)
    return {f: tuple(sorted(v)) for f, v in found.items()}


def build_lexicon(
    products: Iterable[Mapping],
    names: Iterable[str],
    rules: Iterable[Rule],
    *,
    sources: str = "all",
    wordnet_dir: str | None = None,
    version_id: int | None = None,
) -> Lexicon:
    """The lexicon of a catalogue (``products``: dataset field names; ``names``: product
    display names), a rule set, and the sources (``"all"`` or ``"reader-half"``)."""
    if sources not in SOURCES:
        raise ValueError(f"sources must be one of {SOURCES}, got {sources!r}")
    products = list(products)
    rules = list(rules)
    present = present_values(products)
    words = catalogue_vocabulary(names, products)

    def reads(word: str) -> bool:
        return sources == "all" or side_of(word) == READER

    phrases = _catalogue_phrases(present)
    catalogue = {k: list(v) for k, v in phrases.items()}
    counts = {"catalogue": len(phrases)}
    counts["rule"] = _rule_meanings(phrases, rules, catalogue, reads)
    rule_spellings, phrases.spellings = phrases.spellings, set()
    counts["wordnet"] = _wordnet_meanings(phrases, present, wordnet_dir, reads)
    counts["colour table"] = _colour_meanings(phrases, present, words, reads)
    english = load_english(wordnet_dir or _default_wordnet_dir())
    # Spelling: catalogue words by their counts, rule words once each, and the long words of
    # the larger sources (WordNet, colour names: "camo" and "puce" are too near too much).
    vocabulary = dict(words)
    for w in rule_spellings:  # the catalogue's values and the rules' words
        if w:
            vocabulary.setdefault(w, 1)
    for w in phrases.spellings:
        if len(w) >= MIN_SOURCE_CORRECTION_CHARS:
            vocabulary.setdefault(w, 1)
    corrector = SpellingCorrector(vocabulary)
    log.info(
        "lexicon (%s sources, v%s): %d phrases (%s), %d spelling words",
        sources,
        version_id,
        len(phrases),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        len(corrector),
    )
    return Lexicon(
        phrases=dict(phrases),
        corrector=corrector,
        english=english,
        catalogue_words=words,
        values=present,
        sources=sources,
        rules_fingerprint=rules_fingerprint(rules),
        version_id=version_id,
        counts=counts,
    )


def _default_wordnet_dir() -> str:
    from services.config import get_settings  # noqa: PLC0415 - settings are read when a lexicon is built, not at import

    return str(get_settings().wordnet_dir)
