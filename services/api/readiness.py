"""Readiness: whether this API process can serve searches, and the database's sides.

``GET /readyz`` (services.api.controllers.system) answers with :func:`readiness_report`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg

from services.api.runtime import PRIMARY, PROBE_TIMEOUT_S, REPLICA, Runtime
from services.store.db import ping, replication_lag
from services.store.index_versions import live_version
from services.store.migrate import head_revision, schema_revision


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def readiness_report(runtime: Runtime) -> tuple[dict[str, str], dict[str, Any]]:
    """(named checks -> "ok" or what is wrong, the database's sides).

    ``checks["database"]`` is "ok" when searches can be served: the primary answers, or
    (with a read replica) the replica does ("ok: ..." says the primary is down); schema
    and index are checked where searches read (the replica first). The sides:
    ``{"primary": "ok" | "down: ...", "replica": "ok" | "down: ..." | "not configured",
    "replica_lag_s": float | None, "replica_lag_bytes": int | None}``."""
    checks = {"models": runtime.models_state, "understanding": runtime.understanding_state}
    sides: dict[str, Any] = {
        "primary": "ok",
        "replica": "not configured",
        "replica_lag_s": None,
        "replica_lag_bytes": None,
    }
    two = runtime.read_pool is not None
    errors: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        conns: dict[str, psycopg.Connection] = {}
        for side in runtime.read_sides():
            # A side seen down recently gets a short wait for a connection (likely down).
            timeout = PROBE_TIMEOUT_S if two and runtime.side_down(side) else None
            try:
                conn = stack.enter_context(runtime.connection(side, timeout))
                ping(conn)
                conns[side] = conn
            except Exception as exc:  # noqa: BLE001 - any failure means "down"
                errors[side] = _reason(exc)
            if two:
                runtime.mark(side, up=side in conns)
        if PRIMARY not in conns:
            sides["primary"] = f"down: {errors[PRIMARY]}"
        if two:
            if REPLICA in conns:
                sides["replica"] = "ok"
                try:
                    lag = replication_lag(conns[REPLICA], conns.get(PRIMARY))
                    sides["replica_lag_s"], sides["replica_lag_bytes"] = lag.seconds, lag.bytes
                except Exception as exc:  # noqa: BLE001 - the lag is informative only
                    sides["replica"] = f"ok (lag unknown: {_reason(exc)})"
            else:
                sides["replica"] = f"down: {errors[REPLICA]}"
        serving = next((side for side in runtime.read_sides() if side in conns), None)
        if serving is None:
            checks["database"] = f"unavailable: {errors[PRIMARY]}"
            checks["index"] = "unknown (database unavailable)"
            return checks, sides
        checks["database"] = (
            "ok" if PRIMARY in conns else "ok: searches served by the replica (primary down)"
        )
        try:
            conn = conns[serving]
            at, head = schema_revision(conn), head_revision()
            checks["schema"] = (
                f"ok: {at}"
                if at == head
                else f"behind: the database is at {at}, this API needs {head}; "
                "run `fashion-search db migrate`"
            )
            version = live_version(conn)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            checks["database"] = f"unavailable: {_reason(exc)}"
            checks["index"] = "unknown (database unavailable)"
            return checks, sides
    if version is None:
        checks["index"] = "no live index version"
    else:
        checks["index"] = f"ok: v{version.id} ({version.row_count} rows)"
        if checks["models"] == "loaded":
            enc = runtime.encoders
            if (version.dense_model, version.sparse_model) != (enc.clip.name, enc.splade.name):
                checks["index"] = (
                    f"mismatch: live v{version.id} uses {version.dense_model} + "
                    f"{version.sparse_model}, API serves {enc.clip.name} + "
                    f"{enc.splade.name}"
                )
    return checks, sides


def readiness(runtime: Runtime) -> dict[str, str]:
    """Named checks -> "ok" or what is wrong (:func:`readiness_report`'s checks)."""
    return readiness_report(runtime)[0]


def is_ready(checks: dict[str, str]) -> bool:
    """Ready to serve searches. Query understanding counts once its first build is done,
    whatever its outcome: a failed build ("unavailable: ...") serves literal searches
    rather than taking the API down."""
    return (
        checks.get("models") == "loaded"
        and checks.get("database", "").startswith("ok")
        and checks.get("schema", "").startswith("ok")
        and checks.get("index", "").startswith("ok")
        and not checks.get("understanding", "").startswith(("building", "waiting"))
    )
