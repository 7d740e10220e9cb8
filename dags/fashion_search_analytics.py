"""Hourly search analytics: partitions made ahead and dropped past retention, then the
daily tables rebuilt for the hour's UTC day and the day before (events of a search can come
after its day ends). Idempotent per hour: a rerun of an hour rewrites the same rows. Logic
lives in ``services.analytics.jobs``; this file is wiring only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import CronTriggerTimetable, dag, task


@dag(
    dag_id="fashion_search_analytics",
    schedule=CronTriggerTimetable("5 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["fashion", "analytics"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    doc_md=__doc__,
)
def fashion_search_analytics():
    @task
    def partitions() -> dict:
        from services.analytics.jobs import maintain_partitions
        from services.config import get_settings

        return maintain_partitions(get_settings())

    @task
    def aggregate(**context) -> dict:
        from services.analytics.jobs import aggregate_hour
        from services.config import get_settings

        # A scheduled run at hh:05 aggregates the hour that just ended; any other (a manual
        # trigger, dag.test) the hour it runs in.
        logical = context.get("logical_date")
        run = context.get("dag_run")
        scheduled = run is not None and str(run.run_type).endswith("scheduled")
        hour = logical - timedelta(minutes=5) if scheduled and logical else datetime.now(UTC)
        return aggregate_hour(get_settings(), hour)

    partitions() >> aggregate()


DAG_OBJECT = fashion_search_analytics()
