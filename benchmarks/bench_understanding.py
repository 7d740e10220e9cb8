"""Query understanding on the live index: spelling engines compared, the understanding step's
latency, and unseen text queries end to end through the HTTP API (literal vs understood).

    .venv/bin/python benchmarks/bench_understanding.py                  # all three (minutes)
    .venv/bin/python benchmarks/bench_understanding.py --skip-api --skip-pg
    .venv/bin/python benchmarks/bench_understanding.py --queries 100 --words 300 --seed 3

What it measures (every number from this run; nothing is asserted):

1. **Spelling engines, quality and latency** (``services/understanding/spelling.py`` chose
   rapidfuzz by this measurement). Test words: catalogue words (compact lower-case words of
   4+ letters of the live index's product names and field values), drawn weighted by how
   often the catalogue uses them (seeded), each misspelt by ``evaluation.queries.misspell``
   once (and, a second set, twice), keeping only forms that are neither English nor a
   catalogue word: the evaluation's ``misspelling`` family's definition. Control set: real
   words that must not change (brand words, English words, English words one or two edits
   from a vocabulary word, catalogue words). Engines, on the same vocabulary and counts
   (the lexicon's ``corrector``; ``sources="all"``, as the API serves), the same edit limit
   (``spelling.max_edits``) and the same guard (a word ``lexicon.is_known`` is never
   corrected): (a) the project's ``SpellingCorrector`` (rapidfuzz OSA), called as
   ``understand._corrected_tokens`` calls it; (b) ``symspellpy`` (edit distance 2, prefix
   7), its own top suggestion, and its closest suggestions ranked by the project's
   tie-break; (c) PostgreSQL ``fuzzystrmatch.levenshtein_less_equal`` over a temporary
   vocabulary table, and ``pg_trgm`` (``%`` on a GIN trigram index, default threshold 0.3,
   ordered by ``similarity()``, kept within the edit limit), one round trip a word. The
   PostgreSQL extensions are created in a scratch database of this script's own
   (``fashion_bench_understanding``, created by the application role, dropped at the end),
   never in the application's database.
2. **The understanding step's latency**, one query at a time from one thread: the lexical
   step (``understand``) over the evaluation's text queries (test split, every text
   family), for ``sources="all"`` and ``"reader-half"``; then the full understanding
   (``build_understanding(lexicon, encoder_of(clip, splade))``): the lexical step, the
   encoders on the texts ``QueryUnderstanding.texts(u)`` returns (one call, one batch) vs
   on the query alone (what a literal search encodes), and the semantic step +
   composition (``QueryUnderstanding.finish``).
3. **End to end, one client**: the real app in this process (uvicorn on a free loopback
   port, ``create_app(settings)`` against the live index), ready when ``/readyz`` says so
   and its ``understanding`` check starts with "ready"; then ``--queries`` pairs of distinct
   evaluation texts, each sent once: one of each pair with ``"literal": true``, the other
   understood, alternating (which goes first alternates too). The two halves are disjoint,
   so every measured text is unseen by the server's caches (the query-embedding LRU is
   keyed by text; an understood query's rewrite or left-over words may still have been
   encoded for an earlier query: that is the server's real behaviour, and the responses'
   ``cached_embedding`` counts are printed). Client latency and the ``Server-Timing``
   phases (encode, wait, db, build, thread), p50 / p95.

The machine this was written on has 2 CPU cores, shared with PostgreSQL (and, in part 3,
with the client in the same process); torch runs with `--torch-threads` intra-op threads
(default 1, as `fashion-search serve`: the two query encoders then run side by side).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psycopg
from psycopg import sql
from rapidfuzz import process
from rapidfuzz.distance import OSA
from symspellpy import SymSpell, Verbosity

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tables import pct, table  # the benchmarks' printing

from evaluation.queries import generate_queries, misspell
from services.config import OWNER_ROLE, get_settings
from services.store import embedded
from services.store.db import connect
from services.store.index_versions import (
    live_version,
)
from services.understanding.english import load_english
from services.understanding.lexicon import Lexicon, build_lexicon
from services.understanding.live import read_lexicon_inputs
from services.understanding.spelling import MIN_CHARS, SpellingCorrector, max_edits
from services.understanding.text import compact, key, tokens
from services.understanding.understand import understand

SCRATCH_DB = "fashion_bench_understanding"
TRGM_THRESHOLD = 0.3  # pg_trgm.similarity_threshold's default
PHASES = ("encode", "wait", "db", "build", "thread")


def load() -> None:
    """The machine's load average now (the cores are shared: read timings with it)."""
    print("\nload average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


def f1(x: float) -> str:
    return f"{x:.1f}"


def f2(x: float) -> str:
    return f"{x:.2f}"


def share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


# --- the live catalogue ---------------------------------------------------------------------
@dataclass
class Catalogue:
    version: object  # IndexVersion
    products: list[dict]
    names: list[str]
    rules: list


def read_catalogue() -> Catalogue:
    with connect(get_settings().database_url) as conn:
        version = live_version(conn)
        if version is None:
            raise SystemExit("no live index version: build one first (fashion-search index)")
        inputs = read_lexicon_inputs(conn)
    return Catalogue(version, inputs.products, inputs.names, inputs.rules)


def lexicon_of(cat: Catalogue, sources: str) -> tuple[Lexicon, float]:
    t = time.perf_counter()
    lexicon = build_lexicon(
        cat.products, cat.names, cat.rules, sources=sources, version_id=cat.version.id
    )
    return lexicon, time.perf_counter() - t


# --- 1. spelling engines ----------------------------------------------------------------------
def catalogue_test_words(lexicon: Lexicon) -> tuple[list[str], list[int]]:
    """Catalogue words a misspelling is made of (4+ letters), with their counts."""
    words = sorted(w for w in lexicon.catalogue_words if len(w) >= 4 and w.isalpha())
    return words, [lexicon.catalogue_words[w] for w in words]


def misspelt_set(lexicon: Lexicon, english, n: int, edits: int, seed: int) -> list[tuple[str, str]]:
    """Up to ``n`` distinct (misspelt, original) pairs: a catalogue word drawn by its count,
    ``edits`` seeded edits, redrawn (20 tries, as the evaluation does) while the form is
    English or a catalogue word."""
    rng = random.Random(f"bench-understanding:{seed}:{edits}")
    words, weights = catalogue_test_words(lexicon)
    found: dict[str, str] = {}
    for _ in range(50 * n):
        if len(found) >= n:
            break
        word = rng.choices(words, weights)[0]
        for _ in range(20):
            wrong = word
            for _ in range(edits):
                wrong = misspell(wrong, rng)
            if (
                wrong != word
                and wrong not in english
                and compact(wrong) not in lexicon.catalogue_words
            ):
                found.setdefault(wrong, word)
                break
    return list(found.items())


def control_set(
    lexicon: Lexicon, english, products: list[dict], vocabulary: list[str], n: int, seed: int
) -> dict[str, list[str]]:
    """Real words that must come out unchanged, by kind."""
    rng = random.Random(f"bench-understanding:{seed}:control")
    usable = lambda w: len(w) >= MIN_CHARS and w.isalpha()
    brand = sorted(
        {
            compact(t.text)
            for p in products
            if isinstance(p.get("brand"), str)
            for t in tokens(p["brand"])
        }
    )
    brand = [w for w in brand if usable(w)]
    # WordNet's lemmas (the private word list of EnglishWords: no public accessor exists)
    lemmas = sorted(w for w in english._lemmas if usable(w) and w not in lexicon.catalogue_words)
    distances = process.cdist(
        lemmas, vocabulary, scorer=OSA.distance, score_cutoff=2, dtype=np.uint8, workers=-1
    )
    nearest = distances.min(axis=1)
    near = [w for w, d in zip(lemmas, nearest) if 0 < d <= max_edits(w)]
    catalogue, _ = catalogue_test_words(lexicon)
    return {
        "brand words": brand,
        "English (random)": sorted(rng.sample(lemmas, min(n, len(lemmas)))),
        "English, <= max_edits from a vocabulary word": sorted(rng.sample(near, min(n, len(near)))),
        "catalogue words": catalogue,
    }


class Engine:
    """A spelling engine: ``lookup(word)`` -> the vocabulary word it corrects ``word`` (compact,
    lower case, 4+ letters, unknown) to, or None. No known-word guard of its own."""

    name = ""
    build_ms = float("nan")
    unavailable: str | None = None

    def lookup(self, word: str) -> str | None:
        raise NotImplementedError


def rank_key(counts: dict[str, int], word: str) -> Callable[[tuple[str, int]], tuple]:
    """The project's tie-break (``SpellingCorrector.suggest``): fewest edits, the same first
    letter, the catalogue's most used, then alphabetical."""
    return lambda cd: (cd[1], cd[0][0] != word[0], -counts.get(cd[0], 0), cd[0])


class ProjectEngine(Engine):
    """The lexicon's ``SpellingCorrector`` (rapidfuzz OSA over the vocabulary); build = a
    corrector of the same counts made again (the lexicon's own is made inside its build)."""

    def __init__(self, lexicon: Lexicon):
        self.name = "project SpellingCorrector (rapidfuzz OSA)"
        t = time.perf_counter()
        SpellingCorrector(lexicon.corrector.counts)
        self.build_ms = 1000 * (time.perf_counter() - t)
        self.corrector = lexicon.corrector

    def lookup(self, word: str) -> str | None:
        s = self.corrector.suggest(word)
        return None if s is None else s.word


class SymSpellEngine(Engine):
    def __init__(self, counts: dict[str, int], tie_break: bool):
        self.name = (
            "symspellpy CLOSEST + project tie-break" if tie_break else "symspellpy TOP (its own)"
        )
        self.counts, self.tie_break = counts, tie_break
        t = time.perf_counter()
        self.sym = SymSpell(max_dictionary_edit_distance=2, prefix_length=7)
        for w, c in counts.items():
            self.sym.create_dictionary_entry(w, c)
        self.build_ms = 1000 * (time.perf_counter() - t)

    def lookup(self, word: str) -> str | None:
        verbosity = Verbosity.CLOSEST if self.tie_break else Verbosity.TOP
        found = self.sym.lookup(
            word, verbosity, max_edit_distance=max_edits(word), transfer_casing=False
        )
        if not found:
            return None
        if not self.tie_break:
            return found[0].term
        return min(((s.term, s.distance) for s in found), key=rank_key(self.counts, word))[0]


class Scratch:
    """A scratch database of this script's own with pg_trgm and fuzzystrmatch, and the
    vocabulary in a temporary table; dropped by :meth:`close`."""

    def __init__(self, counts: dict[str, int]):
        self.settings = get_settings()
        self.error: str | None = None
        self.extensions: dict[str, str] = {}
        self.conn: psycopg.Connection | None = None
        self.build_ms = {"levenshtein": float("nan"), "trgm": float("nan")}
        self._created = False
        try:
            self._create_database()
        except psycopg.Error as exc:
            self.error = f"cannot create a scratch database: {_reason(exc)}"
            return
        url = (  # its owner: it makes the extensions and a temporary table there
            self.settings.role_url(OWNER_ROLE, SCRATCH_DB)
            if self.settings.embedded
            else self.settings.database_url_for(SCRATCH_DB)
        )
        self.conn = psycopg.connect(url, autocommit=True)
        for ext in ("fuzzystrmatch", "pg_trgm"):
            self.extensions[ext] = self._create_extension(ext)
        if self.extensions["fuzzystrmatch"] != "ok":
            return
        t = time.perf_counter()
        self.conn.execute("CREATE TEMPORARY TABLE vocab (word text PRIMARY KEY, cnt int NOT NULL)")
        with self.conn.cursor().copy("COPY vocab (word, cnt) FROM STDIN") as copy:
            for w, c in counts.items():
                copy.write_row((w, c))
        self.conn.execute("ANALYZE vocab")
        self.build_ms["levenshtein"] = 1000 * (time.perf_counter() - t)
        if self.extensions["pg_trgm"] == "ok":
            t = time.perf_counter()
            self.conn.execute("CREATE INDEX vocab_trgm ON vocab USING gin (word gin_trgm_ops)")
            self.conn.execute("ANALYZE vocab")
            self.build_ms["trgm"] = self.build_ms["levenshtein"] + 1000 * (time.perf_counter() - t)

    def _create_database(self) -> None:
        embedded.scratch_database(self.settings, SCRATCH_DB)  # by the scratch role
        self._created = True

    def _create_extension(self, ext: str) -> str:
        """ "ok", or why not: as the application role (both are trusted extensions), else as
        the embedded server's superuser."""
        stmt = sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext))
        try:
            self.conn.execute(stmt)
            return "ok"
        except psycopg.Error as exc:
            first = _reason(exc)
        if not self.settings.embedded:
            return f"not available here: {first}"
        try:
            with psycopg.connect(self.settings.admin_url_for(SCRATCH_DB), autocommit=True) as admin:
                admin.execute(stmt)
            return "ok"
        except psycopg.Error as exc:
            return f"not available here: {first}; as the superuser: {_reason(exc)}"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self._created:
            embedded.drop_scratch_database(self.settings, SCRATCH_DB)
            self._created = False


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PgEngine(Engine):
    """One round trip a word to the scratch database's vocabulary table."""

    LEVENSHTEIN = (
        "SELECT word FROM (SELECT word, cnt, levenshtein_less_equal(word, %(q)s, %(k)s) AS d "
        "FROM vocab) s WHERE d <= %(k)s "
        "ORDER BY d, left(word, 1) <> left(%(q)s, 1), cnt DESC, word LIMIT 1"
    )
    TRGM = (
        "SELECT word FROM (SELECT word, cnt, similarity(word, %(q)s) AS sim, "
        "levenshtein_less_equal(word, %(q)s, %(k)s) AS d FROM vocab WHERE word %% %(q)s) s "
        "WHERE d <= %(k)s ORDER BY sim DESC, d, cnt DESC, word LIMIT 1"
    )

    def __init__(self, scratch: Scratch, kind: str):
        self.scratch, self.kind = scratch, kind
        if kind == "levenshtein":
            self.name = "PostgreSQL fuzzystrmatch levenshtein_less_equal (seq scan)"
            self.query = self.LEVENSHTEIN
            needs = ("fuzzystrmatch",)
        else:
            self.name = f"PostgreSQL pg_trgm % (GIN, {TRGM_THRESHOLD}) by similarity()"
            self.query = self.TRGM
            needs = ("fuzzystrmatch", "pg_trgm")
        self.build_ms = scratch.build_ms[kind]
        if scratch.error:
            self.unavailable = f"not available here: {scratch.error}"
        for ext in needs:
            state = scratch.extensions.get(ext, "")
            if self.unavailable is None and state != "ok":
                self.unavailable = state if state else f"not available here: no {ext}"

    def lookup(self, word: str) -> str | None:
        row = self.scratch.conn.execute(self.query, {"q": word, "k": max_edits(word)}).fetchone()
        return None if row is None else row[0]


