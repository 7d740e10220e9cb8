"""The analytics' scheduled work, one call each from the ``fashion_search_analytics`` DAG
(hourly) and ``fashion-search analytics aggregate``: partitions made ahead and dropped past
retention, then the aggregates of the hour's day and of the day before rebuilt (events
arrive after their search's day ends), and the hour recorded. Idempotent: a rerun of an
hour gives the same tables.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.config import Settings
from services.store import analytics as store
from services.store.analytics_aggregate import aggregate_day, record_hour
from services.store.db import connect

DAYS_AHEAD = 7


def maintain_partitions(settings: Settings, today: datetime | None = None) -> dict[str, int]:
    day = (today or datetime.now(UTC)).astimezone(UTC).date()
    with connect(settings.database_url, autocommit=True) as conn:
        made = store.ensure_partitions(conn, day - timedelta(days=1), DAYS_AHEAD + 2)
        dropped = store.drop_partitions(
            conn, day - timedelta(days=settings.analytics_retention_days)
        )
    return {"made": made, "dropped": dropped}


def aggregate_hour(settings: Settings, hour: datetime) -> dict[str, Any]:
    """Aggregates the UTC day of ``hour`` and the day before; records the hour."""
    hour = hour.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out: dict[str, Any] = {"hour": hour.isoformat()}
    with connect(settings.database_url, autocommit=True) as conn:
        for day in (hour.date() - timedelta(days=1), hour.date()):
            out[day.isoformat()] = aggregate_day(conn, day)
        out["searches"], out["events"] = record_hour(conn, hour)
    return out
