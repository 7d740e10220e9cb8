"""``understand(text) -> Understood``: the lexical step of query understanding (before encoding).

What it does to a query, in order:

1. **spelling**: a word the lexicon does not know (not a catalogue word, not a lexicon
   phrase word, not English) is corrected to the nearest vocabulary word ("jakcet" ->
   "jacket"); two words whose concatenation is a catalogue word are joined ("hand bag" ->
   "handbag");
2. **phrases**: the longest phrases the lexicon knows are recognised ("navy" -> baseColour
   Navy Blue by a rule; "emerald" -> Green by the colour table; "cardigan" -> Sweaters by
   WordNet; "men" -> gender Men, the catalogue's own word);
3. **rewrite**: every recognised shopper phrase that is not the catalogue's own word is
   replaced by the catalogue's words in a second text, ``rewrite`` ("navy jumper for men"
   -> "navy blue sweater for men"); the encoders see both texts, the rewrite weighted by
   the meanings' confidence (``services.understanding.compose``);
4. **residual**: runs of words still unexplained (not function words, not catalogue words)
   are left for the semantic step (``services.understanding.semantic``), which compares
   their sentence vectors with those of the catalogue's labels ("beach", "oatmeal").

A recognised attribute never filters: it changes what the encoders see, nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from services.understanding.lexicon import REWRITE_FIELDS, Lexicon, Meaning
from services.understanding.text import FUNCTION_WORDS, Token, compact, key, tokens

# Words that only modify a colour or a size: never left for the semantic step on their own
# ("dark" is nearest to "dark red" among colour names, which says nothing of "dark blue").
MODIFIERS = frozenset(
    {
        "dark",
        "light",
        "pale",
        "bright",
        "deep",
        "dull",
        "dusty",
        "soft",
        "rich",
        "warm",
        "cool",
        "neon",
        "pastel",
        "vivid",
        "muted",
        "faded",
        "washed",
        "medium",
        "mid",
        "very",
        "extra",
        "super",
        "really",
        "long",
        "short",
        "big",
        "small",
        "little",
        "large",
    }
)
# Sources whose colour names are also everyday nouns ("ice", "sand", "moss"): a colour only
# where it modifies a product word, another colour, or ends the query ("ice hockey" is no
# colour, "emerald dress" is).
CONTEXT_SOURCES = frozenset({"colour table", "wordnet"})
# At most this many left-over words (and runs) go to the semantic step: each is one more text
# for the encoders, and a shopper's query rarely has more (a 1,000-character text could).
MAX_RESIDUAL = 8
PRODUCT_FIELDS = frozenset({"articleType", "subCategory", "masterCategory", "baseColour", "gender"})


@dataclass(frozen=True)
class Correction:
    original: str
    corrected: str
    distance: int
    confidence: float


@dataclass(frozen=True)
class Attribute:
    """A catalogue value the query was understood to ask for (never a filter)."""

    field: str
    value: str
    words: str  # the query's words it was recognised from (as typed, after correction)
    confidence: float
    source: str  # catalogue | rule | wordnet | wordnet hypernym | colour table | semantic | photo
    rewritten: bool  # whether it changed what the encoders see

    @property
    def key(self) -> str:
        """How a shopper removes it (the request's ``ignore``): ``"baseColour:Green"``."""
        return f"{self.field}:{self.value}"


@dataclass(frozen=True)
class AppliedRule:
    id: int | None
    rule: str
    words: str


@dataclass(frozen=True)
class Understood:
    """What understanding made of a query text.

    ``text``: the shopper's words after spelling correction (what the encoders see first);
    ``rewrite``: the same with recognised shopper words replaced by the catalogue's (None
    when nothing was rewritten) and ``rewrite_confidence`` (the mean confidence of its
    replacements); ``residual``: word runs for the semantic step; ``literal``: the step
    was turned off (``text`` is the query as sent, nothing else is set)."""

    original: str
    text: str
    rewrite: str | None = None
    rewrite_confidence: float = 0.0
    corrections: tuple[Correction, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    rules: tuple[AppliedRule, ...] = ()
    residual: tuple[str, ...] = ()
    residual_colour_context: tuple[bool, ...] = ()  # each residual where a colour stands
    literal: bool = False
    lexicon: str = ""
    ignored: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        """Whether the encoders see anything but the query as sent."""
        return self.text != self.original or self.rewrite is not None

    def with_attributes(self, extra: tuple[Attribute, ...]) -> Understood:
        return replace(self, attributes=self.attributes + extra)


def literal(text: str) -> Understood:
    """Understanding turned off: the query exactly as sent."""
    return Understood(original=text, text=text, literal=True)


def _corrected_tokens(toks: list[Token], lexicon: Lexicon) -> tuple[list[str], list[Correction]]:
    """The words after spelling (joined pairs first, then single-word corrections)."""
    out: list[str] = []
    corrections: list[Correction] = []
    i = 0
    while i < len(toks):
        t = toks[i]
        if i + 1 < len(toks):
            joined = compact(t.text) + compact(toks[i + 1].text)
            pair_known = key(f"{t.text} {toks[i + 1].text}") in lexicon.phrases
            if (
                not pair_known
                and len(joined) >= 6
                and lexicon.catalogue_words.get(joined, 0) >= 2
                and key(joined) in lexicon.phrases
            ):
                out.append(joined)
                corrections.append(Correction(f"{t.text} {toks[i + 1].text}", joined, 1, 0.9))
                i += 2
                continue
        suggestion = None
        if not lexicon.is_known(t.text):
            suggestion = lexicon.corrector.suggest(compact(t.text))
        if suggestion is not None and suggestion.word != compact(t.text):
            out.append(suggestion.word)
            corrections.append(
                Correction(t.text, suggestion.word, suggestion.distance, suggestion.confidence)
            )
        else:
            out.append(t.text)
        i += 1
    return out, corrections


def _match(words: list[str], lexicon: Lexicon) -> list[tuple[int, int, list[Meaning]]]:
    """Greedy longest phrases the lexicon knows: (start, end, meanings) over ``words``."""
    keys = [key(w) for w in words]
    longest = lexicon.max_words
    found = []
    i = 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            phrase = " ".join(k for k in keys[i : i + n] if k)
            meanings = lexicon.meanings(phrase) if phrase else []
            if meanings:
                found.append((i, i + n, meanings))
                i += n
                break
        else:
            i += 1
    return found


def _split_hyphens(toks: list[Token], lexicon: Lexicon) -> list[Token]:
    """A hyphenated word the lexicon does not know whole ("iron-gray") becomes its parts."""
    out = []
    for t in toks:
        if "-" in t.text and not lexicon.is_known(t.text) and not lexicon.meanings(t.key):
            for part in t.text.split("-"):
                k = key(part)
                if k:
                    out.append(Token(part, k, t.start, t.end))
        else:
            out.append(t)
    return out


def _in_context(
    meaning: Meaning, end: int, words: list[str], matches_at: dict[int, list[Meaning]]
) -> bool:
    """Whether a colour meaning from a source of everyday nouns stands where a colour does."""
    if meaning.field != "baseColour" or meaning.source not in CONTEXT_SOURCES:
        return True
    for j in range(end, len(words)):
        if words[j] in FUNCTION_WORDS:
            continue
        return any(m.field in PRODUCT_FIELDS for m in matches_at.get(j, ()))
    return True


def _replacement(
    phrase_words: list[str], meanings: list[tuple[Meaning, list]], lexicon: Lexicon
) -> tuple[str | None, float]:
    """What a rewrite puts in place of a phrase, and how sure: the catalogue's words of every
    meaning that rewrites (joined by "or"), the phrase itself when it is also the catalogue's
    own word, and the phrase's catalogue words of other fields ("sports jacket" stays a
    word of usage Sports). (None, 0) when no meaning rewrites."""
    parts: list[str] = []
    confidence: list[float] = []
    fields = set()
    for m, kept in meanings:
        if m.literal:
            parts.append(" ".join(phrase_words))
        elif m.field in REWRITE_FIELDS or m.field is None:
            fields.add(m.field)
            full = len(kept) == len(m.values)
            # the shopper removed some of the values: the rest, in catalogue words
            parts.append(m.canonical if full else " or ".join(v.lower() for v, _ in kept))
            confidence.append(m.confidence)
    if not confidence:
        return None, 0.0
    own = [
        w
        for w in phrase_words
        if any(c.literal and c.field not in fields for c in lexicon.meanings(key(w)))
    ]
    text = " or ".join(dict.fromkeys(p for p in parts if p))
    own = [w for w in own if key(w) not in key(text)]
    return " ".join([*own, text]), max(confidence)


def understand(text: str, lexicon: Lexicon, *, ignore: frozenset[str] = frozenset()) -> Understood:
    """The lexical understanding of ``text`` (see the module docstring). ``ignore``:
    attribute keys ("baseColour:Green") the shopper removed: not recognised, not rewritten."""
    toks = _split_hyphens(tokens(text), lexicon)
    words, corrections = _corrected_tokens(toks, lexicon)
    matches = _match(words, lexicon)
    attributes: list[Attribute] = []
    rules: list[AppliedRule] = []
    rewritten = list(words)
    replaced_conf: list[float] = []
    covered = [False] * len(words)
    matches_at = {start: meanings for start, _, meanings in matches}
    for start, end, meanings in matches:
        phrase = " ".join(words[start:end])
        chosen = []
        removed = False
        for m in meanings:
            if not _in_context(m, end, words, matches_at):
                continue
            kept = [(v, s) for v, s in m.values if f"{m.field}:{v}" not in ignore]
            if m.field is not None and m.values and not kept:
                removed = True  # every value of this meaning was removed by the shopper
                continue
            chosen.append((m, kept))
        if not chosen:
            if removed:  # "not that": the words are not read as anything else either
                covered[start:end] = [True] * (end - start)
            continue
        covered[start:end] = [True] * (end - start)
        replacement, confidence = _replacement(words[start:end], chosen, lexicon)
        for m, kept in chosen:
            rewrites = replacement is not None and not m.literal
            for v, share in kept:
                attributes.append(
                    Attribute(
                        m.field, v, phrase, round(m.confidence * share, 3), m.source, rewrites
                    )
                )
            if m.rule is not None:
                rules.append(AppliedRule(m.rule_id, m.rule, phrase))
        if replacement is not None:
            rewritten[start:end] = [replacement] + [""] * (end - start - 1)
            replaced_conf.append(confidence)
    corrected = " ".join(words) if corrections else text
    rewrite = " ".join(w for w in rewritten if w) if replaced_conf else None
    residual, colour_context = _residual(words, covered, lexicon, matches_at)
    residual, colour_context = residual[:MAX_RESIDUAL], colour_context[:MAX_RESIDUAL]
    return Understood(
        original=text,
        text=corrected,
        rewrite=rewrite,
        rewrite_confidence=round(sum(replaced_conf) / len(replaced_conf), 3)
        if replaced_conf
        else 0.0,
        corrections=tuple(corrections),
        attributes=tuple(attributes),
        rules=tuple(rules),
        residual=tuple(residual),
        residual_colour_context=tuple(colour_context),
        lexicon=lexicon.fingerprint,
        ignored=tuple(sorted(ignore)),
    )


def _residual(
    words: list[str], covered: list[bool], lexicon: Lexicon, matches_at: dict[int, list[Meaning]]
) -> tuple[list[str], list[bool]]:
    """Words no phrase explained that are not function words, modifiers or catalogue words,
    each alone, and each run of two or more of them as a whole ("beach holiday"); with,
    for each, whether it stands where a colour does (before a product word or at the end)."""
    out: list[str] = []
    context: list[bool] = []
    run: list[int] = []

    def colour_place(end: int) -> bool:
        probe = Meaning("baseColour", (), "", 1.0, "colour table")
        return _in_context(probe, end, words, matches_at)

    def flush() -> None:
        if len(run) > 1:
            out.append(" ".join(words[i] for i in run))
            context.append(colour_place(run[-1] + 1))
        run.clear()

    for i, (w, done) in enumerate(zip(words, covered)):
        content = (
            not done
            and w not in FUNCTION_WORDS
            and w not in MODIFIERS
            and compact(w) not in lexicon.catalogue_words
            and not w.isdigit()
        )
        if content:
            run.append(i)
            if w not in out:
                out.append(w)
                context.append(colour_place(i + 1))
        else:
            flush()
    flush()
    return out, context
