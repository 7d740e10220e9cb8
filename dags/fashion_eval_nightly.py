"""Nightly search-quality evaluation: MAP@10 & co. of the live index, stored for the dashboard.

Runs at 03:00 UTC AND whenever a new index version goes live (the reindex DAG updates
the ``fashion://index/live`` asset). Skips (no failure, no alert) while no index version
is live yet, e.g. a fresh install whose first re-index has not finished. Fails loudly, and alerts through the tasks'
``on_failure_callback``, when hybrid MAP@10 drops by more than ``margin`` (DAG param,
else env FASHION_EVAL_MAP_MARGIN, else 0.02) against the previous run. Logic lives in
``evaluation.nightly``; this file is wiring only.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowSkipException

from evaluation.nightly import alert_on_failure

try:
    from services.pipeline.assets import LIVE_INDEX_ASSET
except ImportError:  # the pipeline package is optional; same URI as the reindex DAG's
    LIVE_INDEX_ASSET = Asset("fashion://index/live")

SCHEDULE = AssetOrTimeSchedule(
    timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"),
    assets=[LIVE_INDEX_ASSET],
)


@dag(
    dag_id="fashion_eval_nightly",
    schedule=SCHEDULE,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["fashion", "evaluation"],
    params={
        "margin": Param(
            None,
            type=["null", "number"],
            minimum=0,
            description="allowed hybrid MAP@10 drop vs the previous run "
            "(default: env FASHION_EVAL_MAP_MARGIN or 0.02)",
        ),
    },
    default_args={
        "retries": 0,
        "on_failure_callback": alert_on_failure,
        "execution_timeout": timedelta(minutes=30),
    },
    doc_md=__doc__,
)
def fashion_eval_nightly():
    @task
    def evaluate() -> int:
        from evaluation.nightly import evaluate_live
        from services.search import NoLiveIndex

        try:
            return evaluate_live(notes="fashion_eval_nightly")
        except NoLiveIndex as exc:  # nothing to measure yet: skip (check_regression too)
            raise AirflowSkipException(str(exc)) from exc

    @task
    def check_regression(eval_run_id: int, **context) -> dict:
        # (not "run_id": that name is reserved for Airflow's context)
        from evaluation.nightly import check_run

        return check_run(eval_run_id, context["params"].get("margin"))

    check_regression(evaluate())


DAG_OBJECT = fashion_eval_nightly()
