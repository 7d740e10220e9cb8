"""Setting the local Airflow up: the airflow CLI, the metadata DB (created and migrated), the
passwords file, the gpu pool, the Host header check plugin."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.config import Settings, get_settings
from services.ops.airflow.settings import (
    GPU_POOL,
    HOST_CHECK_PLUGIN,
    PLUGINS_DIR,
    AdminLogin,
    _write_private,
    admin_login,
    airflow_env,
    airflow_home,
)
from services.store import embedded, migrate


def _airflow_bin() -> list[str]:
    exe = Path(sys.executable).with_name("airflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "airflow"]


def run_airflow(
    args: list[str], env: dict[str, str], *, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    res = subprocess.run(
        _airflow_bin() + args,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and res.returncode != 0:
        raise RuntimeError(
            f"`airflow {' '.join(args)}` failed ({res.returncode}):\n"
            f"{(res.stderr or res.stdout)[-3000:]}"
        )
    return res


def write_passwords(home: Path, login: AdminLogin) -> None:
    """The SimpleAuthManager passwords file (0600) with the admin password."""
    _write_private(home / "passwords.json", json.dumps({login.user: login.password}) + "\n")


def host_check_plugin() -> Path:
    """The Airflow plugin with the Host header check (a file of infra/airflow_plugins, the
    folder AIRFLOW__CORE__PLUGINS_FOLDER names)."""
    return PLUGINS_DIR / HOST_CHECK_PLUGIN


def setup(
    settings: Settings | None = None,
    *,
    home: Path | None = None,
    dbname: str = "airflow",
    migrate_platform: bool = True,
) -> dict[str, str]:
    """Create the metadata DB, migrate it, write the passwords file, create the gpu pool.

    Idempotent. Returns the environment to run Airflow with.
    """

    settings = settings or get_settings()
    home = Path(home or airflow_home(settings))
    if settings.embedded:
        embedded.start(settings)
    embedded.ensure_airflow_database(settings, dbname)  # its own role's, created if missing
    if migrate_platform:
        migrate.upgrade("head", settings.owner_url)  # the schema the tasks write to
    env = airflow_env(settings, home=home, dbname=dbname)
    write_passwords(home, admin_login(settings, home=home))
    for sub in ("logs", "run"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    run_airflow(["db", "migrate"], env)
    run_airflow(["pools", "set", *GPU_POOL], env)
    return env
