"""Query understanding without a database or the neural encoders: words and keys, the
English word list, spelling, merchandiser rules, colour names, the held-out split of the
sources, the shopper's ``ignore``, what is left for the semantic step, and how the query's
vectors are composed. Lexicons are built from small hand-made catalogues (WordNet is read
from the Debian package ``wordnet-base``); the vectors ``finish()`` composes are small
hand-made inputs to a pure function. No test asserts a wall-clock time."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pgvector import SparseVector
from rapidfuzz.distance import OSA

from services.catalog.vocabulary import ARTICLE_TYPES
from services.config import get_settings
from services.understanding import colours
from services.understanding.english import load_english
from services.understanding.lexicon import (
    HELD_OUT,
    READER,
    build_lexicon,
    shade_meaning,
    side_of,
)
from services.understanding.query import (
    Encoded,
    QueryUnderstanding,
    UnderstandingSettings,
)
from services.understanding.rules import (
    Rule,
    RuleError,
    fingerprint,
    parse_rule,
    read_csv,
    starting_rules,
    write_csv,
)
from services.understanding.semantic import Label, Prototypes
from services.understanding.spelling import MIN_CHARS, max_edits
from services.understanding.text import FUNCTION_WORDS, key, tokens
from services.understanding.understand import MODIFIERS, literal, understand

# (articleType, baseColour, gender, usage, season, brand, display name). "Asics" is one
# edit from "Basics" (the brand test needs that), "Bench" one edit from "beach", and
# "Handbag" is in two names (a split "hand bag" is joined only to a word used twice).
CATALOGUE = (
    ("Sports Shoes", "Black", "Men", "Sports", "Summer", "Asics",
     "Asics Men Running Black Sports Shoes"),
    ("Casual Shoes", "Blue", "Men", "Casual", "Summer", "Asics", "Asics Men Blue Casual Shoes"),
    ("Shirts", "Navy Blue", "Men", "Casual", "Fall", "Basics", "Basics Men Solid Navy Blue Shirt"),
    ("Jackets", "Green", "Men", "Casual", "Winter", "Basics", "Basics Men Green Jacket"),
    ("Handbags", "Tan", "Women", "Casual", "Winter", "Caprese",
     "Caprese Women Leather Tan Handbag"),
    ("Handbags", "Black", "Women", "Formal", "Winter", "Caprese", "Caprese Women Black Handbag"),
    ("Sandals", "Gold", "Women", "Party", "Summer", "Mochi", "Mochi Women Gold Sandals"),
    ("Dresses", "Green", "Women", "Party", "Summer", "Mochi", "Mochi Women Green Dress"),
    ("Sweaters", "Red", "Women", "Casual", "Winter", "Bench", "Bench Women Red Sweater"),
    ("Tshirts", "White", "Men", "Casual", "Summer", "Bench", "Bench Men White T-shirt"),
)  # fmt: skip
RULE_SOURCES = ("rule", "wordnet", "wordnet hypernym", "colour table")


def _products(rows=CATALOGUE) -> list[dict]:
    """Dataset-shaped products (sub and master category from the article type)."""
    out = []
    for article, colour, gender, usage, season, brand, _ in rows:
        at = ARTICLE_TYPES[article]
        out.append(
            {
                "articleType": article,
                "baseColour": colour,
                "gender": gender,
                "usage": usage,
                "season": season,
                "subCategory": at.sub_category,
                "masterCategory": at.master_category,
                "brand": brand,
            }
        )
    return out


def _names(rows=CATALOGUE) -> list[str]:
    return [row[-1] for row in rows]


def _lexicon(rules, sources="all", rows=CATALOGUE):
    return build_lexicon(_products(rows), _names(rows), rules, sources=sources)


@pytest.fixture(scope="module")
def lexicon():
    """The catalogue with the shipped rules and every source."""
    return _lexicon(starting_rules())


@pytest.fixture(scope="module")
def reader_half():
    """The same, reading only the reader half of rules, WordNet and colour names."""
    return _lexicon(starting_rules(), sources="reader-half")


@pytest.fixture(scope="module")
def rules_lexicon():
    """The catalogue with two hand-made rules only (one one-way, one two-way): what it
    recognises does not change when the shipped rule set grows."""
    return _lexicon(
        [parse_rule("kicks -> sports shoes, casual shoes"), parse_rule("jumper <-> sweater")]
    )


def _attributes(u) -> set[tuple[str, str]]:
    return {(a.field, a.value) for a in u.attributes}


def _colours(u) -> set[str]:
    return {a.value for a in u.attributes if a.field == "baseColour"}


# --- words and keys -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("T-Shirts", "tshirt"),
        ("t-shirt", "tshirt"),
        ("dresses", "dress"),
        ("women's", "women"),
        ("watches", "watch"),
        ("shoes", "shoe"),
        ("glass", "glass"),
        ("Sports Shoes", "sport shoe"),
    ],
)
def test_key_drops_case_hyphens_possessives_and_plural_endings(word, expected):
    """A phrase matches in the singular or plural, with or without its hyphen; a word
    ending in a double s keeps it."""
    assert key(word) == expected


def test_tokens_keep_hyphenated_and_possessive_words_whole():
    """ "women's T-Shirts!" is two tokens (not four), each with its key and span."""
    text = "women's T-Shirts!"
    toks = tokens(text)
    assert [(t.text, t.key) for t in toks] == [("women's", "women"), ("t-shirts", "tshirt")]
    assert [text[t.start : t.end].lower() for t in toks] == ["women's", "t-shirts"]
    assert tokens("-- !! --") == []


# --- the English word list ----------------------------------------------------------------
def test_english_word_list_knows_words_and_their_inflections():
    """Lemmas, inflections by WordNet's detachment rules and function words are English;
    a misspelling is not."""
    english = load_english(get_settings().wordnet_dir)
    for word in ("dress", "dresses", "running", "jumper", "bigger", "geese", "women", "the"):
        assert word in english, word
    for word in ("jakcet", "sandels", "hanbag", "asics"):
        assert word not in english, word


# --- spelling -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "corrected", "value"),
    [
        ("jakcet", "jacket", ("articleType", "Jackets")),
        ("sandels", "sandals", ("articleType", "Sandals")),
        ("hanbag", "handbag", ("articleType", "Handbags")),
    ],
)
def test_misspelt_word_is_corrected_and_reported(lexicon, typed, corrected, value):
    """An unknown word becomes the nearest catalogue word; the correction names the word
    as typed, and the corrected word is recognised."""
    u = understand(f"green {typed}", lexicon)
    assert u.text == f"green {corrected}"
    assert [(c.original, c.corrected, c.distance) for c in u.corrections] == [(typed, corrected, 1)]
    assert value in _attributes(u)
    assert u.changed


def test_split_catalogue_word_is_joined(lexicon):
    """ "hand bag" -> "handbag" (a word the catalogue's names use), reported as one
    correction of the two words."""
    u = understand("black hand bag", lexicon)
    assert u.text == "black handbag"
    assert [(c.original, c.corrected) for c in u.corrections] == [("hand bag", "handbag")]
    assert ("articleType", "Handbags") in _attributes(u)


def test_brand_is_never_corrected_to_a_nearby_catalogue_word(lexicon):
    """ "asics" is a brand of the catalogue, one edit from the brand "basics" and not
    English: only knowing the brand keeps it from being "corrected"."""
    assert OSA.distance("asics", "basics") == 1 <= max_edits("asics")
    assert "basics" in lexicon.catalogue_words and "asics" not in lexicon.english
    u = understand("asics running shoes", lexicon)
    assert u.corrections == ()
    assert u.text == "asics running shoes"
    assert ("brand", "Asics") in _attributes(u)
    assert lexicon.is_known("asics")


def test_brand_known_from_the_brand_field_alone():
    """A brand no product name spells is still a catalogue word (the products' brand
    field): not corrected to the one-edit-away "basics" of the names."""
    rows = [(*row[:6], row[6].removeprefix("Asics ")) for row in CATALOGUE]
    assert not any("Asics" in name for name in _names(rows))
    lex = _lexicon([], rows=rows)
    assert "asics" in lex.catalogue_words and "basics" in lex.catalogue_words
    assert understand("asics shoes", lex).corrections == ()


@pytest.mark.parametrize(
    ("word", "near"),
    [("skirt", "shirt"), ("skirts", "shirts"), ("beach", "bench"), ("spots", "sports")],
)
def test_english_word_is_never_corrected(lexicon, word, near):
    """A real English word one edit from a catalogue word stays as typed."""
    assert near in lexicon.catalogue_words and OSA.distance(word, near) == 1
    u = understand(f"{word} for women", lexicon)
    assert u.corrections == ()
    assert u.text == f"{word} for women"


def test_comfortable_beach_words_stay_as_typed(lexicon):
    """English words with no catalogue meaning are left as typed, not corrected."""
    u = understand("comfortable beach dress", lexicon)
    assert u.corrections == () and u.text == "comfortable beach dress"


def test_short_words_are_left_alone(lexicon):
    """ "rde" (a transposition of "red", not English) is under MIN_CHARS letters: left."""
    assert len("rde") < MIN_CHARS and "rde" not in lexicon.english
    assert OSA.distance("rde", "red") == 1 and "red" in lexicon.catalogue_words
    u = understand("rde dress", lexicon)
    assert u.corrections == () and u.text == "rde dress"


def test_words_with_digits_are_left_alone(lexicon):
    """ "jacket1" is one edit from "jacket" but has a digit (a size, a model): left."""
    assert OSA.distance("jacket1", "jacket") == 1
    u = understand("jacket1 for men", lexicon)
    assert u.corrections == () and u.text == "jacket1 for men"


# --- merchandiser rules -------------------------------------------------------------------
def test_one_way_rule_recognises_and_rewrites(rules_lexicon):
    """kicks -> sports shoes, casual shoes: both article types, half each; the rewrite
    puts the catalogue's words in place of the shopper's; the rule is listed."""
    u = understand("blue kicks", rules_lexicon)
    shares = {a.value: a.confidence for a in u.attributes if a.field == "articleType"}
    assert shares == {"Sports Shoes": 0.5, "Casual Shoes": 0.5}
    assert all(a.source == "rule" and a.rewritten for a in u.attributes if a.value in shares)
    assert u.rewrite == "blue sports shoes or casual shoes"
    assert u.text == "blue kicks"  # the shopper's words are still encoded too
    assert [(r.rule, r.words) for r in u.rules] == [
        ("kicks -> sports shoes, casual shoes", "kicks")
    ]


def test_one_way_rule_does_not_apply_backwards(rules_lexicon):
    """The right side of a one-way rule does not bring in its left side."""
    u = understand("blue sports shoes", rules_lexicon)
    assert u.rules == () and u.rewrite is None
    assert ("articleType", "Sports Shoes") in _attributes(u)


@pytest.mark.parametrize(("typed", "brought_in"), [("jumper", "sweater"), ("sweater", "jumper")])
def test_two_way_rule_expands_either_word(rules_lexicon, typed, brought_in):
    """jumper <-> sweater: each word brings in the other, and the rule is listed."""
    u = understand(f"red {typed}", rules_lexicon)
    assert u.rewrite is not None and brought_in in u.rewrite.split()
    assert [(r.rule, r.words) for r in u.rules] == [("jumper <-> sweater", typed)]
    assert ("articleType", "Sweaters") in _attributes(u)


def test_parse_rule_normalises_and_prints_back():
    """Terms are lower-cased, trimmed, de-duplicated; str() is the rule as written."""
    one = parse_rule("  Kicks -> Sports  Shoes, casual shoes, casual shoes ")
    assert one == Rule(("kicks",), ("sports shoes", "casual shoes"))
    assert str(one) == "kicks -> sports shoes, casual shoes"
    two = parse_rule("Jumper <-> sweater <-> PULLOVER, jumper")
    assert two.two_way and two.terms == ("jumper", "sweater", "pullover") and two.synonyms == ()
    for rule in (one, two):
        assert parse_rule(str(rule)) == rule


def test_csv_round_trip_keeps_every_rule():
    """write_csv then read_csv gives back the shipped rules, kinds and notes included."""
    rules = [*starting_rules(), parse_rule("jumper <-> sweater", note='British, "American"')]
    assert read_csv(write_csv(rules)) == rules


@pytest.mark.parametrize(
    "text",
    [
        "kicks sneakers",  # no arrow
        "kicks -> ",  # empty right side
        " -> sneakers",  # empty left side
        "jumper <-> ",  # a group of one
        "a -> b -> c",  # two arrows
        "!!! -> sneakers",  # no letter or digit
        f"{'x' * 61} -> sneakers",  # over-long term
    ],
)
def test_malformed_rule_is_refused(text):
    """A rule that cannot mean anything is refused, never stored half-read."""
    with pytest.raises(RuleError):
        parse_rule(text)


def test_malformed_csv_names_the_line():
    """A bad row is refused with its line number; a file without the columns too."""
    text = "kind,terms,synonyms,note\none-way,kicks,sneakers,\nsideways,a,b,\n"
    with pytest.raises(RuleError, match="line 3"):
        read_csv(text)
    with pytest.raises(RuleError, match="line 2"):
        read_csv("kind,terms,synonyms,note\none-way,kicks,,\n")
    with pytest.raises(RuleError, match="missing"):
        read_csv("terms,synonyms\nkicks,sneakers\n")


def test_fingerprint_follows_content_not_ids_or_notes():
    """What a run ran with: the same rules (any ids, notes, order) give the same hash;
    another synonym or a missing rule another."""
    rules = [parse_rule("kicks -> sneakers"), parse_rule("jumper <-> sweater")]
    fp = fingerprint(rules)
    relabelled = [dataclasses.replace(r, id=i + 7, note="edited") for i, r in enumerate(rules)]
    assert fingerprint(relabelled) == fp
    assert fingerprint(list(reversed(rules))) == fp
    assert fingerprint([parse_rule("kicks -> sneakers, trainers"), rules[1]]) != fp
    assert fingerprint(rules[:1]) != fp


# --- colours --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("lab1", "lab2", "expected"),
    [  # Sharma, Wu & Dalal (2005), Table 1: pairs 1, 4, 7, 13, 15, 17, 25
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
        ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
        ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0009), 7.1792),
        ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0011), 7.2195),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ],
)
def test_delta_e2000_matches_published_pairs(lab1, lab2, expected):
    """CIEDE2000 on the published test data, both ways round (it is symmetric)."""
    a, b = np.array(lab1), np.array(lab2)
    assert colours.delta_e2000(a, b) == pytest.approx(expected, abs=1e-4)
    assert colours.delta_e2000(b, a) == pytest.approx(expected, abs=1e-4)


def _named(name: str) -> colours.NamedColour:
    table = {c.name: c for c in colours.named_colours()}
    assert name in table, f"{name!r} is not a name of the colour table"
    return table[name]


CATALOGUE_COLOURS = colours.catalogue_colour_rgb(
    ["Black", "White", "Blue", "Navy Blue", "Green", "Teal", "Turquoise Blue", "Red", "Silver"]
)


def test_shade_maps_to_the_nearest_catalogue_colour():
    """ "emerald" (a name without a catalogue colour word) -> Green by CIEDE2000."""
    emerald = _named("emerald")
    meaning = shade_meaning(emerald.name, emerald.rgb, CATALOGUE_COLOURS)
    assert meaning is not None and meaning.field == "baseColour"
    assert meaning.values[0][0] == "Green" and meaning.source == "colour table"
    assert sum(share for _, share in meaning.values) == pytest.approx(1.0)


def test_shade_naming_a_catalogue_colour_means_that_colour():
    """ "sky blue" is nearer Silver than Blue by CIEDE2000, but the shopper said blue."""
    sky = _named("sky blue")
    nearest = colours.nearest_colours(sky.rgb, CATALOGUE_COLOURS)
    assert nearest[0].colour != "Blue"  # the rule, not the distance, decides
    meaning = shade_meaning(sky.name, sky.rgb, CATALOGUE_COLOURS)
    assert meaning is not None
    assert meaning.values == (("Blue", 1.0),) and meaning.confidence == 1.0


def test_colour_noun_is_a_colour_only_where_a_colour_stands(rules_lexicon):
    """ "ice" is a colour-table name: a colour before a product word or at the end of the
    query, not before another noun ("ice hockey")."""
    _named("ice")
    assert _colours(understand("ice hockey", rules_lexicon)) == set()
    assert _colours(understand("ice jacket", rules_lexicon)) == {"White"}
    assert _colours(understand("a jacket in ice", rules_lexicon)) == {"White"}


def test_catalogue_word_is_not_read_as_a_colour_name(rules_lexicon):
    """ "leather" is a colour-table name, but the catalogue uses it for the material."""
    _named("leather")
    u = understand("leather handbag", rules_lexicon)
    assert _colours(u) == set() and u.rewrite is None


# --- the held-out split -------------------------------------------------------------------
def test_side_of_is_stable_and_splits_words_in_half():
    """The held-out split is a stable hash of the word's key, about half on each side."""
    words = [c.name for c in colours.named_colours()][:400]
    sides = [side_of(w) for w in words]
    assert sides == [side_of(w) for w in words]
    assert set(sides) == {READER, HELD_OUT}
    assert 0.4 <= sides.count(HELD_OUT) / len(sides) <= 0.6
    # a word is on one side whatever its spelling: the split hashes its key
    assert side_of("T-Shirts") == side_of("tshirt") and side_of("Dresses") == side_of("dress")


def _sides_by_source(lex) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for phrase, meanings in lex.phrases.items():
        for m in meanings:
            found.setdefault(m.source, set()).add(side_of(phrase))
    return found


def test_reader_half_reads_no_held_out_word(reader_half):
    """With sources="reader-half", no rule, WordNet or colour-table phrase is held out."""
    sides = _sides_by_source(reader_half)
    for source in RULE_SOURCES:
        assert sides.get(source, set()) <= {READER}, source
    for source in ("rule", "wordnet", "colour table"):
        assert sides.get(source) == {READER}, source  # the reader half is still read


def test_all_sources_read_both_halves(lexicon):
    """The shipped configuration (sources="all") reads both halves of every source."""
    sides = _sides_by_source(lexicon)
    for source in ("rule", "wordnet", "colour table"):
        assert sides[source] == {READER, HELD_OUT}, source


def test_catalogue_phrases_are_read_whole_in_both(lexicon, reader_half):
    """The catalogue says nothing about shoppers' words: it is never split, even where
    its words hash to the held-out side."""

    def catalogue(lex):
        return {p for p, ms in lex.phrases.items() if any(m.source == "catalogue" for m in ms)}

    assert catalogue(lexicon) == catalogue(reader_half)
    assert {"sport shoe", "navy blue", "asic", "women"} <= catalogue(lexicon)
    assert HELD_OUT in {side_of(p) for p in catalogue(reader_half)}


# --- the shopper's ignore -----------------------------------------------------------------
def test_ignored_value_is_neither_recognised_nor_rewritten(rules_lexicon):
    """Without ignore, "emerald dress" means Green and is rewritten; with
    ignore={"baseColour:Green"} neither, and the ignore is reported."""
    plain = understand("emerald dress", rules_lexicon)
    assert "Green" in _colours(plain) and "green" in plain.rewrite.split()
    u = understand("emerald dress", rules_lexicon, ignore=frozenset({"baseColour:Green"}))
    assert "Green" not in _colours(u)
    assert u.rewrite is None or "green" not in u.rewrite.split()
    assert ("articleType", "Dresses") in _attributes(u)
    assert u.ignored == ("baseColour:Green",)


# --- what is left for the semantic step ---------------------------------------------------
def test_unknown_content_word_is_residual(rules_lexicon):
    """A word no source explains ("beach") is left for the semantic step, with whether
    it stands where a colour does."""
    u = understand("something for a beach holiday", rules_lexicon)
    assert "beach" in u.residual
    assert len(u.residual_colour_context) == len(u.residual)


def test_function_words_and_modifiers_are_never_residual(rules_lexicon):
    """ "dark", "very", "light" and function words mean nothing alone: never residual."""
    u = understand("something dark for the beach, very light please", rules_lexicon)
    assert "beach" in u.residual
    residual_words = {w for r in u.residual for w in r.split()}
    assert not residual_words & (FUNCTION_WORDS | MODIFIERS)


def test_catalogue_words_are_never_residual(rules_lexicon):
    """ "solid" and "leather" are only in product names (no phrase means them), yet they
    are the catalogue's words: the semantic step is not asked about them."""
    assert {"solid", "leather"} <= set(rules_lexicon.catalogue_words)
    u = understand("solid leather bag for the beach", rules_lexicon)
    assert "beach" in u.residual
    residual_words = {w for r in u.residual for w in r.split()}
    assert not residual_words & {"solid", "leather"}


def test_a_run_of_unknown_words_is_also_residual_whole(rules_lexicon):
    """Each unknown word alone, and a run of them as a whole ("comfortable beach")."""
    u = understand("comfortable beach", rules_lexicon)
    assert set(u.residual) == {"comfortable", "beach", "comfortable beach"}


# --- composing the query's vectors ----------------------------------------------------------
DENSE_DIM, SPARSE_DIM, SENTENCE_DIM = 8, 100, 4


def _unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def _encoded(seed: int, sentence=None) -> Encoded:
    """A text's encodings as the encoders give them: unit dense, unit non-negative sparse."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(SPARSE_DIM, size=5, replace=False)
    vals = _unit(rng.random(5) + 0.1)
    return Encoded(
        dense=_unit(rng.normal(size=DENSE_DIM)),
        sparse=SparseVector({int(i): float(v) for i, v in zip(idx, vals)}, SPARSE_DIM),
        sentence=_unit(sentence if sentence is not None else rng.normal(size=SENTENCE_DIM)),
    )


BEACH, SUMMER, ELSEWHERE = np.eye(SENTENCE_DIM)[:3]
LABEL_TERM = 99  # the sparse dimension only the label's own vector has


def _understanding(lexicon, settings: UnderstandingSettings | None = None):
    """Season Summer as the only label, with prototypes "beach" and "summer"."""
    prototypes = Prototypes(
        labels=[Label("season", "Summer", "summer")],
        phrases=["beach", "summer"],
        label_of=np.array([0, 0], np.int64),
        vectors=np.stack([BEACH, SUMMER]).astype(np.float32),
    )
    label = Encoded(_unit(np.ones(DENSE_DIM)), SparseVector({LABEL_TERM: 1.0}, SPARSE_DIM), SUMMER)
    settings = settings or UnderstandingSettings(
        label_dense=(("season", 0.0),), label_sparse=(("season", 0.5),)
    )
    return QueryUnderstanding(lexicon, prototypes, [label], settings)


def _encodings(u, sentences=None) -> dict[str, Encoded]:
    sentences = sentences or {}
    texts = QueryUnderstanding.texts(u)
    return {t: _encoded(i, sentences.get(t)) for i, t in enumerate(texts)}


def _sparse_norm(s: SparseVector) -> float:
    return float(np.sqrt(sum(v * v for v in s.values())))


def _same_sparse(a: SparseVector, b: SparseVector) -> bool:
    return (
        a.dimensions() == b.dimensions()
        and a.indices() == b.indices()
        and np.allclose(a.values(), b.values(), atol=1e-6)
    )


@pytest.mark.parametrize("text", ["black handbag", "beach handbag"])
def test_nothing_understood_gives_exactly_the_literal_vectors(rules_lexicon, text):
    """No correction, no rewrite, no label recognised (a left-over word far from every
    prototype): the query is searched with exactly its own vectors."""
    qu = _understanding(rules_lexicon)
    u = qu.understand(text)
    assert u.text == u.original and u.rewrite is None
    encoded = _encodings(u, {"beach": ELSEWHERE})
    out = qu.finish(u, encoded)
    base = encoded[text]
    assert np.array_equal(out.dense, base.dense)
    assert out.sparse == base.sparse
    assert out.recognitions == () and out.understood == u


def test_literal_understanding_gives_exactly_the_literal_vectors(rules_lexicon):
    """Understanding turned off (``literal``): exactly the query's own vectors, even for
    words the lexicon would rewrite."""
    qu = _understanding(rules_lexicon)
    u = literal("blue kicks")
    encoded = _encodings(u)
    out = qu.finish(u, encoded)
    assert np.array_equal(out.dense, encoded["blue kicks"].dense)
    assert out.sparse == encoded["blue kicks"].sparse


def test_rewrite_moves_the_query_towards_it_with_unit_vectors(rules_lexicon):
    """A rewrite mixes its vectors into the query's: both results are unit vectors, the
    dense one nearer the rewrite's than the text's own was, the sparse one with the terms
    of both."""
    qu = _understanding(rules_lexicon)
    u = qu.understand("blue kicks")
    assert u.rewrite == "blue sports shoes or casual shoes"
    encoded = _encodings(u)
    out = qu.finish(u, encoded)
    base, rewrite = encoded[u.text], encoded[u.rewrite]
    assert np.linalg.norm(out.dense) == pytest.approx(1.0, abs=1e-5)
    assert _sparse_norm(out.sparse) == pytest.approx(1.0, abs=1e-6)
    assert float(out.dense @ rewrite.dense) > float(base.dense @ rewrite.dense)
    assert set(out.sparse.indices()) == set(base.sparse.indices()) | set(rewrite.sparse.indices())


def test_spelling_correction_alone_changes_the_text_encoded(rules_lexicon):
    """A corrected query is searched with its corrected text's vectors (unit), not the
    typed text's."""
    qu = _understanding(rules_lexicon)
    u = qu.understand("hanbag")
    assert u.text == "handbag" and u.rewrite is None
    encoded = _encodings(u)
    out = qu.finish(u, encoded)
    assert np.allclose(out.dense, encoded["handbag"].dense, atol=1e-6)
    assert _same_sparse(out.sparse, encoded["handbag"].sparse)


def test_zero_rewrite_weight_and_no_label_gives_the_base_vectors(rules_lexicon):
    """With the rewrite weighted 0 on both sides and no label, the vectors are the
    text's own (the rewrite adds nothing by itself)."""
    qu = _understanding(rules_lexicon, UnderstandingSettings(rewrite_dense=0.0, rewrite_sparse=0.0))
    u = qu.understand("blue kicks")
    assert u.rewrite is not None
    encoded = _encodings(u)
    out = qu.finish(u, encoded)
    base = encoded[u.text]
    assert np.allclose(out.dense, base.dense, atol=1e-6)
    assert _same_sparse(out.sparse, base.sparse)


def test_recognised_label_adds_its_vectors_by_field_weight(rules_lexicon):
    """ "beach" left over, nearest the Summer prototype "beach": season Summer is
    recognised and reported; its sparse vector is added (weight 0.5), its dense is not
    (weight 0)."""
    qu = _understanding(rules_lexicon)
    u = qu.understand("beach handbag")
    encoded = _encodings(u, {"beach": BEACH})
    out = qu.finish(u, encoded)
    assert [(r.label.value, r.nearest) for r in out.recognitions] == [("Summer", "beach")]
    semantic = [a for a in out.understood.attributes if a.source == "semantic"]
    assert [(a.field, a.value, a.words) for a in semantic] == [("season", "Summer", "beach")]
    assert LABEL_TERM in out.sparse.indices()
    assert LABEL_TERM not in encoded["beach handbag"].sparse.indices()
    assert _sparse_norm(out.sparse) == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(out.dense, encoded["beach handbag"].dense, atol=1e-6)


def test_ignored_label_is_not_recognised(rules_lexicon):
    """A label the shopper removed (``ignore``) is not recognised by the semantic step
    either: the vectors are the text's own."""
    qu = _understanding(rules_lexicon)
    u = qu.understand("beach handbag", frozenset({"season:Summer"}))
    encoded = _encodings(u, {"beach": BEACH})
    out = qu.finish(u, encoded)
    assert out.recognitions == ()
    assert out.sparse == encoded["beach handbag"].sparse
