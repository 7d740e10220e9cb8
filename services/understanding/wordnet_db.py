"""A dependency-free reader of the WordNet 3.0 database files (format: ``man 5 wndb``).

``index.<pos>`` lines are ``lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt
tagsense_cnt synset_offset...`` (offsets in sense order); ``data.<pos>`` lines are ``offset
lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] | gloss`` (``w_cnt``
hexadecimal, each pointer ``symbol offset pos source/target``), and a synset's offset is the
byte offset of its line. ``@``/``@i`` point to (instance) hypernyms, ``~``/``~i`` to
(instance) hyponyms. The directory is ``/usr/share/wordnet`` (Debian ``wordnet-base``)
unless an argument or ``FASHION_WORDNET_DIR`` names another; missing files raise
:class:`WordNetMissing`, whose message names the Debian package.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from services.config import get_settings

DEFAULT_DIR = "/usr/share/wordnet"
ENV_DIR = "FASHION_WORDNET_DIR"
DEBIAN_PACKAGE = "wordnet-base"
POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
HYPERNYM = ("@", "@i")
HYPONYM = ("~", "~i")
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


class WordNetMissing(FileNotFoundError):
    """The WordNet database files are not where they were looked for."""


@dataclass(frozen=True)
class Pointer:
    symbol: str  # "@" hypernym, "~" hyponym, "@i"/"~i" instance, ...
    offset: int
    pos: str
    source_target: str  # "0000" = between synsets, else word numbers (hex)


@dataclass(frozen=True)
class Synset:
    offset: int
    pos: str  # ss_type: n, v, a, s, r
    lex_filenum: int
    words: tuple[str, ...]  # normalised: lower case, spaces, no adjective markers
    pointers: tuple[Pointer, ...]
    gloss: str

    @property
    def key(self) -> str:
        """The offset as WordNet prints it, with the part of speech: ``04370048-n``."""
        return f"{self.offset:08d}-{self.pos}"

    def related(self, symbols: Iterable[str]) -> list[tuple[int, str]]:
        """(offset, pos) of the synsets this one points to with any of ``symbols``."""
        wanted = set(symbols)
        return [(p.offset, p.pos) for p in self.pointers if p.symbol in wanted]


def normalise_word(word: str) -> str:
    """``Turkish_towel(a)`` -> ``turkish towel``: spaces, lower case, no syntactic marker."""
    return _ADJ_MARKER.sub("", word).replace("_", " ").lower().strip()


def _lemma_key(lemma: str) -> str:
    return lemma.strip().lower().replace(" ", "_")


def parse_data_line(line: str) -> Synset:
    """One ``data.<pos>`` line -> :class:`Synset` (raises ValueError on a malformed line)."""
    body, _, gloss = line.partition(" | ")
    f = body.split()
    offset, lex_filenum, ss_type = int(f[0]), int(f[1]), f[2]
    w_cnt = int(f[3], 16)
    words = tuple(normalise_word(f[4 + 2 * i]) for i in range(w_cnt))
    i = 4 + 2 * w_cnt
    p_cnt = int(f[i])
    pointers = tuple(
        Pointer(f[i + 1 + 4 * j], int(f[i + 2 + 4 * j]), f[i + 3 + 4 * j], f[i + 4 + 4 * j])
        for j in range(p_cnt)
    )
    return Synset(offset, ss_type, lex_filenum, words, pointers, gloss.strip())


class WordNet:
    """Read-only access to one WordNet database directory (index + data files)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path or get_settings().wordnet_dir)
        needed = [
            self.path / f"{kind}.{name}" for name in ("noun", "adj") for kind in ("index", "data")
        ]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise WordNetMissing(
                f"WordNet 3.0 database files not found: {', '.join(missing)}. Install the "
                f"Debian package '{DEBIAN_PACKAGE}' (apt-get install {DEBIAN_PACKAGE}; "
                f"scripts/setup.sh does) or point ${ENV_DIR} at a directory holding "
                f"index.noun and data.noun."
            )
        self._index: dict[str, dict[str, tuple[int, ...]]] = {}
        self._synsets: dict[tuple[int, str], Synset] = {}

    # --- files -----------------------------------------------------------------------------
    def _file(self, kind: str, pos: str) -> Path:
        path = self.path / f"{kind}.{POS_FILES[pos]}"
        if not path.is_file():
            raise WordNetMissing(f"{path} not found (Debian package '{DEBIAN_PACKAGE}')")
        return path

    def _lemma_index(self, pos: str) -> dict[str, tuple[int, ...]]:
        name = POS_FILES[pos]
        if name not in self._index:
            table: dict[str, tuple[int, ...]] = {}
            with open(self._file("index", pos), encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith(" "):  # the licence header
                        continue
                    f = line.split()
                    p_cnt = int(f[3])
                    sense_cnt = int(f[4 + p_cnt])
                    offsets = f[6 + p_cnt : 6 + p_cnt + sense_cnt]
                    table[f[0]] = tuple(int(o) for o in offsets)
            self._index[name] = table
        return self._index[name]

    # --- look-ups --------------------------------------------------------------------------
    def synset(self, offset: int, pos: str = "n") -> Synset:
        """The synset at byte ``offset`` of ``data.<pos>``; KeyError if none starts there."""
        key = (int(offset), "a" if pos == "s" else pos)
        if key not in self._synsets:
            with open(self._file("data", pos), "rb") as fh:
                fh.seek(key[0])
                line = fh.readline().decode("utf-8")
            try:
                synset = parse_data_line(line)
            except (ValueError, IndexError):
                synset = None
            if synset is None or synset.offset != key[0]:
                raise KeyError(f"no {POS_FILES[pos]} synset at offset {offset:08d}")
            self._synsets[key] = synset
        return self._synsets[key]

    def synsets(self, lemma: str, pos: str = "n") -> list[Synset]:
        """Every sense of ``lemma`` (exact lemma, no morphology), most frequent first."""
        return [self.synset(o, pos) for o in self._lemma_index(pos).get(_lemma_key(lemma), ())]

    def sense(self, lemma: str, number: int, pos: str = "n") -> Synset:
        """Sense ``number`` (1-based, as WordNet numbers them) of ``lemma``."""
        senses = self.synsets(lemma, pos)
        if not 1 <= number <= len(senses):
            raise KeyError(
                f"{lemma!r} has {len(senses)} {POS_FILES[pos]} senses, not a sense {number}"
            )
        return senses[number - 1]

    def _walk(
        self, synset: Synset, symbols: Sequence[str], depth: int
    ) -> Iterator[tuple[Synset, int]]:
        """Breadth-first (synset, distance) along ``symbols``, each synset once, <= depth."""
        seen = {(synset.offset, synset.pos)}
        frontier = [synset]
        for d in range(1, depth + 1):
            nxt = []
            for s in frontier:
                for offset, pos in s.related(symbols):
                    target = self.synset(offset, pos)
                    if (target.offset, target.pos) in seen:
                        continue
                    seen.add((target.offset, target.pos))
                    nxt.append(target)
                    yield target, d
            frontier = nxt

    def hypernyms(self, synset: Synset, depth: int = 1) -> list[tuple[Synset, int]]:
        """(hypernym, distance) up to ``depth`` steps up (instance hypernyms included)."""
        return list(self._walk(synset, HYPERNYM, depth))

    def hyponyms(self, synset: Synset, depth: int = 1) -> list[tuple[Synset, int]]:
        """(hyponym, distance) up to ``depth`` steps down (instance hyponyms included)."""
        return list(self._walk(synset, HYPONYM, depth))


@lru_cache(maxsize=4)
def open_cached(path: str) -> WordNet:
    """The :class:`WordNet` of a resolved directory path, opened once per process."""
    return WordNet(path)


def resolved_path(path: str | os.PathLike | None) -> str:
    """``path``, else ``$FASHION_WORDNET_DIR``, else ``/usr/share/wordnet``, resolved."""
    return str(Path(path or get_settings().wordnet_dir).resolve())


def open_wordnet(path: str | os.PathLike | None = None) -> WordNet:
    """A (cached) :class:`WordNet` for ``path``, else ``$FASHION_WORDNET_DIR``, else
    ``/usr/share/wordnet``; raises :class:`WordNetMissing` naming the Debian package."""
    return open_cached(resolved_path(path))
