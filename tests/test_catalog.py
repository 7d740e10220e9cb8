"""Catalogue area: offline build, vocabulary, reader, validation, shards, hub paths (no network)."""

from __future__ import annotations

import colorsys
import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from services.catalog import vocabulary as vocab
from services.catalog.errors import CatalogError, CatalogSourceError
from services.catalog.hub import HUB_REPO_ID, download_hub_catalog, verify_parquet_files
from services.catalog.offline import (
    OFFLINE_ID_BASE,
    build_offline_catalog,
    load_fashion_mnist,
    render_garment,
    source_classes_of,
)
from services.catalog.reader import iter_rows
from services.catalog.schema import CATALOG_ARROW_SCHEMA
from services.catalog.shards import write_parquet, write_shards
from services.catalog.sources import resolve_source
from services.catalog.validate import REASONS, check_row, validate_rows
from services.config import get_settings

# The columns of ashraq/fashion-product-images-small, in order, with their Arrow types.
REAL_DATASET_COLUMNS = [
    ("id", pa.int64()),
    ("gender", pa.string()),
    ("masterCategory", pa.string()),
    ("subCategory", pa.string()),
    ("articleType", pa.string()),
    ("baseColour", pa.string()),
    ("season", pa.string()),
    ("year", pa.int64()),
    ("usage", pa.string()),
    ("productDisplayName", pa.string()),
    ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
]


@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory) -> Path:
    return build_offline_catalog(tmp_path_factory.mktemp("offline") / "c.parquet", size=150)


@pytest.fixture(scope="module")
def rows(small_catalog) -> list[dict]:
    return list(iter_rows([small_catalog]))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FASHION_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()  # settings are read once per process
    return tmp_path / "home"


# --- offline catalogue -----------------------------------------------------------------------
def test_same_seed_gives_identical_bytes(tmp_path, small_catalog):
    again = build_offline_catalog(tmp_path / "again.parquet", size=150)
    assert again.read_bytes() == small_catalog.read_bytes()
    other_seed = build_offline_catalog(tmp_path / "seed1.parquet", size=150, seed=1)
    assert other_seed.read_bytes() != small_catalog.read_bytes()


def test_rows_are_prefix_stable_with_stable_ids(tmp_path, rows):
    shorter = list(iter_rows([build_offline_catalog(tmp_path / "s.parquet", size=40)]))
    assert shorter == rows[:40]
    assert [r["id"] for r in rows] == list(range(OFFLINE_ID_BASE, OFFLINE_ID_BASE + 150))


def test_schema_equals_the_real_dataset(small_catalog):
    schema = pq.read_schema(small_catalog)
    assert [(f.name, f.type) for f in schema] == REAL_DATASET_COLUMNS
    assert list(vocab.COLUMNS) == [name for name, _ in REAL_DATASET_COLUMNS]
    assert b"huggingface" in schema.metadata  # datasets.load_dataset decodes `image` as Image


def test_offline_rows_are_valid_and_use_the_vocabulary(rows):
    report = validate_rows(rows)
    assert report.rejected == [] and len(report.valid) == 150
    classes = source_classes_of([r["id"] for r in rows])
    for row, label in zip(rows, classes):
        article = vocab.ARTICLE_TYPES[row["articleType"]]
        assert row["articleType"] in vocab.articles_for_source_class(label)
        assert (row["subCategory"], row["masterCategory"]) == (
            article.sub_category,
            article.master_category,
        )
        assert row["gender"] in vocab.GENDERS and row["season"] in vocab.SEASONS
        assert row["usage"] in vocab.USAGES and row["baseColour"] in vocab.COLOURS
        assert row["year"] is None or 2010 <= row["year"] <= 2018
        pattern = (
            rf"^.+ {row['gender']} ([\w-]+ )*{re.escape(row['baseColour'])} {article.display}$"
        )
        assert re.match(pattern, row["productDisplayName"]), row["productDisplayName"]
        image = Image.open(io.BytesIO(row["image"]))
        assert (image.format, image.size, image.mode) == ("JPEG", (60, 80), "RGB")
    assert len({r["articleType"] for r in rows}) >= 10
    assert len({r["baseColour"] for r in rows}) >= 10


