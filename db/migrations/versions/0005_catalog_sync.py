"""Incremental catalogue sync: content hashes, and a record of every sync.

- ``products.content_hash``: sha256 of the product's dataset fields
  (``services.catalog.schema.content_hash``), written by every upsert. Rows stored before this
  revision keep NULL: the sync computes their hash from the stored row the first time it sees
  them (hashing every photo here would make the migration as slow as the catalogue is large).
- ``content_hash`` in every index version table (``index_v<N>``): the hash of the content the
  row's vectors were encoded from, copied from ``products`` when embeddings are loaded. The
  sync compares the source with this one, not with ``products``: ``products`` is shared by
  every version, and a build that stored new rows and then failed must not make the live
  version's stale vectors look current. NULL (rows loaded before this revision) falls back to
  ``products.content_hash``. No UPDATE of the version tables here: their HNSW indexes would
  hold a dead entry for every row until VACUUM.
- ``catalog_syncs``: one row per sync (``services.pipeline.sync``): status, the version it
  changed, the counts, and the whole report (JSON: ids, seconds per phase, checks).

Revision ID: 0005
Revises: 0004
"""

from alembic import op
from sqlalchemy import text

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _version_tables(conn) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename ~ '^index_v[0-9]+$'"
            )
        )
    ]


def upgrade() -> None:
    conn = op.get_bind()
    op.execute("ALTER TABLE products ADD COLUMN IF NOT EXISTS content_hash text")
    for table in _version_tables(conn):
        op.execute(f'ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS content_hash text')
    op.execute(
        """
        CREATE TABLE catalog_syncs (
            id                serial PRIMARY KEY,
            started_at        timestamptz NOT NULL DEFAULT now(),
            finished_at       timestamptz,
            status            text NOT NULL DEFAULT 'running'
                              CHECK (status IN ('running', 'succeeded', 'failed', 'refused')),
            index_version_id  integer REFERENCES index_versions (id) ON DELETE SET NULL,
            source            text NOT NULL,
            read              integer,
            valid             integer,
            rejected          integer,
            new               integer,
            changed           integer,
            removed           integer,
            unchanged         integer,
            encoded           integer,
            error             text,
            report            jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute("CREATE INDEX catalog_syncs_started ON catalog_syncs (started_at DESC)")


def downgrade() -> None:
    conn = op.get_bind()
    op.execute("DROP TABLE catalog_syncs")
    for table in _version_tables(conn):
        op.execute(f'ALTER TABLE "{table}" DROP COLUMN IF EXISTS content_hash')
    op.execute("ALTER TABLE products DROP COLUMN content_hash")
