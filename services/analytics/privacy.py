"""What analytics keeps of a shopper: no IP address and no raw session or user id.

A client's session id (the storefront makes a random one per browser tab) is stored only
as ``HMAC-SHA256(salt of the UTC day, session id)``, truncated to 16 hex digits. The day's
salt is 32 random bytes in ``FASHION_HOME/secrets/analytics-salts/<day>`` (0600, made by the
first API process that needs it, shared by the machine's processes), and deleted two days
later: once it is gone, nobody (this service included) can tell which session a stored hash
came from, or link one day's hashes to the next day's.

Experiments assign sessions stickily by another hash (:func:`bucket`) that is never stored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,128}")
KEEP_DAYS = 2
_lock = threading.Lock()
_cache: dict[tuple[Path, date], bytes] = {}


def valid_session_id(value: str) -> bool:
    return SESSION_ID.fullmatch(value) is not None


def _salt(folder: Path, day: date) -> bytes:
    key = (folder, day)
    with _lock:
        salt = _cache.get(key)
        if salt is not None:
            return salt
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / day.isoformat()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            salt = bytes.fromhex(path.read_text().strip())
        else:
            salt = secrets.token_bytes(32)
            with os.fdopen(fd, "w") as f:
                f.write(salt.hex())
            _forget_old(folder, day)
        if len(_cache) > 8:
            _cache.clear()
        _cache[key] = salt
        return salt


def _forget_old(folder: Path, today: date) -> None:
    """Deletes the salts of days more than KEEP_DAYS before ``today``."""
    for path in folder.iterdir():
        try:
            day = date.fromisoformat(path.name)
        except ValueError:
            continue
        if day < today - timedelta(days=KEEP_DAYS):
            path.unlink(missing_ok=True)


def session_hash(folder: Path, session_id: str | None, now: datetime | None = None) -> str | None:
    """The stored form of a session id (None stays None)."""
    if session_id is None:
        return None
    day = (now or datetime.now(UTC)).astimezone(UTC).date()
    digest = hmac.new(_salt(folder, day), session_id.encode(), hashlib.sha256).hexdigest()
    return digest[:16]


def bucket(session_id: str, experiment_id: int) -> float:
    """Where a session falls in [0, 1) for an experiment: the same session, the same bucket,
    every day (sticky); independent between experiments."""
    digest = hashlib.sha256(f"{experiment_id}:{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
