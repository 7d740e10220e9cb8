"""The fine-tuning workflow used by the CLI and the Airflow DAG: train -> evaluate -> register.

Each step is a plain function over paths and dicts so the DAG's tasks stay one line each.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from services.config import get_settings
from services.encoders.clip import ClipEncoder, build_clip_model, load_clip
from services.encoders.registry import (
    LIT_CLIP_ARCH,
    LIT_CLIP_CHECKPOINT,
    OFFLINE_CLIP_ARCH,
    OFFLINE_CLIP_CHECKPOINT,
    ModelSpec,
    ensure_model_configs,
    register_model,
)
from services.training import clip_report
from services.training.clip_train import (
    TrainConfig,
    export_checkpoint,
    load_catalog_rows,
    load_checkpoint_file,
    train_clip,
)
from services.training.data import split_rows

log = logging.getLogger(__name__)


def heldout_rows(config: TrainConfig) -> list[dict]:
    rows = load_catalog_rows(config)
    return split_rows(rows, config.split_seed, config.heldout_fraction)[1]


def train_and_export(
    config: TrainConfig, work_dir: Path, export_to: Path, *, resume: bool = True
) -> dict:
    """Train (resuming from ``work_dir/last.pt``), export a float16 release checkpoint; summary dict."""
    started = time.monotonic()
    result = train_clip(config, work_dir, resume=resume)
    state = load_checkpoint_file(result.checkpoint)
    model, _, _ = build_clip_model(spec_for_checkpoint("_training", result.checkpoint, config.arch))
    export_checkpoint(
        model,
        export_to,
        half=True,
        keys=set(state["state_dict"]),
        arch=config.arch,
        steps=int(state["step"]),
    )
    summary = {
        "arch": config.arch,
        "checkpoint": str(export_to),
        "checkpoint_mb": round(export_to.stat().st_size / 2**20, 2),
        "steps": result.steps,
        "epochs_done": round(result.epochs_done, 2),
        "train_seconds": round(result.seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "stopped_by_time": result.stopped_by_time,
        "train_products": result.train_products,
        "heldout_products": result.heldout_products,
        "loss_first": round(result.losses[0], 4) if result.losses else None,
        "loss_last_20_mean": round(sum(result.losses[-20:]) / max(1, len(result.losses[-20:])), 4),
        "config": asdict(config),
    }
    log.info(
        "training summary: %s", json.dumps({k: v for k, v in summary.items() if k != "config"})
    )
    return summary


def spec_for_checkpoint(
    name: str,
    checkpoint: Path,
    arch: str = OFFLINE_CLIP_ARCH,
    note: str = "",
    offline: bool = False,
) -> ModelSpec:
    """The registry spec of a trained checkpoint of ``arch`` (LiT architectures: partial checkpoint)."""
    import open_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    ensure_model_configs()
    config = open_clip.get_model_config(arch)
    if config is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}")
    return ModelSpec(
        name=name,
        kind="clip",
        source=arch,
        dim=int(config["embed_dim"]),
        licence="Apache-2.0",
        note=note,
        pretrained=str(Path(checkpoint).resolve()),
        offline=offline,
        partial_checkpoint="hf_model_name" in config.get("text_cfg", {}),
    )


def encoder_for_checkpoint(
    name: str, checkpoint: Path, arch: str = OFFLINE_CLIP_ARCH
) -> ClipEncoder:
    """A ClipEncoder for a checkpoint file, built through the registry's loader call."""
    spec = spec_for_checkpoint(name, checkpoint, arch)
    model, preprocess, tokenizer = build_clip_model(spec)
    return ClipEncoder(name, model, preprocess, tokenizer, "cpu", spec.dim)


def evaluate(config: TrainConfig, after: ClipEncoder, before: ClipEncoder | None = None) -> dict:
    """Before/after report on the held-out split."""
    rows = heldout_rows(config)
    before = before or load_clip("clip-tiny-untrained", device="cpu")
    return clip_report.compare(
        clip_report.evaluate_encoder(before, rows), clip_report.evaluate_encoder(after, rows)
    )


def register_finetuned(
    name: str,
    checkpoint: Path,
    note: str,
    model_cache: Path | None = None,
    arch: str = OFFLINE_CLIP_ARCH,
) -> Path:
    """Copy nothing, just record: a registry.d entry pointing at ``checkpoint``."""
    return register_model(
        spec_for_checkpoint(name, checkpoint, arch, note, offline=True), model_cache
    )


def default_image_tower_init(arch: str) -> str | None:
    """Where a run of ``arch`` starts its image tower: for the LiT architecture, the committed
    from-scratch checkpoint (same vision config); otherwise a fixed-seed init."""
    return str(OFFLINE_CLIP_CHECKPOINT) if arch == LIT_CLIP_ARCH else None


def reproduce_command(argv: list[str] | None = None) -> str:
    args = argv if argv is not None else sys.argv[1:]
    return "fashion-search " + " ".join(shlex.quote(a) for a in args)


def write_summary(summary: dict, report: dict | None, folder: Path, stem: str) -> list[Path]:
    """Training summary JSON (+ report files) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.training.json"
    path.write_text(json.dumps(summary, indent=2, default=str))
    written = [path]
    if report is not None:
        written += clip_report.save_report(report, [folder], stem=f"{stem}.report")
    return written


def default_paths(arch: str = OFFLINE_CLIP_ARCH) -> dict[str, Path]:
    """Where a run of ``arch`` works and exports by default: the committed checkpoint of the two
    offline architectures, else ``<model_cache>/finetuned/<arch>.pt`` (never a committed file)."""
    settings = get_settings()
    return {
        "work_dir": settings.work_dir / f"clip-training-{arch}",
        "export_to": {
            LIT_CLIP_ARCH: LIT_CLIP_CHECKPOINT,
            OFFLINE_CLIP_ARCH: OFFLINE_CLIP_CHECKPOINT,
        }.get(arch, settings.model_cache / "finetuned" / f"{arch}.pt"),
        "reports_dir": settings.reports_dir,
    }
