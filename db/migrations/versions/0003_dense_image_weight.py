"""Index versions record how their product dense vectors were made.

``dense_image_weight`` (beta): a product's dense vector is the normalised sum
``beta * CLIP(photo) + (1 - beta) * CLIP_text(name)``; 1.0 = photo only (every version
built before this revision).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE index_versions ADD COLUMN dense_image_weight real NOT NULL DEFAULT 1.0 "
        "CHECK (dense_image_weight >= 0 AND dense_image_weight <= 1)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE index_versions DROP COLUMN dense_image_weight")
