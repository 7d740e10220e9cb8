"""Train (from scratch) or fine-tune an open_clip model on catalogue (image, caption) pairs.

Contrastive loss is ``open_clip.loss.ClipLoss``. Checkpoints are open_clip-loadable files
(``{"state_dict": ...}`` plus optimizer state for resuming), so
``open_clip.create_model_and_transforms(arch, pretrained=<file>)`` -- and therefore the
model registry -- loads them directly. A run writes ``<out>/last.pt`` every
``checkpoint_every`` steps and at the end, and resumes from it with ``resume=True``.

Architectures with a Hugging Face text tower (``text_cfg.hf_model_name``, e.g.
``fashion-lit-minilm``) train the LiT way (Zhai et al. 2022, here with the *text* side
locked): the pretrained text transformer is frozen (``text_unlocked_layers`` top layers may
be unlocked), its projection starts as the identity, and the image tower learns to land in
the text tower's space. With the transformer fully locked, every caption is encoded once
before the loop (:class:`TextFeatureCache`), so a step costs an image forward/backward only.
Their checkpoints hold only the trained parts (:func:`model_state`): the locked part of the
text tower comes from its own files.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from services.catalog.reader import iter_rows
from services.catalog.sources import resolve_source
from services.encoders.clip import LOCKED_TEXT_PREFIX
from services.encoders.registry import OFFLINE_CLIP_ARCH, ensure_model_configs
from services.training.data import (
    MIN_TRAIN_PRODUCTS,
    PairSet,
    TrainingDataError,
    build_pairs,
    captions_for,
    lit_captions,
    split_rows,
)

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used (corrupt, truncated, other architecture)."""


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved beside its checkpoints)."""

    source: str = "offline"
    size: int = 10_000
    limit: int | None = None
    arch: str = OFFLINE_CLIP_ARCH
    pretrained: str | None = None  # None: train from scratch (fixed-seed init)
    epochs: int = 15
    max_minutes: float | None = None
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    seed: int = 0
    split_seed: int = 0
    heldout_fraction: float = 0.1
    threads: int | None = 2
    device: str = "cpu"
    checkpoint_every: int = 100
    flip: bool = True
    # LiT architectures only (HF text tower): top text-transformer layers left trainable
    # (0 = fully locked) and whether the text projection trains (False: stays the identity).
    text_unlocked_layers: int = 0
    text_lr_scale: float = 0.05  # learning rate of unlocked pretrained layers, relative to lr
    train_text_proj: bool = True
    # Start the image tower from this checkpoint's ``visual.*`` weights where the shapes match
    # (e.g. the from-scratch fashion-clip-offline, same vision config); None: fixed-seed init.
    init_image_tower: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    epochs_done: float
    seconds: float
    losses: list[float]
    train_products: int
    heldout_products: int
    stopped_by_time: bool


# --------------------------------------------------------------------------------------
# model + checkpoints
# --------------------------------------------------------------------------------------
def create_model(config: TrainConfig):
    """(model, preprocess_train, preprocess_val, tokenizer) for the run's architecture."""
    import open_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    ensure_model_configs()
    torch.manual_seed(config.seed)
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        config.arch, pretrained=config.pretrained, device=config.device
    )
    return model, preprocess_train, preprocess_val, open_clip.get_tokenizer(config.arch)


def is_lit(model: torch.nn.Module) -> bool:
    """True for a model whose text tower is a pretrained Hugging Face transformer."""
    from open_clip.hf_model import HFTextEncoder  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    return isinstance(getattr(model, "text", None), HFTextEncoder)


