"""The offline catalogue: real Fashion-MNIST garment images with SYNTHETIC product metadata.

Read this first: the IMAGES are real (Zalando's Fashion-MNIST, MIT licence, 70,000 greyscale
28x28 article photos in 10 classes, from Debian's package ``dataset-fashion-mnist``), but
every METADATA field -- colour, gender, brand, product name, season, year, usage -- is
SYNTHETIC, drawn from fixed seeds with the vocabulary and rough frequencies of the real
catalogue (``ashraq/fashion-product-images-small``). The image's class decides the article
type (see :data:`services.catalog.vocabulary.SOURCE_CLASS_ARTICLES`), exactly as the issue
specifies: T-shirt/top -> Tshirts or Tops, Trouser -> Trousers, Pullover -> Sweaters,
Dress -> Dresses, Coat -> Jackets, Sandal -> Sandals, Shirt -> Shirts, Sneaker -> Sports
Shoes or Casual Shoes, Bag -> Handbags, Ankle boot -> Boots. Apart from those two splits
the article type can be read from the pixels. The drawn colour is painted onto the garment
so that "red dress" is visible in the pixels, not only in the text.

Images are upscaled with a bicubic filter to 60x60 and centred on a light 60x80 (w x h)
canvas, the real small dataset's portrait size, then JPEG-encoded.

Row ``i`` depends only on ``(seed, i)``: the catalogue of size N is the first N rows of any
larger one, ids are stable (``OFFLINE_ID_BASE + i``) and the same inputs give a
byte-identical Parquet file. Beyond 70,000 rows images repeat with fresh metadata.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import random
import struct
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from services.catalog.errors import CatalogSourceError
from services.catalog.shards import write_parquet
from services.catalog.vocabulary import (
    ARTICLE_TYPES,
    COLOUR_WEIGHTS,
    COLOURS,
    SOURCE_CLASS_ARTICLES,
)
from services.config import get_settings

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
)
OFFLINE_ID_BASE = 100_000  # above every id of the real dataset (<= ~60,000)
CANVAS_SIZE = (60, 80)  # width, height of the real small dataset's images
GARMENT_SIZE = 60  # the square garment image is upscaled to this and centred on the canvas
BACKGROUND_RGB = (246, 245, 243)
JPEG_QUALITY = 90
YEARS = (2010, 2018)
NULL_YEAR_RATE = 0.002  # the real dataset has a few rows without a year
# Bump whenever generation changes what a row or image looks like: cached catalogues record
# it in their Parquet metadata and are rebuilt when it differs.
GENERATOR_VERSION = 3  # 3: exactly the class -> article type mapping
PROVENANCE_KEY = "fashion_search.offline"

# --- generation tables: how a synthetic product is drawn, per article type -------------------
_GENDER = {
    "Tshirts": {"Men": 60, "Women": 25, "Boys": 7, "Girls": 4, "Unisex": 4},
    "Tops": {"Women": 90, "Girls": 10},
    "Shirts": {"Men": 82, "Women": 12, "Boys": 6},
    "Sweaters": {"Men": 55, "Women": 40, "Boys": 3, "Girls": 2},
    "Jackets": {"Men": 60, "Women": 35, "Boys": 3, "Unisex": 2},
    "Trousers": {"Men": 55, "Women": 40, "Boys": 3, "Girls": 2},
    "Dresses": {"Women": 90, "Girls": 10},
    "Sandals": {"Men": 45, "Women": 45, "Boys": 4, "Girls": 3, "Unisex": 3},
    "Sports Shoes": {"Men": 60, "Women": 30, "Unisex": 5, "Boys": 3, "Girls": 2},
    "Casual Shoes": {"Men": 60, "Women": 33, "Unisex": 4, "Boys": 3},
    "Boots": {"Women": 60, "Men": 40},
    "Handbags": {"Women": 97, "Unisex": 3},
}
_USAGE = {
    "Tshirts": {"Casual": 80, "Sports": 20},
    "Tops": {"Casual": 85, "Party": 10, "Ethnic": 5},
    "Shirts": {"Casual": 55, "Formal": 40, "Party": 5},
    "Sweaters": {"Casual": 90, "Formal": 10},
    "Jackets": {"Casual": 75, "Sports": 15, "Formal": 5, "Travel": 5},
    "Trousers": {"Casual": 55, "Formal": 40, "Party": 5},
    "Dresses": {"Casual": 60, "Party": 30, "Formal": 10},
    "Sandals": {"Casual": 90, "Ethnic": 10},
    "Sports Shoes": {"Sports": 100},
    "Casual Shoes": {"Casual": 95, "Travel": 5},
    "Boots": {"Casual": 80, "Travel": 20},
    "Handbags": {"Casual": 85, "Formal": 10, "Party": 5},
}
_WARM = ("Sweaters", "Jackets", "Boots")
_SEASON_WARM = {"Winter": 60, "Fall": 30, "Spring": 5, "Summer": 5}
_SEASON_LIGHT = {"Summer": 60, "Spring": 22, "Fall": 12, "Winter": 6}  # T-shirts, sandals, tops
_SEASON_DEFAULT = {"Summer": 35, "Fall": 30, "Winter": 20, "Spring": 15}
_LIGHT = ("Tshirts", "Tops", "Sandals", "Dresses")

_COLOUR = {
    "Trousers": {
        "Black": 25, "Navy Blue": 15, "Grey": 15, "Beige": 12, "Khaki": 10, "Brown": 8,
        "Olive": 8, "Blue": 5, "Charcoal": 2,
    },
    "Sports Shoes": {
        "Black": 25, "White": 25, "Grey": 15, "Blue": 12, "Navy Blue": 8, "Red": 7,
        "Green": 4, "Orange": 4,
    },
    "Casual Shoes": {
        "Black": 25, "White": 20, "Brown": 18, "Tan": 8, "Navy Blue": 8, "Grey": 8,
        "Beige": 6, "Red": 4, "Olive": 3,
    },
    "Boots": {"Black": 40, "Brown": 35, "Tan": 12, "Grey": 5, "Beige": 5, "Maroon": 3},
    "Sandals": {
        "Black": 25, "Brown": 25, "Tan": 10, "Gold": 8, "Silver": 6, "White": 8, "Beige": 8,
        "Pink": 5, "Red": 5,
    },
    "Handbags": {
        "Black": 25, "Brown": 20, "Beige": 10, "Red": 8, "Pink": 7, "White": 6, "Tan": 6,
        "Maroon": 5, "Navy Blue": 4, "Silver": 3, "Gold": 3, "Purple": 3,
    },
    "Dresses": {
        "Black": 15, "Blue": 10, "Red": 10, "Pink": 12, "White": 8, "Green": 8, "Purple": 8,
        "Yellow": 7, "Maroon": 7, "Navy Blue": 5, "Beige": 5, "Orange": 5,
    },
}  # fmt: skip

_BRANDS = {
    "Tshirts": ("Nike", "Puma", "Adidas", "Reebok", "Roadster", "Inkfruit", "Tantra",
                "United Colors of Benetton", "Flying Machine", "Locomotive", "Basics", "Fila"),
    "Tops": ("Jealous 21", "Vero Moda", "Mango", "Only", "Global Desi",
             "United Colors of Benetton", "Puma"),
    "Shirts": ("Peter England", "Van Heusen", "Allen Solly", "Arrow", "John Miller",
               "Indigo Nation", "Scullers", "Wrangler", "Flying Machine", "Basics"),
    "Sweaters": ("United Colors of Benetton", "Wrangler", "Monte Carlo", "Allen Solly",
                 "Roadster", "Peter England", "Mango"),
    "Jackets": ("Wrangler", "Puma", "Nike", "Adidas", "Fort Collins", "Roadster", "Monte Carlo",
                "Lee"),
    "Trousers": ("Peter England", "Van Heusen", "Allen Solly", "Arrow", "John Miller",
                 "Scullers", "Basics", "Vero Moda"),
    "Dresses": ("Mango", "Vero Moda", "Jealous 21", "Only", "Global Desi",
                "United Colors of Benetton", "FabAlley"),
    "Sandals": ("Bata", "Crocs", "Woodland", "Red Tape", "Catwalk", "Carlton London", "Mochi",
                "Nike", "Puma"),
    "Sports Shoes": ("Nike", "Puma", "Adidas", "Reebok", "Fila", "Lotto", "Asics", "Skechers"),
    "Casual Shoes": ("Converse", "Vans", "Skechers", "Puma", "Red Tape", "Woodland", "Clarks",
                     "Lee Cooper", "Roadster"),
    "Boots": ("Woodland", "Timberland", "Red Tape", "Clarks", "Carlton London", "Catwalk"),
    "Handbags": ("Baggit", "Lavie", "Hidesign", "Kipling", "Caprese", "Esprit", "Mango",
                 "Da Milano"),
}  # fmt: skip
_KIDS_BRANDS = ("Gini and Jony", "Doodle", "Palm Tree", "United Colors of Benetton Kids")
_DESCRIPTORS = {
    "Sports Shoes": ("Running", "Training", "Mesh", "Lace-Up"),
    "Casual Shoes": ("Canvas", "Leather", "Slip-On", "Lace-Up"),
    "Boots": ("Leather", "Suede", "Ankle-Length"),
    "Sandals": ("Strappy", "Leather", "Flat"),
    "Handbags": ("Leather", "Tote", "Sling", "Quilted"),
    "Tshirts": ("Printed", "Solid", "Striped", "Polo"),
    "Tops": ("Printed", "Solid", "Striped"),
    "Shirts": ("Checked", "Striped", "Solid", "Slim Fit"),
    "Sweaters": ("Solid", "Striped", "Cable Knit"),
    "Jackets": ("Padded", "Solid", "Hooded"),
    "Trousers": ("Slim Fit", "Solid", "Regular Fit"),
    "Dresses": ("Printed", "Solid", "Floral"),
}
DESCRIPTOR_RATE = 0.45


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    names = list(weights)
    return rng.choices(names, weights=[weights[n] for n in names])[0]


# --- Fashion-MNIST ---------------------------------------------------------------------------
def _read_idx(path: Path) -> np.ndarray:
    """Read one idx file (gzip), e.g. (60000, 28, 28) uint8 images or (60000,) labels."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise CatalogSourceError(f"{path}: not an unsigned-byte idx file")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@lru_cache(maxsize=2)
