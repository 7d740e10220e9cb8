"""fashion_catalog_sync: bring the live index version up to date with the catalogue, hourly.

One task, ``sync``: reads the source, finds new, changed (content hash of name, metadata and
photo) and removed products, encodes only the new and changed ones with the live version's
models, and upserts / deletes them in the live version in place, in one checked transaction
(``services.pipeline.sync.sync_catalog``; the same function as ``fashion-search sync``). It
encodes, so it runs on pool and queue "gpu"; nothing is handed to another task (XCom carries
the counts). It waits for a reindex's build lock, and refuses (the task fails, with the reason
in its log and in ``catalog_syncs``) when the configured models differ from the live version's:
a model change is a full rebuild (``fashion_reindex``). With no live version yet (a fresh
install) it skips.

Paused when first parsed (``is_paused_upon_creation``): unpause it where a catalogue source
changes (the offline catalogue of the embedded default never does), so that an hourly run never
holds the build lock while ``make run`` or a test triggers the first reindex.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException


@dag(
    dag_id="fashion_catalog_sync",
    schedule="@hourly",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    tags=["fashion", "index", "sync"],
    doc_md=__doc__,
    default_args={"retries": 0},
    params={
        "source": Param(
            "offline", type="string", description='"offline", "hub", or a local Parquet file/folder'
        ),
        "size": Param(10_000, type="integer", minimum=1, description="offline catalogue size"),
        "limit": Param(None, type=["null", "integer"], description="read at most N rows"),
        "max_removed_fraction": Param(
            0.5,
            type="number",
            minimum=0,
            maximum=1,
            description="refuse a sync that would remove more than this share of the live products",
        ),
    },
)
def fashion_catalog_sync():
    @task(pool="gpu", queue="gpu")
    def sync() -> dict:
        from services.pipeline.sync import NoLiveVersion, format_report, sync_catalog

        p = dict(get_current_context()["params"])
        try:
            report = sync_catalog(
                p["source"],
                p["size"],
                p["limit"],
                wait_for_lock=True,
                max_removed_fraction=p["max_removed_fraction"],
            )
        except NoLiveVersion as exc:  # nothing to sync into yet: skip, not fail
            raise AirflowSkipException(str(exc)) from exc
        print(format_report(report))
        keys = ("sync_id", "version", "read", "valid", "rejected", "new", "changed", "removed")
        return {k: report.get(k) for k in (*keys, "unchanged", "encoded", "seconds")}

    sync()


dag = fashion_catalog_sync()
