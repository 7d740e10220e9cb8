"""Query understanding: merchandiser synonym rules, and literal modes in evaluation metrics.

- ``synonym_rules``: one row per rule (``services.understanding.rules``): ``terms`` (the
  left side of a one-way rule, or the whole group of a two-way rule), ``synonyms`` (the
  right side of a one-way rule; empty for two-way), ``two_way``, a note, and when it was
  made or changed. Terms are stored normalised (lower case, single spaces). Edited with
  ``fashion-search synonyms``; a running API reads the table again when its fingerprint
  changes (``services.store.synonyms.rules_state``), so a change needs no re-index.
  Seeded here with the starting set shipped with this revision
  (``services/understanding/starting_rules.csv``); ``synonym_rules.source`` says where a
  rule came from (``starting set``, ``cli``, ``import``).
- ``eval_metrics.mode`` also takes ``literal`` and ``multi_literal``: the same queries
  searched with understanding turned off, beside the understood ones.

Revision ID: 0007
Revises: 0006
"""

from alembic import op
from sqlalchemy import text

from services.understanding.rules import starting_rules  # the set shipped with this revision

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MODES = "'dense', 'sparse', 'hybrid', 'multi'"


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE synonym_rules (
            id          bigserial PRIMARY KEY,
            terms       text[] NOT NULL CHECK (cardinality(terms) >= 1),
            synonyms    text[] NOT NULL DEFAULT '{}',
            two_way     boolean NOT NULL,
            note        text NOT NULL DEFAULT '',
            source      text NOT NULL DEFAULT 'cli',
            created_at  timestamptz NOT NULL DEFAULT now(),
            updated_at  timestamptz NOT NULL DEFAULT now(),
            CHECK (CASE WHEN two_way THEN cardinality(terms) >= 2 AND cardinality(synonyms) = 0
                        ELSE cardinality(synonyms) >= 1 END),
            UNIQUE (two_way, terms, synonyms)
        )
        """
    )
    conn = op.get_bind()
    for rule in starting_rules():
        conn.execute(
            text(
                "INSERT INTO synonym_rules (terms, synonyms, two_way, note, source) "
                "VALUES (:terms, :synonyms, :two_way, :note, 'starting set')"
            ),
            {
                "terms": list(rule.terms),
                "synonyms": list(rule.synonyms),
                "two_way": rule.two_way,
                "note": rule.note,
            },
        )
    op.execute("ALTER TABLE eval_metrics DROP CONSTRAINT IF EXISTS eval_metrics_mode_check")
    op.execute(
        "ALTER TABLE eval_metrics ADD CONSTRAINT eval_metrics_mode_check "
        f"CHECK (mode IN ({MODES}, 'literal', 'multi_literal'))"
    )


def downgrade() -> None:
    op.execute("DELETE FROM eval_metrics WHERE mode IN ('literal', 'multi_literal')")
    op.execute("ALTER TABLE eval_metrics DROP CONSTRAINT IF EXISTS eval_metrics_mode_check")
    op.execute(
        f"ALTER TABLE eval_metrics ADD CONSTRAINT eval_metrics_mode_check CHECK (mode IN ({MODES}))"
    )
    op.execute("DROP TABLE synonym_rules")