def _garment_rgb(jpeg: bytes, mask: np.ndarray) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.float32)
    return pixels[mask].mean(axis=0)


def test_named_colour_is_visible_in_the_image():
    images, labels = load_fashion_mnist()
    dress = images[int(np.flatnonzero(labels == 3)[0])]
    # garment pixels on the 60x80 canvas: where the upscaled source is clearly not background
    grey = np.asarray(Image.fromarray(dress).resize((60, 60), Image.Resampling.BICUBIC))
    mask = np.zeros((80, 60), dtype=bool)
    mask[10:70, :] = grey > 128
    rgb = {c: _garment_rgb(render_garment(dress, c), mask) for c in vocab.COLOURS}

    def hue(colour: str) -> float:
        return colorsys.rgb_to_hsv(*(rgb[colour] / 255))[0] * 360

    brightness = {c: v.mean() for c, v in rgb.items()}
    assert brightness["Black"] < 30 < brightness["Navy Blue"] < brightness["Grey"] - 40
    assert brightness["Grey"] + 60 < brightness["White"]
    assert brightness["White"] > 200
    assert hue("Red") < 15 or hue("Red") > 345
    assert 200 < hue("Blue") < 240 and 200 < hue("Navy Blue") < 250
    assert 100 < hue("Green") < 160
    assert rgb["Navy Blue"][2] > rgb["Navy Blue"][0] + 30  # navy is blue, not black
    # the background stays light grey, whatever the garment colour
    background = np.asarray(Image.open(io.BytesIO(render_garment(dress, "Black"))))[2, 2]
    assert background.min() > 230


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(CatalogSourceError, match="dataset-fashion-mnist"):
        build_offline_catalog(tmp_path / "x.parquet", size=5, source_dir=tmp_path / "empty")


# --- vocabulary --------------------------------------------------------------------------------
def test_vocabulary_mapping():
    assert len(vocab.FASHION_MNIST_CLASSES) == len(vocab.SOURCE_CLASS_ARTICLES) == 10
    for choices in vocab.SOURCE_CLASS_ARTICLES.values():
        assert abs(sum(w for _, w in choices) - 1) < 1e-9
        assert all(name in vocab.ARTICLE_TYPES for name, _ in choices)
    boots = vocab.article(vocab.articles_for_source_class(9)[0])
    assert (boots.name, boots.sub_category, boots.master_category) == ("Boots", "Shoes", "Footwear")
    # exactly the mapping: only T-shirt/top and Sneaker split
    assert {label: set(vocab.articles_for_source_class(label)) for label in range(10)} == {
        0: {"Tshirts", "Tops"},
        1: {"Trousers"},
        2: {"Sweaters"},
        3: {"Dresses"},
        4: {"Jackets"},
        5: {"Sandals"},
        6: {"Shirts"},
        7: {"Sports Shoes", "Casual Shoes"},
        8: {"Handbags"},
        9: {"Boots"},
    }
    assert vocab.article("Sandals").sub_category == "Sandal"
    assert vocab.article("Handbags").master_category == "Accessories"
    assert vocab.article("Dresses").sub_category == "Dress"
    assert set(vocab.COLOUR_WEIGHTS) == set(vocab.COLOURS)
    with pytest.raises(LookupError, match="Tshirts"):
        vocab.article("Spacesuits")


