"""The semantic step: words the lexicon does not know, recognised by their sentence vectors.

After the lexical step (``services.understanding.understand``) some words may be left over:
an occasion ("beach", "tennis"), or a shopper's word no source the lexicon reads has
("oatmeal", "anorak"). Each left-over run is encoded by the dense model's text tower (in the
same batch as the query: ``ClipEncoder.encode_texts_and_sentences``, the pretrained sentence
encoder's own space) and compared with *prototypes* of the catalogue's labels:

- article types and colours: the catalogue's names and every phrase the lexicon maps to
  exactly one value (rules, WordNet words, colour names: a nearest-neighbour classifier
  over what the lexicon already knows);
- usage and season: a one-line description of each value (:data:`DESCRIPTIONS`) plus the
  rules that map to it ("gym -> sports").

A label is recognised when its best prototype is at least ``threshold`` similar and ahead of
the field's next label by ``margin`` (per field, :class:`SemanticSettings`, chosen on the
tuning half of the evaluation: ``evaluation/understanding_sweep.py``). It is never a filter:
``services.understanding.compose`` adds the label's own vectors to the query's, weighted
by the confidence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from services.understanding.lexicon import Lexicon
from services.understanding.understand import Attribute

# Shoppers' occasions, a few words per catalogue value: the only hand-written part. Each
# phrase is a prototype of its value (the first one describes it). The evaluation's occasion
# family leaves out every word written here (``evaluation.queries.occasion_words``).
DESCRIPTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("usage", "Sports"): ("sportswear for sport and exercise", "gym", "running", "workout",
                          "yoga", "training", "football", "athletics"),
    ("usage", "Party"): ("partywear for a party or a celebration", "night out", "wedding",
                         "date night", "dinner", "prom", "nightclub"),
    ("usage", "Formal"): ("formal wear for the office and business", "work", "interview",
                          "meeting", "conference"),
    ("usage", "Travel"): ("travel wear for a trip or a journey", "holiday", "vacation",
                          "hiking", "camping", "outdoors"),
    ("usage", "Casual"): ("casual everyday wear", "weekend", "relaxing", "everyday"),
    ("usage", "Ethnic"): ("traditional ethnic wear", "festival", "diwali", "eid"),
    ("usage", "Smart Casual"): ("smart casual wear", "brunch"),
    ("usage", "Home"): ("loungewear for home", "lounging", "sleep"),
    ("season", "Summer"): ("summer clothes for hot sunny weather", "beach", "heatwave",
                           "sunshine"),
    ("season", "Winter"): ("winter clothes for cold weather", "snow", "christmas", "freezing"),
    ("season", "Fall"): ("fall clothes for cool weather", "autumn"),
    ("season", "Spring"): ("spring clothes for mild weather", "easter"),
}  # fmt: skip
SEMANTIC_FIELDS = ("articleType", "baseColour", "usage", "season")


@dataclass(frozen=True)
class FieldSettings:
    threshold: float  # the label's score must reach this
    margin: float  # ... and lead the field's next label by this much


@dataclass(frozen=True)
class SemanticSettings:
    """Per-field acceptance of a semantic recognition (tuned on the tuning half). A label's
    score is the mean cosine of its ``top_k`` nearest prototypes (1: the nearest alone)."""

    fields: tuple[tuple[str, FieldSettings], ...] = (
        ("articleType", FieldSettings(0.60, 0.04)),
        ("baseColour", FieldSettings(0.60, 0.04)),
        ("usage", FieldSettings(0.40, 0.0)),
        ("season", FieldSettings(0.40, 0.0)),
    )
    top_k: int = 1

    def of(self, fld: str) -> FieldSettings | None:
        return dict(self.fields).get(fld)


@dataclass(frozen=True)
class Label:
    field: str
    value: str
    canonical: str  # the catalogue's words for it: what its expansion vector encodes


@dataclass
class Prototypes:
    """The labels' prototype phrases and their sentence vectors (one row per phrase)."""

    labels: list[Label]
    phrases: list[str]
    label_of: np.ndarray  # (n_phrases,) index into labels
    vectors: np.ndarray  # (n_phrases, d) unit rows

    def __len__(self) -> int:
        return len(self.phrases)

    def __post_init__(self) -> None:
        self._rows = [np.flatnonzero(self.label_of == i) for i in range(len(self.labels))]
        self._fields = {
            f: np.array([i for i, lab in enumerate(self.labels) if lab.field == f], np.int64)
            for f in SEMANTIC_FIELDS
        }

    def rows_of(self, label: int) -> np.ndarray:
        """The prototype rows of label ``label``."""
        return self._rows[label]

    def field_labels(self, fld: str) -> np.ndarray:
        """The label indices of field ``fld``."""
        return self._fields.get(fld, np.zeros(0, np.int64))


