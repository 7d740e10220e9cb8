"""Memory bounds of the image decoder (services.encoders.images) against hostile uploads.

A 155 KB RGBA PNG of 6320x6320 pixels used to cost ~730 MB per request; 8 at once took the
API from 1.4 GB to 7 GB. These tests pin the three defences: a decode budget in bytes checked
on the header, shrinking before any colour conversion, and a process-wide cap on concurrent
decodes (DecodersBusy when it stays full). Ordinary images must still decode as before.
"""

from __future__ import annotations

import io
import json
import math
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from services.encoders import images
from services.encoders.images import (
    MAX_DECODE_BYTES,
    MAX_SIDE,
    DecodersBusy,
    InvalidImageError,
    UndecodableImage,
    UnsupportedImageFormat,
    decode_image,
    set_decode_concurrency,
)

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


# --- hostile and ordinary inputs, built cheaply ----------------------------------------------
def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def _one_colour_png(width: int, height: int, pixel: bytes) -> bytes:
    """An 8-bit one-colour PNG (``pixel``: 1, 2, 3 or 4 bytes: L, LA, RGB, RGBA) that is
    tiny on the wire whatever its dimensions, built without holding its pixels.

    The first row holds the colour; every other row is filtered "Up" (all zero bytes). The
    zero rows are deflated once per batch and the compressed batch repeated: a full flush
    after each batch makes the batches independent, so only the Adler-32 runs over all rows.
    """
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[len(pixel)]
    first = b"\x00" + pixel * width
    zero_row = b"\x02" + bytes(len(pixel) * width)
    batch_rows = max(1, (4 * MIB) // len(zero_row))
    batches, rest = divmod(height - 1, batch_rows)
    zeros = zero_row * batch_rows
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(first) + comp.flush(zlib.Z_FULL_FLUSH)
    batch = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
    tail = comp.compress(zero_row * rest) + comp.flush(zlib.Z_FINISH)
    checksum = zlib.adler32(first)
    for _ in range(batches):
        checksum = zlib.adler32(zeros, checksum)
    checksum = zlib.adler32(zero_row * rest, checksum)
    idat = b"\x78\xda" + head + batch * batches + tail + struct.pack(">I", checksum)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def _many_frame_gif(size: tuple[int, int], frames: int) -> bytes:
    """A GIF whose every frame covers the whole (large) screen: frame 0 red, the rest blue.

    Each frame is LZW-encoded once by PIL; its block is then repeated ``frames - 1`` times.
    """

    def single(index: int) -> bytes:
        im = Image.new("P", size, index)
        im.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
        buf = io.BytesIO()
        im.save(buf, "GIF", optimize=False)
        return buf.getvalue()

    red, blue = single(0), single(1)
    flags = red[10]
    start = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)  # header + global palette
    assert red[:start] == blue[:start] and red[start] == 0x2C and red.endswith(b";")
    return b"GIF89a" + red[6:start] + red[start:-1] + blue[start:-1] * (frames - 1) + b";"


