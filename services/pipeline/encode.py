"""Encoding catalogue rows: the one place the pipeline turns products into vectors.

Rows use the dataset's field names (``productDisplayName``, ``image`` as file bytes, ...), as
:func:`services.store.products.iter_products` and the catalogue readers yield them. Used by
the full build's encode stages and by the incremental catalogue sync, so both encode a
product the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pgvector import SparseVector

from services.catalog.text import DOCUMENT_COLUMNS, dense_name_text, document_text


def _image_bytes(image) -> bytes | None:
    if isinstance(image, dict):  # the datasets Image struct {bytes, path}
        image = image.get("bytes")
    return None if image is None else bytes(image)


def encode_dense(
    rows: Sequence[dict], dense_model: str, *, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """``(image vectors, name vectors)`` of ``rows``: CLIP unit rows, one per product.

    The text half is the display name alone: on the tuning split it beat the name plus
    attributes (``document_text``) on photo + text queries by more than it lost on text
    queries (docs/evaluation/index.md, "How the defaults were chosen"). Both arrays are kept so that a version's
    ``dense_image_weight`` is applied at load time and a new weight needs no re-encoding.
    """
    # Deferred: CLIP imports torch and open_clip (seconds); other stages never need them.
    from services.encoders.clip import load_clip  # noqa: PLC0415

    encoder = load_clip(dense_model)
    images = [_image_bytes(r.get("image")) for r in rows]
    image_vecs = np.ascontiguousarray(
        encoder.encode_images(images, batch_size=batch_size), dtype=np.float32
    )
    name_vecs = np.ascontiguousarray(
        encoder.encode_texts([dense_name_text(r.get("productDisplayName")) for r in rows]),
        dtype=np.float32,
    )
    if image_vecs.shape[0] != len(rows) or name_vecs.shape[0] != len(rows):
        raise RuntimeError(
            f"CLIP returned {image_vecs.shape[0]} image and {name_vecs.shape[0]} "
            f"text vectors for {len(rows)} products"
        )
    return image_vecs, name_vecs


def product_dense_vectors(image: np.ndarray, name: np.ndarray, image_weight: float) -> np.ndarray:
    """Rows of ``normalise(w * image + (1 - w) * name)``: a product's dense vector from its
    photo and its name in the shared CLIP space (w = 1: photo only, w = 0: name only)."""
    mixed = image_weight * image + (1.0 - image_weight) * name
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    return np.ascontiguousarray(mixed / np.maximum(norms, 1e-12), dtype=np.float32)


def encode_sparse(
    rows: Sequence[dict], sparse_model: str, *, batch_size: int = 64
) -> list[SparseVector]:
    """SPLADE vectors of ``rows``' product texts (:func:`document_text`), one per product."""
    # Deferred: SPLADE imports torch and transformers (seconds).
    from services.encoders.splade import load_splade  # noqa: PLC0415

    texts = [document_text({c: r.get(c) for c in DOCUMENT_COLUMNS}) for r in rows]
    vectors = load_splade(sparse_model).encode(texts, batch_size=batch_size)
    if len(vectors) != len(texts):
        raise RuntimeError(f"SPLADE returned {len(vectors)} vectors for {len(texts)} texts")
    return vectors
