"""Dense CLIP encoder (open_clip): images, texts and multimodal queries to unit vectors.

Every model in the registry is built through ``open_clip.create_model_and_transforms``
(hub tag, ``hf-hub:`` id or local checkpoint alike). Outputs are float32, L2-normalised
numpy arrays, so inner products are cosines.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from services.config import get_settings
from services.encoders.images import as_rgb_image
from services.encoders.library_output import open_clip_build, transformers_progress_bars
from services.encoders.models_setup import ensure_untrained_clip
from services.encoders.registry import (
    OFFLINE_CLIP_ARCH,
    ModelSpec,
    build_call,
    ensure_model_configs,
    get_spec,
)

log = logging.getLogger(__name__)

ImageInput = bytes | Image.Image

# Below this many images, decoding in the main process beats starting workers.
DATALOADER_MIN_IMAGES = 512


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else cuda, then mps, then cpu."""
    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def default_num_workers() -> int:
    """Image decode workers: ``settings.encoder_workers`` (FASHION_ENCODER_WORKERS), else
    cores - 1 (at most 8)."""
    configured = get_settings().encoder_workers
    if configured is not None:
        return configured
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _autocast(device: str) -> contextlib.AbstractContextManager:
    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _normalise(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x.cpu().numpy().astype(np.float32, copy=False)


class _ImageDataset(torch.utils.data.Dataset):
    """Decode + preprocess one image per item (runs inside DataLoader workers)."""

    def __init__(
        self, images: Sequence[ImageInput], preprocess: Callable[[Image.Image], torch.Tensor]
    ):
        self.images = images
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocess(as_rgb_image(self.images[index]))


class ClipEncoder:
    """An open_clip model with its preprocessing and tokenizer."""

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[..., torch.Tensor],
        device: str,
        dim: int,
        num_workers: int | None = None,
    ):
        self.name = name
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.dim = dim
        self.num_workers = default_num_workers() if num_workers is None else num_workers

    def __repr__(self) -> str:
        return f"ClipEncoder(name={self.name!r}, dim={self.dim}, device={self.device!r})"

    # --- images ----------------------------------------------------------------------
    def preprocess_images(self, images: Sequence[ImageInput]) -> torch.Tensor:
        """Decode and preprocess in this process (small batches, tests)."""
        return torch.stack([self.preprocess(as_rgb_image(item)) for item in images])

    @torch.inference_mode()
    def forward_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Bare model forward on preprocessed pixels -> normalised embeddings."""
        with _autocast(self.device):
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return _normalise(features)

    def _image_batches(self, images: Sequence[ImageInput], batch_size: int):
        workers = self.num_workers if len(images) >= DATALOADER_MIN_IMAGES else 0
        if workers == 0:
            for start in range(0, len(images), batch_size):
                yield self.preprocess_images(images[start : start + batch_size])
            return
        loader = torch.utils.data.DataLoader(
            _ImageDataset(images, self.preprocess),
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=self.device.startswith("cuda"),
            shuffle=False,
        )
        yield from loader

    def encode_images(
        self, images: Sequence[ImageInput], batch_size: int = 64, progress: bool = False
    ) -> np.ndarray:
        """(n, dim) float32 unit vectors; raises InvalidImageError on a bad image."""
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)

        batches = self._image_batches(images, batch_size)
        total = (len(images) + batch_size - 1) // batch_size
        bar = tqdm(
            batches, total=total, desc=f"{self.name} images", unit="batch", disable=not progress
        )
        return np.concatenate([self.forward_images(pixels) for pixels in bar])

    # --- texts -----------------------------------------------------------------------
    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(n, dim) float32 unit vectors. Texts longer than the context are truncated."""
        if isinstance(texts, str):
            raise TypeError("encode_texts takes a sequence of strings; use encode_query for one")
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text #{i} is empty; give a non-empty description")
        return self._encode_texts(texts, batch_size, sentences=False)[0]

    @torch.inference_mode()
    def encode_texts_and_sentences(
        self, texts: Sequence[str], batch_size: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """(CLIP text vectors, sentence vectors), both (n, ·) unit rows, from one forward pass.

        The sentence vector is what query understanding compares words by: for a Hugging
        Face text tower, its pooled output before the CLIP projection (the pretrained
        sentence encoder's own space: all-MiniLM-L6-v2 for ``fashion-lit-minilm``); for
        open_clip's own text transformer, the CLIP text vector itself."""
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"text #{i} is empty; give a non-empty description")
        if len(texts) == 0:
            empty = np.zeros((0, self.dim), dtype=np.float32)
            return empty, empty
        return self._encode_texts(texts, batch_size, sentences=True)

    def _encode_texts(
        self, texts: Sequence[str], batch_size: int, sentences: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        projected, pooled = [], []
        pad_id = self._trim_pad_id()
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size]))
            if pad_id is not None:  # drop all-padding columns: same vectors, less compute
                used = int((tokens != pad_id).any(0).nonzero().max()) + 1
                tokens = tokens[:, :used]
            tokens = tokens.to(self.device)
            with _autocast(self.device):
                if (
                    sentences and pad_id is not None
                ):  # HF tower: the forward of HFTextEncoder, split
                    text = self.model.text
                    mask = (tokens != pad_id).long()
                    sentence = text.pooler(
                        text.transformer(input_ids=tokens, attention_mask=mask), mask
                    )
                    projected.append(_normalise(text.proj(sentence)))
                    pooled.append(_normalise(sentence))
                else:
                    projected.append(_normalise(self.model.encode_text(tokens)))
        dense = np.concatenate(projected)
        if not sentences:
            return dense, None
        return dense, (np.concatenate(pooled) if pooled else dense)

    def _trim_pad_id(self) -> int | None:
        """The pad token id when trailing padding may be cut: Hugging Face text towers mask
        padding out (attention mask and mean pooling), so their output does not depend on it.
        open_clip's own text transformer pools at a position and keeps its context length."""
        from open_clip.hf_model import HFTextEncoder  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

        text = getattr(self.model, "text", None)
        return text.config.pad_token_id if isinstance(text, HFTextEncoder) else None

    # --- queries ---------------------------------------------------------------------
    def encode_query(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        text_weight: float = 0.5,
    ) -> np.ndarray:
        """(dim,) unit vector for a text, an image, or both (weighted, re-normalised sum)."""
        if text is not None and not text.strip():
            text = None
        if text is None and image is None:
            raise ValueError("a query needs a text, an image, or both")
        if not 0.0 <= text_weight <= 1.0:
            raise ValueError(f"text_weight must be in [0, 1], got {text_weight}")
        text_vec = self.encode_texts([text])[0] if text is not None else None
        image_vec = self.encode_images([image])[0] if image is not None else None
        if text_vec is None:
            return image_vec
        if image_vec is None:
            return text_vec
        return combine_query_vectors(text_vec, image_vec, text_weight)