def _encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def _under_budget_side() -> tuple[int, int]:
    """RGBA dimensions whose raster (4 B/px) is just under MAX_DECODE_BYTES."""
    width = math.isqrt(MAX_DECODE_BYTES // 4)
    height = MAX_DECODE_BYTES // (4 * width)
    assert 4 * width * height <= MAX_DECODE_BYTES < 4 * width * (height + 1)
    return width, height


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    """The hostile mix, written to files (the memory test's subprocess reads them)."""
    folder = tmp_path_factory.mktemp("hostile-images")
    photo = Image.new("RGB", (6000, 8000), (120, 80, 40))  # a 48 MP phone photo
    draw = ImageDraw.Draw(photo)
    for i in range(0, 6000, 500):
        draw.rectangle((i, i, i + 400, i + 1600), fill=(i % 256, 200, 90))
    blobs = {
        "huge.png": _one_colour_png(6320, 6320, bytes((10, 200, 30, 128))),
        "under.png": _one_colour_png(*_under_budget_side(), bytes((200, 30, 10, 255))),
        "photo.jpg": _encode(photo, "JPEG", quality=85),
        "frames.gif": _many_frame_gif((4000, 4000), 200),
    }
    photo.close()
    paths = {}
    for name, data in blobs.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


@pytest.fixture(autouse=True)
def _default_concurrency():
    set_decode_concurrency(images.DEFAULT_DECODE_CONCURRENCY)
    yield
    set_decode_concurrency(images.DEFAULT_DECODE_CONCURRENCY)


# --- (a) the byte budget, on the header -------------------------------------------------------
def test_small_file_huge_rgba_png_is_refused_from_its_header(hostile):
    data = hostile["huge.png"].read_bytes()
    assert len(data) < 200_000  # 155-170 KB on the wire ...
    assert 6320 * 6320 < images.MAX_DECODE_PIXELS  # ... and under the old pixel limit
    set_decode_concurrency(1)
    held = images._acquire_slot(0)  # the only slot is taken: a refusal must not need one
    try:
        with pytest.raises(InvalidImageError, match="too large") as info:
            decode_image(data, wait_timeout=0)
    finally:
        held.release()
    message = str(info.value)
    assert "6320x6320" in message and "RGBA" in message
    assert "152 MiB" in message and f"{MAX_DECODE_BYTES // MIB} MiB" in message
    assert not isinstance(info.value, DecodersBusy)


def test_budget_counts_bytes_per_pixel_of_the_mode():
    # 100x100: RGBA takes 4 B/px in PIL, L 1 B/px, 16-bit grey 2 B/px; RGB is padded to 4.
    rgba = _one_colour_png(100, 100, bytes((1, 2, 3, 4)))
    assert decode_image(rgba, max_bytes=40_000).size == (100, 100)
    with pytest.raises(InvalidImageError, match="100x100 PNG image \\(RGBA\\)"):
        decode_image(rgba, max_bytes=39_999)
    rgb = _one_colour_png(100, 100, bytes((1, 2, 3)))
    with pytest.raises(InvalidImageError, match="too large"):
        decode_image(rgb, max_bytes=39_999)
    grey = _one_colour_png(100, 100, b"\x07")
    assert decode_image(grey, max_bytes=10_000).getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(InvalidImageError, match="too large"):
        decode_image(grey, max_bytes=9_999)
    grey16 = _encode(Image.new("I;16", (100, 100), 0x8000), "PNG")
    assert decode_image(grey16, max_bytes=20_000).getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(InvalidImageError, match="too large"):
        decode_image(grey16, max_bytes=19_999)


def test_webp_and_tiff_are_charged_their_decoder_buffers():
    # libwebp holds two RGBA canvases beside PIL's raster; TIFF a strip as large as the image.
    picture = Image.new("RGB", (200, 100), (9, 9, 9))
    webp, tiff = _encode(picture, "WEBP"), _encode(picture, "TIFF")
    assert decode_image(webp, max_bytes=200 * 100 * 16).size == (200, 100)
    with pytest.raises(InvalidImageError, match="WEBP"):
        decode_image(webp, max_bytes=200 * 100 * 16 - 1)
    assert decode_image(tiff, max_bytes=200 * 100 * 12).size == (200, 100)
    with pytest.raises(InvalidImageError, match="TIFF"):
        decode_image(tiff, max_bytes=200 * 100 * 12 - 1)


def test_phone_jpeg_is_decoded_with_draft_and_accepted(hostile):
    data = hostile["photo.jpg"].read_bytes()
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.size == (6000, 8000)
        assert 6000 * 8000 * 4 > MAX_DECODE_BYTES  # full size would be over the budget
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == (768, 1024)


def test_progressive_jpeg_is_charged_its_full_size_coefficients():
    """libjpeg buffers every DCT coefficient of a progressive (or multi-scan) JPEG at full
    resolution, whatever draft scale: 2 B per sample, 1.5 samples/px in 4:2:0."""
    picture = Image.new("RGB", (4096, 4096), (30, 60, 90))
    baseline = _encode(picture, "JPEG", quality=80)
    progressive = _encode(picture, "JPEG", quality=80, progressive=True)
    assert images._jpeg_coefficient_bytes(baseline) == 0
    assert images._jpeg_coefficient_bytes(progressive) == 4096 * 4096 * 3
    # draft decodes both at 1/4 scale (1024x1024 RGB = 4 MiB); the coefficients add 48 MiB
    assert decode_image(baseline, max_bytes=8 * MIB).size == (1024, 1024)
    with pytest.raises(InvalidImageError, match="4096x4096 JPEG"):
        decode_image(progressive, max_bytes=8 * MIB)
    assert decode_image(progressive, max_bytes=53 * MIB).size == (1024, 1024)

    # a sequential JPEG whose first scan carries one of three components is multi-scan too
    sos = baseline.index(b"\xff\xda")
    assert baseline[sos + 4] == 3
    multi_scan = baseline[: sos + 4] + b"\x01" + baseline[sos + 5 :]
    assert images._jpeg_coefficient_bytes(multi_scan) == 4096 * 4096 * 3


def test_formats_outside_the_allowed_list_are_unsupported():
    for fmt in ("ICO", "TGA", "PCX", "PPM"):
        data = _encode(Image.new("RGB", (32, 32), (1, 2, 3)), fmt)
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == fmt  # PIL itself would read it
        with pytest.raises(UnsupportedImageFormat, match="not a recognised image format"):
            decode_image(data)


# --- (b) measured memory: 16 hostile uploads at once ------------------------------------------
_WORKER = r"""
import ctypes, gc, io, json, sys, threading, time
import psutil
from PIL import Image
from services.encoders import images

paths = json.loads(sys.argv[1])
images.set_decode_concurrency(int(sys.argv[2]))
blobs = [open(p, "rb").read() for p in paths]
warm = io.BytesIO()
Image.new("RGB", (8, 8)).save(warm, "PNG")
images.decode_image(warm.getvalue())  # load PIL's plugins before the baseline
gc.collect()
proc = psutil.Process()
base = proc.memory_info().rss
peak = base
done = threading.Event()

def sample():
    global peak
    while not done.is_set():
        peak = max(peak, proc.memory_info().rss)
        time.sleep(0.001)

outcomes = [None] * len(blobs)
start = threading.Barrier(len(blobs))

def work(i):
    start.wait()
    try:
        outcomes[i] = ["ok", list(images.decode_image(blobs[i], wait_timeout=600).size)]
    except Exception as exc:
        outcomes[i] = [type(exc).__name__, str(exc)]

sampler = threading.Thread(target=sample)
sampler.start()
threads = [threading.Thread(target=work, args=(i,)) for i in range(len(blobs))]
for t in threads:
    t.start()
for t in threads:
    t.join()
done.set()
sampler.join()
hwm = None
with open("/proc/self/status") as status:
    for line in status:
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
gc.collect()
after = proc.memory_info().rss
try:  # glibc, where the decoder can hand freed memory back (musl, macOS: skip that check)
    trim = hasattr(ctypes.CDLL(None), "malloc_trim")
except OSError:
    trim = False
print(json.dumps({"base": base, "peak": max(peak, hwm or 0), "after": after, "trim": trim,
                  "outcomes": outcomes}))
"""


def test_sixteen_concurrent_hostile_decodes_stay_under_slots_times_budget(hostile):
    """Peak RSS growth of a fresh process decoding 16 hostile images in 16 threads.

    Mix, 4 of each: the 6320x6320 RGBA PNG (refused on its header), an RGBA PNG just under
    the byte budget (decoded: a 96 MiB raster), a 6000x8000 JPEG (draft: 1500x2000) and a
    200-frame 4000x4000 GIF (first frame: 16 MB).

    Ceiling = slots x (MAX_DECODE_BYTES + 32 MiB) + 64 MiB = 320 MiB with 2 slots and the
    96 MiB budget. The 32 MiB per slot is what a decode holds beside its budgeted raster: the
    reduced image (< (2 x MAX_SIDE)^2 x 4 B = 16 MiB), its final resample (4 MiB), one tile's
    conversion copies (< 1 MiB each) and allocator slack (measured: ~20 MiB); the 64 MiB
    covers 16 thread stacks, the sampler and the interpreter. 2 slots, not the default 4, so
    that both defences are under test: measured here ~230 MiB; with no cap (16 slots) ~455 MiB,
    and the decoder before this change peaked at 3.2-3.6 GB on the same mix (~760 MB per huge
    PNG, ~480 MB per under-budget one). RSS still held once every decode is done must stay
    under one budget (glibc malloc_trim after large decodes: ~25 MiB; without it ~150 MiB).
    """
    order = ["huge.png", "under.png", "photo.jpg", "frames.gif"] * 4
    paths = [str(hostile[name]) for name in order]
    slots = 2
    run = subprocess.run(
        [sys.executable, "-c", _WORKER, json.dumps(paths), str(slots)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    for name, (kind, detail) in zip(order, result["outcomes"], strict=True):
        if name == "huge.png":
            assert kind == "InvalidImageError" and "6320x6320" in detail, (name, kind, detail)
        else:
            assert kind == "ok" and max(detail) == MAX_SIDE, (name, kind, detail)
    growth = result["peak"] - result["base"]
    ceiling = slots * (MAX_DECODE_BYTES + 32 * MIB) + 64 * MIB
    assert growth < ceiling, f"peak RSS grew {growth / MIB:.0f} MiB > {ceiling / MIB:.0f} MiB"
    # the measurement sees a decode: each under-budget PNG holds a 96 MiB raster at its peak
    assert growth > MAX_DECODE_BYTES * 0.9, f"only {growth / MIB:.0f} MiB: nothing measured?"
    if result["trim"]:  # glibc: freed rasters go back to the OS instead of per-thread arenas
        held = result["after"] - result["base"]
        assert held < MAX_DECODE_BYTES, f"{held / MIB:.0f} MiB still held after the decodes"


# --- (c) the decode slots ----------------------------------------------------------------------
def _small_png() -> bytes:
    return _encode(Image.new("RGB", (40, 30), (5, 6, 7)), "PNG")


def test_decoders_busy_when_every_slot_is_held_past_the_timeout():
    set_decode_concurrency(3)
    assert images.decode_concurrency() == 3
    held = [images._acquire_slot(0) for _ in range(3)]
    try:
        with pytest.raises(DecodersBusy, match="all 3 image decoders") as info:
            decode_image(_small_png(), wait_timeout=0.2)
        assert not isinstance(info.value, InvalidImageError)  # the server's state, not a 4xx
        assert info.value.retry_after > 0
        # a waiter gets the slot as soon as one frees up
        timer = threading.Timer(0.2, held.pop().release)
        timer.start()
        assert decode_image(_small_png(), wait_timeout=30).size == (40, 30)
        timer.join()
    finally:
        for slot in held:
            slot.release()
    assert decode_image(_small_png(), wait_timeout=0).size == (40, 30)


def test_slot_is_released_after_every_kind_of_failure(monkeypatch):
    set_decode_concurrency(1)
    good = _small_png()
    truncated = good[: good.index(b"IDAT") + 12] + _chunk(b"IEND", b"")  # header fine, pixels cut
    corrupt = bytearray(good)
    start = good.index(b"IDAT") + 4
    corrupt[start : start + 8] = b"\xff" * 8  # bad deflate stream
    for i in range(100):
        with pytest.raises(UndecodableImage, match="corrupt or truncated"):
            decode_image(truncated if i % 2 else bytes(corrupt), wait_timeout=0)
    assert decode_image(good, wait_timeout=0).size == (40, 30)

    def boom(image, max_side):
        raise RuntimeError("failure after load")

    monkeypatch.setattr(images, "_reduce_to_rgb", boom)
    for _ in range(5):
        with pytest.raises(RuntimeError, match="after load"):
            decode_image(good, wait_timeout=0)
    monkeypatch.undo()
    assert decode_image(good, wait_timeout=0).size == (40, 30)


def test_set_decode_concurrency_rejects_nonsense():
    for bad in (0, -1, 1.5, True, "4"):
        with pytest.raises(ValueError, match="positive integer"):
            set_decode_concurrency(bad)
    assert images.decode_concurrency() == images.DEFAULT_DECODE_CONCURRENCY


# --- multi-frame files: the first frame only ------------------------------------------------------
def test_many_frame_gif_decodes_its_first_frame(hostile):
    data = hostile["frames.gif"].read_bytes()
    with Image.open(io.BytesIO(data)) as raw:
        assert raw.n_frames == 200
    out = decode_image(data)
    assert out.size == (1024, 1024) and out.getpixel((500, 500)) == (255, 0, 0)


def test_animated_png_and_webp_decode_their_first_frame():
    red = Image.new("RGBA", (1500, 900), (255, 0, 0, 255))
    blues = [Image.new("RGBA", (1500, 900), (0, 0, 255 - i, 255)) for i in range(5)]
    for fmt in ("PNG", "WEBP"):
        data = _encode(red, fmt, save_all=True, append_images=blues, lossless=True)
        with Image.open(io.BytesIO(data)) as raw:
            assert raw.n_frames == 6
        out = decode_image(data)
        assert out.size == (1024, 614) and out.getpixel((10, 10)) == (255, 0, 0), fmt


# --- (d) ordinary images still decode as before --------------------------------------------------
@pytest.mark.parametrize("size", [(300, 200), (3000, 2000)])  # direct, and via the tiled reduce
def test_ordinary_modes_decode_to_rgb_within_max_side(size):
    w, h = size
    expected = (w, h) if max(size) <= MAX_SIDE else (MAX_SIDE, round(h * MAX_SIDE / w))

    def check(data: bytes, pixel: tuple[int, int, int], tolerance: int = 0) -> Image.Image:
        """Decode; check the mode, the size and the pixel at 3/4 of the width, 1/4 height."""
        out = decode_image(data)
        assert out.mode == "RGB" and out.size == expected
        got = out.getpixel((expected[0] * 3 // 4, expected[1] // 4))
        assert all(abs(a - b) <= tolerance for a, b in zip(got, pixel, strict=True)), got
        return out

    check(_encode(Image.new("RGB", size, (200, 100, 50)), "JPEG", quality=95), (200, 100, 50), 3)
    check(_encode(Image.new("CMYK", size, (0, 255, 255, 0)), "JPEG"), (255, 0, 0), 3)  # red
    palette = Image.new("RGB", size, (0, 128, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    check(_encode(palette, "PNG"), (0, 128, 0))
    check(_encode(Image.new("I;16", size, 0x8000), "PNG"), (128, 128, 128))
    check(_encode(Image.new("L", size, 77), "PNG"), (77, 77, 77))
    check(_encode(Image.new("1", size, 1), "PNG"), (255, 255, 255))
    check(_encode(Image.new("LA", size, (50, 255)), "PNG"), (50, 50, 50))

    # alpha: a transparent left half composited on white, an opaque red right half,
    # half-transparent blue in the bottom-right corner
    rgba = Image.new("RGBA", size, (255, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (w // 2, 0, w, h))
    rgba.paste((0, 0, 255, 128), (w - w // 8, h - h // 8, w, h))
    out = check(_encode(rgba, "PNG"), (255, 0, 0))
    assert out.getpixel((2, 2)) == (255, 255, 255)
    assert out.getpixel((expected[0] - 2, expected[1] - 2)) == (127, 127, 255)

    # palette with a transparent index
    pal = Image.new("P", size, 1)
    pal.putpalette([255, 255, 0, 0, 0, 255] + [0, 0, 0] * 254)
    pal.paste(0, (0, 0, w // 2, h))
    out = check(_encode(pal, "PNG", transparency=0), (0, 0, 255))
    assert out.getpixel((2, 2)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    for size in [(300, 200), (3000, 2000)]:
        picture = Image.new("RGB", size, (0, 0, 0))
        picture.paste((255, 255, 255), (0, 0, size[0] // 4, size[1]))  # white left strip
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display
        out = decode_image(_encode(picture, "JPEG", exif=exif.tobytes(), quality=95))
        assert out.size[1] > out.size[0] and max(out.size) <= MAX_SIDE
        assert out.getpixel((out.size[0] // 2, 2))[0] > 200  # the strip is now on top
        assert out.getpixel((out.size[0] // 2, out.size[1] - 3))[0] < 50


def test_small_rgb_image_is_returned_at_its_size():
    data = _encode(Image.new("RGB", (17, 9), (1, 2, 3)), "PNG")
    out = decode_image(data)
    assert out.size == (17, 9) and out.getpixel((16, 8)) == (1, 2, 3)


def test_every_allowed_format_decodes():
    from PIL import features

    picture = Image.new("RGB", (1600, 1200), (0, 200, 0))
    second = Image.new("RGB", (1600, 1200), (200, 0, 0))
    cases = {
        "PNG": _encode(picture, "PNG"),
        "GIF": _encode(picture, "GIF"),
        "WEBP": _encode(picture, "WEBP", lossless=True),
        "BMP": _encode(picture, "BMP"),
        "TIFF": _encode(picture, "TIFF", compression="tiff_deflate"),
        "JPEG": _encode(picture, "JPEG", quality=95),
        "MPO": _encode(picture, "MPO", save_all=True, append_images=[second], quality=95),
    }
    if features.check("avif"):
        cases["AVIF"] = _encode(picture, "AVIF", quality=90)
    for fmt, data in cases.items():
        with Image.open(io.BytesIO(data)) as raw:
            assert raw.format == fmt
        out = decode_image(data)
        assert out.mode == "RGB" and out.size == (1024, 768), fmt
        r, g, b = out.getpixel((500, 400))
        assert r < 20 and g > 180 and b < 20, (fmt, (r, g, b))
