"""Products, index versions; per-version embedding tables are made by code.

The dense and sparse dimensions come from the models of each index version, so
the embedding tables (``index_v<N>``: ``vector(d)``, ``sparsevec(V)``, HNSW with
the inner-product opclasses) are created by ``services.store.index_versions``
when a version is built, never by a hand-edited migration.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute(
        """
        CREATE TABLE products (
            id                   bigint PRIMARY KEY,
            gender               text,
            master_category      text,
            sub_category         text,
            article_type         text,
            base_colour          text,
            season               text,
            year                 integer,
            usage                text,
            product_display_name text NOT NULL,
            image                bytea,
            image_mime           text,
            source               text NOT NULL DEFAULT 'unknown',
            updated_at           timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE index_versions (
            id           serial PRIMARY KEY,
            status       text NOT NULL DEFAULT 'building'
                         CHECK (status IN ('building', 'ready', 'live', 'previous',
                                           'retired', 'failed')),
            dense_model  text NOT NULL,
            dense_dim    integer NOT NULL CHECK (dense_dim > 0),
            sparse_model text NOT NULL,
            sparse_dim   integer NOT NULL CHECK (sparse_dim > 0),
            row_count    integer,
            params       jsonb NOT NULL DEFAULT '{}'::jsonb,
            report       jsonb NOT NULL DEFAULT '{}'::jsonb,
            error        text,
            created_at   timestamptz NOT NULL DEFAULT now(),
            built_at     timestamptz,
            live_at      timestamptz,
            retired_at   timestamptz
        )
        """
    )
    # At most one live version, enforced by the database itself.
    op.execute(
        "CREATE UNIQUE INDEX index_versions_one_live ON index_versions ((true)) "
        "WHERE status = 'live'"
    )


def downgrade() -> None:
    op.execute(
        """
        DO $$
        DECLARE t text;
        BEGIN
            FOR t IN SELECT tablename FROM pg_tables
                     WHERE schemaname = current_schema() AND tablename ~ '^index_v[0-9]+$'
            LOOP
                EXECUTE format('DROP TABLE %I', t);
            END LOOP;
        END $$
        """
    )
    op.execute("DROP TABLE index_versions")
    op.execute("DROP TABLE products")
