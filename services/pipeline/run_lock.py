"""One indexing run at a time: the build lock (a PostgreSQL advisory lock), re-entrant in a process.

The no-Airflow runner holds it for its whole run; DAG tasks take it around create / load /
swap. A second run waits (DAG tasks, up to ``settings.build_lock_timeout``) or refuses (the
runner, ``wait=False``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from services.config import get_settings
from services.store import locks
from services.store.db import connect

BUILD_LOCK_NAME = "fashion_index_build"

_held_here = False  # True while this process holds the lock through build_lock()


class BuildLockBusy(RuntimeError):
    """Another indexing run holds the build lock."""


@contextlib.contextmanager
def build_lock(conn: psycopg.Connection | None = None, *, wait: bool = True) -> Iterator[None]:
    """Hold the build lock (re-entrant within this process).

    ``wait=False`` refuses at once with :class:`BuildLockBusy` when another run holds it;
    ``wait=True`` waits up to ``settings.build_lock_timeout`` (FASHION_BUILD_LOCK_TIMEOUT).
    """
    global _held_here
    if _held_here:
        yield
        return
    own = conn is None
    conn = conn or connect(get_settings().database_url)
    conn.autocommit = True
    timeout = get_settings().build_lock_timeout
    try:
        try:
            taken = locks.acquire(conn, BUILD_LOCK_NAME, timeout=timeout if wait else None)
        except psycopg.errors.LockNotAvailable as exc:
            raise BuildLockBusy(
                f"another indexing run held the build lock for more than {timeout}"
            ) from exc
        if not taken:
            raise BuildLockBusy(
                "another indexing run is in progress (it holds the build lock); "
                "wait for it to finish or stop it first"
            )
        _held_here = True
        try:
            yield
        finally:
            _held_here = False
            with contextlib.suppress(psycopg.Error):
                locks.release(conn, BUILD_LOCK_NAME)
    finally:
        if own:
            conn.close()
