"""Query understanding in an evaluation: the lexicon a run reads, and its queries' vectors.

A run names its understanding configuration (recorded in the run's details):

- ``split`` (the default): the lexicon reads only the *reader* half of each word source
  (rules, WordNet, colour names; ``services.understanding.lexicon.side_of``), so the
  held-out families measure words it never read;
- ``shipped``: the lexicon reads every source whole, as the API does (the held-out
  families are then no longer held out: their figures say what shoppers get, not how
  understanding generalises);
- ``off``: no understanding (every mode then equals its literal twin).

Every run also searches each text query *literally* (the query as sent), so the report
shows what understanding changed, family by family.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from services.store.index_versions import IndexVersion
from services.understanding.live import lexicon_of, read_lexicon_inputs
from services.understanding.query import (
    Encoded,
    QueryUnderstanding,
    Understanding,
    UnderstandingSettings,
    build_understanding,
    encoder_of,
)
from services.understanding.rules import fingerprint

CONFIGS = ("split", "shipped", "off")
SOURCES_OF = {"split": "reader-half", "shipped": "all"}


class CachedEncoder:
    """Both encoders over lists of texts, each distinct text encoded once (in batches), on
    the runtime the API serves queries with (``FASHION_QUERY_RUNTIME``: ONNX Runtime by
    default, torch where it cannot be used), so a run measures what shoppers get."""

    def __init__(self, clip, splade, runtime: str | None = None):
        from services.config import get_settings  # noqa: PLC0415 - settings are read when a run starts
        from services.encoders.query_onnx import query_towers  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

        settings = get_settings()
        runtime = runtime or settings.query_runtime
        towers = (
            query_towers(clip, splade, settings.model_cache / "onnx") if runtime == "onnx" else None
        )
        self.clip, self.splade = clip, splade
        self.runtime = "onnx" if towers is not None else "torch"
        self._encode = encoder_of(clip, splade, parallel=False, towers=towers)
        self.cache: dict[str, Encoded] = {}

    def __call__(self, texts: Sequence[str]) -> list[Encoded]:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self._encode(missing)))
        return [self.cache[t] for t in texts]


@dataclass
class RunUnderstanding:
    """What a run understood with: the configuration, its rules, and the understanding."""

    config: str
    understanding: QueryUnderstanding | None
    rules_fingerprint: str
    n_rules: int
    rule_set: list[str]  # every rule as written, for the run's record

    def details(self) -> dict:
        out = {
            "config": self.config,
            "rules_fingerprint": self.rules_fingerprint,
            "rules": self.n_rules,
            "rule_set": self.rule_set,
        }
        if self.understanding is not None:
            lex = self.understanding.lexicon
            out |= {
                "sources": lex.sources,
                "phrases": lex.counts,
                "settings": self.understanding.settings.digest,
            }
        return out


def run_understanding(
    conn,
    version: IndexVersion,
    config: str,
    encode: Callable[[list[str]], list[Encoded]],
    settings: UnderstandingSettings | None = None,
) -> RunUnderstanding:
    """The understanding of a run on ``version`` in ``config`` (rules from the database)."""
    if config not in CONFIGS:
        raise ValueError(f"understanding must be one of {CONFIGS}, got {config!r}")
    inputs = read_lexicon_inputs(conn)
    conn.commit()
    if inputs.version_id != version.id:
        raise RuntimeError(
            f"the live version changed under the run (v{version.id} -> v{inputs.version_id})"
        )
    rules = inputs.rules
    rule_set = [str(r) for r in rules]
    if config == "off":
        return RunUnderstanding(config, None, fingerprint(rules), len(rules), rule_set)
    qu = build_understanding(lexicon_of(inputs, SOURCES_OF[config]), encode, settings)
    return RunUnderstanding(config, qu, fingerprint(rules), len(rules), rule_set)


def understand_all(
    qu: QueryUnderstanding, texts: Iterable[str], encode: CachedEncoder
) -> dict[str, Understanding]:
    """Every distinct text understood and composed, the encoders run in a few batches."""
    texts = list(dict.fromkeys(texts))
    lexical = {t: qu.understand(t) for t in texts}
    needed = [x for u in lexical.values() for x in qu.texts(u)]
    encode(needed)
    return {t: qu.finish(u, encode.cache) for t, u in lexical.items()}
