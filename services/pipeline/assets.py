"""Airflow Assets the platform emits: other DAGs (the nightly evaluation) schedule on them."""

from __future__ import annotations

from airflow.sdk import Asset

# Updated each time the reindex DAG swaps a new index version live.
LIVE_INDEX_ASSET = Asset("fashion://index/live")