def load_fashion_mnist(directory: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 Fashion-MNIST images (train then test), as ((70000, 28, 28), (70000,)) uint8.

    ``directory`` defaults to ``settings.fashion_mnist_dir`` (FASHION_MNIST_DIR, default
    Debian's install location).
    """
    directory = Path(directory or get_settings().fashion_mnist_dir)
    images, labels = [], []
    for image_name, label_name in FASHION_MNIST_FILES:
        image_path, label_path = directory / image_name, directory / label_name
        if not image_path.exists() or not label_path.exists():
            raise CatalogSourceError(
                f"Fashion-MNIST not found in {directory} (missing {image_name} or {label_name}); "
                "install Debian's package dataset-fashion-mnist (apt-get install "
                "dataset-fashion-mnist) or set FASHION_MNIST_DIR"
            )
        images.append(_read_idx(image_path))
        labels.append(_read_idx(label_path))
    return np.concatenate(images), np.concatenate(labels)


# --- images ----------------------------------------------------------------------------------
def render_garment(pixels: np.ndarray, colour: str) -> bytes:
    """A 28x28 greyscale Fashion-MNIST image -> JPEG bytes of the garment painted ``colour``.

    The grey level is both coverage (alpha over the light background) and shading (brighter
    source pixels are lit, darker ones in shadow), so black, white, grey and navy garments
    stay distinct and keep their texture.
    """
    grey = Image.fromarray(pixels, mode="L").resize(
        (GARMENT_SIZE, GARMENT_SIZE), Image.Resampling.BICUBIC
    )
    level = np.asarray(grey, dtype=np.float32)[..., None] / 255.0
    # Fashion-MNIST's background is 0; anything clearly above it is garment (opaque), so
    # faint garments (many tops and bags peak well below 255) still show their full colour.
    alpha = np.clip(level * 4.0, 0.0, 1.0)
    shading = level / max(float(level.max()), 1e-6)  # 0..1 within this garment
    tint = np.asarray(COLOURS[colour], dtype=np.float32) * (0.62 + 0.38 * shading)
    background = np.asarray(BACKGROUND_RGB, dtype=np.float32)
    garment = background * (1.0 - alpha) + tint * alpha

    width, height = CANVAS_SIZE
    canvas = np.empty((height, width, 3), dtype=np.float32)
    canvas[:] = background
    top, left = (height - GARMENT_SIZE) // 2, (width - GARMENT_SIZE) // 2
    canvas[top : top + GARMENT_SIZE, left : left + GARMENT_SIZE] = garment
    image = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), mode="RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


# --- products --------------------------------------------------------------------------------
def synthetic_metadata(index: int, label: int, seed: int = 0) -> dict:
    """The synthetic metadata of offline product ``index`` whose image has class ``label``."""
    rng = random.Random(f"fashion-offline:{seed}:{index}")
    article_name = _weighted(rng, dict(SOURCE_CLASS_ARTICLES[label]))
    article = ARTICLE_TYPES[article_name]
    gender = _weighted(rng, _GENDER[article_name])
    colour = _weighted(rng, _COLOUR.get(article_name, COLOUR_WEIGHTS))
    if article_name in _WARM:
        season = _weighted(rng, _SEASON_WARM)
    elif article_name in _LIGHT:
        season = _weighted(rng, _SEASON_LIGHT)
    else:
        season = _weighted(rng, _SEASON_DEFAULT)
    year = rng.randint(*YEARS)
    if rng.random() < NULL_YEAR_RATE:
        year = None
    usage = _weighted(rng, _USAGE[article_name])
    if gender in ("Boys", "Girls") and rng.random() < 0.5:
        brand = rng.choice(_KIDS_BRANDS)
    else:
        brand = rng.choice(_BRANDS[article_name])
    descriptor = ""
    if article_name in _DESCRIPTORS and rng.random() < DESCRIPTOR_RATE:
        descriptor = rng.choice(_DESCRIPTORS[article_name]) + " "
    return {
        "id": OFFLINE_ID_BASE + index,
        "gender": gender,
        "masterCategory": article.master_category,
        "subCategory": article.sub_category,
        "articleType": article_name,
        "baseColour": colour,
        "season": season,
        "year": year,
        "usage": usage,
        "productDisplayName": f"{brand} {gender} {descriptor}{colour} {article.display}",
    }


def image_order(seed: int = 0, count: int = 70_000) -> np.ndarray:
    """Which Fashion-MNIST image each offline row uses: a seeded permutation of all images."""
    return np.random.default_rng(seed).permutation(count)


def iter_offline_rows(
    size: int = 10_000, seed: int = 0, source_dir: Path | None = None
) -> Iterator[dict]:
    """Offline product rows 0..size-1 (dataset field names, ``image`` as JPEG bytes)."""
    images, labels = load_fashion_mnist(source_dir)
    order = image_order(seed, len(images))
    for index in range(size):
        image_index = int(order[index % len(order)])
        row = synthetic_metadata(index, int(labels[image_index]), seed)
        row["image"] = render_garment(images[image_index], row["baseColour"])
        yield row


def build_offline_catalog(
    out: Path, size: int = 10_000, seed: int = 0, source_dir: Path | None = None
) -> Path:
    """Build the offline catalogue of ``size`` products into the Parquet file ``out``.

    Deterministic: the same ``size``/``seed`` (and library versions) give byte-identical files.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    out = Path(out)
    log.info("building offline catalogue: %d products (seed %d) -> %s", size, seed, out)
    provenance = {"generator_version": GENERATOR_VERSION, "size": size, "seed": seed}
    return write_parquet(
        iter_offline_rows(size, seed, source_dir),
        out,
        metadata={PROVENANCE_KEY: json.dumps(provenance, sort_keys=True)},
    )


def offline_provenance(path: Path) -> dict | None:
    """The generator version, size and seed recorded in an offline catalogue (None if absent)."""

    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None
    raw = metadata.get(PROVENANCE_KEY.encode())
    return json.loads(raw) if raw else None


def is_current_offline_catalog(path: Path, size: int, seed: int = 0) -> bool:
    """True when ``path`` was built by this generator version with this size and seed."""
    expected = {"generator_version": GENERATOR_VERSION, "size": size, "seed": seed}
    return Path(path).exists() and offline_provenance(path) == expected


def source_classes_of(ids: Sequence[int], seed: int = 0) -> list[int]:
    """The Fashion-MNIST class (0-9) behind each offline product id (for analysis and tests)."""
    _, labels = load_fashion_mnist(None)
    order = image_order(seed, len(labels))
    return [int(labels[order[(i - OFFLINE_ID_BASE) % len(order)]]) for i in ids]
