"""What the ``fashion_eval_nightly`` DAG's tasks and failure callback do (tested without Airflow).

- :func:`evaluate_live` stores a run against the live index and returns its id, or raises
  :class:`~services.search.NoLiveIndex` at once (before loading any model) when no
  index version is live yet (a fresh install before its first re-index): the DAG turns that
  into a skipped task, not a failure and not an alert;
- :func:`check_run` fails loudly (:class:`evaluation.summary.MapRegression`) when hybrid
  MAP@10 dropped by more than the margin against the previous run;
- :func:`alert_on_failure` is the tasks' ``on_failure_callback``: it logs the failure and
  writes an alert record (``eval_alerts``; ``<reports_dir>/alerts.jsonl`` when the database
  itself is what failed), which the dashboard lists.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from evaluation.summary import DEFAULT_MARGIN, MapRegression, check_regression, margin_from_env
from services.config import get_settings
from services.search import NoLiveIndex
from services.store import evaluations as storage
from services.store.db import connection
from services.store.index_versions import live_version

log = logging.getLogger(__name__)


def resolve_margin(param: Any = None) -> float:
    """The DAG param when given, else env FASHION_EVAL_MAP_MARGIN, else 0.02."""
    if param is None or param == "":
        return margin_from_env(DEFAULT_MARGIN)
    margin = float(param)
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return margin


def evaluate_live(alphas: list[float] | None = None, notes: str | None = None) -> int:
    with connection() as conn:
        if live_version(conn) is None:
            raise NoLiveIndex("no index version is live yet: nothing to evaluate")
    from evaluation.run import run_evaluation  # noqa: PLC0415 - deferred: imports torch/model stacks (seconds), only this path needs them

    run_id = run_evaluation(None, alphas=alphas, notes=notes)
    log.info("evaluation run %s stored", run_id)
    return run_id


def check_run(run_id: int, margin: Any = None) -> dict:

    m = resolve_margin(margin)
    with connection() as conn:
        check = check_regression(conn, int(run_id), m)
    log.info(check.message())
    if check.regressed:
        raise MapRegression(check.message(), check)
    return {
        "run_id": check.run_id,
        "previous_run_id": check.previous_run_id,
        "hybrid_map": check.current,
        "previous_hybrid_map": check.previous,
        "margin": check.margin,
    }


def alert_on_failure(context: dict) -> None:
    """Airflow ``on_failure_callback``: log + store an alert record. Never raises."""
    exc = context.get("exception")
    ti = context.get("task_instance") or context.get("ti")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = None
    details: dict[str, Any] = {
        "dag_id": dag_id,
        "task_id": task_id,
        "dag_run_id": getattr(context.get("dag_run"), "run_id", None),
        "exception_type": type(exc).__name__ if exc else None,
    }
    if isinstance(exc, MapRegression):
        run_id = exc.check.run_id
        details.update(
            previous_run_id=exc.check.previous_run_id,
            hybrid_map=exc.check.current,
            previous_hybrid_map=exc.check.previous,
            margin=exc.check.margin,
        )
        kind = "hybrid MAP@10 regression"
    else:
        kind = "evaluation task failed"
    message = f"{dag_id}.{task_id}: {kind}: {exc}"
    log.error("ALERT %s", message)
    record_alert(message, run_id=run_id, details=details, source=f"{dag_id}.{task_id}")


def record_alert(
    message: str,
    *,
    run_id: int | None = None,
    details: dict | None = None,
    source: str = "evaluation",
) -> None:
    """Write an alert to ``eval_alerts``; fall back to a JSON-lines file if that fails."""
    try:
        with connection() as conn:
            storage.record_alert(
                conn, source=source, message=message, run_id=run_id, details=details
            )
        return
    except Exception as db_exc:  # noqa: BLE001 - the alert must land somewhere
        log.error("could not store the alert in the database (%s); writing a file", db_exc)
    try:
        path = get_settings().reports_dir / "alerts.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(
                json.dumps(
                    {
                        "at": datetime.now(UTC).isoformat(),
                        "source": source,
                        "run_id": run_id,
                        "message": message,
                        "details": details or {},
                    },
                    default=str,
                )
                + "\n"
            )
    except Exception:
        log.exception("could not write the alert file either")
