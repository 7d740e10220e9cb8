"""Sparse SPLADE encoder (transformers masked-LM): text -> pruned, unit-norm pgvector SparseVector.

Weights are ``log(1 + relu(logits))`` max-pooled over the real (unpadded) tokens, special
tokens zeroed, pruned to the top ``max_terms`` (HNSW on sparsevec takes <= 1000 non-zeros)
and L2-normalised so that sparse inner products are cosines, on the same scale as CLIP's.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from pgvector import SparseVector

from services.config import get_settings
from services.encoders.clip import pick_device
from services.encoders.library_output import transformers_progress_bars
from services.encoders.registry import build_call, get_spec

log = logging.getLogger(__name__)

DEFAULT_MAX_TERMS = 256
MAX_TERMS_LIMIT = 1000  # pgvector HNSW limit on sparsevec non-zeros
TOKEN_BUDGET = 4096  # tokens per forward pass: bounds the (batch, seq, vocab) logits tensor


class SpladeEncoder:
    """A SPLADE model with its tokenizer."""

    def __init__(
        self,
        name: str,
        tokenizer,
        model: torch.nn.Module,
        device: str,
        max_terms: int = DEFAULT_MAX_TERMS,
    ):
        if not 1 <= max_terms <= MAX_TERMS_LIMIT:
            raise ValueError(f"max_terms must be in 1..{MAX_TERMS_LIMIT}, got {max_terms}")
        self.name = name
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.device = device
        self.max_terms = max_terms
        self.vocab_size = int(model.config.vocab_size)
        self.max_length = min(
            int(getattr(tokenizer, "model_max_length", 512) or 512),
            int(getattr(model.config, "max_position_embeddings", 512)),
        )
        self._special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self._check_tokenizer()

    def __repr__(self) -> str:
        return f"SpladeEncoder(name={self.name!r}, vocab_size={self.vocab_size}, device={self.device!r})"

    def _check_tokenizer(self) -> None:
        """Guard against the transformers-5 trap where a tokenizer silently maps all to [UNK]."""
        ids = self.tokenizer("black socks", add_special_tokens=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        if not ids or (unk is not None and all(i == unk for i in ids)):
            raise RuntimeError(
                f"tokenizer of {self.name!r} maps plain English to [UNK]: its vocabulary did not load"
            )

    # --- encoding ----------------------------------------------------------------------
    def _validate(self, texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("encode takes a sequence of strings, e.g. [text]")
        cleaned = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text #{i} is {type(text).__name__}, not a string")
            if not text.strip():
                raise ValueError(f"text #{i} is empty or whitespace; SPLADE needs some words")
            cleaned.append(text)
        return cleaned

    def _warn_truncated(self, texts: list[str]) -> None:
        # A word piece has >= 1 character, so only texts this long can overflow the window.
        for i, text in enumerate(texts):
            if len(text) > self.max_length - 2:
                n = len(
                    self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
                )
                if n > self.max_length:
                    log.warning(
                        "text #%d has %d tokens; truncated to the model window of %d",
                        i,
                        n,
                        self.max_length,
                    )

    @torch.inference_mode()
    def _weights(self, texts: list[str]) -> torch.Tensor:
        """(batch, vocab) SPLADE weights before pruning."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        logits = self.model(**batch).logits
        weights = torch.log1p(torch.relu(logits.float()))
        weights = weights * batch["attention_mask"].unsqueeze(-1).to(weights.dtype)
        pooled = weights.amax(dim=1)
        pooled[:, self._special_ids.to(pooled.device)] = 0.0
        return pooled

    def _to_sparse(self, row: torch.Tensor) -> SparseVector:
        k = min(self.max_terms, int((row > 0).sum()))
        if k == 0:
            return SparseVector({}, self.vocab_size)
        values, indices = row.topk(k)
        values = values / values.norm().clamp_min(1e-12)
        order = indices.argsort()
        pairs = zip(indices[order].tolist(), values[order].tolist())
        return SparseVector({int(i): float(v) for i, v in pairs}, self.vocab_size)

    def _batches(self, texts: list[str], batch_size: int):
        """Index batches sorted by length, capped by both batch_size and TOKEN_BUDGET."""
        lengths = [min(len(t), self.max_length) for t in texts]  # characters: cheap upper bound
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        batch: list[int] = []
        for i in order:
            longest = max([lengths[j] for j in batch] + [lengths[i]])
            if batch and (len(batch) >= batch_size or (len(batch) + 1) * longest > TOKEN_BUDGET):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> list[SparseVector]:
        """One pruned, L2-normalised SparseVector(dim=vocab_size) per text, in input order."""
        texts = self._validate(texts)
        self._warn_truncated(texts)
        out: list[SparseVector | None] = [None] * len(texts)
        for indices in self._batches(texts, batch_size):
            weights = self._weights([texts[i] for i in indices]).cpu()
            for row, i in zip(weights, indices):
                out[i] = self._to_sparse(row)
        return out  # type: ignore[return-value]

    # --- inspection ----------------------------------------------------------------------
    def _token(self, index: int) -> str:
        return self.tokenizer.convert_ids_to_tokens(int(index))

    def terms(self, vec: SparseVector, top: int = 10) -> list[tuple[str, float]]:
        """The ``top`` heaviest vocabulary terms of a vector."""
        pairs = sorted(zip(vec.indices(), vec.values()), key=lambda p: -p[1])[:top]
        return [(self._token(i), float(v)) for i, v in pairs]

    def explain(
        self, query: SparseVector, doc: SparseVector, top: int = 5
    ) -> list[tuple[str, float]]:
        """Terms with the largest contribution ``q_i * d_i`` to the query-document inner product."""
        doc_weights = dict(zip(doc.indices(), doc.values()))
        products = [
            (i, q * doc_weights[i])
            for i, q in zip(query.indices(), query.values())
            if i in doc_weights
        ]
        products.sort(key=lambda p: -p[1])
        return [(self._token(i), float(p)) for i, p in products[:top]]


