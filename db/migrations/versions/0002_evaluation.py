"""Evaluation runs, their metrics, and regression alerts (owner: evaluation/).

- ``eval_runs``: one row per evaluation of an index version (models, query-set version,
  status running|succeeded|failed, ``details`` JSON: timings, skipped queries, settings).
- ``eval_metrics``: one row per (run, mode, alpha, family, metric). ``mode`` is
  dense (alpha 1), sparse (alpha 0), hybrid (the alpha sweep) or multi (image + text
  queries); ``family = 'all'`` is the overall mean; ``n_queries`` the queries averaged.
- ``eval_alerts``: what the nightly DAG's failure callback records (e.g. a MAP drop).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE eval_runs (
            id                serial PRIMARY KEY,
            started_at        timestamptz NOT NULL DEFAULT now(),
            finished_at       timestamptz,
            index_version_id  integer REFERENCES index_versions (id) ON DELETE SET NULL,
            dense_model       text,
            sparse_model      text,
            query_set_version text,
            status            text NOT NULL DEFAULT 'running'
                              CHECK (status IN ('running', 'succeeded', 'failed')),
            notes             text,
            details           jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute("CREATE INDEX eval_runs_finished ON eval_runs (status, finished_at DESC)")
    op.execute(
        """
        CREATE TABLE eval_metrics (
            run_id    integer NOT NULL REFERENCES eval_runs (id) ON DELETE CASCADE,
            mode      text NOT NULL CHECK (mode IN ('dense', 'sparse', 'hybrid', 'multi')),
            alpha     double precision NOT NULL CHECK (alpha >= 0 AND alpha <= 1),
            family    text NOT NULL,
            metric    text NOT NULL,
            value     double precision NOT NULL,
            n_queries integer NOT NULL,
            PRIMARY KEY (run_id, mode, alpha, family, metric)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE eval_alerts (
            id         serial PRIMARY KEY,
            created_at timestamptz NOT NULL DEFAULT now(),
            run_id     integer REFERENCES eval_runs (id) ON DELETE SET NULL,
            source     text NOT NULL,
            message    text NOT NULL,
            details    jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE eval_alerts")
    op.execute("DROP TABLE eval_metrics")
    op.execute("DROP TABLE eval_runs")
