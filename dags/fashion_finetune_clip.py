"""Fine-tune the CLIP model on the catalogue, measure it on held-out products, register it.

Manual trigger only. train -> evaluate -> register -> (param reindex=True) trigger fashion_reindex.
All logic lives in services.training.workflow; GPU work runs in the "gpu" pool.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task


@dag(
    dag_id="fashion_finetune_clip",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["fashion", "training"],
    params={
        "source": Param(
            "offline", type="string", description="catalogue: offline | hub | parquet path"
        ),
        "arch": Param(
            "fashion-lit-minilm",
            type="string",
            description="open_clip architecture (fashion-lit-minilm: LiT, pretrained MiniLM text "
            "tower locked; fashion-clip-tiny: both towers from scratch)",
        ),
        "pretrained": Param(
            None, type=["null", "string"], description="open_clip tag/file to fine-tune"
        ),
        "epochs": Param(15, type="integer", minimum=1),
        "minutes": Param(None, type=["null", "number"], description="training time budget"),
        "device": Param("cuda", type="string"),
        "model_name": Param("fashion-clip-finetuned", type="string", description="registry name"),
        "reindex": Param(False, type="boolean", description="trigger fashion_reindex afterwards"),
    },
)
def fashion_finetune_clip():
    @task(pool="gpu")
    def train(params: dict | None = None, run_id: str | None = None) -> dict:
        from services.config import get_settings
        from services.training import workflow
        from services.training.clip_train import TrainConfig

        settings = get_settings()
        config = TrainConfig(
            source=params["source"],
            arch=params["arch"],
            pretrained=params["pretrained"],
            epochs=params["epochs"],
            max_minutes=params["minutes"],
            device=params["device"],
            threads=None,
            init_image_tower=workflow.default_image_tower_init(params["arch"]),
        )
        out = settings.model_cache / "finetuned" / f"{params['model_name']}.pt"
        summary = workflow.train_and_export(
            config, settings.work_dir / "clip-training" / params["model_name"], out
        )
        return {
            "checkpoint": str(out),
            "arch": config.arch,
            "source": config.source,
            "summary_steps": summary["steps"],
        }

    @task(pool="gpu")
    def evaluate(trained: dict, params: dict | None = None) -> dict:
        from pathlib import Path

        from services.config import get_settings
        from services.training import clip_report, workflow
        from services.training.clip_train import TrainConfig

        config = TrainConfig(source=trained["source"], arch=trained["arch"])
        after = workflow.encoder_for_checkpoint(
            params["model_name"], Path(trained["checkpoint"]), trained["arch"]
        )
        report = workflow.evaluate(config, after)
        clip_report.save_report(
            report, [get_settings().reports_dir], stem=f"clip-report-{params['model_name']}"
        )
        return {**trained, "targets": report["targets"]}

    @task
    def register(evaluated: dict, params: dict | None = None) -> str:
        from pathlib import Path

        from services.training import workflow

        path = workflow.register_finetuned(
            params["model_name"],
            Path(evaluated["checkpoint"]),
            note=f"fine-tuned by DAG fashion_finetune_clip; targets {evaluated['targets']}",
            arch=evaluated["arch"],
        )
        return str(path)

    @task.short_circuit
    def wants_reindex(params: dict | None = None) -> bool:
        return bool(params["reindex"])

    reindex = TriggerDagRunOperator(
        task_id="trigger_reindex",
        trigger_dag_id="fashion_reindex",
        conf={"dense_model": "{{ params.model_name }}"},
    )

    registered = register(evaluate(train()))
    registered >> wants_reindex() >> reindex


finetune_clip_dag = fashion_finetune_clip()
