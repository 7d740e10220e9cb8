"""A product's brand: a filter and facet field, read from the display name.

Adds ``brand`` to ``products`` and to every existing index version table (``index_v<N>``,
which carry the filter columns), fills it from the display names with the same rule new
rows use (``services.catalog.schema.brand_from_name``), and indexes it in each version table
like the other filter columns. Live versions keep serving: no re-index is needed.

The UPDATE writes a new version of every row, so each HNSW index holds dead entries until
VACUUM; the migration vacuums the tables it touched (outside the transaction) so that fast-path
recall and latency are as before straight away (the measurement: docs/architecture.md, the
brand section). Statements are idempotent, so a migration interrupted
during the VACUUM can simply be run again.

Revision ID: 0004
Revises: 0003
"""

from alembic import op
from sqlalchemy import text

from services.catalog.schema import brand_from_name

revision = "0004"
down_revision = "0003"
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
    op.execute("ALTER TABLE products ADD COLUMN IF NOT EXISTS brand text")
    rows = conn.execute(text("SELECT id, product_display_name FROM products")).fetchall()
    pairs = [(pid, brand_from_name(name)) for pid, name in rows]
    if pairs:
        conn.execute(
            text(
                "UPDATE products p SET brand = u.brand "
                "FROM unnest(CAST(:ids AS bigint[]), CAST(:brands AS text[])) AS u(id, brand) "
                "WHERE p.id = u.id"
            ),
            {"ids": [p[0] for p in pairs], "brands": [p[1] for p in pairs]},
        )
    for table in _version_tables(conn):
        op.execute(f'ALTER TABLE "{table}" ADD COLUMN IF NOT EXISTS brand text')
        op.execute(
            f'UPDATE "{table}" e SET brand = p.brand FROM products p WHERE p.id = e.product_id'
        )
        op.execute(f'CREATE INDEX IF NOT EXISTS "{table}_brand" ON "{table}" (brand)')
    with op.get_context().autocommit_block():
        for table in ["products", *_version_tables(conn)]:
            op.execute(f'VACUUM ANALYZE "{table}"')


def downgrade() -> None:
    conn = op.get_bind()
    for table in _version_tables(conn):
        op.execute(f'ALTER TABLE "{table}" DROP COLUMN IF EXISTS brand')
    op.execute("ALTER TABLE products DROP COLUMN brand")
