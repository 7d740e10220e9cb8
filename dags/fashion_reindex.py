"""fashion_reindex: build a new hybrid index version and swap it live.

ingest (fetch + validate + store products and shards) -> create_version
      -> encode_images[shard] (CLIP) and encode_texts[shard] (SPLADE), both on queue and
         pool "gpu" -> load[shard] (COPY) -> build_indexes
      -> check (row count, smoke query, fast-vs-exact recall) -> swap (one transaction;
      emits the Asset fashion://index/live) -> retire (keeps the previous version).

Thin by design: every task calls a function of ``services.pipeline.stages`` (the same
functions ``fashion-search index`` runs without Airflow). XCom carries shard refs and
counts only; whatever a task hands the next is in the database (products, shards, encoded
vectors), never on a worker's disk, so with the CeleryExecutor the encode tasks run on the
workers consuming the ``gpu`` queue and the rest anywhere. The queue is ignored by the
LocalExecutor; the ``gpu`` pool bounds concurrent encoders with either. A task that fails for
good marks the run's index version failed; the live version keeps serving. Triggering a new
run finishes the job and reuses the shards already encoded.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from services.pipeline.assets import LIVE_INDEX_ASSET

GPU_QUEUE = (
    "gpu"  # the Celery queue of the GPU workers (fashion-search airflow start --executor celery)
)


def _run_key() -> str:
    ctx = get_current_context()
    return f"{ctx['dag'].dag_id}__{ctx['dag_run'].run_id}"


def _params() -> dict:
    return dict(get_current_context()["params"])


def _mark_version_failed(context) -> None:
    """Task failure callback (after the last retry): the run's version must never go live."""
    from services.pipeline import stages

    ti = context.get("ti") or context.get("task_instance")
    run = context["dag_run"]
    error = (
        f"Airflow run {run.run_id}: task {getattr(ti, 'task_id', '?')} failed: "
        f"{context.get('exception')!r}"
    )
    stages.mark_run_versions_failed(f"{run.dag_id}__{run.run_id}", error[:2000])


@dag(
    dag_id="fashion_reindex",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=2,
    tags=["fashion", "index"],
    doc_md=__doc__,
    default_args={
        "retries": 0,
        "on_failure_callback": _mark_version_failed,
    },
    params={
        "source": Param(
            "offline", type="string", description='"offline", "hub", or a local Parquet file/folder'
        ),
        "size": Param(10_000, type="integer", minimum=1, description="offline catalogue size"),
        "limit": Param(None, type=["null", "integer"], description="read at most N rows"),
        "shard_size": Param(2000, type="integer", minimum=1),
        "dense_model": Param(
            None,
            type=["null", "string"],
            description="CLIP model name (default FASHION_DENSE_MODEL)",
        ),
        "sparse_model": Param(
            None,
            type=["null", "string"],
            description="SPLADE model name (default FASHION_SPARSE_MODEL)",
        ),
        "dense_image_weight": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            description="product dense vector = w * photo + (1 - w) * name "
            "(default FASHION_DENSE_IMAGE_WEIGHT)",
        ),
        "min_recall": Param(
            0.9,
            type="number",
            minimum=0,
            maximum=1,
            description="fast-vs-exact recall@10 a version needs to go live",
        ),
    },
)
def fashion_reindex():
    @task
    def ingest() -> list[str]:
        from services.pipeline import stages

        p = _params()
        out = stages.ingest_catalog(
            p["source"], p["size"], p["limit"], p["shard_size"], run_key=_run_key()
        )
        print(f"validation report: {out['report']}")
        get_current_context()["ti"].xcom_push(key="validation_report", value=out["report"])
        return out["shards"]

    @task
    def create_version(shards: list[str]) -> int:
        from services.pipeline import stages

        p = _params()
        return stages.create_building_version(
            p["dense_model"],
            p["sparse_model"],
            run_key=_run_key(),
            params={k: p[k] for k in ("source", "size", "limit", "shard_size")}
            | {"runner": "airflow", "shards": len(shards)},
            dense_image_weight=p.get("dense_image_weight"),
        )

    @task(queue=GPU_QUEUE, pool="gpu", retries=2, retry_delay=timedelta(seconds=5))
    def encode_images(shard: str) -> dict:
        from services.pipeline import stages

        return stages.encode_dense_shard(shard, _params()["dense_model"])

    @task(queue=GPU_QUEUE, pool="gpu", retries=2, retry_delay=timedelta(seconds=5))
    def encode_texts(shard: str) -> dict:
        from services.pipeline import stages

        return stages.encode_sparse_shard(shard, _params()["sparse_model"])

    @task(retries=2, retry_delay=timedelta(seconds=5))
    def load(version_id: int, encoded: list) -> int:
        from services.pipeline import stages

        shard, _dense, _sparse = encoded  # the encode tasks' counts: both finished
        return stages.load_shard_into_version(version_id, shard)

    @task
    def build_indexes(version_id: int, loaded: list[int]) -> dict:
        from services.pipeline import stages

        return {"rows_loaded": sum(loaded), "seconds": stages.build_version_indexes(version_id)}

    @task
    def check(version_id: int, built: dict) -> dict:
        from services.pipeline import checks

        report = get_current_context()["ti"].xcom_pull(task_ids="ingest", key="validation_report")
        result = checks.check_and_mark_ready(
            version_id,
            report["valid"],
            min_recall=_params()["min_recall"],
            extra_report={"validation": report, "build": built},
        )
        print(f"checks: {result}")
        return result

    @task(outlets=[LIVE_INDEX_ASSET])
    def swap(version_id: int, checks: dict) -> dict:
        from services.pipeline import stages

        result = stages.swap_live(version_id)
        ctx = get_current_context()
        ctx["outlet_events"][LIVE_INDEX_ASSET].extra = {
            "version": result["live"],
            "previous": result["previous"],
            "rows": result["rows"],
            "recall_at_10": checks.get("recall_at_10_fast_vs_exact"),
        }
        return result

    @task
    def retire(swapped: dict) -> list[int]:
        from services.pipeline import stages

        return stages.retire_old_versions(keep_previous=1)

    shards = ingest()
    version = create_version(shards)
    dense = encode_images.expand(shard=shards)
    sparse = encode_texts.expand(shard=shards)
    version >> [dense, sparse]  # a version exists before any encoding can fail
    loaded = load.partial(version_id=version).expand(encoded=shards.zip(dense, sparse))
    built = build_indexes(version, loaded)
    checks = check(version, built)
    retire(swap(version, checks))


dag = fashion_reindex()
