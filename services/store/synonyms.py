"""Merchandiser synonym rules in PostgreSQL: the ``synonym_rules`` table (migration 0007).

Rows in, rows out: what a rule means is ``services.understanding.rules`` (which reads and
writes through these functions). The API re-reads the rules whenever :func:`rules_state`
(one cheap round trip, checked every few seconds) changes: a rule added, removed or
imported reaches searches within seconds, with no re-index.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

# (id, terms, synonyms, two_way, note)
RuleRow = tuple[int, list[str], list[str], bool, str]
_COLUMNS = "id, terms, synonyms, two_way, note"
_INSERT = (
    "INSERT INTO synonym_rules (terms, synonyms, two_way, note, source) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING id"
)


def rule_rows(conn: psycopg.Connection) -> list[RuleRow]:
    """Every rule, oldest first."""
    return conn.execute(f"SELECT {_COLUMNS} FROM synonym_rules ORDER BY id").fetchall()


def rules_state(conn: psycopg.Connection) -> str:
    """A fingerprint of the table's content: changes with any insert, update or delete."""
    row = conn.execute(
        "SELECT count(*) || ':' || coalesce(md5(string_agg("
        "  id || '|' || array_to_string(terms, ',') || '>' || array_to_string(synonyms, ',')"
        "  || '|' || two_way, ';' ORDER BY id)), '') FROM synonym_rules"
    ).fetchone()
    return str(row[0])


def insert_rule(
    conn: psycopg.Connection,
    terms: list[str],
    synonyms: list[str],
    two_way: bool,
    note: str,
    source: str = "cli",
) -> int | None:
    """Store one rule; its id, or None when the same rule is already there."""
    with conn.transaction():
        row = conn.execute(_INSERT, (terms, synonyms, two_way, note, source)).fetchone()
    return None if row is None else int(row[0])


def delete_rule(conn: psycopg.Connection, rule_id: int) -> RuleRow | None:
    """Delete the rule ``rule_id``; its row, or None when there was none."""
    with conn.transaction():
        return conn.execute(
            f"DELETE FROM synonym_rules WHERE id = %s RETURNING {_COLUMNS}", (rule_id,)
        ).fetchone()


def insert_rules(
    conn: psycopg.Connection,
    rows: Iterable[tuple[list[str], list[str], bool, str]],
    *,
    replace: bool = False,
    source: str = "import",
) -> tuple[int, int]:
    """Store rules in one transaction (all or none); with ``replace``, the table holds
    exactly these afterwards. (added, already there)."""
    added = existing = 0
    with conn.transaction():
        if replace:
            conn.execute("DELETE FROM synonym_rules")
        for terms, synonyms, two_way, note in rows:
            if conn.execute(_INSERT, (terms, synonyms, two_way, note, source)).fetchone():
                added += 1
            else:
                existing += 1
    return added, existing
