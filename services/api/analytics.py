"""The API's side of search analytics (issue #24): it records each search response and
the shoppers' events, and picks the searches that run in an experiment.

- :meth:`Analytics.record_search` hands the search's row to the background writer
  (services.analytics.writer: a bounded queue, batched COPY; a full queue drops and counts,
  never blocks); the response carries the signed ``search_id`` (services.analytics.ids).
- :meth:`Analytics.record_events` checks a batch from ``POST /v1/events``: every search id
  must be one this API issued within a day, every position one its page showed; more than
  :data:`MAX_EVENTS_PER_SEARCH` events for one search are a flood (429).
- :meth:`Analytics.experiment_for`: the running experiment (read at most every
  :data:`EXPERIMENT_TTL_S` seconds) takes a session when its sticky bucket falls under the
  experiment's traffic share.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from services.analytics.ids import SearchId, UnknownSearchId, new_search_id, read_search_id
from services.analytics.privacy import bucket, session_hash
from services.analytics.writer import AnalyticsWriter, WriterStats
from services.config import Settings
from services.store.analytics import Experiment, running_experiment

log = logging.getLogger(__name__)

MAX_EVENTS_PER_SEARCH = 300  # a page of 100 products, each clicked, carted and bought
EXPERIMENT_TTL_S = 5.0
CLOCK_SKEW_S = 300.0  # an event's own time may be this far from the server's


class EventRejected(Exception):
    """An events batch the API refuses (422, 429), with what is wrong."""

    def __init__(self, status_code: int, detail: str, error: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.error = error


class _Counts:
    """Events accepted per search id, for the most recent ``size`` search ids."""

    def __init__(self, size: int = 100_000):
        self._size = size
        self._counts: OrderedDict[uuid.UUID, int] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, wanted: dict[uuid.UUID, int], limit: int) -> uuid.UUID | None:
        """Adds ``wanted`` events per search id unless one would pass ``limit`` (returns it)."""
        with self._lock:
            for sid, n in wanted.items():
                if self._counts.get(sid, 0) + n > limit:
                    return sid
            for sid, n in wanted.items():
                self._counts[sid] = self._counts.get(sid, 0) + n
                self._counts.move_to_end(sid)
            while len(self._counts) > self._size:
                self._counts.popitem(last=False)
        return None


class Analytics:
    def __init__(self, settings: Settings, key: bytes, writer: AnalyticsWriter | None = None):
        self.settings = settings
        self._key = key
        self.writer = writer or AnalyticsWriter(
            lambda: psycopg.connect(settings.events_url, connect_timeout=3),
            capacity=settings.analytics_queue,
        )
        self._counts = _Counts()
        self._experiment: tuple[float, Experiment | None] = (float("-inf"), None)

    def start(self) -> None:
        self.writer.start()

    def stop(self) -> WriterStats:
        return self.writer.close()

    def stats(self) -> WriterStats:
        return self.writer.stats()

    # --- experiments --------------------------------------------------------------------
    def experiment_for(self, read: Any, session_id: str | None) -> Experiment | None:
        """The running experiment if it takes this session (``read``: Runtime.read)."""
        if session_id is None:
            return None
        stamp, running = self._experiment
        if time.monotonic() - stamp > EXPERIMENT_TTL_S:
            try:
                running = read(running_experiment)
            except psycopg.Error as exc:  # analytics never fails a search
                log.warning("experiments not read: %s", exc)
                running = None
            self._experiment = (time.monotonic(), running)
        if running is None or bucket(session_id, running.id) >= running.traffic:
            return None
        return running

    # --- searches -----------------------------------------------------------------------
    def record_search(
        self,
        *,
        session_id: str | None,
        text: str | None,
        has_image: bool,
        mode: str,
        alpha: float | None,
        filters: dict,
        offset: int,
        sort: str,
        ranked: int,
        product_ids: list[int],
        exact: bool,
        understood: bool,
        latency_ms: float,
        index_version: int | None,
        experiment_id: int | None = None,
        teams: list[int] | None = None,
    ) -> str:
        """Queues the search's row; returns its search id (the token clients send back)."""
        sid, token = new_search_id(self._key, offset, len(product_ids))
        now = datetime.now(UTC)
        self.writer.offer(
            "analytics_searches",
            (
                now,
                sid.id,
                session_hash(self.settings.analytics_salt_dir, session_id, now),
                text,
                has_image,
                mode,
                alpha,
                Jsonb(filters),
                offset,
                sort,
                ranked,
                product_ids,
                exact,
                understood,
                round(latency_ms, 3),
                index_version,
                experiment_id,
                teams,
            ),
        )
        return token

    # --- events -------------------------------------------------------------------------
    def record_events(self, session_id: str | None, events: list[Any]) -> tuple[int, int]:
        """Checks and queues a batch (all or nothing). Returns (accepted, dropped)."""
        now = datetime.now(UTC)
        checked: list[tuple[SearchId, Any, datetime]] = []
        for i, event in enumerate(events):
            try:
                sid = read_search_id(event.search_id, self._key)
            except UnknownSearchId as exc:
                raise EventRejected(422, f"events[{i}]: {exc}", "unknown_search_id") from None
            if event.position not in sid.positions():
                shown = sid.positions()
                where = f"positions {shown.start} to {shown.stop - 1}" if shown else "no products"
                raise EventRejected(
                    422,
                    f"events[{i}]: position {event.position} is impossible: that search "
                    f"showed {where}",
                    "impossible_position",
                )
            at = now if event.at is None else event.at
            if at.tzinfo is None:
                raise EventRejected(
                    422, f"events[{i}]: at must carry a time zone (e.g. Z)", "invalid_request"
                )
            if not sid.issued - CLOCK_SKEW_S <= at.timestamp() <= now.timestamp() + CLOCK_SKEW_S:
                raise EventRejected(
                    422,
                    f"events[{i}]: at {at.isoformat()} is before its search or in the future",
                    "invalid_request",
                )
            checked.append((sid, event, at))
        wanted: dict[uuid.UUID, int] = {}
        for sid, _, _ in checked:
            wanted[sid.id] = wanted.get(sid.id, 0) + 1
        flooded = self._counts.take(wanted, MAX_EVENTS_PER_SEARCH)
        if flooded is not None:
            raise EventRejected(
                429,
                f"too many events for one search (at most {MAX_EVENTS_PER_SEARCH})",
                "too_many_events",
            )
        hashed = session_hash(self.settings.analytics_salt_dir, session_id, now)
        accepted = dropped = 0
        for sid, event, at in checked:
            row = (at, sid.id, event.type, event.product_id, event.position, hashed)
            if self.writer.offer("analytics_events", row):
                accepted += 1
            else:
                dropped += 1
        return accepted, dropped
