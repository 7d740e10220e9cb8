"""The catalogue's vocabulary as data: field values, colours, article types, synonyms.

Values follow the Hugging Face dataset ``ashraq/fashion-product-images-small`` (the Myntra
"Fashion Product Images" catalogue). The offline catalogue draws from these tables, the
validator checks closed fields against them, and evaluation reuses them to build queries
and relevance judgements.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.catalog.schema import DATASET_COLUMNS, TEXT_ATTRIBUTES

# --- the parquet schema's columns, in the real dataset's order (services.catalog.schema) ------
COLUMNS: tuple[str, ...] = DATASET_COLUMNS
# Free-text metadata columns (each may be empty in the real data; filters use the same set).
TEXT_COLUMNS: tuple[str, ...] = TEXT_ATTRIBUTES

# --- closed fields: every value the real dataset uses ----------------------------------------
GENDERS: tuple[str, ...] = ("Men", "Women", "Boys", "Girls", "Unisex")
SEASONS: tuple[str, ...] = ("Summer", "Fall", "Winter", "Spring")
USAGES: tuple[str, ...] = (
    "Casual",
    "Formal",
    "Sports",
    "Ethnic",
    "Party",
    "Travel",
    "Smart Casual",
    "Home",
)
MASTER_CATEGORIES: tuple[str, ...] = (
    "Apparel",
    "Accessories",
    "Footwear",
    "Personal Care",
    "Free Items",
    "Sporting Goods",
    "Home",
)
YEAR_RANGE: tuple[int, int] = (2007, 2019)  # years present in the real dataset
# Fields the real dataset leaves empty on a few rows; the validator accepts None for these.
NULLABLE_FIELDS: frozenset[str] = frozenset({"baseColour", "season", "year", "usage"})


# --- colours: name -> sRGB used to colourise the offline images ------------------------------
COLOURS: dict[str, tuple[int, int, int]] = {
    "Black": (22, 22, 24),
    "White": (248, 248, 246),
    "Blue": (36, 96, 210),
    "Navy Blue": (24, 34, 96),
    "Grey": (128, 128, 132),
    "Charcoal": (64, 66, 70),
    "Red": (206, 32, 38),
    "Maroon": (118, 22, 42),
    "Green": (36, 142, 64),
    "Olive": (108, 112, 40),
    "Brown": (112, 70, 38),
    "Tan": (196, 146, 96),
    "Beige": (222, 204, 164),
    "Khaki": (190, 172, 126),
    "Cream": (244, 232, 198),
    "Pink": (240, 128, 170),
    "Magenta": (204, 30, 150),
    "Purple": (118, 48, 152),
    "Lavender": (184, 162, 220),
    "Yellow": (244, 212, 36),
    "Mustard": (212, 166, 30),
    "Orange": (240, 128, 28),
    "Peach": (246, 186, 150),
    "Teal": (20, 128, 128),
    "Turquoise Blue": (48, 196, 200),
    "Silver": (190, 192, 200),
    "Gold": (206, 164, 52),
}

# Catalogue-wide colour frequencies (shape of the real data: black, white and blue dominate).
COLOUR_WEIGHTS: dict[str, float] = {
    "Black": 20, "White": 11, "Blue": 10, "Navy Blue": 5, "Grey": 7, "Charcoal": 1.2,
    "Red": 5.5, "Maroon": 1.5, "Green": 4.5, "Olive": 1.5, "Brown": 4, "Tan": 0.6,
    "Beige": 2, "Khaki": 1, "Cream": 1, "Pink": 4.5, "Magenta": 0.6, "Purple": 3.5,
    "Lavender": 0.6, "Yellow": 2.5, "Mustard": 0.7, "Orange": 1.6, "Peach": 0.7,
    "Teal": 0.8, "Turquoise Blue": 0.7, "Silver": 0.8, "Gold": 0.6,
}  # fmt: skip


@dataclass(frozen=True)
class ArticleType:
    """One articleType with its place in the category tree and how product names spell it."""

    name: str  # articleType, e.g. "Sports Shoes"
    sub_category: str  # subCategory, e.g. "Shoes"
    master_category: str  # masterCategory, e.g. "Footwear"
    display: str  # the form used in productDisplayName, e.g. "Sports Shoes", "T-shirt"


ARTICLE_TYPES: dict[str, ArticleType] = {
    a.name: a
    for a in (
        ArticleType("Tshirts", "Topwear", "Apparel", "T-shirt"),
        ArticleType("Tops", "Topwear", "Apparel", "Top"),
        ArticleType("Shirts", "Topwear", "Apparel", "Shirt"),
        ArticleType("Sweaters", "Topwear", "Apparel", "Sweater"),
        ArticleType("Sweatshirts", "Topwear", "Apparel", "Sweatshirt"),
        ArticleType("Jackets", "Topwear", "Apparel", "Jacket"),
        ArticleType("Trousers", "Bottomwear", "Apparel", "Trousers"),
        ArticleType("Jeans", "Bottomwear", "Apparel", "Jeans"),
        ArticleType("Track Pants", "Bottomwear", "Apparel", "Track Pants"),
        ArticleType("Dresses", "Dress", "Apparel", "Dress"),
        ArticleType("Sandals", "Sandal", "Footwear", "Sandals"),
        ArticleType("Sports Shoes", "Shoes", "Footwear", "Sports Shoes"),
        ArticleType("Casual Shoes", "Shoes", "Footwear", "Casual Shoes"),
        # Ankle boots: the real dataset files boots under subCategory "Shoes" (not verified
        # against the hub files from this machine, which cannot reach the hub).
        ArticleType("Boots", "Shoes", "Footwear", "Boots"),
        ArticleType("Handbags", "Bags", "Accessories", "Handbag"),
    )
}

# --- Fashion-MNIST classes -> article types (with their share of that class's images) -------
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# label index -> [(articleType, weight)]: what an image of that class may be sold as.
# Exactly the mapping: only T-shirt/top (Tshirts or Tops) and Sneaker (Sports Shoes
# or Casual Shoes) are split. Don't add look-alike splits such as Trouser -> Jeans/Track Pants
# or Pullover -> Sweatshirts: the same kind of 28x28 image would then carry several article
# types, and no image model can tell them apart. The real dataset's other types (Jeans,
# Track Pants, Sweatshirts, ...) stay in ARTICLE_TYPES for hub and local catalogues.
SOURCE_CLASS_ARTICLES: dict[int, tuple[tuple[str, float], ...]] = {
    0: (("Tshirts", 0.7), ("Tops", 0.3)),
    1: (("Trousers", 1.0),),
    2: (("Sweaters", 1.0),),
    3: (("Dresses", 1.0),),
    4: (("Jackets", 1.0),),
    5: (("Sandals", 1.0),),
    6: (("Shirts", 1.0),),
    7: (("Sports Shoes", 0.6), ("Casual Shoes", 0.4)),
    8: (("Handbags", 1.0),),
    9: (("Boots", 1.0),),
}

# Shoppers' words (synonyms) are merchandiser rules now: services/understanding/
# starting_rules.csv, loaded into the synonym_rules table (migration 0007).


def article(name: str) -> ArticleType:
    """The :class:`ArticleType` called ``name``; raises LookupError listing the known ones."""
    try:
        return ARTICLE_TYPES[name]
    except KeyError:
        raise LookupError(
            f"unknown articleType {name!r}; known: {', '.join(sorted(ARTICLE_TYPES))}"
        ) from None


def articles_for_source_class(label: int) -> tuple[str, ...]:
    """Article types an image of Fashion-MNIST class ``label`` (0-9) may be sold as."""
    return tuple(name for name, _ in SOURCE_CLASS_ARTICLES[label])