def prepare_lit(model: torch.nn.Module, config: TrainConfig) -> None:
    """Lock the text transformer (bar ``text_unlocked_layers``); projection starts as the identity."""
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    if config.text_unlocked_layers:
        # open_clip's partial unlock knows no BERT layer list (hf_configs has no layer_attr for
        # "bert"), so the top layers are unlocked here: BERT-style encoders keep them in encoder.layer.
        layers = getattr(getattr(model.text.transformer, "encoder", None), "layer", None)
        if layers is None:
            raise ValueError(
                f"cannot unlock layers of {type(model.text.transformer).__name__}: "
                "no encoder.layer list (use --text-unlocked-layers 0)"
            )
        for layer in list(layers)[-config.text_unlocked_layers :]:
            for p in layer.parameters():
                p.requires_grad = True
    proj = model.text.proj
    if isinstance(proj, torch.nn.Linear) and proj.weight.shape[0] == proj.weight.shape[1]:
        with torch.no_grad():
            proj.weight.copy_(torch.eye(proj.weight.shape[0]))
    for p in proj.parameters():
        p.requires_grad = config.train_text_proj


def init_image_tower(model: torch.nn.Module, checkpoint: Path) -> list[str]:
    """Copy ``visual.*`` tensors of matching shape from ``checkpoint``; returns the keys copied."""
    state = load_checkpoint_file(Path(checkpoint))["state_dict"]
    own = model.state_dict()
    taken = {
        k: v.float()
        for k, v in state.items()
        if k.startswith("visual.") and k in own and own[k].shape == v.shape
    }
    model.load_state_dict(taken, strict=False)
    skipped = sorted(k for k in own if k.startswith("visual.") and k not in taken)
    log.info(
        "image tower: %d tensors from %s; fresh: %s",
        len(taken),
        checkpoint,
        ", ".join(skipped) or "none",
    )
    return sorted(taken)


def model_state(model: torch.nn.Module, keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """What a checkpoint stores: all of it, or for LiT models the trained parts only (everything
    outside the text transformer, plus its unlocked layers). ``keys``: exactly those tensors (an
    export keeps what its training checkpoint held)."""
    state = model.state_dict()
    if keys is not None:
        return {k: v for k, v in state.items() if k in keys}
    if not is_lit(model):
        return state
    text = [
        (n, p.requires_grad)
        for n, p in model.named_parameters()
        if n.startswith(LOCKED_TEXT_PREFIX)
    ]
    # Unlocked layers count only while the tower is locked (training); a model loaded for use has
    # nothing frozen, and then the whole pretrained transformer is left out.
    unlocked = {n for n, trainable in text if trainable} if not all(t for _, t in text) else set()
    return {k: v for k, v in state.items() if not k.startswith(LOCKED_TEXT_PREFIX) or k in unlocked}


class TextFeatureCache:
    """Pooled outputs of a fully locked text transformer, computed once per distinct caption."""

    def __init__(
        self, text_tower: torch.nn.Module, tokenizer, captions: list[str], batch_size: int = 256
    ):
        unique = sorted(set(captions))
        self.index = {c: i for i, c in enumerate(unique)}
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(unique), batch_size):
                tokens = tokenizer(unique[start : start + batch_size])
                mask = (tokens != text_tower.config.pad_token_id).long()
                out = text_tower.transformer(input_ids=tokens, attention_mask=mask)
                chunks.append(text_tower.pooler(out, mask).float())
        self.features = torch.cat(chunks) if chunks else torch.zeros(0)

    def __len__(self) -> int:
        return len(self.index)

    def get(self, captions: list[str]) -> torch.Tensor:
        return self.features[[self.index[c] for c in captions]]


