"""Run a DAG file's DAG once with Airflow 3's ``dag.test()``, in a fresh interpreter.

Airflow reads its configuration at import time, so the run happens in a child
``python tests/dag_runner.py DAG_FILE CONF_JSON`` started with the environment of
:func:`services.ops.airflow.airflow_env` (``AIRFLOW_HOME`` and metadata DB of the caller's
choice). No scheduler: ``dag.test()`` runs the tasks in that process. The child prints one
``DAG_TEST_RESULT {json}`` line that :func:`dag_test` reads back.

Usage from a test::

    from dag_runner import dag_test
    result = dag_test({"size": 300}, settings, home=tmp_path / "airflow", dbname="airflow_test")
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "DAG_TEST_RESULT "


def dag_test(
    conf: dict,
    settings=None,
    *,
    home: Path | None = None,
    dbname: str = "airflow",
    timeout: float = 900,
    migrate: bool = True,
    dag_file: Path | None = None,
) -> dict:
    """Run ``dag_file``'s DAG (default ``dags/fashion_reindex.py``) with
    ``dag.test(run_conf=conf)``; the metadata DB ``dbname`` is created and migrated first
    unless ``migrate=False``.

    Returns ``{"state", "run_id", "tasks": {task: state}, "tries": {task: n}, "output"}``.
    """
    from services.config import get_settings
    from services.ops import airflow

    settings = settings or get_settings()
    home = Path(home or airflow.airflow_home(settings))
    if migrate:
        env = airflow.setup(settings, home=home, dbname=dbname, migrate_platform=False)
    else:
        env = airflow.airflow_env(settings, home=home, dbname=dbname)
    res = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            str(dag_file or REPO / "dags" / "fashion_reindex.py"),
            json.dumps(conf),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO),
        check=False,
    )
    output = res.stdout + res.stderr
    for line in reversed(res.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["output"] = output
            return result
    raise RuntimeError(f"dag.test did not finish (exit {res.returncode}):\n{output[-5000:]}")


def _main(dag_file: str, conf_json: str) -> None:
    """In the child: load the DAG file, ``dag.test()`` it, print the task states."""
    import importlib.util

    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    spec = importlib.util.spec_from_file_location("dag_under_test", dag_file)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dag = next(v for v in vars(mod).values() if isinstance(v, DAG))
    run = dag.test(run_conf=json.loads(conf_json))
    with create_session() as s:
        tis = (
            s.query(TaskInstance)
            .filter(TaskInstance.dag_id == run.dag_id, TaskInstance.run_id == run.run_id)
            .all()
        )

        def key(ti) -> str:
            return ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else "")

        states = {key(ti): str(ti.state) for ti in tis}
        tries = {key(ti): ti.try_number for ti in tis}
    print(
        RESULT_PREFIX
        + json.dumps(
            {"state": str(run.state), "run_id": run.run_id, "tasks": states, "tries": tries}
        ),
        flush=True,
    )


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