def corrected(
    engine: Engine, word: str, lexicon: Lexicon, guard: bool = True, vocab: Container[str] = ()
) -> str | None:
    """``word`` through ``engine`` as ``understand._corrected_tokens`` spells a token: a word
    the lexicon knows is left alone (``guard``; without it, only a word of the engine's
    vocabulary ``vocab`` is), as are short words and words with digits; else the engine's
    suggestion. None: unchanged."""
    c = compact(word)
    if lexicon.is_known(word) if guard else c in vocab:
        return None
    if len(c) < MIN_CHARS or not c.isalpha():
        return None
    s = engine.lookup(c)
    return None if s is None or s == c else s


@dataclass
class SpellResult:
    correct: int = 0
    wrong: int = 0
    same_key: int = 0  # wrong, but the original's matching key ("dress" for "dresses")
    none: int = 0
    micros: list[float] = field(default_factory=list)
    wrong_examples: list[str] = field(default_factory=list)


def run_misspelt(engine: Engine, pairs, lexicon: Lexicon) -> SpellResult:
    out = SpellResult()
    for wrong, _ in pairs[:20]:  # warm-up (prepared statements, caches)
        corrected(engine, wrong, lexicon, True)
    for wrong, original in pairs:
        t = time.perf_counter_ns()
        s = corrected(engine, wrong, lexicon, True)
        out.micros.append((time.perf_counter_ns() - t) / 1000)
        if s is None:
            out.none += 1
        elif s == compact(original):
            out.correct += 1
        else:
            out.wrong += 1
            out.same_key += key(s) == key(original)
            if len(out.wrong_examples) < 4:
                out.wrong_examples.append(f"{wrong}->{s} ({original})")
    return out


