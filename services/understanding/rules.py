"""Merchandiser synonym rules: what they are, how they are written, read and checked.

Two kinds, as in every search engine a storefront knows:

- **one-way** ``kicks -> sports shoes, casual shoes``: a query with one of the words on the
  left also searches for the words on the right (never the other way round);
- **two-way** ``jumper <-> sweater <-> pullover``: any of the words brings in the others.

Words are matched as whole words, singular or plural, with or without hyphens
(``services.understanding.text.key``). Rules live in the ``synonym_rules`` table
(``services.store.synonyms``), are edited with ``fashion-search synonyms add | remove |
list | import FILE.csv | export``, and reach a running API within seconds with no re-index
(it checks the table's fingerprint every ``RULES_CHECK_S``). The starting set ships in
``starting_rules.csv`` beside this module (migration 0007 loads it).

CSV format (``import`` / ``export``; a header row, UTF-8)::

    kind,terms,synonyms,note
    one-way,kicks,sports shoes|casual shoes,everyday word for trainers
    two-way,jumper|sweater,,British and American
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from services.store import synonyms as store
from services.understanding.text import key

STARTING_RULES_CSV = Path(__file__).with_name("starting_rules.csv")
CSV_COLUMNS = ("kind", "terms", "synonyms", "note")
MAX_TERM_CHARS = 60
MAX_TERMS = 20
_SPACES = re.compile(r"\s+")


class RuleError(ValueError):
    """A rule that cannot be stored: malformed, empty, too long."""


@dataclass(frozen=True)
class Rule:
    """One synonym rule. ``terms`` are the left side (one-way) or the whole group (two-way)."""

    terms: tuple[str, ...]
    synonyms: tuple[str, ...] = ()
    two_way: bool = False
    note: str = ""
    id: int | None = None

    def __post_init__(self) -> None:
        for side in (self.terms, self.synonyms):
            for term in side:
                if not key(term):
                    raise RuleError(f"a rule term needs a letter or a digit: {term!r}")
                if len(term) > MAX_TERM_CHARS:
                    raise RuleError(
                        f"rule term {term[:20]!r}... is over {MAX_TERM_CHARS} characters"
                    )
        if len(self.terms) + len(self.synonyms) > MAX_TERMS:
            raise RuleError(f"a rule has at most {MAX_TERMS} terms")
        if self.two_way:
            if self.synonyms or len(self.terms) < 2:
                raise RuleError("a two-way rule is a group of at least two terms: a <-> b")
        elif not self.terms or not self.synonyms:
            raise RuleError("a one-way rule needs terms on both sides: a -> b")

    @property
    def kind(self) -> str:
        return "two-way" if self.two_way else "one-way"

    def __str__(self) -> str:
        if self.two_way:
            return " <-> ".join(self.terms)
        return f"{', '.join(self.terms)} -> {', '.join(self.synonyms)}"

    def expansions(self) -> dict[str, tuple[str, ...]]:
        """term key -> the terms it brings in (its own words excluded)."""
        if self.two_way:
            return {key(t): tuple(o for o in self.terms if key(o) != key(t)) for t in self.terms}
        return {key(t): self.synonyms for t in self.terms}


def normalise_term(term: str) -> str:
    """Lower case, single spaces, no surrounding blanks or quotes."""
    return _SPACES.sub(" ", term.strip().strip("\"'").lower())


def _terms(text: str, sep: str) -> tuple[str, ...]:
    out = []
    for t in text.split(sep):
        t = normalise_term(t)
        if t and t not in out:
            out.append(t)
    return tuple(out)


def parse_rule(text: str, note: str = "") -> Rule:
    """``"kicks -> sneakers, trainers"`` (one-way) or ``"jumper <-> sweater"`` (two-way)."""
    if "<->" in text:
        parts = text.split("<->")
        terms: list[str] = []
        for part in parts:
            terms += [t for t in _terms(part, ",") if t not in terms]
        return Rule(tuple(terms), (), True, note)
    if text.count("->") == 1:
        left, right = text.split("->")
        return Rule(_terms(left, ","), _terms(right, ","), False, note)
    raise RuleError(f"write a rule as 'a -> b' (one-way) or 'a <-> b' (two-way), not {text!r}")


def read_csv(text: str) -> list[Rule]:
    """Rules from CSV text (columns :data:`CSV_COLUMNS`); RuleError names the bad line."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("kind", "terms") if c not in (reader.fieldnames or ())]
    if missing:
        raise RuleError(f"the CSV needs the columns {', '.join(CSV_COLUMNS)}; missing {missing}")
    rules = []
    for line, row in enumerate(reader, start=2):
        kind = (row.get("kind") or "").strip().lower()
        try:
            if kind not in ("one-way", "two-way"):
                raise RuleError(f"kind must be one-way or two-way, not {kind!r}")
            rules.append(
                Rule(
                    _terms(row.get("terms") or "", "|"),
                    _terms(row.get("synonyms") or "", "|"),
                    kind == "two-way",
                    (row.get("note") or "").strip(),
                )
            )
        except RuleError as exc:
            raise RuleError(f"line {line}: {exc}") from None
    return rules


def write_csv(rules: Iterable[Rule]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rules:
        writer.writerow([r.kind, "|".join(r.terms), "|".join(r.synonyms), r.note])
    return out.getvalue()


def starting_rules() -> list[Rule]:
    """The rule set shipped with the product (``starting_rules.csv``)."""
    return read_csv(STARTING_RULES_CSV.read_text(encoding="utf-8"))


def fingerprint(rules: Iterable[Rule]) -> str:
    """A short hash of a rule set's content (ids and notes aside): what a run ran with."""
    blob = "\n".join(sorted(str(r) for r in rules))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# --- the rules in the database (services.store.synonyms) -------------------------------------
def _from_row(row) -> Rule:
    rid, terms, synonyms, two_way, note = row
    return Rule(tuple(terms), tuple(synonyms), bool(two_way), note or "", int(rid))


def list_rules(conn) -> list[Rule]:
    """Every rule of the ``synonym_rules`` table, oldest first."""
    return [_from_row(r) for r in store.rule_rows(conn)]


def add_rule(conn, rule: Rule, source: str = "cli") -> Rule:
    """Store ``rule``; RuleError when the same rule is already there."""
    rid = store.insert_rule(
        conn, list(rule.terms), list(rule.synonyms), rule.two_way, rule.note, source
    )
    if rid is None:
        raise RuleError(f"the rule '{rule}' is already there")
    return Rule(rule.terms, rule.synonyms, rule.two_way, rule.note, rid)


def remove_rule(conn, rule_id: int) -> Rule | None:
    """Delete the rule ``rule_id``; the rule removed, or None when there was none."""
    row = store.delete_rule(conn, rule_id)
    return None if row is None else _from_row(row)


def import_rules(conn, rules: Iterable[Rule], *, replace: bool = False) -> tuple[int, int]:
    """Store ``rules`` in one transaction (all or none); with ``replace`` the table holds
    exactly these afterwards. (added, already there)."""
    rows = [(list(r.terms), list(r.synonyms), r.two_way, r.note) for r in rules]
    return store.insert_rules(conn, rows, replace=replace)
