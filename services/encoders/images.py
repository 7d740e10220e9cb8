"""Decode untrusted image bytes (uploads, catalogue files) into bounded-size RGB PIL images.

Refuses non-images, archives and corrupt files with :class:`InvalidImageError`; bounds
memory on huge images (JPEG is decoded at a reduced scale with ``Image.draft``; other
formats are refused above :data:`MAX_DECODE_PIXELS` before their pixels are read);
converts CMYK, palette, greyscale and transparent images to RGB (alpha composited on white).
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

# Pixels we are willing to decode at full resolution (about 120 MB as RGB).
MAX_DECODE_PIXELS = 40_000_000
# Longest side kept after decoding: encoders work at <= 384 px, so 1024 leaves headroom.
MAX_SIDE = 1024

_ARCHIVE_MAGIC = {
    b"PK\x03\x04": "a ZIP archive",
    b"PK\x05\x06": "an empty ZIP archive",
    b"\x1f\x8b": "a gzip file",
    b"%PDF": "a PDF document",
    b"Rar!": "a RAR archive",
    b"7z\xbc\xaf": "a 7z archive",
}


class InvalidImageError(ValueError):
    """The bytes are not a usable image (not an image, corrupt, or too large)."""


class UnsupportedImageFormat(InvalidImageError):
    """The bytes are not an image format we read (an archive, a PDF, text...)."""


class UndecodableImage(InvalidImageError):
    """The bytes claim an image format but cannot be decoded (corrupt or truncated)."""


def _sniff_non_image(data: bytes) -> str | None:
    for magic, what in _ARCHIVE_MAGIC.items():
        if data.startswith(magic):
            return what
    return None


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of ``image``; transparency is composited on a white background."""
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High bit-depth greyscale: scale to 8 bits before colour conversion.
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_DECODE_PIXELS,
) -> Image.Image:
    """Decode image file bytes to an RGB image whose longest side is at most ``max_side``.

    Raises :class:`InvalidImageError` with a message fit for an API client.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidImageError(f"expected image bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidImageError("empty image data")
    what = _sniff_non_image(data)
    if what:
        raise UnsupportedImageFormat(f"not an image: the data is {what}")

    with warnings.catch_warnings():
        # We enforce our own pixel budget below; PIL's bomb warning is noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            raise UnsupportedImageFormat("not a recognised image format") from None
        except Image.DecompressionBombError as exc:
            raise InvalidImageError(f"image too large: {exc}") from None
        except OSError as exc:
            raise UndecodableImage(f"unreadable image: {exc}") from None

        width, height = image.size
        if image.format == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: memory stays bounded.
            image.draft("RGB", (max_side, max_side))
            width, height = image.size
        if width * height > max_pixels:
            raise InvalidImageError(
                f"image too large: {width}x{height} pixels exceeds the limit of "
                f"{max_pixels:,} pixels"
            )
        try:
            image.load()
            image = ImageOps.exif_transpose(image) or image
        except Image.DecompressionBombError as exc:
            raise InvalidImageError(f"image too large: {exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UndecodableImage(f"corrupt or truncated image ({image.format}): {exc}") from None

    image = _to_rgb(image)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return image


def as_rgb_image(item: bytes | Image.Image) -> Image.Image:
    """Accept either file bytes or an already decoded PIL image; return an RGB image."""
    if isinstance(item, Image.Image):
        return _to_rgb(item)
    return decode_image(item)