def false_corrections(
    engine: Engine, words: list[str], lexicon: Lexicon, guard: bool, vocab: Container[str]
) -> int:
    return sum(corrected(engine, w, lexicon, guard, vocab) is not None for w in words)


def bench_spelling(cat: Catalogue, lexicon: Lexicon, args) -> None:
    settings = get_settings()
    english = load_english(settings.wordnet_dir)
    counts = lexicon.corrector.counts  # word -> how often the catalogue uses it
    # The words the corrector searches (SpellingCorrector._words: 3+ letters), with counts.
    vocab = {w: c for w, c in counts.items() if len(w) >= MIN_CHARS - 1}
    sets = {
        "1 edit": misspelt_set(lexicon, english, args.words, 1, args.seed),
        "2 edits": misspelt_set(lexicon, english, args.words, 2, args.seed),
    }
    dist2 = Counter(OSA.distance(w, o) for w, o in sets["2 edits"])
    control = control_set(lexicon, english, cat.products, sorted(vocab), args.words, args.seed)
    print(
        f"\nspelling vocabulary: {len(vocab)} words ({len(lexicon.catalogue_words)} catalogue "
        f"words, the rest rule words and long WordNet/colour-name words); test words: "
        f"{len(sets['1 edit'])} one-edit and {len(sets['2 edits'])} two-edit misspellings "
        f"(OSA distance to the original of the two-edit set: "
        + ", ".join(f"{d}: {share(n, len(sets['2 edits']))}" for d, n in sorted(dist2.items()))
        + "); control: "
        + ", ".join(f"{k} {len(v)}" for k, v in control.items())
    )
    engines: list[Engine] = [ProjectEngine(lexicon)]
    engines += [SymSpellEngine(vocab, tie_break) for tie_break in (False, True)]
    scratch = None
    if not args.skip_pg:
        scratch = Scratch(vocab)
        engines += [PgEngine(scratch, kind) for kind in ("levenshtein", "trgm")]
    quality_rows, control_rows, examples = [], [], []
    try:
        for engine in engines:
            if engine.unavailable:
                quality_rows.append([engine.name, engine.unavailable, *[""] * 8])
                control_rows.append([engine.name, engine.unavailable, *[""] * (len(control) - 1)])
                continue
            for set_name, pairs in sets.items():
                r = run_misspelt(engine, pairs, lexicon)
                n = len(pairs)
                quality_rows.append(
                    [
                        engine.name,
                        set_name,
                        n,
                        share(r.correct, n),
                        share(r.wrong, n),
                        share(r.same_key, n),
                        share(r.none, n),
                        f1(pct(r.micros, 50)),
                        f1(pct(r.micros, 95)),
                        f2(engine.build_ms),
                    ]
                )
                if r.wrong_examples:
                    examples.append(f"{engine.name}, {set_name}: {', '.join(r.wrong_examples)}")
            row = [engine.name]
            for words in control.values():
                g = false_corrections(engine, words, lexicon, True, vocab)
                u = false_corrections(engine, words, lexicon, False, vocab)
                row.append(f"{share(g, len(words))} / {share(u, len(words))}")
            control_rows.append(row)
    finally:
        if scratch is not None:
            scratch.close()
    table(
        "Spelling engines on misspelt catalogue words (the known-word guard applied first; "
        "correct = the original word; same key = a wrong word that matches as the original "
        "does, e.g. its singular; latency = guard + lookup, per word, microseconds; "
        "build = loading the vocabulary, ms):",
        ["engine", "set", "words", "correct", "wrong", "of which same key", "no suggestion",
         "p50 us", "p95 us", "build ms"],
        quality_rows,
        left=2,
    )  # fmt: skip
    table(
        "False corrections of real words (control set), with the lexicon's known-word guard / "
        "without it (only a word of the engine's vocabulary is left alone):",
        ["engine", *control],
        control_rows,
    )
    print("\nwrong corrections, examples (misspelt->corrected (original)):")
    for line in examples:
        print(f"- {line}")


