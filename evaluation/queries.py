"""The evaluation query set: generated deterministically from catalogue metadata, in families.

Input is the metadata of the products in the index under test (``id, gender,
articleType, baseColour, season, usage`` in the dataset's field names); output is a list
of :class:`EvalQuery`, each with the text (and, for multimodal queries, the product
whose photo is the query image) and its *relevance criteria*: field -> allowed values.
A product is relevant when it satisfies every criterion (binary relevance). The same
products and seed always give the same queries, in the same order, with the same
``query_set_version``.

Families (see evaluation/PROTOCOL.md for why each judgement is what it is):

- ``category``: "jackets" -> articleType = Jackets.
- ``colour_category``: "olive trousers" -> articleType and baseColour.
- ``gender_colour_category``: "men grey jacket" -> articleType, baseColour and gender
  (Men/Women queries also accept Unisex products: a unisex jacket is a men's jacket).
- ``usage_season_category``: "formal shirts" / "summer dresses" -> articleType and
  usage (or season).
- ``paraphrase``: shoppers' words from ``services.catalog.vocabulary`` synonym tables —
  "trainers", "jumper", "kicks", "wmns top", "navy joggers" — judged by what the word
  means in catalogue values ("trainers" -> Sports Shoes or Casual Shoes). Tests the
  sparse model's expansion: the catalogue never spells these words.
- ``wordnet_category`` / ``wordnet_colour_category`` / ``wordnet_hypernym``: shopper words
  taken from WordNet 3.0 (``evaluation.lexicon``), not from the team's synonym tables:
  "cardigan" -> Sweaters, "crimson dress" -> Dresses and Red, "footwear" -> the four
  footwear types. Need the Debian package ``wordnet-base`` (only these three families).
- ``multimodal``: a product's photo plus one word that changes its colour ("black" on a
  photo of white socks); relevant = same articleType with the new baseColour.

Combination families sample uniformly (seeded) among the combinations that exist in the
catalogue, so rare combinations are as likely as common ones.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from evaluation import lexicon
from services.catalog import vocabulary
from services.catalog.vocabulary import ARTICLE_TYPES

GENERATOR_VERSION = "qs2"  # qs2: WordNet families, tune/test split, doubled sizes
FAMILIES: tuple[str, ...] = (
    "category",
    "colour_category",
    "gender_colour_category",
    "usage_season_category",
    "paraphrase",
    "wordnet_category",
    "wordnet_colour_category",
    "wordnet_hypernym",
    "multimodal",  # keep last: TEXT_FAMILIES is everything before it
)
TEXT_FAMILIES: tuple[str, ...] = FAMILIES[:-1]
WORDNET_FAMILIES: tuple[str, ...] = (
    "wordnet_category",
    "wordnet_colour_category",
    "wordnet_hypernym",
)
# Queries per family, both halves together (category: at most one per article type;
# wordnet_*: at most as many as WordNet gives words). ~800 in all, ~400 per split.
DEFAULT_SIZES: dict[str, int] = {  # both halves (tune + test) together
    "category": 40,
    "colour_category": 120,
    "gender_colour_category": 120,
    "usage_season_category": 100,
    "paraphrase": 120,
    "wordnet_category": 80,
    "wordnet_colour_category": 120,
    "wordnet_hypernym": 40,
    "multimodal": 120,
}
# The issue's own examples: always in the paraphrase family (even when nothing is
# relevant in a small catalogue — such a query is then reported as skipped).
PINNED_PARAPHRASES: tuple[str, ...] = ("trainers", "jumper", "kicks", "wmns top")

FIELDS = ("gender", "articleType", "baseColour", "season", "usage")


@dataclass(frozen=True)
class EvalQuery:
    qid: str
    family: str
    text: str
    criteria: tuple[tuple[str, tuple[str, ...]], ...]  # (field, allowed values), all must hold
    image_product_id: int | None = None

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
        }


SPLITS: tuple[str, ...] = ("tune", "test")
TEST_SHARE = 0.5


def split_of(family: str, text: str, image_product_id: int | None = None) -> str:
    """The split of a query: a stable hash of its family, text and photo."""
    digest = hashlib.sha256(f"split:{family}:{text}:{image_product_id}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < TEST_SHARE else "tune"


def _matches(criteria: Iterable[tuple[str, tuple[str, ...]]], product: Mapping) -> bool:
    return all(product.get(f) in allowed for f, allowed in criteria)


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


def _paraphrase_pool(products) -> list[tuple[str, tuple]]:
    """Every phrasing the synonym tables allow whose article types are in the catalogue."""
    vocab = _vocabulary()
    present_types = {p.get("articleType") for p in products}
    present_colours = sorted({p.get("baseColour") for p in products if p.get("baseColour")})
    genders = sorted({p.get("gender") for p in products if p.get("gender")})
    article_words: list[tuple[str, tuple[str, ...]]] = []
    for word, types in sorted(vocab.ARTICLE_SYNONYMS.items()):
        kept = tuple(t for t in types if t in present_types)
        if kept:
            article_words.append((word, kept))
    canonical = [(_article_words(t)[1], (t,)) for t in sorted(present_types) if t]
    colour_words = [
        (w, c)
        for w, c in sorted(vocab.COLOUR_SYNONYMS.items())
        if c in present_colours and w != c.lower()
    ]
    gender_words = [
        (w, g) for w, g in sorted(vocab.GENDER_SYNONYMS.items()) if g in genders and w != g.lower()
    ]
    pool: list[tuple[str, tuple]] = []
    for word, types in article_words:  # synonym for the article type
        at = (("articleType", types),)
        pool.append((word, at))
        for colour in present_colours:
            pool.append((f"{colour.lower()} {word}", at + (("baseColour", (colour,)),)))
        for gw, g in gender_words:
            pool.append((f"{gw} {word}", at + (("gender", relevant_genders(g)),)))
    for word, types in article_words + canonical:  # synonyms for colour / gender
        at = (("articleType", types),)
        for cw, colour in colour_words:
            pool.append((f"{cw} {word}", at + (("baseColour", (colour,)),)))
        for gw, g in gender_words:
            pool.append((f"{gw} {word}", at + (("gender", relevant_genders(g)),)))
    return pool


def _paraphrase(products, n, seed):
    pool = _paraphrase_pool(products)
    by_text = {text: crit for text, crit in pool}
    out = []
    for text in PINNED_PARAPHRASES:
        crit = by_text.get(text)
        if crit is None:  # e.g. no Tops in a tiny catalogue: judge against the vocabulary
            crit = _pinned_criteria(text)
        out.append((text, crit, None))
    supported = sorted(
        {
            text
            for text, crit in pool
            if text not in PINNED_PARAPHRASES and any(_matches(crit, p) for p in products)
        }
    )
    for text in _sample(_rng(seed, "paraphrase"), supported, max(0, n - len(out))):
        out.append((text, by_text[text], None))
    return out


def _pinned_criteria(text: str) -> tuple:
    vocab = _vocabulary()
    if text in vocab.ARTICLE_SYNONYMS:
        return (("articleType", vocab.ARTICLE_SYNONYMS[text]),)
    gender_word, _, article_word = text.partition(" ")
    gender = vocab.GENDER_SYNONYMS[gender_word]
    types = tuple(t for t, a in vocab.ARTICLE_TYPES.items() if a.display.lower() == article_word)
    return (("articleType", types), ("gender", relevant_genders(gender)))


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
    """``evaluation.lexicon``, checked: raises WordNetMissing (naming the Debian package)
    when the database is not installed, so a WordNet family never comes back empty."""

    lexicon.open_wordnet()
    return lexicon


def _article_display(article_type: str) -> str:
    """How the catalogue spells the type in product names, lower case: "t-shirt", "sandals"."""
    try:
        return _vocabulary().ARTICLE_TYPES[article_type].display.lower()
    except (ImportError, KeyError):
        return _article_words(article_type)[1]


def _wordnet_category(products, n, seed):
    """One WordNet word per query ("cardigan" -> Sweaters), round-robin over article types
    so a type with 40 hyponyms (Jackets) does not crowd out one with 2 (Tshirts)."""
    words = _wordnet().article_words()
    rng = _rng(seed, "wordnet_category")
    present = {at for (at,) in _combos(products, ["articleType"])}
    queues = {}
    for at in sorted(present):
        found = sorted(dw.word for dw in words.get(at, ()))
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


def _wordnet_colour_category(products, n, seed):
    """A WordNet colour word + the type ("crimson dress" -> Dresses and Red): the type as the
    catalogue spells it, or (half of the time, when WordNet has one) a WordNet word for it."""
    lex = _wordnet()
    colours, types = lex.colour_words(), lex.article_words()
    rng = _rng(seed, "wordnet_colour_category")
    combos = [
        (at, c) for at, c in _combos(products, ["articleType", "baseColour"]) if colours.get(c)
    ]
    out = []
    for at, colour in _sample(rng, combos, n):
        colour_word = rng.choice(sorted(dw.word for dw in colours[colour]))
        type_words = sorted(dw.word for dw in types.get(at, ()))
        use_wordnet = rng.random() < 0.5
        article = rng.choice(type_words) if use_wordnet and type_words else _article_display(at)
        out.append(
            (f"{colour_word} {article}", (("articleType", (at,)), ("baseColour", (colour,))), None)
        )
    return out


def _wordnet_hypernym(products, n, seed):
    """A WordNet hypernym of several article types ("footwear" -> Sandals, Sports Shoes,
    Casual Shoes, Boots): every hypernym word alone, then (filling up to ``n``) some with a
    catalogue colour ("black footwear"). Relevant = any covered type (and the colour)."""
    present = [at for (at,) in _combos(products, ["articleType"])]
    groups = _wordnet().hypernym_groups(present)
    rng = _rng(seed, "wordnet_hypernym")
    plain = [(g.word, (("articleType", g.types),), None) for g in groups]
    plain = sorted(_sample(rng, plain, n), key=lambda x: x[0])
    colours = sorted({p.get("baseColour") for p in products if p.get("baseColour")})
    coloured = [
        (f"{c.lower()} {g.word}", (("articleType", g.types), ("baseColour", (c,))), None)
        for g in groups
        for c in colours
    ]
    coloured = [q for q in coloured if any(_matches(q[1], p) for p in products)]
    return plain + _sample(rng, coloured, max(0, n - len(plain)))


_BUILDERS = {
    "category": _category,
    "colour_category": _colour_category,
    "gender_colour_category": _gender_colour_category,
    "usage_season_category": _usage_season_category,
    "paraphrase": _paraphrase,
    "wordnet_category": _wordnet_category,
    "wordnet_colour_category": _wordnet_colour_category,
    "wordnet_hypernym": _wordnet_hypernym,
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
        for i, (text, criteria, image_id) in enumerate(
            _BUILDERS[family](products, sizes[family], seed)
        ):
            query = EvalQuery(f"{family}-{i:03d}", family, text, criteria, image_id)
            if split is None or query.split == split:
                queries.append(query)
    return QuerySet(queries, seed)