def load_checkpoint_file(path: Path) -> dict:
    """Read a checkpoint; :class:`CheckpointError` naming the file when it is unusable."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 -- torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {exc}") from None
    if not isinstance(data, dict) or "state_dict" not in data:
        raise CheckpointError(
            f"checkpoint {path} has no 'state_dict': not an open_clip training checkpoint"
        )
    return data


def save_checkpoint(path: Path, model: torch.nn.Module, **state: Any) -> Path:
    """Atomically write ``{"state_dict": ..., **state}`` (open_clip-loadable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": model_state(model), **state}, tmp)
    tmp.replace(path)
    return path


def export_checkpoint(
    model: torch.nn.Module, path: Path, half: bool = True, keys: set[str] | None = None, **meta: Any
) -> Path:
    """A release checkpoint: weights only (float16 by default: half the size), open_clip-loadable;
    ``keys``: exactly these tensors (those of the training checkpoint)."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).clone()
        for k, v in model_state(model, keys).items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": state, **meta}, tmp)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def load_catalog_rows(config: TrainConfig) -> list[dict]:

    paths = resolve_source(config.source, size=config.size, limit=config.limit)
    return list(iter_rows(paths, limit=config.limit))


def prepare_splits(
    rows: list[dict], config: TrainConfig, preprocess, lit: bool = False
) -> tuple[PairSet, list[dict]]:
    """(train pairs, held-out rows); clear errors for an empty or too small catalogue."""
    if not rows:
        raise TrainingDataError("the catalogue is empty: nothing to train on")
    train_rows, heldout_rows = split_rows(rows, config.split_seed, config.heldout_fraction)
    if len(train_rows) < MIN_TRAIN_PRODUCTS:
        raise TrainingDataError(
            f"train split has {len(train_rows)} products (of {len(rows)}); at least "
            f"{MIN_TRAIN_PRODUCTS} are needed"
        )
    pairs = build_pairs(train_rows, preprocess, caption_fn=lit_captions if lit else captions_for)
    if len(pairs) < MIN_TRAIN_PRODUCTS:
        raise TrainingDataError(
            f"only {len(pairs)} train products have a usable image; at least {MIN_TRAIN_PRODUCTS} are needed"
        )
    return pairs, heldout_rows


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def _lr_at(step: int, total: int, config: TrainConfig, time_used: float = 0.0) -> float:
    """Linear warm-up, then cosine decay driven by steps or by the time budget, whichever is ahead."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = max((step - config.warmup_steps) / max(1, total - config.warmup_steps), time_used)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _time_used(loop_start: float, config: TrainConfig) -> float:
    """Share of the time budget spent (0 without a budget)."""
    if not config.max_minutes:
        return 0.0
    return (time.monotonic() - loop_start) / (config.max_minutes * 60)


# --------------------------------------------------------------------------------------
# training loop
# --------------------------------------------------------------------------------------
def train_clip(
    config: TrainConfig,
    out_dir: Path,
    *,
    resume: bool = False,
    rows: list[dict] | None = None,
    max_steps: int | None = None,
) -> TrainResult:
    """Train for ``config.epochs`` (or until ``max_minutes``/``max_steps``); returns the result.

    ``rows`` overrides the catalogue source (tests, custom data).
    """
    import open_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    if config.threads:
        torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    last = out_dir / "last.pt"
    model, _, preprocess_val, tokenizer = create_model(config)
    started = time.monotonic()
    lit = is_lit(model)
    pairs, heldout_rows = prepare_splits(
        rows if rows is not None else load_catalog_rows(config), config, preprocess_val, lit=lit
    )
    log.info(
        "train products: %d, held-out products: %d (prepared in %.1fs)",
        len(pairs),
        len(heldout_rows),
        time.monotonic() - started,
    )
    text_cache = None
    if config.init_image_tower and not (resume and last.exists()):
        init_image_tower(model, Path(config.init_image_tower))
    if lit:
        prepare_lit(model, config)
        if config.text_unlocked_layers == 0:
            t = time.monotonic()
            model.text.eval()
            text_cache = TextFeatureCache(
                model.text, tokenizer, [c for cs in pairs.captions for c in cs]
            )
            log.info(
                "locked text tower: %d distinct captions encoded once in %.1fs",
                len(text_cache),
                time.monotonic() - t,
            )

    steps_per_epoch = max(1, len(pairs) // config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = []
    for pretrained in (False, True):  # unlocked pretrained text layers learn at text_lr_scale * lr
        part = [p for n, p in named if n.startswith(LOCKED_TEXT_PREFIX) == pretrained]
        scale = config.text_lr_scale if pretrained else 1.0
        groups += [
            {
                "params": [p for p in part if p.ndim >= 2],
                "weight_decay": config.weight_decay,
                "lr_scale": scale,
            },
            {"params": [p for p in part if p.ndim < 2], "weight_decay": 0.0, "lr_scale": scale},
        ]
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=config.lr, betas=(0.9, 0.98), eps=1e-6
    )
    loss_fn = open_clip.loss.ClipLoss()

    step, losses, spent_before = 0, [], 0.0
    if resume and last.exists():
        state = load_checkpoint_file(last)
        loaded = model.load_state_dict(state["state_dict"], strict=not lit)
        missing = [k for k in loaded.missing_keys if not k.startswith(LOCKED_TEXT_PREFIX)]
        if missing or loaded.unexpected_keys:
            raise CheckpointError(
                f"checkpoint {last} does not fit {config.arch}: missing {missing[:5]}, "
                f"unexpected {list(loaded.unexpected_keys)[:5]}"
            )
        optimizer.load_state_dict(state["optimizer"])
        step, losses, spent_before = (
            int(state["step"]),
            list(state.get("losses", [])),
            float(state.get("seconds", 0.0)),
        )
        log.info("resumed from %s at step %d", last, step)

    def checkpoint() -> Path:
        return save_checkpoint(
            last,
            model,
            optimizer=optimizer.state_dict(),
            step=step,
            losses=losses,
            seconds=spent_before + time.monotonic() - loop_start,
            config=json.dumps(asdict(config)),
            arch=config.arch,
        )

    model.train()
    if text_cache is not None:
        model.text.eval()  # locked: no dropout in the cached features either
    loop_start = time.monotonic()
    deadline = loop_start + config.max_minutes * 60 if config.max_minutes else None
    stopped_by_time = False
    while step < total_steps:
        epoch, batch_index = divmod(step, steps_per_epoch)
        order = _epoch_order(len(pairs), config.seed, epoch)
        batch = order[batch_index * config.batch_size : (batch_index + 1) * config.batch_size]
        rng = random.Random(f"{config.seed}:step:{step}")
        images = pairs.pixels[batch].float().to(config.device)
        if config.flip:
            flip = torch.tensor([rng.random() < 0.5 for _ in batch])
            images[flip] = images[flip].flip(-1)
        captions = pairs.sample_captions(batch, rng)

        lr = _lr_at(step, total_steps, config, _time_used(loop_start, config))
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        if text_cache is not None:
            image_features = model.encode_image(images, normalize=True)
            text_features = torch.nn.functional.normalize(
                model.text.proj(text_cache.get(captions).to(config.device)), dim=-1
            )
            logit_scale = model.logit_scale.exp()
        else:
            image_features, text_features, logit_scale = model(
                images, tokenizer(captions).to(config.device)
            )[:3]
        loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss.detach()))
        step += 1
        if step % 20 == 0 or step == 1:
            log.info(
                "step %d/%d epoch %d loss %.4f lr %.2e (%.0fs)",
                step,
                total_steps,
                epoch,
                losses[-1],
                optimizer.param_groups[0]["lr"],
                time.monotonic() - loop_start,
            )
        if step % config.checkpoint_every == 0:
            checkpoint()
        if deadline and time.monotonic() > deadline:
            stopped_by_time = step < total_steps
            log.warning(
                "stopping at step %d: time budget of %.1f min used", step, config.max_minutes
            )
            break
    model.eval()
    checkpoint()
    return TrainResult(
        checkpoint=last,
        steps=step,
        epochs_done=step / steps_per_epoch,
        seconds=spent_before + time.monotonic() - loop_start,
        losses=losses,
        train_products=len(pairs),
        heldout_products=len(heldout_rows),
        stopped_by_time=stopped_by_time,
    )