# --- 2. the understanding step ---------------------------------------------------------------
def text_queries(products: list[dict], split: str | None = "test"):
    return [q for q in generate_queries(products, split=split).queries if not q.is_multimodal]


def bench_lexical(lexicons: dict[str, tuple[Lexicon, float]], texts: list[str]) -> None:
    rows = []
    slow = []
    for sources, (lexicon, build_s) in lexicons.items():
        for t in texts[:50]:
            understand(t, lexicon)  # warm-up
        ms = []
        for t in texts:
            t0 = time.perf_counter()
            understand(t, lexicon)
            ms.append(1000 * (time.perf_counter() - t0))
        rows.append(
            [
                sources,
                len(texts),
                f"{pct(ms, 50):.3f}",
                f"{pct(ms, 95):.3f}",
                f"{max(ms):.3f}",
                f1(build_s),
                len(lexicon.phrases),
            ]
        )
        top = sorted(zip(ms, texts), reverse=True)[:3]
        slow.append(f"{sources}: " + ", ".join(f"{t!r} {m:.2f} ms" for m, t in top))
    table(
        "The lexical step, understand(text, lexicon), one query at a time, ms (evaluation text "
        "queries, test split, every text family):",
        ["sources", "queries", "p50 ms", "p95 ms", "max ms", "lexicon build s", "phrases"],
        rows,
    )
    print("\nslowest: " + "; ".join(slow))


