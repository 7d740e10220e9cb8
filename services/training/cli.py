"""``fashion-search train-clip`` and ``fashion-search clip-report``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from services.encoders.registry import LIT_CLIP_ARCH, OFFLINE_CLIP_ARCH


def _config(args: argparse.Namespace):
    from services.training.clip_train import TrainConfig  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    return TrainConfig(
        source=args.source,
        size=args.size,
        limit=args.limit,
        arch=args.arch,
        pretrained=args.pretrained,
        epochs=args.epochs,
        max_minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        text_unlocked_layers=args.text_unlocked_layers,
        train_text_proj=not args.freeze_text_proj,
        init_image_tower=_image_tower_init(args),
    )


def _image_tower_init(args: argparse.Namespace) -> str | None:
    """--init-image-tower, else the architecture's default (workflow.default_image_tower_init)."""
    from services.training.workflow import default_image_tower_init  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    if args.init_image_tower == "none":
        return None
    return args.init_image_tower or default_image_tower_init(args.arch)


def _train(args: argparse.Namespace) -> int:
    from services.training import clip_report, workflow  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    config = _config(args)
    paths = workflow.default_paths(config.arch)
    out = Path(args.out) if args.out else paths["export_to"]
    work_dir = Path(args.work_dir) if args.work_dir else paths["work_dir"]
    summary = workflow.train_and_export(config, work_dir, out, resume=args.resume)
    summary["command"] = workflow.reproduce_command()
    report = None
    if not args.no_report:
        after = workflow.encoder_for_checkpoint(args.register or out.stem, out, config.arch)
        report = workflow.evaluate(config, after)
        print(clip_report.format_report(report))
    written = workflow.write_summary(summary, report, out.parent, out.stem)
    written += workflow.write_summary(summary, report, paths["reports_dir"], out.stem)
    if args.register:
        written.append(
            workflow.register_finetuned(
                args.register, out, note=f"trained by: {summary['command']}", arch=config.arch
            )
        )
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    print("wrote:\n  " + "\n  ".join(str(p) for p in written))
    return 0


def _report(args: argparse.Namespace) -> int:
    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.training import clip_report, workflow  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    config = _config(args)
    after = (
        workflow.encoder_for_checkpoint(
            Path(args.checkpoint).stem, Path(args.checkpoint), config.arch
        )
        if args.checkpoint
        else load_clip(args.model, device="cpu")
    )
    before = load_clip(args.baseline, device="cpu")
    report = workflow.evaluate(config, after, before)
    print(clip_report.format_report(report))
    folder = workflow.default_paths()["reports_dir"]
    written = clip_report.save_report(report, [folder], stem=f"clip-report-{after.name}")
    print("wrote:\n  " + "\n  ".join(str(p) for p in written))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source", default="offline", help="catalogue: offline | hub | parquet path"
    )
    parser.add_argument("--size", type=int, default=10_000, help="offline catalogue size")
    parser.add_argument("--limit", type=int, default=None, help="read at most this many products")
    parser.add_argument(
        "--arch",
        default=LIT_CLIP_ARCH,
        help=f"open_clip architecture ({LIT_CLIP_ARCH}: LiT with the pretrained MiniLM "
        f"text tower locked; {OFFLINE_CLIP_ARCH}: both towers from scratch)",
    )
    parser.add_argument(
        "--pretrained", default=None, help="open_clip pretrained tag or file to fine-tune"
    )
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--minutes", type=float, default=None, help="stop after this many minutes")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--text-unlocked-layers",
        type=int,
        default=0,
        help="LiT: top layers of the pretrained text tower left trainable (0 = locked)",
    )
    parser.add_argument(
        "--init-image-tower",
        default=None,
        metavar="CHECKPOINT",
        help="start the image tower from this checkpoint's visual weights where shapes match "
        f"(default for {LIT_CLIP_ARCH}: the committed fashion-clip-offline; 'none': fixed-seed init)",
    )
    parser.add_argument(
        "--freeze-text-proj",
        action="store_true",
        help="LiT: keep the text projection at the identity (text space = the pretrained one)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train-clip", help="train/fine-tune the CLIP model on the catalogue, then report"
    )
    _common(train)
    train.add_argument(
        "--out", default=None, help="release checkpoint (default: the committed offline one)"
    )
    train.add_argument("--work-dir", default=None, help="training checkpoints (last.pt) folder")
    train.add_argument("--resume", action="store_true", help="continue from <work-dir>/last.pt")
    train.add_argument("--no-report", action="store_true", help="skip the held-out evaluation")
    train.add_argument(
        "--register",
        default=None,
        metavar="NAME",
        help="also register the checkpoint as model NAME (model_cache/registry.d)",
    )
    train.set_defaults(func=_train)

    report = subparsers.add_parser(
        "clip-report", help="held-out retrieval and zero-shot metrics, before/after"
    )
    _common(report)
    report.add_argument("--model", default="fashion-clip-offline", help="registry name to measure")
    report.add_argument("--checkpoint", default=None, help="measure this checkpoint file instead")
    report.add_argument(
        "--baseline", default="clip-tiny-untrained", help="registry name for 'before'"
    )
    report.set_defaults(func=_report)
