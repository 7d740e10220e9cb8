"""``python -m services.ops.airflow wait-db COMMAND...`` (and ``celery-worker NAME``): the
programs of infra/supervisord.conf wait for Airflow's metadata database, then exec Airflow."""

from __future__ import annotations

import os
import sys
import time

import psycopg
from sqlalchemy.engine import make_url

from services.ops.airflow.celery import worker_command, worker_env
from services.ops.airflow.settings import CELERY_WORKERS
from services.store.db import ping


def libpq_url(sqlalchemy_conn: str) -> str:
    """Airflow's SQLAlchemy URL (``postgresql+psycopg://...``) as a libpq URL."""
    return (
        make_url(sqlalchemy_conn).set(drivername="postgresql").render_as_string(hide_password=False)
    )


def wait_for_database(url: str, *, say=print, max_interval: float = 5.0) -> float:
    """Block until ``url`` accepts a connection and answers ``SELECT 1``, however long that
    takes (retrying with a backoff of 0.5 s up to ``max_interval``; one line every 30 s).
    Returns the seconds waited."""
    t0 = time.monotonic()
    interval, last_said = 0.5, None
    while True:
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                ping(conn)
        except psycopg.Error as exc:
            now = time.monotonic()
            if last_said is None or now - last_said >= 30:
                reason = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                )
                say(f"waiting for the database ({now - t0:.0f}s so far): {reason}")
                last_said = now
            time.sleep(interval)
            interval = min(interval * 2, max_interval)
            continue
        waited = time.monotonic() - t0
        if last_said is not None:
            say(f"the database answers again after {waited:.0f}s")
        return waited


def main(argv: list[str] | None = None) -> int:
    """``wait-db COMMAND [ARG...]``: wait for Airflow's metadata database
    (``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, the environment supervisord passes to its
    programs), then replace this process with COMMAND."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "celery-worker" and args[1] in CELERY_WORKERS:
        # supervisord's worker-<name> program: the worker's own homes, then wait-db + worker
        env = worker_env(dict(os.environ), args[1])
        os.environ.clear()
        os.environ.update(env)
        args = ["wait-db", *worker_command(args[1])]
    if len(args) < 2 or args[0] != "wait-db":
        print(
            "usage: python -m services.ops.airflow wait-db COMMAND [ARG...]\n"
            f"       python -m services.ops.airflow celery-worker {{{','.join(CELERY_WORKERS)}}}",
            file=sys.stderr,
        )
        return 2
    conn = os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if not conn:
        print("wait-db: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN is not set", file=sys.stderr)
        return 2
    wait_for_database(libpq_url(conn), say=lambda m: print(f"wait-db: {m}", flush=True))
    sys.stdout.flush()
    os.execvp(args[1], args[1:])  # no return