# --- validation --------------------------------------------------------------------------------
def test_each_broken_row_is_set_aside_with_its_reason(rows):
    good = rows[:3]
    broken = {
        "missing column": {k: v for k, v in rows[3].items() if k != "season"},
        "extra column": {**rows[4], "price": 10},
        "invalid id": {**rows[5], "id": "abc"},
        "duplicate id": {**rows[6], "id": good[0]["id"]},
        "empty name": {**rows[7], "productDisplayName": "  "},
        "invalid field": {**rows[8], "gender": "Martian"},
        "missing image": {**rows[9], "image": None},
        "undecodable image": {**rows[10], "image": b"\xff\xd8 not really a jpeg"},
    }
    more_invalid = [
        {**rows[11], "year": "2012a"},
        {**rows[12], "season": "Monsoon"},
        {**rows[13], "year": 2012.5},
        {**rows[14], "articleType": ""},
    ]
    report = validate_rows([*good, *broken.values(), *more_invalid, rows[15]])
    assert [r["id"] for r in report.valid] == [r["id"] for r in (*good, rows[15])]
    assert [r.reason for r in report.rejected] == [*broken, *["invalid field"] * 4]
    assert set(broken) == set(REASONS)
    counts = report.counts_by_reason()
    assert counts["invalid field"] == 5 and sum(counts.values()) == len(report.rejected) == 12
    assert report.total == 16  # nothing dropped silently
    assert report.rejected[3].id == good[0]["id"]
    assert "year" in report.rejected[8].detail
    assert "12 rejected" in report.summary()


def test_nullable_fields_and_hub_style_values_pass(rows):
    row = {**rows[0], "year": None, "usage": None, "season": None, "baseColour": None}
    assert check_row(row) is None
    assert check_row({**rows[0], "articleType": "Kurtas", "baseColour": "Sea Green"}) is None


