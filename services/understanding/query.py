"""From understood text to the query's two vectors: what reaches ``alpha * dense + (1 - alpha) * sparse``.

Understanding changes the *query*, never the formula. With ``e(t)`` the encoders' unit
vectors of a text ``t`` (CLIP text, SPLADE), for each side::

    q = unit( (1 - rho) * e(text) + rho * e(rewrite) + sum_labels  w_field * c * e(label) )

- ``text``: the shopper's words, spelling corrected; ``rewrite``: the same with recognised
  shopper words replaced by the catalogue's ("navy blue sweater for men"), ``rho`` =
  ``rewrite_<side>`` times the replacements' mean confidence;
- labels: values the semantic step recognised in left-over words ("beach" -> usage Travel),
  each adding its catalogue words' vector (``label_<side>[field]`` times its confidence);
- nothing understood (no correction, no rewrite, no label): ``q = e(text)``, exactly the
  literal query's vectors.

The weights were chosen on the tuning half of the evaluation's query set
(``evaluation/understanding_sweep.py``; docs/understanding.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from pgvector import SparseVector

from services.understanding.lexicon import Lexicon
from services.understanding.semantic import (
    Prototypes,
    Recognition,
    SemanticSettings,
    build_prototypes,
    recognise,
)
from services.understanding.understand import Attribute, Understood, understand

MAX_SPARSE_TERMS = 256  # as the SPLADE encoder prunes (services.encoders.splade)


@dataclass(frozen=True)
class Encoded:
    """One text through both encoders: CLIP text vector, SPLADE vector, sentence vector."""

    dense: np.ndarray
    sparse: SparseVector
    sentence: np.ndarray


Encoder = Callable[[list[str]], list[Encoded]]


@dataclass(frozen=True)
class UnderstandingSettings:
    """How strongly understanding moves the query. The defaults were chosen by
    ``fashion-search eval-sweep-understanding`` on the TUNING half (held-out configuration,
    offline catalogue; docs/understanding.md): text MAP@10 0.494 literal -> 0.759,
    photo + text 0.663 -> 0.709."""

    rewrite_dense: float = 0.7
    rewrite_sparse: float = 0.7
    label_dense: tuple[tuple[str, float], ...] = (
        ("articleType", 1.0),
        ("baseColour", 1.0),
        ("usage", 0.0),
        ("season", 0.0),
    )
    label_sparse: tuple[tuple[str, float], ...] = (
        ("articleType", 0.25),
        ("baseColour", 0.25),
        ("usage", 1.5),
        ("season", 1.5),
    )
    semantic: SemanticSettings = field(default_factory=SemanticSettings)
    # Photo + text: the article type the photo shows (zero-shot), added to the sparse side.
    photo_sparse: float = 1.5
    photo_temperature: float = 0.02
    photo_min: float = 0.2

    @property
    def digest(self) -> str:
        return hashlib.sha256(repr(self).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Understanding:
    """The understood query and the vectors it is searched with."""

    understood: Understood
    dense: np.ndarray
    sparse: SparseVector
    recognitions: tuple[Recognition, ...] = ()


def _unit(x: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(x))
    return (x / n).astype(np.float32) if n > 1e-12 else x.astype(np.float32)


def _sparse_sum(parts: Sequence[tuple[float, SparseVector]], dim: int) -> SparseVector:
    acc: dict[int, float] = {}
    for w, vec in parts:
        if w == 0.0:
            continue
        for i, v in zip(vec.indices(), vec.values()):
            acc[i] = acc.get(i, 0.0) + w * v
    top = sorted(acc.items(), key=lambda p: -p[1])[:MAX_SPARSE_TERMS]
    top = [(i, v) for i, v in top if v > 0]
    norm = sum(v * v for _, v in top) ** 0.5 or 1.0
    return SparseVector({int(i): float(v / norm) for i, v in sorted(top)}, dim)


class QueryUnderstanding:
    """Understanding of one process: a lexicon snapshot, its label prototypes (with the
    labels' own vectors) and the settings. Immutable; rebuilt when the lexicon changes."""

    def __init__(
        self,
        lexicon: Lexicon,
        prototypes: Prototypes,
        label_vectors: Sequence[Encoded],
        settings: UnderstandingSettings,
    ):
        self.lexicon = lexicon
        self.prototypes = prototypes
        self.label_vectors = list(label_vectors)
        self.settings = settings

    @property
    def fingerprint(self) -> str:
        return f"{self.lexicon.fingerprint}:{self.settings.digest}"

    def understand(self, text: str, ignore: frozenset[str] = frozenset()) -> Understood:
        return understand(text, self.lexicon, ignore=ignore)

    @staticmethod
    def texts(u: Understood) -> list[str]:
        """The texts to encode for ``u``: its text, its rewrite, its left-over phrases."""
        out = [u.text]
        for t in ([u.rewrite] if u.rewrite else []) + list(u.residual):
            if t not in out:
                out.append(t)
        return out

    def finish(self, u: Understood, encoded: Mapping[str, Encoded]) -> Understanding:
        """The semantic step and the composed vectors, given the encodings of ``texts(u)``."""
        base = encoded[u.text]
        recognitions: list[Recognition] = []
        if u.residual:
            sentences = np.stack([encoded[r].sentence for r in u.residual])
            recognitions = recognise(
                u.residual,
                sentences,
                self.prototypes,
                self.settings.semantic,
                frozenset(u.ignored),
                u.residual_colour_context,
            )
        if u.text == u.original and u.rewrite is None and not recognitions:
            return Understanding(u, base.dense, base.sparse)
        s = self.settings
        rho_d = s.rewrite_dense * u.rewrite_confidence if u.rewrite else 0.0
        rho_s = s.rewrite_sparse * u.rewrite_confidence if u.rewrite else 0.0
        dense = (1 - rho_d) * base.dense
        sparse_parts = [(1 - rho_s, base.sparse)]
        if u.rewrite:
            dense = dense + rho_d * encoded[u.rewrite].dense
            sparse_parts.append((rho_s, encoded[u.rewrite].sparse))
        label_dense, label_sparse = dict(s.label_dense), dict(s.label_sparse)
        index = {(lab.field, lab.value): i for i, lab in enumerate(self.prototypes.labels)}
        for r in recognitions:
            vec = self.label_vectors[index[(r.label.field, r.label.value)]]
            c = r.attribute.confidence
            dense = dense + label_dense.get(r.label.field, 0.0) * c * vec.dense
            sparse_parts.append((label_sparse.get(r.label.field, 0.0) * c, vec.sparse))
        sparse = _sparse_sum(sparse_parts, base.sparse.dimensions())
        final = u.with_attributes(tuple(r.attribute for r in recognitions))
        return Understanding(final, _unit(dense), sparse, tuple(recognitions))

    def with_photo(self, result: Understanding, image: np.ndarray) -> Understanding:
        """Photo + text: the article type the photo shows, recognised zero-shot (the photo's
        CLIP vector against the type labels' CLIP text vectors, a softmax at
        ``photo_temperature``), its catalogue words added to the sparse side (which sees
        only the text) weighted ``photo_sparse`` times its probability. Not when the text
        names a type itself, nor for a type the shopper removed."""
        s = self.settings
        u = result.understood
        labels = self.prototypes.field_labels("articleType")
        if (
            s.photo_sparse <= 0
            or not len(labels)
            or any(a.field == "articleType" for a in u.attributes)
        ):
            return result
        names = np.stack([self.label_vectors[i].dense for i in labels])
        logits = (names @ np.asarray(image, np.float32)) / s.photo_temperature
        p = np.exp(logits - logits.max())
        p /= p.sum()
        parts = [(1.0, result.sparse)]
        found = []
        for j in np.argsort(-p)[:2]:
            label = self.prototypes.labels[int(labels[j])]
            if p[j] < s.photo_min or f"articleType:{label.value}" in u.ignored:
                continue
            parts.append((s.photo_sparse * float(p[j]), self.label_vectors[int(labels[j])].sparse))
            found.append(
                Attribute(
                    "articleType", label.value, "your photo", round(float(p[j]), 3), "photo", True
                )
            )
        if not found:
            return result
        sparse = _sparse_sum(parts, result.sparse.dimensions())
        return Understanding(
            u.with_attributes(tuple(found)), result.dense, sparse, result.recognitions
        )


def encoder_of(clip, splade, *, parallel: bool = True, towers=None) -> Encoder:
    """The :data:`Encoder` of a CLIP and a SPLADE encoder: one CLIP forward (text and
    sentence vectors) and one SPLADE forward for a list of texts, on torch or, with
    ``towers`` (``services.encoders.query_onnx.QueryTowers``), on ONNX Runtime (the same
    vectors, less overhead per call). ``parallel``: SPLADE runs in a thread of its own beside
    CLIP (both runtimes release the GIL): with one intra-op thread per tower a query costs
    the slower tower's time, not the sum (``benchmarks/bench_understanding.py``)."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="splade") if parallel else None
    dense_of = towers.encode_texts_and_sentences if towers else clip.encode_texts_and_sentences
    sparse_of = towers.encode_sparse if towers else splade.encode

    def encode(texts: list[str]) -> list[Encoded]:
        future = pool.submit(sparse_of, texts) if pool is not None else None
        dense, sentences = dense_of(texts)
        sparse = future.result() if future is not None else sparse_of(texts)
        return [Encoded(d, s, e) for d, s, e in zip(dense, sparse, sentences)]

    return encode


def build_understanding(
    lexicon: Lexicon, encode: Encoder, settings: UnderstandingSettings | None = None
) -> QueryUnderstanding:
    """A :class:`QueryUnderstanding` for ``lexicon``: encodes the label prototypes (sentence
    vectors) and the labels' catalogue words (both sides) with ``encode``."""
    settings = settings or UnderstandingSettings()
    prototypes = build_prototypes(
        lexicon, lambda phrases: np.stack([e.sentence for e in encode(phrases)])
    )
    labels = [lab.canonical for lab in prototypes.labels]
    label_vectors = encode(labels) if labels else []
    return QueryUnderstanding(lexicon, prototypes, label_vectors, settings)
