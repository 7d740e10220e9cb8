"""The understanding a serving process uses, kept current with the database.

A background thread looks every ``check_every_s`` seconds (``FASHION_RULES_CHECK_S``, 2 s
by default) at two things: the fingerprint of the merchandiser rules
(``services.store.synonyms.rules_state``) and the live index version. When either changed,
it rebuilds the lexicon (rules, the live version's catalogue values and names, WordNet and
the colour table) and the label prototypes, and swaps the new understanding in whole:
searches never see half a rebuild, and a rule change reaches them within seconds, with no
re-index. A rebuild that fails (the database down, WordNet missing) keeps the previous
understanding serving and is retried at the next check; until a first one succeeds,
searches run literally and say so (``understood.status = "unavailable"``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.store.index_versions import live_version, product_metadata, product_names
from services.store.synonyms import rules_state
from services.understanding.lexicon import Lexicon, build_lexicon
from services.understanding.query import (
    Encoded,
    Encoder,
    QueryUnderstanding,
    UnderstandingSettings,
    build_understanding,
)
from services.understanding.rules import Rule, list_rules

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LexiconInputs:
    """What a lexicon is built from, as the database holds it now."""

    version_id: int | None  # the live index version (None: none is live yet)
    rules: list[Rule]
    products: list[dict]  # the live version's products' metadata (dataset field names)
    names: list[str]  # their display names


def read_lexicon_inputs(conn) -> LexiconInputs:
    """The rules, and the live version's products and names (none while no version is live)."""
    version = live_version(conn)
    rules = list_rules(conn)
    if version is None:
        return LexiconInputs(None, rules, [], [])
    products = product_metadata(conn, version.id)
    names = [n for _, n in product_names(conn, version.id)]
    return LexiconInputs(version.id, rules, products, names)


def lexicon_of(
    inputs: LexiconInputs, sources: str = "all", wordnet_dir: str | None = None
) -> Lexicon:
    return build_lexicon(
        inputs.products,
        inputs.names,
        inputs.rules,
        sources=sources,
        wordnet_dir=wordnet_dir,
        version_id=inputs.version_id,
    )


class LiveUnderstanding:
    """Holds the current :class:`QueryUnderstanding` and rebuilds it when its inputs change."""

    def __init__(
        self,
        read: Callable[[Callable[[Any], Any]], Any],
        encode: Encoder,
        *,
        check_every_s: float = 2.0,
        settings: UnderstandingSettings | None = None,
        wordnet_dir: str | None = None,
    ):
        self._read = read
        self._encode = encode
        self.check_every_s = check_every_s
        self.settings = settings or UnderstandingSettings()
        self.wordnet_dir = wordnet_dir
        self.current: QueryUnderstanding | None = None
        self.error: str | None = None
        self.rebuilds = 0
        self._inputs: tuple[str, int | None] | None = None
        self._phrase_cache: dict[str, Encoded] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.current is not None:
            lex = self.current.lexicon
            return f"ready: {len(lex.phrases)} phrases, rules {lex.rules_fingerprint}"
        if self.error:
            return f"unavailable: {self.error}"
        return "building"

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="understanding", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.check_every_s)

    def _encode_phrases(self, texts: list[str]) -> list[Encoded]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._phrase_cache]
        if missing:
            for t, e in zip(missing, self._encode(missing)):
                self._phrase_cache[t] = e
        return [self._phrase_cache[t] for t in texts]

    def check(self) -> bool:
        """Rebuild when the rules or the live version changed; True when it rebuilt. Never
        raises: a failure is kept in :attr:`error` and the previous understanding serves."""
        with self._lock:
            try:

                def inputs(conn):
                    version = live_version(conn)
                    return rules_state(conn), None if version is None else version.id

                now = self._read(inputs)
                if now == self._inputs and self.current is not None:
                    return False
                started = time.perf_counter()
                self.current = self._build()
                self._inputs = now
                self.error = None
                self.rebuilds += 1
                log.info(
                    "query understanding rebuilt in %.1fs: %s",
                    time.perf_counter() - started,
                    self.state,
                )
                return True
            except Exception as exc:  # noqa: BLE001 - the previous understanding keeps serving
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("query understanding not rebuilt: %s", self.error)
                return False

    def _build(self) -> QueryUnderstanding:
        lexicon = lexicon_of(self._read(read_lexicon_inputs), wordnet_dir=self.wordnet_dir)
        return build_understanding(lexicon, self._encode_phrases, self.settings)
