"""What indexing tasks hand each other travels through the database, not a worker's disk.

- ``pipeline_shards``: one row per shard of an indexing run (its products' ids and content
  hashes in order, and the shard's fingerprint), written by the ingest stage;
- ``encoded_shards``: a shard's encoded vectors (CLIP photo + name arrays, SPLADE vectors),
  content-addressed by (fingerprint, kind, model), written by the encode stages and read by
  the load stage. A retried task, or a new run over the same catalogue and models, reuses
  them. Payloads are float arrays, which do not compress: stored uncompressed (EXTERNAL).

So the encode and load tasks of one run may run on different Celery workers that share
nothing but the database and the broker.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE pipeline_shards (
            run_key     text NOT NULL,
            shard       integer NOT NULL CHECK (shard >= 0),
            product_ids bigint[] NOT NULL,
            content_hashes text[] NOT NULL,  -- products.content_hash at ingest, in order
            fingerprint text NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (run_key, shard)
        )
        """
    )
    op.execute("CREATE INDEX pipeline_shards_fingerprint ON pipeline_shards (fingerprint)")
    op.execute(
        """
        CREATE TABLE encoded_shards (
            fingerprint text NOT NULL,
            kind        text NOT NULL CHECK (kind IN ('dense', 'sparse')),
            model       text NOT NULL,
            rows        integer NOT NULL CHECK (rows >= 0),
            payload     bytea NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (fingerprint, kind, model)
        )
        """
    )
    op.execute("ALTER TABLE encoded_shards ALTER COLUMN payload SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("DROP TABLE encoded_shards")
    op.execute("DROP TABLE pipeline_shards")