def sparse_dot(a: SparseVector, b: SparseVector) -> float:
    """Inner product of two sparse vectors (what pgvector's ``<#>`` negates)."""
    weights = dict(zip(a.indices(), a.values()))
    return float(sum(v * weights.get(i, 0.0) for i, v in zip(b.indices(), b.values())))


def load_splade_from(
    path_or_hub_id: str, name: str, device: str = "cpu", max_terms: int = DEFAULT_MAX_TERMS
) -> SpladeEncoder:
    """Build a SpladeEncoder from a local folder or a Hugging Face id (tokenizer from the same place)."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    # Load the tokenizer from the folder (never via vocab_file=: transformers 5 ignores it).
    tokenizer = AutoTokenizer.from_pretrained(path_or_hub_id)
    # No "Loading weights" bar for a local folder or into a log (services.encoders.library_output).
    with transformers_progress_bars(show=not Path(path_or_hub_id).exists()):
        model = AutoModelForMaskedLM.from_pretrained(path_or_hub_id).to(device)
    return SpladeEncoder(name, tokenizer, model, device, max_terms=max_terms)


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, device: str) -> SpladeEncoder:
    spec = get_spec(name, kind="splade")
    call = build_call(spec)
    if call.local_path and not Path(call.local_path).exists():
        raise FileNotFoundError(
            f"SPLADE model {name!r} not found at {call.local_path}; run `fashion-search models fetch`"
        )
    if device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    return load_splade_from(call.args[0], name, device)


def load_splade(name: str | None = None, device: str | None = None) -> SpladeEncoder:
    """The SPLADE encoder ``name`` (default: settings.sparse_model), cached per name + device."""
    return _load_cached(name or get_settings().sparse_model, pick_device(device))