def prototype_phrases(lexicon: Lexicon) -> tuple[list[Label], list[tuple[int, str]]]:
    """The labels (catalogue values of SEMANTIC_FIELDS present in the lexicon's catalogue)
    and their prototype phrases: the value's own words, its description, and every lexicon
    phrase with a single-value meaning of it."""
    labels: list[Label] = []
    index: dict[tuple[str, str], int] = {}
    for fld in SEMANTIC_FIELDS:
        for value in lexicon.values.get(fld, ()):
            index[(fld, value)] = len(labels)
            canonical = next(
                (m.canonical for m in lexicon.meanings(_key(value)) if m.field == fld),
                value.lower(),
            )
            labels.append(Label(fld, value, canonical))
    pairs: set[tuple[int, str]] = set()
    for (fld, value), i in index.items():
        pairs.add((i, labels[i].canonical))
        for phrase in DESCRIPTIONS.get((fld, value), ()):
            pairs.add((i, phrase))
    for phrase, meanings in lexicon.phrases.items():
        for m in meanings:
            if m.field in SEMANTIC_FIELDS and len(m.values) == 1 and m.values[0][1] >= 0.99:
                i = index.get((m.field, m.values[0][0]))
                if i is not None:
                    pairs.add((i, phrase))
    return labels, sorted(pairs, key=lambda p: (p[0], p[1]))


def _key(value: str) -> str:
    from services.understanding.text import key  # noqa: PLC0415 - keeps this module's imports to the contract

    return key(value)


def build_prototypes(
    lexicon: Lexicon, encode_sentences: Callable[[list[str]], np.ndarray]
) -> Prototypes:
    labels, pairs = prototype_phrases(lexicon)
    phrases = [p for _, p in pairs]
    vectors = encode_sentences(phrases) if phrases else np.zeros((0, 1), np.float32)
    return Prototypes(labels, phrases, np.array([i for i, _ in pairs], dtype=np.int64), vectors)


@dataclass(frozen=True)
class Recognition:
    """A label recognised in a left-over phrase, with the cosine that won it."""

    attribute: Attribute
    label: Label
    similarity: float
    nearest: str  # the prototype phrase it was nearest to


def label_scores(vectors: np.ndarray, prototypes: Prototypes, top_k: int = 1) -> np.ndarray:
    """(n_rows, n_labels): each label's mean cosine over its ``top_k`` nearest prototypes."""
    sims = np.asarray(vectors, np.float32) @ prototypes.vectors.T
    out = np.full((sims.shape[0], len(prototypes.labels)), -1.0, np.float32)
    for li in range(len(prototypes.labels)):
        cols = prototypes.rows_of(li)
        if len(cols) == 0:
            continue
        block = sims[:, cols]
        k = min(top_k, block.shape[1])
        top = -np.partition(-block, k - 1, axis=1)[:, :k] if k < block.shape[1] else block
        out[:, li] = top.mean(axis=1) if k > 1 else block.max(axis=1)
    return out


def recognise(
    residual: Sequence[str],
    vectors: np.ndarray,
    prototypes: Prototypes,
    settings: SemanticSettings = SemanticSettings(),
    ignore: frozenset[str] = frozenset(),
    colour_context: Sequence[bool] | None = None,
) -> list[Recognition]:
    """Labels recognised in each left-over phrase (rows of ``vectors``, unit sentence
    vectors): per field, the best label when it passes the field's threshold and margin.
    A colour only for a phrase in a colour's place (``colour_context``: before a product
    word or at the end, as ``understand`` decides for the colour names it reads)."""
    out: list[Recognition] = []
    if len(prototypes) == 0 or len(residual) == 0:
        return out
    scores = label_scores(vectors, prototypes, settings.top_k)
    sims = np.asarray(vectors, np.float32) @ prototypes.vectors.T
    for r, phrase in enumerate(residual):
        for fld, fs in settings.fields:
            labels = prototypes.field_labels(fld)
            if len(labels) == 0:
                continue
            if fld == "baseColour" and colour_context is not None and not colour_context[r]:
                continue
            row = scores[r, labels]
            order = np.argsort(-row)
            s1 = float(row[order[0]])
            s2 = float(row[order[1]]) if len(order) > 1 else 0.0
            if s1 < fs.threshold or s1 - s2 < fs.margin:
                continue
            li = int(labels[order[0]])
            label = prototypes.labels[li]
            if f"{label.field}:{label.value}" in ignore:
                continue
            cols = prototypes.rows_of(li)
            nearest = prototypes.phrases[int(cols[int(np.argmax(sims[r, cols]))])]
            confidence = round(min(1.0, 0.5 + (s1 - fs.threshold) + (s1 - s2)), 3)
            attribute = Attribute(label.field, label.value, phrase, confidence, "semantic", True)
            out.append(Recognition(attribute, label, round(s1, 4), nearest))
    return out
