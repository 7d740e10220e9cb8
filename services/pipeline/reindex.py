"""``run_reindex``: the whole indexing pipeline without Airflow, calling the same stage
functions as the ``fashion_reindex`` DAG's tasks, with a per-stage timing table.

Holds the build lock for the whole run, so a second run (or a DAG run) cannot swap
concurrently: it refuses at once instead of racing.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from services.config import get_settings
from services.pipeline import checks, run_lock, stages
from services.store import shard_store

log = logging.getLogger(__name__)


def _stage(report: dict, name: str, rows: int | None, seconds: float) -> None:
    report["timings"].append(
        {
            "stage": name,
            "rows": rows,
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds, 1) if rows and seconds else None,
        }
    )


def run_reindex(
    source: str = "offline",
    size: int = 10_000,
    limit: int | None = None,
    shard_size: int = 2000,
    dense_model: str | None = None,
    sparse_model: str | None = None,
    *,
    run_id: str | None = None,
    dense_image_weight: float | None = None,
    min_recall: float = checks.DEFAULT_MIN_RECALL,
    keep_previous: int = 1,
) -> dict:
    """Fetch, validate, shard, encode, load, index, check and swap a new index version live.

    Returns the run report (timings, validation rejects by reason, checks, live version).
    On failure after the version exists, the version is marked failed and the live version
    is untouched; re-running reuses the shards already encoded.
    """
    settings = get_settings()
    dims = stages.model_dims(dense_model, sparse_model)  # unknown model -> LookupError now
    dense_model, sparse_model = dims["dense_model"], dims["sparse_model"]
    run_id = run_id or "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    report: dict = {
        "run_id": run_id,
        "source": source,
        "size": size,
        "limit": limit,
        "shard_size": shard_size,
        "dense_model": dense_model,
        "sparse_model": sparse_model,
        "timings": [],
        "status": "running",
    }
    version_id = None
    t_all = time.perf_counter()
    with run_lock.build_lock(wait=False):
        try:
            paths, sec = stages.timed(stages.fetch_catalog, source, size, limit)
            _stage(report, "fetch", None, sec)

            out, sec = stages.timed(
                stages.validate_store_and_shard,
                paths,
                shard_size,
                run_id,
                limit=limit,
                source=source if source in ("offline", "hub") else "local",
            )
            shards, report["validation"] = out["shards"], out["report"]
            valid = out["report"]["valid"]
            _stage(report, "validate+shard+upsert", out["report"]["read"], sec)

            version_id, sec = stages.timed(
                stages.create_building_version,
                dense_model,
                sparse_model,
                run_key=run_id,
                params={
                    "source": source,
                    "size": size,
                    "limit": limit,
                    "shard_size": shard_size,
                    "runner": "cli",
                },
                dense_image_weight=dense_image_weight,
            )
            report["version"] = version_id
            _stage(report, "create_version", None, sec)

            t = time.perf_counter()
            for s in shards:
                stages.encode_dense_shard(s, dense_model)
            _stage(report, "encode photos + names (CLIP)", valid, time.perf_counter() - t)

            t = time.perf_counter()
            for s in shards:
                stages.encode_sparse_shard(s, sparse_model)
            _stage(report, "encode texts (SPLADE)", valid, time.perf_counter() - t)

            t = time.perf_counter()
            loaded = sum(stages.load_shard_into_version(version_id, s) for s in shards)
            _stage(report, "load (COPY)", loaded, time.perf_counter() - t)

            report["index_seconds"], sec = stages.timed(stages.build_version_indexes, version_id)
            _stage(report, "build HNSW indexes", loaded, sec)

            report["checks"], sec = stages.timed(
                checks.check_and_mark_ready,
                version_id,
                valid,
                min_recall=min_recall,
                extra_report={"validation": report["validation"], "runner": "cli"},
            )
            _stage(report, "checks", None, sec)

            report["swap"], sec = stages.timed(stages.swap_live, version_id)
            _stage(report, "swap", None, sec)

            report["retired"], sec = stages.timed(stages.retire_old_versions, keep_previous)
            _stage(report, "retire", None, sec)
            report["status"] = "success"
        except BaseException as exc:
            report["status"] = "failed"
            report["error"] = f"{type(exc).__name__}: {exc}"
            stages.mark_version_failed(version_id, report["error"])
            raise
        finally:
            total = time.perf_counter() - t_all
            report["total_seconds"] = round(total, 3)
            rows = report.get("validation", {}).get("read")
            _stage(report, "TOTAL", rows, total)
            _write_report(settings, report)
    return report


def _write_report(settings, report: dict) -> None:
    try:
        folder = settings.reports_dir / "reindex"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{shard_store.slug(report['run_id'])}.json"
        path.write_text(json.dumps(report, indent=2, default=str))
        report["report_path"] = str(path)
    except OSError:
        log.exception("could not write the run report")


def format_timings(report: dict) -> str:
    """The per-stage timing table as aligned text."""
    lines = [f"{'stage':<24} {'rows':>8} {'seconds':>9} {'rows/s':>9}", "-" * 53]
    for t in report.get("timings", []):
        rows = "" if t["rows"] is None else str(t["rows"])
        rps = "" if t["rows_per_s"] is None else f"{t['rows_per_s']:.1f}"
        lines.append(f"{t['stage']:<24} {rows:>8} {t['seconds']:>9.2f} {rps:>9}")
    return "\n".join(lines)
