"""The fashion_reindex DAG's wiring, read from the DAG object (no Airflow run; seconds).

With the CeleryExecutor the encoders must run on the workers of the ``gpu`` queue and every
other task on the ``default`` one (tests/test_celery.py shows it end to end through two real
workers; it takes minutes, so the mutation check asks this instead).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENCODE_TASKS = ("encode_images", "encode_texts")


def _reindex_dag():
    spec = importlib.util.spec_from_file_location(
        "fashion_reindex_dag", REPO / "dags" / "fashion_reindex.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dags = [v for v in vars(module).values() if type(v).__name__ == "DAG"]
    assert len(dags) == 1, dags
    return dags[0]


def test_encoders_go_to_the_gpu_queue_and_pool_and_the_rest_to_the_cpu_workers():
    from services.ops.airflow.settings import CELERY_WORKERS, GPU_POOL

    dag = _reindex_dag()
    assert dag.dag_id == "fashion_reindex"
    gpu_queue, cpu_queue = CELERY_WORKERS["gpu"][0], CELERY_WORKERS["cpu"][0]
    assert (gpu_queue, cpu_queue) == ("gpu", "default")
    tasks = {t.task_id: t for t in dag.tasks}
    assert set(ENCODE_TASKS) <= set(tasks)
    for task_id, t in tasks.items():
        if task_id in ENCODE_TASKS:
            assert (t.queue, t.pool) == (gpu_queue, GPU_POOL[0]), (task_id, t.queue, t.pool)
        else:
            assert t.queue == cpu_queue and t.pool != GPU_POOL[0], (task_id, t.queue, t.pool)
    # the encoders feed the loads, shard by shard
    assert set(ENCODE_TASKS) <= tasks["load"].upstream_task_ids