# --- reader, shards, sources -------------------------------------------------------------------
def test_corrupt_parquet_raises_catalog_error_naming_the_file(tmp_path, small_catalog):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet at all")
    with pytest.raises(CatalogError, match="garbage.parquet"):
        list(iter_rows([garbage]))
    data = small_catalog.read_bytes()
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(data[: len(data) // 2] + data[-4096:])  # footer kept, pages cut
    with pytest.raises(CatalogError, match="truncated.parquet"):
        list(iter_rows([truncated]))


def test_iter_rows_limit_and_hub_year_floats(tmp_path, rows):
    assert list(iter_rows([], limit=3)) == []
    table = pa.table(
        {
            **{name: [rows[0][name]] for name in vocab.COLUMNS if name not in ("year", "image")},
            "year": pa.array([2012.0], pa.float64()),
            "image": [{"bytes": rows[0]["image"], "path": None}],
        }
    )
    path = tmp_path / "hubstyle.parquet"
    pq.write_table(table, path)
    (row,) = list(iter_rows(path))
    assert row["year"] == 2012 and isinstance(row["year"], int)
    assert row["image"] == rows[0]["image"]


def test_write_shards_round_trip(tmp_path, rows):
    out = tmp_path / "shards"
    (out).mkdir()
    (out / "shard-00099.parquet").write_bytes(b"stale")
    paths = write_shards(iter(rows[:25]), out, shard_size=10)
    assert [p.name for p in paths] == [f"shard-{i:05d}.parquet" for i in range(3)]
    assert sorted(out.glob("*.parquet")) == paths
    assert all(pq.read_schema(p).equals(CATALOG_ARROW_SCHEMA) for p in paths)
    assert list(iter_rows(paths)) == rows[:25]
    assert list(iter_rows(paths, limit=12)) == rows[:12]
    assert write_shards([], tmp_path / "empty", shard_size=10) == []


def test_resolve_source_offline_is_cached(home):
    (path,) = resolve_source("offline", size=30)
    assert path == home / "catalog" / "offline-30.parquet"
    built = path.stat().st_mtime_ns
    assert resolve_source("offline", size=30) == [path]
    assert path.stat().st_mtime_ns == built
    path.write_bytes(b"stale")  # an old or foreign file at the cache path is rebuilt
    assert resolve_source("offline", size=30) == [path]
    assert len(list(iter_rows([path]))) == 30
    (limited,) = resolve_source("offline", size=30, limit=12)
    assert list(iter_rows([limited])) == list(iter_rows([path], limit=12))


def test_resolve_source_local_paths(home, tmp_path, rows):
    folder = tmp_path / "catalogue"
    shards = write_shards(rows[:30], folder / "part", shard_size=10)
    assert resolve_source(str(shards[0])) == [shards[0]]
    assert resolve_source(str(folder)) == shards
    assert resolve_source(str(folder), limit=15) == shards[:2]
    with pytest.raises(CatalogSourceError, match="not found: .*missing"):
        resolve_source(str(tmp_path / "missing"))
    (tmp_path / "void").mkdir()
    with pytest.raises(CatalogSourceError, match="no .parquet files"):
        resolve_source(str(tmp_path / "void"))


# --- hub (no network: a closed local port, offline mode, a pre-filled hub cache) -------------
def test_hub_unreachable_names_the_offline_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    get_settings.cache_clear()  # settings are read once per process
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    get_settings.cache_clear()  # settings are read once per process
    with pytest.raises(CatalogSourceError, match="--source offline") as error:
        download_hub_catalog(tmp_path / "hub")
    assert HUB_REPO_ID in str(error.value) and "127.0.0.1:9" in str(error.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()  # settings are read once per process
    with pytest.raises(CatalogSourceError, match="HF_HUB_OFFLINE.*--source offline"):
        download_hub_catalog(tmp_path / "hub")


def test_hub_verification_on_local_parquet(tmp_path, rows):
    files = write_shards(rows[:20], tmp_path / "data", shard_size=8)
    info = verify_parquet_files(files)
    assert info.rows == 20 and info.files == files and info.columns == list(vocab.COLUMNS)
    lacking = tmp_path / "lacking.parquet"
    pq.write_table(pq.read_table(files[0]).drop_columns(["usage"]), lacking)
    with pytest.raises(CatalogError, match="lacking.parquet lacks catalogue column.*usage"):
        verify_parquet_files([files[0], lacking])
    with pytest.raises(CatalogError, match="no Parquet files"):
        verify_parquet_files([])


def test_hub_download_reuses_the_hub_cache_offline(tmp_path, monkeypatch, rows):
    cache = tmp_path / "hub"
    repo = cache / "datasets--ashraq--fashion-product-images-small"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    write_parquet(rows[:7], repo / "snapshots" / revision / "data" / "train-00000-of-00001.parquet")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    get_settings.cache_clear()  # settings are read once per process
    files = download_hub_catalog(cache)
    assert [f.name for f in files] == ["train-00000-of-00001.parquet"]
    assert list(iter_rows(files)) == rows[:7]


# --- command line ------------------------------------------------------------------------------
def test_cli_build_and_inspect(home, tmp_path, capsys):
    from services.cli import main

    out = tmp_path / "cli.parquet"
    assert main(["catalog", "build-offline", "--size", "12", "--out", str(out)]) == 0
    assert main(["catalog", "inspect", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "12 rows" in printed and "image: struct<bytes: binary, path: string>" in printed
    assert "12 valid, 0 rejected" in printed
    assert main(["catalog", "inspect", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err


def test_the_starting_rules_point_at_catalogue_words():
    """The shoppers' words the product ships with (services/understanding/
    starting_rules.csv, once vocabulary.py's synonym tables) each lead to the catalogue's own
    words: an article type as names spell it, a colour, a gender, a usage or a season."""
    from services.understanding.rules import starting_rules
    from services.understanding.text import key

    names = {key(a.display) for a in vocab.ARTICLE_TYPES.values()} | {
        key(v) for v in (*vocab.ARTICLE_TYPES, *vocab.COLOURS, *vocab.GENDERS)
    }
    names |= {key(v) for v in (*vocab.USAGES, *vocab.SEASONS)}
    rules = {key(t): r for r in starting_rules() for t in r.terms}
    for rule in rules.values():
        assert all(key(s) in names for s in rule.synonyms or rule.terms), str(rule)
    for word in ("trainers", "sneakers", "kicks"):
        assert rules[key(word)].synonyms == ("sports shoes", "casual shoes")
    assert rules[key("jumper")].synonyms == ("sweater",)
    assert rules[key("wmns")].synonyms == ("women",)
    assert rules[key("navy")].synonyms == ("navy blue",)
    assert rules[key("tee")].synonyms == ("t-shirt",)
