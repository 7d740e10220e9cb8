"""Training data for CLIP: catalogue rows -> train / held-out splits, captions, image tensors.

The held-out split is decided by a seeded hash of the product id alone, so a product is on
the same side in every run, on every machine, whatever the catalogue order; held-out
products are never trained on and are what the report measures.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from PIL import Image

from services.catalog.vocabulary import ARTICLE_TYPES
from services.encoders.images import InvalidImageError, decode_image

HELDOUT_FRACTION = 0.1
SPLIT_SEED = 0
MIN_TRAIN_PRODUCTS = 8

# Words shoppers use for an article type (a reverse of the catalogue's query synonyms, kept here
# so training does not depend on the catalogue package's internals).
ARTICLE_WORDS: dict[str, tuple[str, ...]] = {
    "Tshirts": ("t-shirt", "tshirt", "tee"),
    "Tops": ("top",),
    "Shirts": ("shirt",),
    "Sweaters": ("sweater", "jumper", "pullover"),
    "Sweatshirts": ("sweatshirt", "hoodie"),
    "Jackets": ("jacket", "coat"),
    "Trousers": ("trousers", "pants", "chinos"),
    "Jeans": ("jeans", "denims"),
    "Track Pants": ("track pants", "joggers"),
    "Dresses": ("dress", "frock"),
    "Sandals": ("sandals", "flip flops"),
    "Sports Shoes": ("sports shoes", "running shoes", "trainers", "sneakers"),
    "Casual Shoes": ("casual shoes", "sneakers"),
    "Boots": ("boots", "ankle boots"),
    "Handbags": ("handbag", "bag", "purse"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "Navy Blue": ("navy blue", "navy"),
    "Grey": ("grey", "gray"),
    "Maroon": ("maroon", "burgundy"),
}
GENDER_WORDS: dict[str, tuple[str, ...]] = {
    "Men": ("men", "mens", "men's"),
    "Women": ("women", "womens", "ladies"),
    "Boys": ("boys", "boy"),
    "Girls": ("girls", "girl"),
    "Unisex": ("unisex",),
}


class TrainingDataError(ValueError):
    """The catalogue cannot feed training (empty split, no usable images, ...)."""


def is_heldout(product_id: int, seed: int = SPLIT_SEED, fraction: float = HELDOUT_FRACTION) -> bool:
    """True when ``product_id`` belongs to the held-out split (stable seeded hash)."""
    digest = hashlib.sha256(f"{seed}:{int(product_id)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_rows(
    rows: Iterable[dict], seed: int = SPLIT_SEED, fraction: float = HELDOUT_FRACTION
) -> tuple[list[dict], list[dict]]:
    """(train, heldout) lists of rows."""
    train, heldout = [], []
    for row in rows:
        (heldout if is_heldout(row["id"], seed, fraction) else train).append(row)
    return train, heldout


def article_words(article: str) -> tuple[str, ...]:
    return ARTICLE_WORDS.get(article, (article.lower(),))


def colour_words(colour: str) -> tuple[str, ...]:
    return COLOUR_WORDS.get(colour, (colour.lower(),))


def captions_for(row: dict) -> list[str]:
    """Every caption a product is trained with: its name plus attribute templates with synonyms."""
    name = (row.get("productDisplayName") or "").strip()
    captions = [name] if name else []
    article = row.get("articleType") or ""
    colour = row.get("baseColour")
    gender = row.get("gender")
    usage = row.get("usage")
    for art in article_words(article):
        captions.append(art)
        if colour:
            for col in colour_words(colour):
                captions.append(f"{col} {art}")
                if gender:
                    captions.extend(
                        f"{g} {col} {art}" for g in GENDER_WORDS.get(gender, (gender.lower(),))
                    )
        if usage:
            captions.append(f"{usage.lower()} {art}")
        if gender:
            captions.append(f"{GENDER_WORDS.get(gender, (gender.lower(),))[0]} {art}")
    if colour and row.get("subCategory"):
        captions.append(f"{colour.lower()} {row['subCategory'].lower()}")
    return list(dict.fromkeys(c for c in captions if c))


def lit_captions(row: dict) -> list[str]:
    """Captions for a model with a pretrained text tower: the product's name, then templates of
    catalogue values only ("white sports shoes", "women white sports shoes", "sports sports shoes").

    No shopper synonyms (no ``ARTICLE_WORDS``): what a shopper's word means is left to the
    pretrained text tower, so the evaluation's paraphrase families test its knowledge rather
    than words this project trained on.
    """
    name = (row.get("productDisplayName") or "").strip()
    captions = [name] if name else []
    article = row.get("articleType") or ""
    display = display_word(article)
    colour = (row.get("baseColour") or "").lower()
    gender = (row.get("gender") or "").lower()
    usage = (row.get("usage") or "").lower()
    if display:
        captions.append(display)
        if colour:
            captions.append(f"{colour} {display}")
            if gender:
                captions.append(f"{gender} {colour} {display}")
        if usage:
            captions.append(f"{usage} {display}")
        if gender:
            captions.append(f"{gender} {display}")
    return list(dict.fromkeys(c for c in captions if c))


def display_word(article: str) -> str:
    """How product names spell an article type, lower case ("T-shirt" for Tshirts)."""

    known = ARTICLE_TYPES.get(article)
    return (known.display if known else article).lower()


@dataclass
class PairSet:
    """Preprocessed images (float16) with each product's caption list."""

    ids: list[int]
    pixels: torch.Tensor  # (n, 3, H, W) float16, already normalised by the model's preprocess
    captions: list[list[str]]
    rows: list[dict]

    def __len__(self) -> int:
        return len(self.ids)

    def sample_captions(
        self, indices: list[int], rng: random.Random, name_share: float = 0.4
    ) -> list[str]:
        """One caption per product: its display name with probability ``name_share``, else a template."""
        out = []
        for i in indices:
            options = self.captions[i]
            if len(options) == 1 or rng.random() < name_share:
                out.append(options[0])
            else:
                out.append(rng.choice(options[1:]))
        return out


def build_pairs(
    rows: list[dict],
    preprocess: Callable[[Image.Image], torch.Tensor],
    caption_fn: Callable[[dict], list[str]] = captions_for,
) -> PairSet:
    """Decode and preprocess every row's image once; rows with a bad image are skipped."""
    ids, tensors, captions, kept = [], [], [], []
    for row in rows:
        data = row.get("image")
        if not data:
            continue
        try:
            image = decode_image(data)
        except InvalidImageError:
            continue
        caption_list = caption_fn(row)
        if not caption_list:
            continue
        ids.append(int(row["id"]))
        tensors.append(preprocess(image).to(torch.float16))
        captions.append(caption_list)
        kept.append(row)
    if not tensors:
        raise TrainingDataError(f"none of the {len(rows)} rows has a decodable image and a caption")
    return PairSet(ids, torch.stack(tensors), captions, kept)
