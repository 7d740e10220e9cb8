"""Merchandiser synonym rules in PostgreSQL: the ``synonym_rules`` table (migration 0007).

The API reads the rules through :func:`list_rules` and re-reads them whenever
:func:`rules_state` (one cheap round trip, checked every few seconds) changes: a rule
added, removed or imported reaches searches within seconds, with no re-index.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from services.understanding.rules import Rule, RuleError

_COLUMNS = "id, terms, synonyms, two_way, note"


def _rule(row) -> Rule:
    rid, terms, synonyms, two_way, note = row
    return Rule(tuple(terms), tuple(synonyms), bool(two_way), note or "", int(rid))


def list_rules(conn: psycopg.Connection) -> list[Rule]:
    """Every rule, oldest first."""
    rows = conn.execute(f"SELECT {_COLUMNS} FROM synonym_rules ORDER BY id").fetchall()
    return [_rule(r) for r in rows]


def rules_state(conn: psycopg.Connection) -> str:
    """A fingerprint of the table's content: changes with any insert, update or delete."""
    row = conn.execute(
        "SELECT count(*) || ':' || coalesce(md5(string_agg("
        "  id || '|' || array_to_string(terms, ',') || '>' || array_to_string(synonyms, ',')"
        "  || '|' || two_way, ';' ORDER BY id)), '') FROM synonym_rules"
    ).fetchone()
    return str(row[0])


def add_rule(conn: psycopg.Connection, rule: Rule, source: str = "cli") -> Rule:
    """Store ``rule``; RuleError when the same rule is already there."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO synonym_rules (terms, synonyms, two_way, note, source) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id",
            (list(rule.terms), list(rule.synonyms), rule.two_way, rule.note, source),
        ).fetchone()
    if row is None:
        raise RuleError(f"the rule '{rule}' is already there")
    return Rule(rule.terms, rule.synonyms, rule.two_way, rule.note, int(row[0]))


def remove_rule(conn: psycopg.Connection, rule_id: int) -> Rule | None:
    """Delete the rule ``rule_id``; the rule removed, or None when there was none."""
    with conn.transaction():
        row = conn.execute(
            f"DELETE FROM synonym_rules WHERE id = %s RETURNING {_COLUMNS}", (rule_id,)
        ).fetchone()
    return None if row is None else _rule(row)


def import_rules(
    conn: psycopg.Connection, rules: Iterable[Rule], *, replace: bool = False
) -> tuple[int, int]:
    """Store ``rules`` in one transaction (all or none); with ``replace``, the table holds
    exactly these afterwards. (added, already there)."""
    added = existing = 0
    with conn.transaction():
        if replace:
            conn.execute("DELETE FROM synonym_rules")
        for rule in rules:
            row = conn.execute(
                "INSERT INTO synonym_rules (terms, synonyms, two_way, note, source) "
                "VALUES (%s, %s, %s, %s, 'import') ON CONFLICT DO NOTHING RETURNING id",
                (list(rule.terms), list(rule.synonyms), rule.two_way, rule.note),
            ).fetchone()
            if row is None:
                existing += 1
            else:
                added += 1
    return added, existing
