"""The evaluation query set: generated deterministically from catalogue metadata, in families.

Input is the metadata of the products in the index under test (``id, gender,
articleType, baseColour, season, usage`` in the dataset's field names); output is a list
of :class:`EvalQuery`, each with the text (and, for multimodal queries, the product
whose photo is the query image) and its *relevance criteria*: field -> allowed values.
A product is relevant when it satisfies every criterion (binary relevance). The same
products and seed always give the same queries, in the same order, with the same
``query_set_version``.

Families, by where their words come from (:data:`FAMILY_KIND`; docs/evaluation/protocol.md says
why each judgement is what it is):

- **catalogue words**: ``category`` ("jackets"), ``colour_category`` ("olive trousers"),
  ``gender_colour_category`` ("men grey jacket"; Men/Women also accept Unisex),
  ``usage_season_category`` ("formal shirts", "summer dresses");
- **in-lexicon** (words from a source query understanding reads, from the half it reads:
  they check the machinery, they do not measure generalisation): ``paraphrase`` (the
  merchandiser rules' starting set, ``services/understanding/starting_rules.csv``:
  "trainers", "wmns top", "navy joggers"), ``wordnet_category`` ("cardigan"),
  ``wordnet_colour_category`` ("crimson dress"), ``wordnet_hypernym`` ("footwear"),
  ``shade_inlex`` (named colours: "emerald dress");
- **held-out** (words understanding never reads): the same five sources' other half
  (``*_heldout``, ``shade``), split by a hash of the word
  (``services.understanding.lexicon.side_of``); ``misspelling`` (seeded edits of catalogue
  words: deletion, transposition, doubling, keyboard-adjacent substitution; judged as the
  query spelt correctly, which is kept as ``reference``); ``occasion`` (WordNet's sports,
  parties, journeys and season names, none of them a word of the rules, the semantic
  step's descriptions or the catalogue: "t-shirt for badminton" -> Tshirts, usage Sports);
- ``multimodal``: a product's photo plus one word that changes its colour ("black" on a
  photo of white socks); relevant = same articleType with the new baseColour.

Combination families sample uniformly (seeded) among the combinations that exist in the
catalogue, so rare combinations are as likely as common ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.catalog import vocabulary
from services.catalog.vocabulary import ARTICLE_TYPES
from services.understanding import colours as colour_table
from services.understanding import wordnet as lexicon
from services.understanding.english import load_english
from services.understanding.lexicon import HELD_OUT, READER, side_of
from services.understanding.rules import starting_rules
from services.understanding.semantic import DESCRIPTIONS
from services.understanding.text import compact, key, tokens

GENERATOR_VERSION = "qs3"  # qs3: held-out families, misspellings, shades, occasions
FAMILIES: tuple[str, ...] = (
    "category",
    "colour_category",
    "gender_colour_category",
    "usage_season_category",
    "paraphrase",
    "wordnet_category",
    "wordnet_colour_category",
    "wordnet_hypernym",
    "shade_inlex",
    "paraphrase_heldout",
    "wordnet_category_heldout",
    "wordnet_colour_category_heldout",
    "wordnet_hypernym_heldout",
    "shade",
    "misspelling",
    "occasion",
    "multimodal",  # keep last: TEXT_FAMILIES is everything before it
)
TEXT_FAMILIES: tuple[str, ...] = FAMILIES[:-1]
WORDNET_FAMILIES: tuple[str, ...] = tuple(f for f in FAMILIES if f.startswith("wordnet_"))
CATALOGUE, IN_LEXICON, HELD_OUT_KIND, PHOTO = "catalogue", "in-lexicon", "held-out", "photo"
FAMILY_KIND: dict[str, str] = {
    **dict.fromkeys(FAMILIES[:4], CATALOGUE),
    **dict.fromkeys(FAMILIES[4:9], IN_LEXICON),
    **dict.fromkeys(FAMILIES[9:16], HELD_OUT_KIND),
    "multimodal": PHOTO,
}
# Queries per family, both halves together (category: at most one per article type;
# word families: at most as many as their source gives words on their side).
DEFAULT_SIZES: dict[str, int] = {  # both halves (tune + test) together
    "category": 40,
    "colour_category": 120,
    "gender_colour_category": 120,
    "usage_season_category": 100,
    "paraphrase": 100,
    "wordnet_category": 80,
    "wordnet_colour_category": 100,
    "wordnet_hypernym": 40,
    "shade_inlex": 100,
    "paraphrase_heldout": 100,
    "wordnet_category_heldout": 80,
    "wordnet_colour_category_heldout": 100,
    "wordnet_hypernym_heldout": 40,
    "shade": 100,
    "misspelling": 160,
    "occasion": 120,
    "multimodal": 120,
}
# The issue's own examples: always asked (in the paraphrase family of their side; even
# when nothing is relevant in a small catalogue: such a query is then reported as skipped).
PINNED_PARAPHRASES: tuple[str, ...] = ("trainers", "jumper", "kicks", "wmns top")

FIELDS = ("gender", "articleType", "baseColour", "season", "usage")


@dataclass(frozen=True)
class EvalQuery:
    qid: str
    family: str
    text: str
    criteria: tuple[tuple[str, tuple[str, ...]], ...]  # (field, allowed values), all must hold
    image_product_id: int | None = None
    reference: str | None = None  # misspelling: the same query spelt correctly

    @property
    def kind(self) -> str:
        """Where the family's words come from: catalogue, in-lexicon, held-out or photo."""
        return FAMILY_KIND[self.family]

    @property
    def is_multimodal(self) -> bool:
        return self.image_product_id is not None

    @property
    def split(self) -> str:
        """``tune`` or ``test``: half of each family's queries choose alpha, weights and
        checkpoints; the other half is what is reported (never tuned on). Decided by a hash
        of what is asked (family, text, photo), so a query keeps its side across runs."""
        return split_of(self.family, self.text, self.image_product_id)

    def matches(self, product: Mapping) -> bool:
        return _matches(self.criteria, product)

    def relevant(self, products: Iterable[Mapping]) -> set[int]:
        return {int(p["id"]) for p in products if self.matches(p)}

    def describe_relevance(self) -> str:
        return " AND ".join(f"{f} in {{{', '.join(v)}}}" for f, v in self.criteria)

    def to_json(self) -> dict:
        return {
            "qid": self.qid,
            "family": self.family,
            "text": self.text,
            "criteria": {f: list(v) for f, v in self.criteria},
            "image_product_id": self.image_product_id,
            **({"reference": self.reference} if self.reference else {}),
        }