def combine_query_vectors(
    text_vec: np.ndarray, image_vec: np.ndarray, text_weight: float
) -> np.ndarray:
    """Weighted sum of two unit vectors, re-normalised (a point on the arc between them)."""
    mixed = text_weight * text_vec + (1.0 - text_weight) * image_vec
    norm = float(np.linalg.norm(mixed))
    if norm < 1e-12:  # opposite vectors at equal weight: no direction to prefer
        return text_vec.astype(np.float32)
    return (mixed / norm).astype(np.float32)


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------
def configure_cpu_determinism(threads: int | None = None) -> None:
    """Deterministic kernels on CPU (same inputs -> same vectors); optional thread count."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)


def _resolve_name(name: str | None) -> str:
    """``name``, or the configured default (FASHION_DENSE_MODEL, default fashion-clip-offline)."""
    return name or get_settings().dense_model


def build_clip_model(spec: ModelSpec, device: str = "cpu") -> tuple[torch.nn.Module, Any, Any]:
    """(model, preprocess_val, tokenizer) for ``spec`` via the registry's one loader call.

    A model with a partial checkpoint and a Hugging Face text tower (LiT) is put together
    here: open_clip builds the architecture (the tower from its config, no weights), the
    tower's pretrained weights come from its own files (:func:`load_text_tower`), the trained
    parts from the checkpoint (:func:`load_trained_parts`). One INFO line says what was
    loaded from where; open_clip's build steps and its warning about the model before
    those loads are not logged (:mod:`services.encoders.library_output`).
    """
    import open_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    ensure_model_configs()
    call = build_call(spec)
    if call.local_path and not Path(call.local_path).exists():
        if spec.name == "clip-tiny-untrained":
            ensure_untrained_clip()
        else:
            raise FileNotFoundError(
                f"checkpoint for model {spec.name!r} not found at {call.local_path}; "
                "run `fashion-search models fetch` or `fashion-search train-clip`"
            )
    text_tower = _hf_text_tower(spec.source) if call.partial_state else None
    kwargs, expected = call.kwargs, ()
    if text_tower:  # the tower's weights: load_text_tower, below
        kwargs = {**call.kwargs, "pretrained_text": False}
        expected = (
            f"No pretrained weights loaded for model '{spec.source}'. Model initialized randomly.",
        )
    with open_clip_build(expected):
        model, _, preprocess = open_clip.create_model_and_transforms(
            *call.args, device=device, **kwargs
        )
        tokenizer = open_clip.get_tokenizer(spec.source)
    if text_tower:
        load_text_tower(model, text_tower)
    if call.partial_state:
        load_trained_parts(model, Path(call.partial_state))
    log.info("dense model %s: %s", spec.name, _describe(spec, call, text_tower))
    return model, preprocess, tokenizer


def _hf_text_tower(arch: str) -> str | None:
    """The Hugging Face text tower (folder or hub id) of open_clip architecture ``arch``."""
    import open_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    config = open_clip.get_model_config(arch) or {}
    return config.get("text_cfg", {}).get("hf_model_name")


def _describe(spec: ModelSpec, call: Any, text_tower: str | None) -> str:
    """Where the weights of ``spec``'s model came from, in words (the load's INFO line)."""
    if text_tower:
        return (
            f"text tower {text_tower} (pretrained, locked), image tower and projections "
            f"{call.partial_state}"
        )
    pretrained = call.kwargs.get("pretrained")
    if spec.source.startswith("hf-hub:"):
        return f"{spec.source[len('hf-hub:') :]} (Hugging Face hub)"
    if pretrained:
        return f"architecture {spec.source}, weights {pretrained}"
    return f"architecture {spec.source}, random weights (no checkpoint)"


def load_text_tower(model: torch.nn.Module, source: str) -> None:
    """The pretrained weights of ``model``'s Hugging Face text tower, from ``source`` (the
    tower's folder or hub id).

    transformers reads them into the architecture of their own files (``AutoModel``: for
    all-MiniLM-L6-v2 a BertModel with the pooler its file holds), so every stored weight
    has its place and the library has nothing to report. They then become the weights of
    open_clip's tower (the tensors themselves, as when open_clip loads the tower: no copy),
    strictly: every weight of the tower must be in the file, and the file may hold more only
    in submodules the tower does not have by design (BERT's pooler: this tower pools itself,
    by the mean over the tokens).
    """
    from transformers import AutoModel  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    tower = model.text.transformer
    with transformers_progress_bars(show=not Path(source).exists()):
        pretrained = AutoModel.from_pretrained(source)
    if getattr(pretrained.config, "is_encoder_decoder", False):
        pretrained = pretrained.encoder  # as open_clip keeps only the encoder
    like = next(tower.parameters())
    pretrained.to(device=like.device, dtype=like.dtype)
    state, wanted = pretrained.state_dict(), tower.state_dict()
    children = {name for name, _ in tower.named_children()}
    missing = sorted(set(wanted) - set(state))
    unexpected = sorted(k for k in set(state) - set(wanted) if k.split(".")[0] in children)
    if missing or unexpected:
        raise RuntimeError(
            f"text tower {source} does not fit this architecture: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    tower.load_state_dict({k: state[k] for k in wanted}, strict=True, assign=True)
    tower.eval()  # as from_pretrained leaves it: the tower is locked


# The parameters a partial (LiT) checkpoint does not hold: the locked pretrained text transformer.
LOCKED_TEXT_PREFIX = "text.transformer."


def load_trained_parts(model: torch.nn.Module, path: Path) -> None:
    """Load a partial checkpoint into ``model`` (whose text tower came from its own files).

    Strict about what matters: every key of the model outside the locked text transformer
    must be in the file, and the file may hold no key the model lacks.
    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises many types for a damaged file
        raise RuntimeError(f"checkpoint {path} is corrupt or unreadable: {exc}") from None
    state = data.get("state_dict", data) if isinstance(data, dict) else None
    if not isinstance(state, dict):
        raise RuntimeError(f"checkpoint {path} holds no state dict")  # noqa: TRY004 -- a bad file, not a bad argument
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(LOCKED_TEXT_PREFIX)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"checkpoint {path} does not fit this architecture: missing {missing[:5]}, "
            f"unexpected {list(result.unexpected_keys)[:5]}"
        )


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, device: str) -> ClipEncoder:
    spec = get_spec(name, kind="clip")
    if device == "cpu":
        configure_cpu_determinism()
    model, preprocess, tokenizer = build_clip_model(spec, device)
    if not spec.trained:
        log.warning("dense model %r is UNTRAINED (random init): use it only as a baseline", name)
    return ClipEncoder(name, model, preprocess, tokenizer, device, spec.dim)


def load_clip(name: str | None = None, device: str | None = None) -> ClipEncoder:
    """The CLIP encoder ``name`` (default: settings.dense_model), cached per name + device."""
    return _load_cached(_resolve_name(name), pick_device(device))


__all__ = [
    "OFFLINE_CLIP_ARCH",
    "ClipEncoder",
    "build_clip_model",
    "combine_query_vectors",
    "load_clip",
    "pick_device",
]