def bench_full(
    cat: Catalogue, lexicon: Lexicon, texts: list[str], seed: int, runtime: str = "onnx"
) -> None:
    import torch  # noqa: PLC0415 - deferred: imports torch (seconds), only this part needs it

    from services.encoders.clip import load_clip  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.encoders.query_onnx import query_towers  # noqa: PLC0415 - deferred: imports torch/model stacks
    from services.encoders.splade import load_splade  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them
    from services.understanding.query import (  # noqa: PLC0415 - deferred: imports the encoders' stack
        QueryUnderstanding,
        build_understanding,
        encoder_of,
    )

    clip, splade = load_clip(cat.version.dense_model), load_splade(cat.version.sparse_model)
    towers = (
        query_towers(clip, splade, get_settings().model_cache / "onnx")
        if runtime == "onnx"
        else None
    )
    runtime = "onnx" if towers is not None else "torch"
    encode = encoder_of(clip, splade, towers=towers)
    t = time.perf_counter()
    qu = build_understanding(lexicon, encode)
    build_s = time.perf_counter() - t
    for w in texts[:10]:  # warm-up
        encode([w])
        encode(QueryUnderstanding.texts(qu.understand(w)))
    # A seeded order: the machine's load drifts, and the evaluation lists queries by family.
    texts = random.Random(f"bench-understanding:{seed}:full").sample(texts, len(texts))
    lexical, enc_texts, enc_alone, finish, total, n_texts = [], [], [], [], [], []
    by_n: dict[str, list[tuple[float, float]]] = defaultdict(list)
    changed = 0
    for i, text in enumerate(texts):
        t0 = time.perf_counter()
        u = qu.understand(text)
        t1 = time.perf_counter()
        needed = QueryUnderstanding.texts(u)
        order = (0, 1) if i % 2 else (1, 0)  # which encoder call goes first alternates
        timed = {}
        for which in order:
            s = time.perf_counter()
            out = encode(needed) if which == 0 else encode([text])
            timed[which] = (1000 * (time.perf_counter() - s), out)
        (ms_texts, encoded), (ms_alone, _) = timed[0], timed[1]
        t2 = time.perf_counter()
        qu.finish(u, dict(zip(needed, encoded)))
        t3 = time.perf_counter()
        lexical.append(1000 * (t1 - t0))
        finish.append(1000 * (t3 - t2))
        enc_texts.append(ms_texts)
        enc_alone.append(ms_alone)
        total.append(1000 * (t1 - t0) + ms_texts + 1000 * (t3 - t2))
        n_texts.append(len(needed))
        by_n[str(len(needed)) if len(needed) < 3 else "3+"].append((ms_texts, ms_alone))
        changed += u.changed or len(needed) > 1
    rows = [
        ["lexical step (understand)", lexical],
        ["encoders on texts(u) (one call)", enc_texts],
        ["semantic step + composition (finish)", finish],
        ["understood, all three", total],
        ["literal: encoders on the query alone", enc_alone],
        ["extra encoder time, texts(u) - alone (same query)", np.subtract(enc_texts, enc_alone)],
    ]
    table(
        f"Full understanding, one query at a time ({len(texts)} evaluation text queries, test "
        f"split, sources=all; {clip.name} + {splade.name} on {runtime} (the two towers side by "
        f"side, as the API), torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} CPUs; build_understanding took "
        f"{build_s:.1f}s), ms:",
        ["step", "p50 ms", "p95 ms", "max ms"],
        [[name, f2(pct(xs, 50)), f2(pct(xs, 95)), f2(max(xs))] for name, xs in rows],
    )
    table(
        f"Encoder time by the number of texts understanding asks for (mean "
        f"{np.mean(n_texts):.2f} texts a query; {changed} of {len(texts)} queries encode more "
        "than the query as sent or change it), ms:",
        [
            "texts",
            "queries",
            "texts(u) p50",
            "texts(u) p95",
            "query alone p50",
            "query alone p95",
            "texts(u) / alone, median of the same query's ratio",
        ],
        [
            [
                k,
                len(v),
                f2(pct([a for a, _ in v], 50)),
                f2(pct([a for a, _ in v], 95)),
                f2(pct([b for _, b in v], 50)),
                f2(pct([b for _, b in v], 95)),
                f2(float(np.median([a / b for a, b in v]))),
            ]
            for k, v in sorted(by_n.items())
        ],
    )