SPLITS: tuple[str, ...] = ("tune", "test")
TEST_SHARE = 0.5


def split_of(family: str, text: str, image_product_id: int | None = None) -> str:
    """The split of a query: a stable hash of its family, text and photo."""
    digest = hashlib.sha256(f"split:{family}:{text}:{image_product_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < TEST_SHARE else "tune"


def _matches(criteria: Iterable[tuple[str, tuple[str, ...]]], product: Mapping) -> bool:
    return all(product.get(f) in allowed for f, allowed in criteria)


class _Exists:
    """Whether any product satisfies a criteria tuple, from the distinct value combinations of
    the criteria's fields (much faster than scanning the products for every candidate)."""

    def __init__(self, products: Sequence[Mapping]):
        self._products = products
        self._seen: dict[tuple[str, ...], set[tuple]] = {}

    def __call__(self, criteria: Iterable[tuple[str, tuple[str, ...]]]) -> bool:
        criteria = tuple(criteria)
        fields = tuple(f for f, _ in criteria)
        if fields not in self._seen:
            self._seen[fields] = {tuple(p.get(f) for f in fields) for p in self._products}
        combos = self._seen[fields]
        return any(c in combos for c in itertools.product(*(allowed for _, allowed in criteria)))


@dataclass
class QuerySet:
    queries: list[EvalQuery]
    seed: int
    version: str = field(init=False)

    def __post_init__(self) -> None:
        blob = json.dumps([q.to_json() for q in self.queries], sort_keys=True).encode()
        self.version = f"{GENERATOR_VERSION}-{hashlib.sha1(blob).hexdigest()[:10]}"

    def by_family(self) -> dict[str, list[EvalQuery]]:
        out: dict[str, list[EvalQuery]] = defaultdict(list)
        for q in self.queries:
            out[q.family].append(q)
        return dict(out)


# --- how catalogue values read in a query -----------------------------------------------
def _article_words(article_type: str) -> tuple[str, str]:
    """(plural, singular) as a shopper types them: Tshirts -> ("t-shirts", "t-shirt")."""
    display = ARTICLE_TYPES[article_type].display.lower() if article_type in ARTICLE_TYPES else None
    plural = article_type.lower()
    if plural == "tshirts":
        plural = "t-shirts"
    singular = display or (
        plural[:-1] if plural.endswith("s") and not plural.endswith("ss") else plural
    )
    return plural, singular


def relevant_genders(gender: str) -> tuple[str, ...]:
    """A men's/women's query accepts unisex products too; boys/girls/unisex only themselves."""
    return (gender, "Unisex") if gender in ("Men", "Women") else (gender,)


def _vocabulary():

    return vocabulary


def _rng(seed: int, family: str) -> random.Random:
    return random.Random(f"{GENERATOR_VERSION}:{seed}:{family}")  # str seeds are stable


def _combos(products: Sequence[Mapping], keys: Sequence[str]) -> list[tuple]:
    """Distinct combinations of ``keys`` with no empty value, sorted."""
    found = {tuple(p.get(k) for k in keys) for p in products}
    return sorted(c for c in found if all(v not in (None, "") for v in c))


def _sample(rng: random.Random, items: list, n: int) -> list:
    return items if len(items) <= n else rng.sample(items, n)


def _category(products, n, seed):
    types = [c[0] for c in _combos(products, ["articleType"])]
    out = []
    for at in _sample(_rng(seed, "category"), types, n):
        out.append((_article_words(at)[0], (("articleType", (at,)),), None))
    return sorted(out, key=lambda x: x[0])


def _colour_category(products, n, seed):
    out = []
    for at, colour in _sample(
        _rng(seed, "colour_category"), _combos(products, ["articleType", "baseColour"]), n
    ):
        out.append(
            (
                f"{colour.lower()} {_article_words(at)[0]}",
                (("articleType", (at,)), ("baseColour", (colour,))),
                None,
            )
        )
    return out


def _gender_colour_category(products, n, seed):
    combos = [
        c for c in _combos(products, ["gender", "baseColour", "articleType"]) if c[0] != "Unisex"
    ]
    out = []
    for gender, colour, at in _sample(_rng(seed, "gender_colour_category"), combos, n):
        out.append(
            (
                f"{gender.lower()} {colour.lower()} {_article_words(at)[1]}",
                (
                    ("articleType", (at,)),
                    ("baseColour", (colour,)),
                    ("gender", relevant_genders(gender)),
                ),
                None,
            )
        )
    return out


def _usage_season_category(products, n, seed):
    pool = [("usage", u, at) for u, at in _combos(products, ["usage", "articleType"])]
    pool += [("season", s, at) for s, at in _combos(products, ["season", "articleType"])]
    out = []
    for fld, value, at in _sample(_rng(seed, "usage_season_category"), pool, n):
        out.append(
            (
                f"{value.lower()} {_article_words(at)[0]}",
                (("articleType", (at,)), (fld, (value,))),
                None,
            )
        )
    return out


# --- which half of a source a query's words come from -------------------------------------
def _side(words: Iterable[str]) -> str | None:
    """READER or HELD_OUT when every word is on that side of the lexicon split, else None."""
    sides = {side_of(w) for w in words}
    return sides.pop() if len(sides) == 1 else None


def _on(side: str, words: Iterable[str]) -> bool:
    return _side(words) == side


# --- paraphrase: the merchandiser rules' starting set ----------------------------------------
def _rule_words(products) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """field -> [(shopper word, catalogue values)] of the starting rules' one-way rules whose
    right side names values of one field present in the catalogue."""
    present = {
        "articleType": {p.get("articleType") for p in products} - {None},
        "baseColour": {p.get("baseColour") for p in products} - {None},
        "gender": {p.get("gender") for p in products} - {None},
    }
    names: dict[str, tuple[str, str]] = {}
    for at in ARTICLE_TYPES:
        names[key(ARTICLE_TYPES[at].display)] = ("articleType", at)
        names[key(at)] = ("articleType", at)
    for c in vocabulary.COLOURS:
        names[key(c)] = ("baseColour", c)
    for g in vocabulary.GENDERS:
        names[key(g)] = ("gender", g)
    out: dict[str, list] = defaultdict(list)
    for rule in starting_rules():
        if rule.two_way:
            continue
        found = [names.get(key(s)) for s in rule.synonyms]
        fields = {f for f, _ in found} if None not in found else set()
        if len(fields) != 1:
            continue
        fld = fields.pop()
        values = tuple(dict.fromkeys(v for _, v in found if v in present[fld]))
        if values:
            for term in rule.terms:
                if key(term) != key(values[0]):
                    out[fld].append((term, values))
    return out


def _paraphrase_pool(products) -> list[tuple[str, tuple, tuple[str, ...]]]:
    """Every phrasing the starting rules allow (text, criteria, shopper words) whose values
    are in the catalogue: a rule word for the type (alone, with a catalogue colour, with a
    gender word), a colour or gender rule word with a type word."""
    words = _rule_words(products)
    present_colours = sorted({p.get("baseColour") for p in products if p.get("baseColour")})
    article_words = words["articleType"]
    colour_words = [(w, v[0]) for w, v in words["baseColour"] if len(v) == 1]
    gender_words = [(w, v[0]) for w, v in words["gender"] if len(v) == 1]
    present_types = sorted({p.get("articleType") for p in products if p.get("articleType")})
    canonical = [(_article_words(t)[1], (t,)) for t in present_types]
    pool: list[tuple[str, tuple, tuple[str, ...]]] = []
    for word, types in article_words:  # a rule word for the article type
        at = (("articleType", types),)
        pool.append((word, at, (word,)))
        for colour in present_colours:
            pool.append((f"{colour.lower()} {word}", at + (("baseColour", (colour,)),), (word,)))
        for gw, g in gender_words:
            pool.append((f"{gw} {word}", at + (("gender", relevant_genders(g)),), (gw, word)))
    for word, types in article_words + canonical:  # rule words for colour / gender
        at = (("articleType", types),)
        shopper = (word,) if (word, types) in article_words else ()
        for cw, colour in colour_words:
            crit = at + (("baseColour", (colour,)),)
            pool.append((f"{cw} {word}", crit, (cw, *shopper)))
        for gw, g in gender_words:
            crit = at + (("gender", relevant_genders(g)),)
            pool.append((f"{gw} {word}", crit, (gw, *shopper)))
    return pool


def _paraphrase(products, n, seed, side=READER):
    family = "paraphrase" if side == READER else "paraphrase_heldout"
    pool = [(t, c, w) for t, c, w in _paraphrase_pool(products) if _on(side, w)]
    by_text = {text: crit for text, crit, _ in pool}
    out = []
    rule_terms = {key(t) for r in starting_rules() for t in r.terms}
    pinned = [
        t for t in PINNED_PARAPHRASES if _on(side, [w for w in t.split() if key(w) in rule_terms])
    ]
    for text in pinned:
        crit = by_text.get(text) or _pinned_criteria(text)
        out.append((text, crit, None))
    exists = _Exists(products)
    supported = sorted({text for text, crit, _ in pool if text not in pinned and exists(crit)})
    for text in _sample(_rng(seed, family), supported, max(0, n - len(out))):
        out.append((text, by_text[text], None))
    return out


def _pinned_criteria(text: str) -> tuple:
    """A pinned paraphrase's judgement when the catalogue lacks its values: by the rules."""
    rules = {key(t): r for r in starting_rules() for t in r.terms}
    crit = []
    for word in text.split():
        rule = rules.get(key(word))
        if rule is None:
            types = tuple(t for t, a in ARTICLE_TYPES.items() if key(a.display) == key(word))
            crit.append(("articleType", types))
            continue
        syn = [key(s) for s in rule.synonyms]
        types = tuple(t for t, a in ARTICLE_TYPES.items() if key(a.display) in syn)
        genders = tuple(g for g in vocabulary.GENDERS if key(g) in syn)
        crit.append(("articleType", types) if types else ("gender", relevant_genders(genders[0])))
    return tuple(crit)


def _multimodal(products, n, seed):
    """Photo of one product + the name of another colour its article type comes in."""
    rng = _rng(seed, "multimodal")
    colours_by_type: dict[str, list[str]] = defaultdict(list)
    for at, colour in _combos(products, ["articleType", "baseColour"]):
        colours_by_type[at].append(colour)
    by_type: dict[str, list[Mapping]] = defaultdict(list)
    for p in sorted(products, key=lambda p: int(p["id"])):
        at, colour = p.get("articleType"), p.get("baseColour")
        if at and colour and len(colours_by_type[at]) > 1 and p.get("has_image", True):
            by_type[at].append(p)
    types = sorted(by_type)
    out = []
    used: set[int] = set()
    while types and len(out) < n:  # round-robin over article types for coverage
        progressed = False
        for at in types:
            if len(out) >= n:
                break
            candidates = [p for p in by_type[at] if int(p["id"]) not in used]
            if not candidates:
                continue
            source = rng.choice(candidates)
            used.add(int(source["id"]))
            target = rng.choice([c for c in colours_by_type[at] if c != source["baseColour"]])
            out.append(
                (
                    target.lower(),
                    (("articleType", (at,)), ("baseColour", (target,))),
                    int(source["id"]),
                )
            )
            progressed = True
        if not progressed:
            break
    return out


# --- WordNet families: shopper words from a lexicon the team did not write ------------------
def _wordnet():
    """``services.understanding.wordnet``, checked: raises WordNetMissing (naming the Debian
    package) when the database is not installed, so a WordNet family never comes back empty."""

    lexicon.open_wordnet()
    return lexicon


def _article_display(article_type: str) -> str:
    """How the catalogue spells the type in product names, lower case: "t-shirt", "sandals"."""
    try:
        return _vocabulary().ARTICLE_TYPES[article_type].display.lower()
    except (ImportError, KeyError):
        return _article_words(article_type)[1]


def _wordnet_category(products, n, seed, side=READER):
    """One WordNet word per query ("cardigan" -> Sweaters), round-robin over article types
    so a type with 40 hyponyms (Jackets) does not crowd out one with 2 (Tshirts)."""
    family = "wordnet_category" if side == READER else "wordnet_category_heldout"
    words = _wordnet().article_words()
    rng = _rng(seed, family)
    present = {at for (at,) in _combos(products, ["articleType"])}
    queues = {}
    for at in sorted(present):
        found = sorted(dw.word for dw in words.get(at, ()) if side_of(dw.word) == side)
        rng.shuffle(found)
        if found:
            queues[at] = found
    out = []
    while queues and len(out) < n:
        for at in sorted(queues):
            if len(out) >= n:
                break
            out.append((queues[at].pop(0), (("articleType", (at,)),), None))
        queues = {at: q for at, q in queues.items() if q}
    return sorted(out, key=lambda x: x[0])


def _wordnet_colour_category(products, n, seed, side=READER):
    """A WordNet colour word + the type ("crimson dress" -> Dresses and Red): the type as the
    catalogue spells it, or (half of the time, when WordNet has one on the same side) a
    WordNet word for it."""
    family = "wordnet_colour_category" if side == READER else "wordnet_colour_category_heldout"
    lex = _wordnet()
    colours = {
        c: sorted(dw.word for dw in found if side_of(dw.word) == side)
        for c, found in lex.colour_words().items()
    }
    types = {
        at: sorted(dw.word for dw in found if side_of(dw.word) == side)
        for at, found in lex.article_words().items()
    }
    rng = _rng(seed, family)
    combos = [
        (at, c) for at, c in _combos(products, ["articleType", "baseColour"]) if colours.get(c)
    ]
    out = []
    for at, colour in _sample(rng, combos, n):
        colour_word = rng.choice(colours[colour])
        type_words = types.get(at, [])
        use_wordnet = rng.random() < 0.5
        article = rng.choice(type_words) if use_wordnet and type_words else _article_display(at)
        out.append(
            (f"{colour_word} {article}", (("articleType", (at,)), ("baseColour", (colour,))), None)
        )
    return out


def _wordnet_hypernym(products, n, seed, side=READER):
    """A WordNet hypernym of several article types ("footwear" -> Sandals, Sports Shoes,
    Casual Shoes, Boots): every hypernym word alone, then (filling up to ``n``) some with a
    catalogue colour ("black footwear"). Relevant = any covered type (and the colour)."""
    family = "wordnet_hypernym" if side == READER else "wordnet_hypernym_heldout"
    present = [at for (at,) in _combos(products, ["articleType"])]
    groups = [g for g in _wordnet().hypernym_groups(present) if side_of(g.word) == side]
    rng = _rng(seed, family)
    plain = [(g.word, (("articleType", g.types),), None) for g in groups]
    plain = sorted(_sample(rng, plain, n), key=lambda x: x[0])
    colours = sorted({p.get("baseColour") for p in products if p.get("baseColour")})
    coloured = [
        (f"{c.lower()} {g.word}", (("articleType", g.types), ("baseColour", (c,))), None)
        for g in groups
        for c in colours
    ]
    exists = _Exists(products)
    coloured = [q for q in coloured if exists(q[1])]
    return plain + _sample(rng, coloured, max(0, n - len(plain)))


# --- shades: named colours the catalogue does not use ---------------------------------------
SHADE_MAX_DE = 15.0  # the nearest catalogue colour at most this far (CIEDE2000) ...
SHADE_MIN_SHARE = 0.75  # ... and clearly nearer than the next (its share of the weight)


def shade_words(colours_present: Iterable[str]) -> list[tuple[str, str]]:
    """(named colour, the catalogue colour it unambiguously is): XKCD and CSS4 names whose
    nearest catalogue colour is close and clearly nearer than the next, that contain no
    catalogue colour or colour rule word ("sky blue" says blue itself) and are no rule
    word or catalogue value themselves."""
    present = list(colours_present)
    catalogue_rgb = colour_table.catalogue_colour_rgb(present)
    colour_keys = {key(c) for c in vocabulary.COLOURS} | {
        key(t) for r in starting_rules() for t in r.terms
    }
    single_colour_words = {w for c in vocabulary.COLOURS for w in key(c).split()}
    out = []
    for nc in colour_table.named_colours():
        k = key(nc.name)
        if k in colour_keys or set(k.split()) & single_colour_words:
            continue
        matches = colour_table.nearest_colours(nc.rgb, catalogue_rgb)
        if matches and matches[0].delta_e <= SHADE_MAX_DE and matches[0].weight >= SHADE_MIN_SHARE:
            out.append((nc.name, matches[0].colour))
    return out


def _shade(products, n, seed, side=HELD_OUT):
    """A shade name + a type ("emerald dress" -> Dresses and Green, by CIEDE2000)."""
    family = "shade" if side == HELD_OUT else "shade_inlex"
    combos = _combos(products, ["articleType", "baseColour"])
    shades: dict[str, list[str]] = defaultdict(list)
    for name, colour in shade_words({c for _, c in combos}):
        if side_of(name) == side:
            shades[colour].append(name)
    rng = _rng(seed, family)
    pool = [(at, c) for at, c in combos if shades.get(c)]
    out = []
    for at, colour in _sample(rng, pool, n):
        name = rng.choice(sorted(shades[colour]))
        article = _article_words(at)[0 if rng.random() < 0.5 else 1]
        out.append((f"{name} {article}", (("articleType", (at,)), ("baseColour", (colour,))), None))
    return out


# --- misspellings: seeded edits of catalogue words ------------------------------------------
_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_ADJACENT: dict[str, str] = {}
for _r, _row in enumerate(_KEYBOARD_ROWS):
    for _i, _ch in enumerate(_row):
        near = [_row[j] for j in (_i - 1, _i + 1) if 0 <= j < len(_row)]
        for _other in (_r - 1, _r + 1):
            if 0 <= _other < len(_KEYBOARD_ROWS):
                near += [c for j, c in enumerate(_KEYBOARD_ROWS[_other]) if abs(j - _i) <= 1]
        _ADJACENT[_ch] = "".join(near)
EDITS = ("deletion", "transposition", "doubling", "keyboard")


def misspell(word: str, rng: random.Random) -> str:
    """One seeded edit of ``word`` (never its first letter): a deletion, a transposition of
    two neighbours, a doubled letter, or a letter replaced by a key next to it."""
    kind = rng.choice(EDITS)
    i = rng.randrange(1, len(word))
    if kind == "deletion":
        return word[:i] + word[i + 1 :]
    if kind == "transposition":
        i = min(i, len(word) - 2)
        if i < 1:
            return word[:1] + word[1:][::-1]
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "doubling":
        return word[:i] + word[i] + word[i:]
    near = _ADJACENT.get(word[i], "")
    return word[:i] + (rng.choice(near) if near else word[i]) + word[i + 1 :]


def _misspelling(products, n, seed):
    """Catalogue-word queries (the four catalogue families' builders, another seed) with one
    or two of their words misspelt. A misspelt form that is a real word (English, or the
    catalogue's) is drawn again: a real-word error is not a misspelling a speller can see.
    Judged exactly as the query spelt correctly (``reference``)."""
    rng = _rng(seed, "misspelling")
    english = load_english(lexicon.open_wordnet().path)
    known = {
        compact(t.text)
        for p in products
        for v in p.values()
        if isinstance(v, str)
        for t in tokens(v)
    }
    base = []
    for builder in (_colour_category, _gender_colour_category, _usage_season_category, _category):
        base += builder(products, n, seed + 7919)
    out = []
    for text, crit, _ in _sample(rng, sorted(base, key=lambda b: b[0]), n):
        words = text.split()
        editable = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
        if not editable:
            continue
        chosen = rng.sample(editable, min(len(editable), rng.choice((1, 1, 2))))
        for i in chosen:
            for _ in range(20):
                wrong = misspell(words[i], rng)
                if wrong != words[i] and wrong not in english and compact(wrong) not in known:
                    words[i] = wrong
                    break
        if " ".join(words) != text:
            out.append((" ".join(words), crit, None, text))
    return out


# --- occasions: what a shopper will do in it ------------------------------------------------
# WordNet 3.0 noun senses whose hyponyms (two levels) are occasions of one catalogue usage.
OCCASION_SENSES: dict[str, tuple[tuple[int, str], ...]] = {
    "Sports": ((523513, "an active diversion requiring physical exertion"),  # sport
               (624738, "the activity of exerting your muscles")),  # exercise
    "Party": ((7447641, "an occasion on which people can assemble"),),  # party
    "Travel": ((306426, "the act of traveling from one place to another"),  # journey
               (308370, "a journey for some purpose")),  # trip
}  # fmt: skip
# Season names: WordNet synonyms of each season's sense.
SEASON_SENSES: dict[str, tuple[int, str]] = {
    "Summer": (15237250, "the warmest season of the year"),
    "Winter": (15237782, "the coldest season of the year"),
    "Fall": (15236859, "the season when the leaves fall"),
    "Spring": (15237044, "the season of growth"),
}
OCCASION_TEMPLATES = ("{article} for {occasion}", "something for {occasion}")


def occasion_words() -> dict[tuple[str, str], list[str]]:
    """(field, value) -> occasion words from WordNet, without any word query understanding
    reads (a rule term, a word of the semantic step's descriptions) or the catalogue's
    own values: held out by construction."""
    wn = _wordnet().open_wordnet()
    excluded = {key(t) for r in starting_rules() for t in r.terms}
    excluded |= {key(w) for d in DESCRIPTIONS.values() for p in d for w in p.split()}
    excluded |= {key(v) for v in (*vocabulary.USAGES, *vocabulary.SEASONS, *vocabulary.COLOURS)}
    excluded |= {key(a.display) for a in ARTICLE_TYPES.values()}
    out: dict[tuple[str, str], list[str]] = {}

    def keep(word: str) -> bool:
        k = key(word)
        return bool(k) and not any(part in excluded for part in k.split()) and "'" not in word

    for usage, senses in OCCASION_SENSES.items():
        found: set[str] = set()
        for offset, gloss in senses:
            root = wn.synset(offset)
            if not root.gloss.startswith(gloss):
                raise ValueError(f"WordNet does not match OCCASION_SENSES at {offset:08d}")
            for s, _ in [(root, 0), *wn.hyponyms(root, depth=2)]:
                found |= {w for w in s.words if keep(w)}
        out[("usage", usage)] = sorted(found)
    for season, (offset, gloss) in SEASON_SENSES.items():
        root = wn.synset(offset)
        if not root.gloss.startswith(gloss):
            raise ValueError(f"WordNet does not match SEASON_SENSES at {offset:08d}")
        out[("season", season)] = sorted(w for w in root.words if keep(w))
    return out


def _occasion(products, n, seed):
    """ "t-shirt for badminton" -> Tshirts and usage Sports; "something for a cruise" -> usage
    Travel; "jacket for wintertime" -> Jackets and season Winter."""
    rng = _rng(seed, "occasion")
    words = occasion_words()
    pool = []
    for (fld, value), found in sorted(words.items()):
        types = sorted({at for at, v in _combos(products, ["articleType", fld]) if v == value})
        for word in found:
            if types:
                at = rng.choice(types)
                text = OCCASION_TEMPLATES[0].format(article=_article_words(at)[1], occasion=word)
                pool.append((text, (("articleType", (at,)), (fld, (value,))), None))
            if fld == "usage":
                text = OCCASION_TEMPLATES[1].format(occasion=word)
                pool.append((text, ((fld, (value,)),), None))
    return _sample(rng, sorted(pool, key=lambda x: x[0]), n)


def _held_out(builder):
    return lambda products, n, seed: builder(products, n, seed, side=HELD_OUT)


def _in_lexicon(builder):
    return lambda products, n, seed: builder(products, n, seed, side=READER)


_BUILDERS = {
    "category": _category,
    "colour_category": _colour_category,
    "gender_colour_category": _gender_colour_category,
    "usage_season_category": _usage_season_category,
    "paraphrase": _paraphrase,
    "wordnet_category": _wordnet_category,
    "wordnet_colour_category": _wordnet_colour_category,
    "wordnet_hypernym": _wordnet_hypernym,
    "shade_inlex": _in_lexicon(_shade),
    "paraphrase_heldout": _held_out(_paraphrase),
    "wordnet_category_heldout": _held_out(_wordnet_category),
    "wordnet_colour_category_heldout": _held_out(_wordnet_colour_category),
    "wordnet_hypernym_heldout": _held_out(_wordnet_hypernym),
    "shade": _shade,
    "misspelling": _misspelling,
    "occasion": _occasion,
    "multimodal": _multimodal,
}


def generate_queries(
    products: Sequence[Mapping],
    *,
    seed: int = 0,
    families: Sequence[str] | None = None,
    sizes: Mapping[str, int] | None = None,
    split: str | None = None,
) -> QuerySet:
    """The query set for ``products`` (dataset field names; ``id`` required).

    Deterministic: products are read in id order and every family draws from its own
    seeded generator, so the result depends only on the metadata, ``seed`` and ``sizes``.
    ``split`` ("tune" / "test") keeps only that half of every family; None keeps both.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    families = list(families or FAMILIES)
    unknown = [f for f in families if f not in _BUILDERS]
    if unknown:
        raise ValueError(f"unknown query families {unknown}; known: {', '.join(FAMILIES)}")
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    products = sorted(products, key=lambda p: int(p["id"]))
    queries: list[EvalQuery] = []
    for family in FAMILIES:  # fixed order, whatever order was asked for
        if family not in families:
            continue
        for i, (text, criteria, image_id, *reference) in enumerate(
            _BUILDERS[family](products, sizes[family], seed)
        ):
            ref = reference[0] if reference else None
            query = EvalQuery(f"{family}-{i:03d}", family, text, criteria, image_id, ref)
            if split is None or query.split == split:
                queries.append(query)
    return QuerySet(queries, seed)
