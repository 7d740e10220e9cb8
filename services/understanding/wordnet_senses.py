"""The hand-written part of the WordNet lexicon: one WordNet 3.0 noun sense per catalogue value.

Chosen by reading the glosses; each entry keeps the start of its gloss so another WordNet
release fails loudly (``wordnet.resolve``). Words are never written here: they are derived
from these senses by ``services.understanding.wordnet``.
"""

from __future__ import annotations

from dataclasses import dataclass


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
