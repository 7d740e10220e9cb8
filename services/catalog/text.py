"""The texts a product is encoded from: SPLADE's document text and the dense name text."""

from __future__ import annotations

# The fields document_text reads (dataset spelling).
DOCUMENT_COLUMNS = ("productDisplayName", "articleType", "baseColour", "gender", "usage", "season")


def document_text(row: dict) -> str:
    """The text SPLADE indexes for a product: its display name plus the attributes a shopper
    types (article type, colour, gender, usage, season) that the name does not already say."""
    name = (row.get("productDisplayName") or "").strip()
    words = set(name.lower().split())
    extra = []
    for key in DOCUMENT_COLUMNS[1:]:
        value = row.get(key)
        if isinstance(value, str) and value.strip() and value.lower() not in words:
            extra.append(value.strip())
            words.add(value.lower())
    return " ".join([name, *extra]).strip()


def dense_name_text(name: str | None) -> str:
    """The text half of a product's dense vector: its display name (validation guarantees one;
    a blank is encoded as a neutral word rather than failing the shard)."""
    return name.strip() if isinstance(name, str) and name.strip() else "product"