# --- 3. end to end through the HTTP API -------------------------------------------------------
def api_pairs(products: list[dict], n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` pairs of distinct evaluation texts of the same family (both splits): the first
    of each pair is searched literally, the second understood; no text is in two pairs."""
    rng = random.Random(f"bench-understanding:{seed}:api")
    by_family: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for q in text_queries(products, split=None):
        if q.text not in seen:
            seen.add(q.text)
            by_family[q.family].append(q.text)
    pairs = []
    for family in sorted(by_family):
        texts = by_family[family]
        rng.shuffle(texts)
        pairs += [(texts[i], texts[i + 1]) for i in range(0, len(texts) - 1, 2)]
    rng.shuffle(pairs)
    return pairs[:n]


def wait_understanding_ready(url: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url + "/readyz", timeout=10)
            body = last.json()
            if last.status_code == 200 and body["checks"].get("understanding", "").startswith(
                "ready"
            ):
                return body
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"API not ready: {last.text if last is not None else 'no answer'}")


@dataclass
class ApiResult:
    client: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: int = 0
    cached: int = 0
    status: Counter = field(default_factory=Counter)


def search(client: httpx.Client, text: str, literal: bool) -> dict:
    """One POST /v1/search: client ms, status, and what the response says."""
    body = {"text": text, "k": 10} | ({"literal": True} if literal else {})
    t = time.perf_counter()
    r = client.post("/v1/search", json=body)
    ms = 1000 * (time.perf_counter() - t)
    data = r.json() if r.status_code == 200 else {}
    understood = data.get("understood") or {}
    phases = {}
    for part in r.headers.get("server-timing", "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            phases[name] = float(dur)
    return {
        "ms": ms,
        "ok": r.status_code == 200,
        "cached": bool(data.get("cached_embedding")),
        "status": understood.get("status", "?"),
        "changed": bool(understood.get("rewrite") or understood.get("corrections")),
        "phases": phases,
    }


def add(res: ApiResult, rec: dict) -> None:
    res.client.append(rec["ms"])
    if not rec["ok"]:
        res.errors += 1
        return
    res.cached += rec["cached"]
    res.status[rec["status"]] += 1
    for name, ms in rec["phases"].items():
        res.phases[name].append(ms)


def bench_api(cat: Catalogue, args) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from api_harness import ServerThread  # noqa: PLC0415 - the tests' in-process server (tests/ is no package)

    from services.api.app import create_app  # noqa: PLC0415 - deferred: the API stack (and torch) only for this part

    pairs = api_pairs(cat.products, args.queries + 5, args.seed)
    warm, pairs = pairs[:5], pairs[5:]
    settings = get_settings()
    server = ServerThread(create_app(settings)).start()
    try:
        t = time.perf_counter()
        ready = wait_understanding_ready(server.url)
        print(
            f"\nAPI in this process at {server.url}: ready in {time.perf_counter() - t:.1f}s "
            f"(understanding: {ready['checks']['understanding']})"
        )
        literal, understood, u_changed, u_same = (ApiResult() for _ in range(4))
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for a, b in warm:  # not measured: connections, first statements
                search(client, a, True)
                search(client, b, False)
            for i, (a, b) in enumerate(pairs):
                steps = [(a, True), (b, False)]
                for text, lit in steps if i % 2 == 0 else steps[::-1]:
                    rec = search(client, text, lit)
                    if lit:
                        add(literal, rec)
                    else:
                        add(understood, rec)
                        add(u_changed if rec["changed"] else u_same, rec)
    finally:
        server.stop()
    rows = []
    for name, res in (
        ("literal", literal),
        ("understood", understood),
        ("understood, text changed", u_changed),
        ("understood, unchanged", u_same),
    ):
        cells = [name, len(res.client), res.errors, res.cached]
        cells.append(f"{pct(res.client, 50):.1f} / {pct(res.client, 95):.1f}")
        for p in PHASES:
            xs = res.phases.get(p, [])
            cells.append(f"{pct(xs, 50):.2f} / {pct(xs, 95):.2f}" if xs else "-")
        rows.append(cells)
    table(
        f"End to end, one client, unseen text queries through POST /v1/search ({len(pairs)} "
        "pairs of distinct evaluation texts, one of each literal, the other understood, "
        "alternating; every text sent once), p50 / p95 ms:",
        ["requests", "n", "errors", "cached_embedding", "client", *PHASES],
        rows,
    )
    print(
        "understood responses' status: "
        + ", ".join(f"{k} {v}" for k, v in sorted(understood.status.items()))
        + "; changed = a correction or a rewrite"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=200, help="API: pairs of unseen texts")
    p.add_argument("--words", type=int, default=400, help="spelling: misspellings per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-api", action="store_true", help="no end-to-end HTTP part")
    p.add_argument("--skip-pg", action="store_true", help="no PostgreSQL spelling engines")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads, as `fashion-search serve --torch-threads` (default 1)",
    )
    args = p.parse_args(argv)
    if args.torch_threads:
        import torch  # noqa: PLC0415 - deferred: imports torch (seconds)

        torch.set_num_threads(args.torch_threads)

    t = time.perf_counter()
    cat = read_catalogue()
    print(
        f"live index v{cat.version.id}: {len(cat.products):,} products, {len(cat.rules)} rules "
        f"(read in {time.perf_counter() - t:.1f}s); {os.cpu_count()} CPUs"
    )
    lexicons = {s: lexicon_of(cat, s) for s in ("all", "reader-half")}
    load()
    bench_spelling(cat, lexicons["all"][0], args)
    texts = list(dict.fromkeys(q.text for q in text_queries(cat.products)))
    bench_lexical(lexicons, texts)
    load()
    for runtime in ("onnx", "torch"):
        bench_full(cat, lexicons["all"][0], texts, args.seed, runtime)
        load()
    if not args.skip_api:
        bench_api(cat, args)
        load()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
