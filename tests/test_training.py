"""CLIP training on a tiny catalogue made here: loss goes down, checkpoints load, splits, errors."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from services.config import get_settings
from services.training.clip_train import (
    CheckpointError,
    TrainConfig,
    load_checkpoint_file,
    train_clip,
)
from services.training.data import TrainingDataError, captions_for, is_heldout, split_rows

COLOURS = {
    "Red": (210, 30, 30),
    "Blue": (30, 60, 210),
    "Green": (30, 150, 60),
    "Black": (20, 20, 20),
}
SHAPES = {"Tshirts": "Topwear", "Trousers": "Bottomwear", "Handbags": "Bags"}


def _image(colour: tuple[int, int, int], article: str, rng: random.Random) -> bytes:
    pixels = np.full((80, 60, 3), 245, dtype=np.uint8)
    if article == "Tshirts":
        pixels[15:65, 10:50] = colour
    elif article == "Trousers":
        pixels[10:75, 15:27] = colour
        pixels[10:75, 33:45] = colour
    else:
        pixels[35:70, 8:52] = colour
    jitter = rng.randint(-3, 3)
    pixels = np.roll(pixels, jitter, axis=1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def tiny_catalog(n: int = 96, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        colour = list(COLOURS)[i % len(COLOURS)]
        article = list(SHAPES)[(i // len(COLOURS)) % len(SHAPES)]
        gender = rng.choice(["Men", "Women"])
        rows.append(
            {
                "id": 500_000 + i,
                "gender": gender,
                "masterCategory": "Apparel",
                "subCategory": SHAPES[article],
                "articleType": article,
                "baseColour": colour,
                "season": "Summer",
                "year": 2015,
                "usage": "Casual",
                "productDisplayName": f"Brand {gender} {colour} {article}",
                "image": _image(COLOURS[colour], article, rng),
            }
        )
    return rows


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()  # settings are read once per process
    return tmp_path


def _config(**kwargs) -> TrainConfig:
    base = {
        "source": "unused",
        "batch_size": 16,
        "lr": 2e-3,
        "warmup_steps": 2,
        "epochs": 3,
        "threads": 2,
        "checkpoint_every": 5,
    }
    return TrainConfig(**{**base, **kwargs})


def test_split_is_stable_and_disjoint():
    rows = tiny_catalog(200)
    train, held = split_rows(rows)
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in held})
    assert len(train) + len(held) == 200 and 5 <= len(held) <= 40
    shuffled = rows[::-1]
    assert {r["id"] for r in split_rows(shuffled)[1]} == {r["id"] for r in held}
    assert all(is_heldout(r["id"]) for r in held)


def test_captions_use_names_attributes_and_synonyms():
    row = tiny_catalog(1)[0] | {
        "baseColour": "Navy Blue",
        "articleType": "Tshirts",
        "gender": "Men",
    }
    captions = captions_for(row)
    assert captions[0] == row["productDisplayName"]
    assert (
        "navy t-shirt" in captions
        and "men navy blue tee" in captions
        and "casual t-shirt" in captions
    )


def test_short_training_lowers_loss_and_checkpoint_loads_through_registry(home):
    from services.encoders.clip import ClipEncoder, build_clip_model
    from services.encoders.registry import ModelSpec
    from services.training.workflow import encoder_for_checkpoint

    rows = tiny_catalog(96)
    result = train_clip(_config(epochs=12, lr=1e-3, batch_size=32), home / "run", rows=rows)
    assert result.steps >= 20
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < first - 0.1, result.losses

    # The training checkpoint is open_clip-loadable (pretrained=<file>) and reproduces the model.
    state = load_checkpoint_file(result.checkpoint)
    spec = ModelSpec(
        name="t",
        kind="clip",
        source="fashion-clip-tiny",
        dim=256,
        licence="x",
        note="",
        pretrained=str(result.checkpoint),
    )
    model, preprocess, tokenizer = build_clip_model(spec)
    in_memory, _, _ = build_clip_model(
        ModelSpec(
            name="t0",
            kind="clip",
            source="fashion-clip-tiny",
            dim=256,
            licence="x",
            note="",
            pretrained=None,
        )
    )
    in_memory.load_state_dict(state["state_dict"])
    a = ClipEncoder("a", model, preprocess, tokenizer, "cpu", 256)
    b = ClipEncoder("b", in_memory, preprocess, tokenizer, "cpu", 256)
    images = [r["image"] for r in rows[:4]]
    assert np.allclose(a.encode_images(images), b.encode_images(images), atol=1e-6)
    assert np.allclose(a.encode_texts(["red tshirt"]), b.encode_texts(["red tshirt"]), atol=1e-6)
    loaded = encoder_for_checkpoint("c", result.checkpoint)
    assert np.allclose(loaded.encode_images(images), a.encode_images(images), atol=1e-6)


def test_resume_continues_from_last_checkpoint(home):
    rows = tiny_catalog(64)
    first = train_clip(_config(epochs=4), home / "run", rows=rows, max_steps=5)
    assert first.steps == 5
    resumed = train_clip(_config(epochs=4), home / "run", rows=rows, resume=True, max_steps=8)
    assert resumed.steps == 8 and len(resumed.losses) == 8
    assert resumed.losses[:5] == first.losses


def test_released_checkpoint_registers_and_loads(home, monkeypatch, tmp_path):
    from services.encoders.clip import load_clip
    from services.encoders.registry import get_spec
    from services.training.clip_train import export_checkpoint
    from services.training.workflow import encoder_for_checkpoint, register_finetuned

    result = train_clip(_config(), home / "run", rows=tiny_catalog(48), max_steps=2)
    memory = encoder_for_checkpoint("m", result.checkpoint)
    release = export_checkpoint(memory.model, home / "release.pt", half=True)
    monkeypatch.setenv(
        "FASHION_MODEL_CACHE", str(tmp_path / "models")
    )  # keep the shared cache clean
    register_finetuned("tiny-test-model", release, note="test")
    assert get_spec("tiny-test-model").pretrained == str(release.resolve())
    registered = load_clip("tiny-test-model", device="cpu")
    texts = ["green tshirt", "black handbag"]
    # float16 release: same embeddings up to half precision
    assert np.allclose(registered.encode_texts(texts), memory.encode_texts(texts), atol=2e-2)


def test_corrupt_checkpoint_is_named(home):
    bad = home / "run" / "last.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt"):
        train_clip(_config(), home / "run", rows=tiny_catalog(32), resume=True)
    torch.save({"weights": 1}, bad)
    with pytest.raises(CheckpointError, match="state_dict"):
        load_checkpoint_file(bad)


def test_bad_training_data(home):
    with pytest.raises(TrainingDataError, match="empty"):
        train_clip(_config(), home / "r", rows=[])
    with pytest.raises(TrainingDataError, match="at least"):
        train_clip(_config(), home / "r", rows=tiny_catalog(4))
    no_images = [r | {"image": b"not an image"} for r in tiny_catalog(32)]
    with pytest.raises(TrainingDataError, match="decodable image"):
        train_clip(_config(), home / "r", rows=no_images)


def test_report_metrics_on_tiny_heldout(home):
    from services.training import clip_report
    from services.training.workflow import encoder_for_checkpoint

    rows = tiny_catalog(48)
    result = train_clip(_config(), home / "run", rows=rows, max_steps=2)
    encoder = encoder_for_checkpoint("m", result.checkpoint)
    metrics = clip_report.evaluate_encoder(encoder, rows)
    assert metrics["heldout_products"] == 48
    for key in ("zero_shot_category_acc", "zero_shot_colour_acc", "zero_shot_article_type_acc"):
        assert 0.0 <= metrics[key] <= 1.0
    # 4 products per colour+category here: below the 10 needed for a P@10 query.
    assert (
        metrics["colour_category_queries"]["queries"] == 0
        and metrics["colour_category_p_at_10"] is None
    )
    assert 0.0 <= metrics["attribute_queries"]["mrr"] <= 1.0
    text = clip_report.format_report(clip_report.compare(metrics, metrics))
    assert "P@10" in text and "target" in text
