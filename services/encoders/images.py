"""Decode untrusted image bytes (uploads, catalogue files) into bounded-size RGB PIL images.

Refuses non-images, archives, formats outside :data:`ALLOWED_FORMATS` and corrupt files with
:class:`InvalidImageError`. Memory is bounded three ways:

* **A decode budget in bytes**, checked on the header before any pixel is read (``Image.open``
  is lazy): :func:`decode_cost` estimates what decoding will allocate (the raster PIL builds,
  whose bytes per pixel depend on the mode, plus what the format's decoder holds beside it)
  and images above :data:`MAX_DECODE_BYTES` are refused. JPEG is decoded at 1/2..1/8 scale
  with ``Image.draft``, so the budget applies after draft (camera photos stay accepted);
  progressive and multi-scan JPEGs are also charged libjpeg's full-resolution coefficient
  buffers, which ``draft`` does not shrink. The older pixel limit
  (:data:`MAX_DECODE_PIXELS`) still applies too.
* **Shrink before converting**: the decoded raster is box-reduced by an integer factor (an
  RGB raster in one call; any other mode tile by tile, each tile converted to RGB with alpha
  composited on white on its own), so no full-size RGBA/RGB copy is ever made. The source
  image is closed as soon as it is reduced, and after a large decode glibc is asked to hand
  the freed pages back (``malloc_trim``) so that request threads do not each keep a raster's
  worth of freed heap.
* **A process-wide cap on concurrent decodes** (:func:`set_decode_concurrency`, 4 slots by
  default): a decode waits up to ``wait_timeout`` seconds for a slot, then raises
  :class:`DecodersBusy`, which is the server's state, not a client error. Worst-case decode
  memory is therefore about ``slots x MAX_DECODE_BYTES`` plus a small per-slot workspace.

Multi-frame files (animated GIF/PNG/WebP, multi-page TIFF) decode their first frame only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import math
import sys
import threading
import warnings
from collections.abc import Callable

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

# Pixels we are willing to decode at full resolution (kept from the first limit; the byte
# budget below is the one that bounds memory, this one still bounds CPU time on 1-bit images).
MAX_DECODE_PIXELS = 40_000_000
# Bytes one decode may allocate (see decode_cost). 96 MiB admits a 25 MP RGB/RGBA PNG (a 6K
# screenshot, 6016x3384, fits), a 12 MP BMP, an 8 MP TIFF, a 6 MP WebP/AVIF, a ~30 MP
# progressive 4:2:0 JPEG and any baseline JPEG PIL opens (draft decodes it at <= 1/8 of its
# pixels: 50 MP phone photos stay accepted), while refusing the 155 KB, 6320x6320 RGBA PNG
# that cost 730 MB. With 4 slots the decoders hold at most ~4 x 96 MiB ~= 400 MB however many
# uploads arrive at once.
MAX_DECODE_BYTES = 96 * 1024 * 1024
# Longest side kept after decoding: encoders work at <= 384 px, so 1024 leaves headroom.
MAX_SIDE = 1024
# Formats whose decoders' memory we have measured and bound (PIL can open ~40 more, some of
# them through external programs such as Ghostscript: none of those are accepted).
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "WEBP", "BMP", "TIFF", "AVIF")
# Concurrent decodes per process, and how long a decode waits for a free slot.
DEFAULT_DECODE_CONCURRENCY = 4
DECODE_WAIT_TIMEOUT_S = 10.0

# Bytes per pixel of PIL's in-memory raster for each mode. PIL pads: "RGB" is stored in 4
# bytes, "LA"/"PA" too, and a 1-bit image takes a byte per pixel.
_RASTER_BYTES_PER_PIXEL = {
    "1": 1,
    "L": 1,
    "P": 1,
    "I;16": 2,
    "I;16L": 2,
    "I;16B": 2,
    "I;16N": 2,
    "I": 4,
    "F": 4,
    "LA": 4,
    "La": 4,
    "PA": 4,
    "RGB": 4,
    "RGBA": 4,
    "RGBa": 4,
    "RGBX": 4,
    "CMYK": 4,
    "YCbCr": 4,
    "LAB": 4,
    "HSV": 4,
}
_UNKNOWN_MODE_BYTES_PER_PIXEL = 8
# Whole decode cost per pixel for decoders that keep their own full-size buffers: libwebp's
# animation decoder (used by PIL for every WebP) holds two RGBA canvases plus the frame it
# hands over; libavif/dav1d hold YUV planes (up to 16-bit 4:4:4 + alpha) and an RGB buffer.
# The measured bytes per pixel: docs/operations/limits-and-security.md, "Decoder memory".
_WHOLE_DECODE_BYTES_PER_PIXEL = {"WEBP": 16, "AVIF": 16}
# Tiles the decoded raster is reduced in: small enough that the RGBA->RGB compositing copies
# of one tile stay a few MB.
_TILE_PIXELS = 128 * 1024

# After a decode this big, hand the freed heap pages back to the OS (see _release_freed_memory).
_TRIM_AFTER_BYTES = 8 * 1024 * 1024

_ARCHIVE_MAGIC = {
    b"PK\x03\x04": "a ZIP archive",
    b"PK\x05\x06": "an empty ZIP archive",
    b"\x1f\x8b": "a gzip file",
    b"%PDF": "a PDF document",
    b"Rar!": "a RAR archive",
    b"7z\xbc\xaf": "a 7z archive",
}

# JPEG start-of-frame markers (C4 DHT, C8 JPG and CC DAC share the range) and the
# progressive ones among them.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})

_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class InvalidImageError(ValueError):
    """The bytes are not a usable image (not an image, corrupt, or too large)."""


class UnsupportedImageFormat(InvalidImageError):
    """The bytes are not an image format we read (an archive, a PDF, text...)."""


class UndecodableImage(InvalidImageError):
    """The bytes claim an image format but cannot be decoded (corrupt or truncated)."""


class DecodersBusy(RuntimeError):
    """Every decode slot stayed busy for the whole wait: the server is overloaded, the image
    may be fine. Not an :class:`InvalidImageError`; an API answers 503 with ``Retry-After``."""

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_slots_lock = threading.Lock()
_slots_count = DEFAULT_DECODE_CONCURRENCY
_slots = threading.BoundedSemaphore(DEFAULT_DECODE_CONCURRENCY)


def set_decode_concurrency(n: int) -> None:
    """Allow ``n`` decodes at once in this process (call at startup; decodes already holding a
    slot of the previous limit finish under it)."""
    global _slots, _slots_count
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"decode concurrency must be a positive integer, got {n!r}")
    with _slots_lock:
        _slots = threading.BoundedSemaphore(n)
        _slots_count = n


def decode_concurrency() -> int:
    """The number of concurrent decodes allowed (see :func:`set_decode_concurrency`)."""
    return _slots_count


@functools.cache
def _open_formats() -> tuple[str, ...]:
    """The PIL plugins to try: the allowed formats this PIL build reads (MPO files are
    opened by the JPEG plugin; AVIF needs a PIL built with libavif)."""
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


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


def _jpeg_coefficient_bytes(data: bytes) -> int | None:
    """Bytes of libjpeg's whole-image coefficient buffers for this JPEG; ``None`` if its
    header cannot be walked.

    A single-scan sequential JPEG streams (0 here). A progressive one, or a sequential one
    whose first scan does not carry every component, makes libjpeg buffer 2 bytes per DCT
    coefficient of every component at full resolution, whatever ``draft`` scale is asked.
    """
    pos, end = 2, len(data)  # after SOI
    width = height = 0
    sampling: list[tuple[int, int]] = []
    progressive = False
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if marker in _JPEG_SOF and len(segment) >= 6:
            height = int.from_bytes(segment[1:3], "big")
            width = int.from_bytes(segment[3:5], "big")
            count = segment[5]
            if len(segment) < 6 + 3 * count:
                return None
            sampling = [(b >> 4 or 1, b & 15 or 1) for b in segment[7 : 6 + 3 * count : 3]]
            progressive = marker in _JPEG_PROGRESSIVE_SOF
        elif marker == 0xDA:  # start of the first scan
            if not sampling or not segment:
                return None
            if not progressive and segment[0] >= len(sampling):
                return 0
            h_max = max(h for h, _ in sampling)
            v_max = max(v for _, v in sampling)
            total = 0
            for h, v in sampling:
                blocks_w = math.ceil(math.ceil(width * h / h_max) / 8)
                blocks_h = math.ceil(math.ceil(height * v / v_max) / 8)
                total += math.ceil(blocks_w / h) * h * math.ceil(blocks_h / v) * v * 64 * 2
            return total
        pos += 2 + length
    return None


def decode_cost(image: Image.Image, data: bytes, original_size: tuple[int, int]) -> int:
    """Estimated peak bytes of decoding ``image`` (opened, not loaded; drafted if JPEG).

    ``original_size`` is the size before ``draft``. Measured with Pillow 13: PNG and GIF
    allocate the raster only; BMP (RLE) and TIFF (a strip or tile as large as the image)
    also hold the undecoded samples; WebP and AVIF see ``_WHOLE_DECODE_BYTES_PER_PIXEL``.
    """
    width, height = image.size
    pixels = width * height
    raster = pixels * _RASTER_BYTES_PER_PIXEL.get(image.mode, _UNKNOWN_MODE_BYTES_PER_PIXEL)
    fmt = image.format or ""
    if fmt in ("JPEG", "MPO"):
        coefficients = _jpeg_coefficient_bytes(data)
        if coefficients is None:  # be conservative: every band at full resolution
            coefficients = original_size[0] * original_size[1] * len(image.getbands()) * 2
        return raster + coefficients
    if fmt in _WHOLE_DECODE_BYTES_PER_PIXEL:
        return max(raster, pixels * _WHOLE_DECODE_BYTES_PER_PIXEL[fmt])
    if fmt == "TIFF":
        return 3 * raster  # raster + samples of up to 16 bits in a strip/tile the image's size
    if fmt == "BMP":
        return 2 * raster
    return raster


def _draft_box(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The size to ``draft`` a JPEG towards: ``size`` scaled so its longest side is
    ``max_side`` (draft keeps both sides at least this big), so panoramas shrink too."""
    width, height = size
    longest = max(width, height, 1)
    return max(1, width * max_side // longest), max(1, height * max_side // longest)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):,.0f} MiB"


def _reduce_to_rgb(image: Image.Image, max_side: int) -> Image.Image:
    """RGB image whose longest side is at most ``max_side``, made without any full-size copy.

    The raster is box-reduced by the integer factor that leaves the longest side between
    ``max_side`` and twice that: an RGB raster directly, any other mode tile by tile (each
    tile cropped, converted to RGB compositing alpha on white, and reduced on its own). A
    final bicubic resample fits ``max_side``.
    """
    width, height = image.size
    factor = max(1, max(width, height) // max_side)
    if image.mode == "RGB" and factor == 1:  # at most 2 * max_side: resample in one go
        if max(width, height) <= max_side:
            return image.copy()
        return ImageOps.contain(image, (max_side, max_side), Image.Resampling.BICUBIC)
    if image.mode == "RGB":
        out = image.reduce(factor)  # allocates the reduced image only
    else:
        # Tiles are whole multiples of the reduction factor so their blocks line up with a
        # whole-image reduce (partial blocks only at the right and bottom edges).
        side = max(factor, math.isqrt(_TILE_PIXELS) // factor * factor)
        out = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
        for top in range(0, height, side):
            for left in range(0, width, side):
                box = (left, top, min(left + side, width), min(top + side, height))
                with image.crop(box) as tile:
                    rgb = _to_rgb(tile)
                    reduced = rgb.reduce(factor) if factor > 1 else rgb
                    out.paste(reduced, (left // factor, top // factor))
    if max(out.size) > max_side:
        out.thumbnail((max_side, max_side), Image.Resampling.BICUBIC)
    return out


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not refuse the picture
        return 1


def _load_malloc_trim() -> Callable[[int], int] | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim  # glibc only (musl has none)
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_malloc_trim = _load_malloc_trim()


def _release_freed_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    PIL allocates rasters in blocks; the smaller ones land in glibc's per-thread arenas,
    which keep freed memory (up to their 32 MB trim threshold each) for the thread that freed
    it. With a pool of request threads, each having decoded one large image, RSS then keeps
    growing after the decodes are done (the tester saw 6 GB held). Trimming after each large
    decode keeps RSS at what the live decodes use.
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def _acquire_slot(wait_timeout: float | None) -> threading.BoundedSemaphore:
    """Take a decode slot, waiting up to ``wait_timeout`` seconds (``None``: for ever)."""
    with _slots_lock:
        slots, count = _slots, _slots_count
    timeout = None if wait_timeout is None else max(0.0, wait_timeout)
    if not slots.acquire(timeout=timeout):
        raise DecodersBusy(
            f"all {count} image decoders stayed busy for {wait_timeout:g} s; retry shortly"
        )
    return slots


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    max_side: int = MAX_SIDE,
    max_pixels: int = MAX_DECODE_PIXELS,
    max_bytes: int = MAX_DECODE_BYTES,
    wait_timeout: float | None = None,
) -> Image.Image:
    """Decode image file bytes to an RGB image whose longest side is at most ``max_side``.

    Images over ``max_pixels`` pixels (after JPEG draft) or whose :func:`decode_cost` is over
    ``max_bytes`` are refused from their header, without taking a decode slot. Raises
    :class:`InvalidImageError` with a message fit for an API client, or
    :class:`DecodersBusy` when no decode slot frees up within ``wait_timeout`` seconds
    (``None``: wait for ever).
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
        # We enforce our own budgets below; PIL's bomb warning is noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=_open_formats())
        except UnidentifiedImageError:
            raise UnsupportedImageFormat(
                f"not a recognised image format (accepted: {', '.join(_open_formats())})"
            ) from None
        except Image.DecompressionBombError as exc:
            raise InvalidImageError(f"image too large: {exc}") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise UndecodableImage(f"unreadable image: {exc}") from None

        try:
            # Header checks first: a refused image never takes a decode slot.
            original_size = image.size
            if image.format in ("JPEG", "MPO"):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: memory stays bounded.
                image.draft("RGB", _draft_box(original_size, max_side))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidImageError(
                    f"image too large: {width}x{height} pixels exceeds the limit of "
                    f"{max_pixels:,} pixels"
                )
            cost = decode_cost(image, data, original_size)
            if cost > max_bytes:
                raise InvalidImageError(
                    f"image too large: decoding this {original_size[0]}x{original_size[1]} "
                    f"{image.format} image ({image.mode}) takes about {_mib(cost)}, over the "
                    f"limit of {_mib(max_bytes)}"
                )

            slots = _acquire_slot(wait_timeout)
            try:
                try:
                    image.load()  # the first frame only, whatever the frame count
                except Image.DecompressionBombError as exc:
                    raise InvalidImageError(f"image too large: {exc}") from None
                except (OSError, SyntaxError, ValueError, EOFError) as exc:
                    raise UndecodableImage(
                        f"corrupt or truncated image ({image.format}): {exc}"
                    ) from None
                orientation = _exif_orientation(image)
                out = _reduce_to_rgb(image, max_side)
            finally:
                image.close()  # free the full-size raster and decoder buffers before the slot
                if cost >= _TRIM_AFTER_BYTES:
                    _release_freed_memory()
                slots.release()
        finally:
            image.close()

    method = _EXIF_TRANSPOSE.get(orientation)
    if method is not None:
        out = out.transpose(method)
    return out


def as_rgb_image(item: bytes | Image.Image) -> Image.Image:
    """Accept either file bytes or an already decoded PIL image; return an RGB image."""
    if isinstance(item, Image.Image):
        return _to_rgb(item)
    return decode_image(item)
