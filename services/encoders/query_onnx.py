"""The query towers on ONNX Runtime: the same text vectors as torch, in less time per query.

A search encodes one short text (or a few) at a time, where torch's per-operator overhead
dominates: on this machine's 2 cores the LiT text tower takes ~10 ms a query in torch and
~4.6 ms in ONNX Runtime, SPLADE-tiny ~6 ms and ~2.3 ms (``benchmarks/bench_understanding.py``
measures both runtimes). This module exports the two query towers from the loaded torch models
(``torch.onnx.export``; no other weights, nothing downloaded), caches the files under
``FASHION_MODEL_CACHE/onnx/`` by a digest of the weights, and runs them with one intra-op
thread each (the two run side by side: ``services.understanding.query.encoder_of``).

Exact, not approximate: fp32, no quantisation. :func:`query_towers` checks a probe text
through both runtimes and falls back to torch (with a warning) unless they agree to a cosine
of :data:`MIN_AGREEMENT`; the tests check the same on many texts. Only a Hugging Face text
tower (``fashion-lit-minilm``) is exported; open_clip's own text transformer stays on torch.
The index is always encoded by torch (``services.pipeline.encode``).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pgvector import SparseVector

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.9999  # cosine between the torch and ONNX Runtime vectors of a probe text
PROBE = "navy blue slim fit cotton shirt for men"
OPSET = 17


class _TextTower(torch.nn.Module):
    """The HF text tower's forward, returning the projected and the pooled vector."""

    def __init__(self, text: torch.nn.Module):
        super().__init__()
        self.text = text

    def forward(self, ids: torch.Tensor, mask: torch.Tensor):
        pooled = self.text.pooler(self.text.transformer(input_ids=ids, attention_mask=mask), mask)
        return self.text.proj(pooled), pooled


class _Splade(torch.nn.Module):
    """SPLADE's weights, max-pooled over the real tokens (``SpladeEncoder._weights``)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor):
        logits = self.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        weights = torch.log1p(torch.relu(logits)) * mask.unsqueeze(-1).to(logits.dtype)
        return weights.amax(dim=1)


def _digest(*modules: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:16]


def _export(module, args, path: Path, inputs: list[str], outputs: list[str]) -> None:
    axes = {n: {0: "batch", 1: "tokens"} for n in inputs} | {n: {0: "batch"} for n in outputs}
    tmp = path.with_suffix(".partial")
    # The tracer warns about shape checks it folds to constants: with an attention mask and
    # no cache they are constant (no padding offset, not causal); agreement() checks the rest.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(tmp),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    tmp.replace(path)


def _session(path: Path):
    import onnxruntime as ort  # noqa: PLC0415 - deferred: only query serving loads ONNX Runtime

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass
class QueryTowers:
    """Both query towers on ONNX Runtime, with the torch encoders' tokenizers."""

    clip: object  # services.encoders.clip.ClipEncoder
    splade: object  # services.encoders.splade.SpladeEncoder
    text_session: object
    splade_session: object

    def encode_texts_and_sentences(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """As ``ClipEncoder.encode_texts_and_sentences``."""
        tokens = self.clip.tokenizer(list(texts))
        pad = self.clip._trim_pad_id()
        used = int((tokens != pad).any(0).nonzero().max()) + 1
        ids = tokens[:, :used].numpy().astype(np.int64)
        projected, pooled = self.text_session.run(
            None, {"ids": ids, "mask": (ids != pad).astype(np.int64)}
        )
        return _unit(projected), _unit(pooled)

    def encode_sparse(self, texts: list[str]) -> list[SparseVector]:
        """As ``SpladeEncoder.encode`` (the same pruning and normalisation)."""
        s = self.splade
        batch = s.tokenizer(
            list(texts), padding=True, truncation=True, max_length=s.max_length, return_tensors="np"
        )
        feed = {
            "ids": batch["input_ids"].astype(np.int64),
            "mask": batch["attention_mask"].astype(np.int64),
            "types": batch.get("token_type_ids", np.zeros_like(batch["input_ids"])).astype(
                np.int64
            ),
        }
        (weights,) = self.splade_session.run(None, feed)
        pooled = torch.from_numpy(weights)
        pooled[:, s._special_ids] = 0.0
        return [s._to_sparse(row) for row in pooled]

    def agreement(self, texts: list[str]) -> float:
        """The lowest cosine, over ``texts``, between torch's and ONNX Runtime's vectors
        (CLIP text, sentence and SPLADE)."""
        dense, sentences = self.clip.encode_texts_and_sentences(texts)
        sparse = self.splade.encode(texts)
        o_dense, o_sentences = self.encode_texts_and_sentences(texts)
        o_sparse = self.encode_sparse(texts)
        worst = 1.0
        for i in range(len(texts)):
            worst = min(
                worst,
                _cos(dense[i], o_dense[i]),
                _cos(sentences[i], o_sentences[i]),
                _cos(sparse[i].to_numpy(), o_sparse[i].to_numpy()),
            )
        return worst


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def query_towers(clip, splade, cache_dir: Path) -> QueryTowers | None:
    """The ONNX Runtime query towers of ``clip`` and ``splade`` (exported once into
    ``cache_dir``), or None when they cannot be used here: the text tower is not a Hugging
    Face one, onnxruntime is missing, the export fails, or the probe's vectors disagree."""
    from open_clip.hf_model import HFTextEncoder  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    text = getattr(clip.model, "text", None)
    if not isinstance(text, HFTextEncoder) or clip.device != "cpu":
        return None
    try:
        import onnxruntime  # noqa: F401, PLC0415 - is it installed?

        cache_dir.mkdir(parents=True, exist_ok=True)
        digest = _digest(text, splade.model)
        text_path = cache_dir / f"{clip.name}-text-{digest}.onnx"
        splade_path = cache_dir / f"{splade.name}-{digest}.onnx"
        probe_ids = clip.tokenizer([PROBE])
        pad = clip._trim_pad_id()
        used = int((probe_ids != pad).any(0).nonzero().max()) + 1
        probe_ids = probe_ids[:, :used]
        if not text_path.exists():
            _export(
                _TextTower(text), (probe_ids, (probe_ids != pad).long()), text_path,
                ["ids", "mask"], ["projected", "pooled"],
            )  # fmt: skip
        if not splade_path.exists():
            b = splade.tokenizer([PROBE], return_tensors="pt")
            types = b.get("token_type_ids", torch.zeros_like(b["input_ids"]))
            _export(
                _Splade(splade.model), (b["input_ids"], b["attention_mask"], types),
                splade_path, ["ids", "mask", "types"], ["weights"],
            )  # fmt: skip
        towers = QueryTowers(clip, splade, _session(text_path), _session(splade_path))
        agreement = towers.agreement([PROBE])
    except Exception as exc:  # noqa: BLE001 - any failure: the torch towers serve instead
        log.warning(
            "query towers stay on torch: ONNX Runtime unavailable (%s: %s)", type(exc).__name__, exc
        )
        return None
    if agreement < MIN_AGREEMENT:
        log.warning(
            "query towers stay on torch: ONNX Runtime vectors agree only to %.6f", agreement
        )
        return None
    return towers
