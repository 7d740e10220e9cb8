"""WordNet reader, the catalogue's sense table, the derived shopper words and the three
``wordnet_*`` query families. No database needed; reads WordNet 3.0 from the Debian
package ``wordnet-base`` (scripts/setup.sh installs it)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from evaluation.queries import (
    DEFAULT_SIZES,
    FAMILIES,
    TEXT_FAMILIES,
    WORDNET_FAMILIES,
    generate_queries,
)
from services.catalog import vocabulary as v
from services.config import get_settings
from services.understanding import wordnet as L
from services.understanding.lexicon import HELD_OUT, READER, side_of

OFFLINE_TYPES = (
    "Tshirts",
    "Tops",
    "Shirts",
    "Sweaters",
    "Jackets",
    "Trousers",
    "Dresses",
    "Sandals",
    "Sports Shoes",
    "Casual Shoes",
    "Boots",
    "Handbags",
)
FOOTWEAR = ("Sandals", "Sports Shoes", "Casual Shoes", "Boots")
CLOTHING_OFFLINE = ("Tshirts", "Tops", "Shirts", "Sweaters", "Jackets", "Trousers", "Dresses")
CLOTHING_SYNSET, FOOTWEAR_SYNSET, CONTAINER_SYNSET, COLOR_SYNSET = (
    3051540,
    3380867,
    3094503,
    4956594,
)


@pytest.fixture(scope="module")
def wn() -> L.WordNet:
    return L.open_wordnet()


def _words(synsets) -> set[str]:
    return {w for s, _ in synsets for w in s.words}


def _catalogue(
    colours=("Black", "Red", "Navy Blue", "Grey", "Cream", "Beige"), types=OFFLINE_TYPES
) -> list[dict]:
    combos = [(t, c) for t in types for c in colours]
    return [
        {
            "id": 500 + i,
            "articleType": t,
            "baseColour": c,
            "gender": "Women",
            "season": "Summer",
            "usage": "Casual",
        }
        for i, (t, c) in enumerate(combos)
    ]


# --- the reader on the real files -------------------------------------------------------------
def test_reader_synonyms_hyponyms_hypernyms(wn):
    sweater = wn.sense("sweater", 1)
    assert sweater.offset == 4370048 and sweater.pos == "n"
    assert sweater.words == ("sweater", "jumper")
    assert sweater.gloss.startswith("a crocheted or knitted garment")
    assert [s.offset for s in wn.synsets("sweater")] == [4370048, 10418735]
    below = wn.hyponyms(sweater, depth=1)
    assert {"pullover", "cardigan", "turtleneck"} <= _words(below)
    assert "sweatshirt" not in _words(below)  # two levels down, under pullover
    assert ("sweatshirt",) in [s.words for s, d in wn.hyponyms(sweater, depth=2) if d == 2]

    shoe = wn.sense("shoe", 1)
    assert {"sneaker", "loafer", "sandal", "oxford"} <= _words(wn.hyponyms(shoe))
    # sandal -> shoe -> footwear (footgear) -> covering
    chain = wn.hypernyms(wn.sense("sandal", 1), depth=3)
    assert [(s.offset, d) for s, d in chain] == [(4199027, 1), (FOOTWEAR_SYNSET, 2), (3122748, 3)]
    assert chain[1][0].words == ("footwear", "footgear")
    # multi-word lemmas: spaces in, underscores out; a lemma is found either way
    assert wn.sense("navy blue", 1).words == ("dark blue", "navy", "navy blue")
    assert wn.sense("Navy_Blue", 1).offset == 4969703
    assert wn.synsets("no such garment") == []
    with pytest.raises(KeyError, match="not a sense 3"):
        wn.sense("sweater", 3)
    with pytest.raises(KeyError, match="no noun synset at offset"):
        wn.synset(4370049)  # inside a line, not at its start


def test_parse_data_line_hex_counts_and_adjective_markers():
    line = (
        "01234567 00 s 0a "
        + " ".join(f"w_{i}(a) 0" for i in range(10))
        + ' 002 & 00012345 a 0000 ! 00054321 a 0102 | a gloss; "an example"  \n'
    )
    s = L.parse_data_line(line)
    assert s.offset == 1234567 and s.pos == "s" and len(s.words) == 10  # 0a = ten words
    assert s.words[3] == "w 3"
    assert [(p.symbol, p.offset, p.source_target) for p in s.pointers] == [
        ("&", 12345, "0000"),
        ("!", 54321, "0102"),
    ]
    assert s.gloss == 'a gloss; "an example"'
    assert L.normalise_word("Turkish_Towel(ip)") == "turkish towel"


# --- a fake database: the reader follows byte offsets; a mismatching table fails loudly -------
def _write_db(root: Path, synsets: list[tuple[tuple[str, ...], list[tuple[str, int]], str]]):
    """data.noun/index.noun with synsets (words, [(symbol, index of target)], gloss)."""
    header = "  1 This is a fake licence header line.  \n"

    def line(offset: int, words, ptrs, gloss, offsets):
        body = " ".join(f"{w} 0" for w in words)
        ps = "".join(f" {sym} {offsets[t]:08d} n 0000" for sym, t in ptrs)
        return f"{offset:08d} 06 n {len(words):02x} {body} {len(ptrs):03d}{ps} | {gloss}  \n"

    placeholder = [0] * len(synsets)
    offsets, pos = [], len(header)
    for words, ptrs, gloss in synsets:  # offsets are 8 digits, so lengths do not change
        offsets.append(pos)
        pos += len(line(pos, words, ptrs, gloss, placeholder).encode())
    data = header + "".join(line(o, *s, offsets) for o, s in zip(offsets, synsets, strict=True))
    lemmas: dict[str, list[int]] = {}
    for o, (words, _, _) in zip(offsets, synsets, strict=True):
        for w in words:
            lemmas.setdefault(w.lower(), []).append(o)
    index = header + "".join(
        f"{lemma} n {len(offs)} 0 {len(offs)} 0 " + " ".join(f"{o:08d}" for o in offs) + "  \n"
        for lemma, offs in sorted(lemmas.items())
    )
    for name, text in (
        ("data.noun", data),
        ("index.noun", index),
        ("data.adj", header),
        ("index.adj", header),
    ):
        (root / name).write_text(text, encoding="utf-8")


def test_fake_database_offsets_and_sense_table_check(tmp_path):
    _write_db(
        tmp_path,
        [
            (("sweater", "perspirer"), [("~", 1)], "a person who perspires"),
            (("Heavy_Sweater",), [("@", 0)], "someone who perspires a lot"),
        ],
    )
    wn = L.WordNet(tmp_path)
    s = wn.sense("sweater", 1)
    assert s.words == ("sweater", "perspirer")
    assert [h.words for h, _ in wn.hyponyms(s)] == [("heavy sweater",)]
    assert [h.offset for h, _ in wn.hypernyms(wn.sense("heavy sweater", 1))] == [s.offset]
    with pytest.raises(ValueError, match="does not match the sense table"):
        L.resolve(wn, L.ARTICLE_SENSES["Sweaters"])


def test_missing_wordnet_raises_clear_error(tmp_path, monkeypatch):
    with pytest.raises(L.WordNetMissing, match="wordnet-base"):
        L.WordNet(tmp_path / "nowhere")
    monkeypatch.setenv(L.ENV_DIR, str(tmp_path / "nowhere"))
    get_settings.cache_clear()  # settings are read once per process
    with pytest.raises(L.WordNetMissing, match="FASHION_WORDNET_DIR"):
        L.open_wordnet()
    products = _catalogue()
    for family in WORDNET_FAMILIES:  # never an empty family
        with pytest.raises(L.WordNetMissing, match="wordnet-base"):
            generate_queries(products, families=[family])
    # the other families do not need WordNet
    qs = generate_queries(products, families=["category", "colour_category", "paraphrase"])
    assert {q.family for q in qs.queries} == {"category", "colour_category", "paraphrase"}


# --- the hand-written sense table -------------------------------------------------------------
def test_sense_table_covers_the_catalogue_and_resolves(wn):
    assert set(L.ARTICLE_SENSES) == set(v.ARTICLE_TYPES)
    assert set(v.COLOURS) - set(L.COLOUR_SENSES) == {"Khaki"}
    assert set(L.COLOUR_SENSES) <= set(v.COLOURS)
    for name, sense in L.ARTICLE_SENSES.items():
        synset = L.resolve(wn, sense)
        assert synset.offset == sense.offset and synset.lex_filenum == 6, name  # noun.artifact
        ancestors = {s.offset for s, _ in wn.hypernyms(synset, depth=64)}
        assert ancestors & {CLOTHING_SYNSET, FOOTWEAR_SYNSET, CONTAINER_SYNSET}, name
    for name, sense in L.COLOUR_SENSES.items():
        synset = L.resolve(wn, sense)
        assert synset.lex_filenum == 7, name  # noun.attribute
        assert COLOR_SYNSET in {s.offset for s, _ in wn.hypernyms(synset, depth=64)}, name
    assert wn.synset(L.ARTICLE_SENSES["Sweaters"].offset).gloss.startswith(
        "a crocheted or knitted garment covering the upper part of the body"
    )
    assert wn.synset(L.COLOUR_SENSES["Red"].offset).gloss.startswith("red color or pigment")
    assert [t for t, s in L.ARTICLE_SENSES.items() if not s.exact] == ["Casual Shoes"]
    for offset in L.EXCLUDED_SYNSETS:
        wn.synset(offset)  # every exclusion names a real synset


# --- derived words ----------------------------------------------------------------------------
def _catalogue_names() -> list[str]:
    names = [*v.ARTICLE_TYPES, *(a.display for a in v.ARTICLE_TYPES.values()), *v.COLOURS]
    return names + [*v.GENDERS, *v.SEASONS, *v.USAGES]


def test_derived_words_follow_wordnet_and_the_rules(wn):
    articles, colours = L.article_words(), L.colour_words()
    dropped = L.dropped_words()
    assert {dw.word for dw in articles["Sweaters"]} == {"cardigan"}
    assert {"tee shirt", "jersey"} == {dw.word for dw in articles["Tshirts"]}
    assert {"sneaker", "gym shoe", "tennis shoe", "plimsoll"} == {
        dw.word for dw in articles["Sports Shoes"]
    }
    jackets = {dw.word for dw in articles["Jackets"]}
    assert {"blazer", "parka", "anorak", "windbreaker", "peacoat"} <= jackets
    assert {"frock", "gown", "sundress"} <= {dw.word for dw in articles["Dresses"]}
    assert {"bag", "purse", "clutch"} <= {dw.word for dw in articles["Handbags"]}
    assert {"pant", "slacks", "chino"} <= {dw.word for dw in articles["Trousers"]}
    assert articles["Casual Shoes"] == () and articles["Sweatshirts"] == ()
    # drops, each for its rule
    assert dropped["article"]["jumper"] == "shared by Dresses, Jackets, Sweaters"
    assert dropped["article"]["turtleneck"] == "shared by Sweaters, Tshirts"
    assert dropped["article"]["pullover"].startswith("contested")  # above sweatshirt
    assert dropped["article"]["blue jean"] == "contains the colour 'Blue'"
    assert dropped["article"]["formal"] == "a catalogue value"  # 'formal' is a usage
    all_article = {dw.word for found in articles.values() for dw in found}
    assert not {"shorts", "pyjama", "polo shirt", "kurta", "flannel", "white"} & all_article

    assert {"crimson", "scarlet", "burgundy"} <= {dw.word for dw in colours["Red"]}
    assert {dw.word for dw in colours["Navy Blue"]} == {"dark blue", "navy"}
    assert "gray" in {dw.word for dw in colours["Grey"]}
    assert {dw.word for dw in colours["Cream"]} == {"bone", "ivory", "pearl", "off-white"}
    assert colours["Maroon"] == () and "Khaki" not in colours
    assert dropped["colour"]["fawn"].startswith("contested")  # light brown: tan and beige
    assert dropped["colour"]["brick red"] == "names the colour 'Red', not 'Brown'"
    assert dropped["colour"]["ash gray"] == "names the colour 'Grey', not 'Silver'"  # gray=Grey
    assert {dw.word for dw in colours["Charcoal"]} == {"charcoal grey", "charcoal gray"}
    assert dropped["colour"]["redness"].startswith("a quality noun")

    for table in (articles, colours):
        owner: dict[str, str] = {}
        for value, found in table.items():
            for dw in found:
                assert dw.value == value
                assert dw.word in wn.synset(dw.offset).words  # provenance resolves
                assert dw.provenance == f"{dw.relation}:{dw.offset:08d}-n"
                assert (dw.relation == "synonym") == (dw.depth == 0) and dw.depth <= 2
                for name in _catalogue_names():
                    assert not L.word_forms(dw.word) & L.word_forms(name), (dw, name)
                for f in L.word_forms(dw.word):
                    assert owner.setdefault(f, value) == value, (dw.word, owner[f], value)
    cardigan = next(dw for dw in articles["Sweaters"] if dw.word == "cardigan")
    assert (cardigan.relation, cardigan.offset, cardigan.depth) == ("hyponym", 2963159, 1)


def test_hypernym_groups():
    groups = {g.word: g for g in L.hypernym_groups(OFFLINE_TYPES)}
    assert set(groups) == {
        "footwear",
        "footgear",
        "shoe",
        "clothing",
        "article of clothing",
        "habiliment",
        "vesture",
        "wear",
        "wearable",
    }
    assert groups["footwear"].types == FOOTWEAR and groups["footwear"].offset == FOOTWEAR_SYNSET
    assert groups["shoe"].types == ("Sandals", "Sports Shoes", "Casual Shoes")  # not boots
    assert groups["clothing"].types == CLOTHING_OFFLINE
    assert groups["footwear"].provenance == "hypernym:03380867-n"
    # all types: the trouser family and sweatshirts join clothing
    full = {g.word: g.types for g in L.hypernym_groups(v.ARTICLE_TYPES)}
    assert {"Jeans", "Track Pants", "Sweatshirts"} <= set(full["clothing"])
    # only footwear present: footwear covers everything -> dropped; shoe still splits
    only_feet = {g.word: g.types for g in L.hypernym_groups(FOOTWEAR)}
    assert only_feet == {"shoe": ("Sandals", "Sports Shoes", "Casual Shoes")}
    # fewer than two present types covered -> nothing
    assert L.hypernym_groups(["Sandals", "Tshirts"]) == []


# --- the query families -----------------------------------------------------------------------
def test_families_registered():
    assert FAMILIES[-1] == "multimodal"
    assert set(WORDNET_FAMILIES) <= set(TEXT_FAMILIES)


def test_wordnet_families_deterministic_and_judged_by_the_mapping():
    products = _catalogue()
    qs = generate_queries(products, seed=3, families=list(WORDNET_FAMILIES))
    shuffled = list(products)
    random.Random(5).shuffle(shuffled)
    again = generate_queries(shuffled, seed=3, families=list(WORDNET_FAMILIES))
    assert [q.to_json() for q in qs.queries] == [q.to_json() for q in again.queries]
    assert qs.version == again.version
    assert generate_queries(products, seed=4, families=list(WORDNET_FAMILIES)).version != qs.version

    fams = qs.by_family()
    for q in qs.queries:
        assert q.relevant(products), q
    articles, colours = L.article_words(), L.colour_words()
    word_type = {dw.word: t for t, found in articles.items() for dw in found}
    word_colour = {dw.word: c for c, found in colours.items() for dw in found}

    # each family asks with the words of one half of WordNet: the in-lexicon family with the
    # half query understanding reads, the held-out one with the other half
    cat = {q.text: dict(q.criteria) for q in fams["wordnet_category"]}
    held = {q.text: dict(q.criteria) for q in fams["wordnet_category_heldout"]}
    assert {side_of(w) for w in cat} == {READER} and {side_of(w) for w in held} == {HELD_OUT}
    assert cat["cardigan"] == {"articleType": ("Sweaters",)}  # Sweaters' only word
    for text, crit in {**cat, **held}.items():
        assert crit == {"articleType": (word_type[text],)}
    both = {word_type[t] for t in {**cat, **held}}
    assert both == set(OFFLINE_TYPES) - {"Casual Shoes"}  # round-robin over every type
    reader_words = [dw.word for found in articles.values() for dw in found]
    reader_words = [w for w in reader_words if side_of(w) == READER]
    assert len(cat) == min(DEFAULT_SIZES["wordnet_category"], len(reader_words))

    seen_wordnet_article = seen_display = False
    for family, side in (
        ("wordnet_colour_category", READER),
        ("wordnet_colour_category_heldout", HELD_OUT),
    ):
        assert 20 <= len(fams[family]) <= DEFAULT_SIZES[family]
        for q in fams[family]:
            crit = dict(q.criteria)
            (at,), (colour,) = crit["articleType"], crit["baseColour"]
            cw = next(
                w
                for w in sorted(word_colour, key=len, reverse=True)
                if q.text.startswith(w + " ") and word_colour[w] == colour
            )
            assert side_of(cw) == side, q
            article = q.text[len(cw) + 1 :]
            if article == v.ARTICLE_TYPES[at].display.lower():
                seen_display = True
            else:
                assert word_type[article] == at and side_of(article) == side, q
                seen_wordnet_article = True
    assert seen_display and seen_wordnet_article

    hyper = {q.text: dict(q.criteria) for q in fams["wordnet_hypernym"]}
    assert side_of("footwear") == side_of("clothing") == READER
    assert hyper["footwear"] == {"articleType": FOOTWEAR}
    assert hyper["clothing"] == {"articleType": CLOTHING_OFFLINE}
    held_hyper = {q.text: dict(q.criteria) for q in fams["wordnet_hypernym_heldout"]}
    assert side_of("shoe") == HELD_OUT and held_hyper["shoe"] == {
        "articleType": ("Sandals", "Sports Shoes", "Casual Shoes")
    }
    for family, table in (("wordnet_hypernym", hyper), ("wordnet_hypernym_heldout", held_hyper)):
        plain = [t for t, c in table.items() if "baseColour" not in c]
        coloured = [c for c in table.values() if "baseColour" in c]
        assert len(plain) >= 3, family
        # every hypernym alone, then as many coloured ones as fill the family (6 colours)
        assert len(coloured) == min(DEFAULT_SIZES[family] - len(plain), 6 * len(plain))
        assert all(len(c["baseColour"]) == 1 for c in coloured)


def test_wordnet_families_only_emit_supported_queries():
    # two types, one colour without WordNet words (Khaki): few queries, all supported
    products = _catalogue(colours=("Khaki", "Red"), types=("Sweaters", "Boots"))
    qs = generate_queries(products, seed=0, families=list(WORDNET_FAMILIES))
    fams = qs.by_family()
    assert min(q.text for q in fams["wordnet_category"]) == "buskin"
    reader = [dw.word for at in ("Sweaters", "Boots") for dw in L.article_words()[at]]
    assert len(fams["wordnet_category"]) == len([w for w in reader if side_of(w) == READER])
    colour_queries = fams["wordnet_colour_category"]
    assert len(colour_queries) == 2  # (Sweaters, Red) and (Boots, Red): no Khaki words
    assert all(dict(q.criteria)["baseColour"] == ("Red",) for q in colour_queries)
    assert "wordnet_hypernym" not in fams  # no hypernym covers both and not all
    for q in qs.queries:
        assert q.relevant(products)
