"""A small client of the Airflow 3 REST API (``/api/v2``, JWT from ``/auth/token``): waiting for
the api-server, checking its Host header check and security headers, triggering and watching DAG runs."""

from __future__ import annotations

import time

import httpx

from services.config import Settings, get_settings
from services.ops.airflow.provision import host_check_plugin
from services.ops.airflow.settings import (
    DAG_ID,
    admin_login,
    admin_user,
    airflow_home,
    base_url,
)


def wait_for_api(timeout: float = 180, settings: Settings | None = None) -> None:
    """Wait until the api-server answers, REST API and execution API both.

    The execution API (Cadwyn) builds its versioned routes on its first request, on the
    event loop: seconds of CPU during which the whole api-server answers nothing (40 s seen
    on a busy 2-core machine). This request pays for that, not a task's first call, whose
    timeouts would fail the task."""
    url = base_url((settings or get_settings()).airflow_port)
    deadline = time.monotonic() + timeout
    for path in ("/api/v2/monitor/health", "/execution/health"):
        last = ""
        while True:
            try:
                left = max(5.0, deadline - time.monotonic())
                r = httpx.get(url + path, timeout=left, trust_env=False)
                if r.status_code == 200:
                    break
                last = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"Airflow api-server did not answer {url}{path} within {timeout:.0f}s "
                    f"({last}); see {airflow_home(settings) / 'logs' / 'api-server.log'}"
                )
            time.sleep(2)


def check_host_header(settings: Settings | None = None) -> None:
    """Raise unless the api-server refuses a request addressed to a foreign host name."""
    settings = settings or get_settings()
    url = f"{base_url(settings.airflow_port)}/api/v2/monitor/health"
    r = httpx.get(url, headers={"Host": "host-check.invalid"}, timeout=10, trust_env=False)
    if r.status_code != 400:
        raise RuntimeError(
            f"the Airflow api-server answered a foreign Host header with HTTP {r.status_code}, "
            f"not 400: the host check plugin ({host_check_plugin()}) is not "
            f"active; see {airflow_home(settings) / 'logs' / 'api-server.log'}"
        )


# What every api-server answer must carry (the plugin's headers; its CSP is checked for the
# directive that keeps the UI out of frames); the same values as services/api/security.py's.
REQUIRED_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}


def missing_security_headers(headers: httpx.Headers) -> list[str]:
    """The security headers ``headers`` lacks or has with another value (empty: all there)."""
    missing = [f"{k}: {v}" for k, v in REQUIRED_HEADERS.items() if headers.get(k) != v]
    csp = [d.strip() for d in headers.get("content-security-policy", "").split(";")]
    if "frame-ancestors 'none'" not in csp:
        missing.append("content-security-policy with frame-ancestors 'none'")
    return missing


def check_security_headers(settings: Settings | None = None) -> None:
    """Raise unless the UI's login page carries the security headers of the plugin."""
    settings = settings or get_settings()
    url = f"{base_url(settings.airflow_port)}/auth/login"
    r = httpx.get(url, timeout=10, trust_env=False)
    missing = missing_security_headers(r.headers)
    if missing:
        raise RuntimeError(
            f"the Airflow api-server answered {url} (HTTP {r.status_code}) without "
            f"{', '.join(missing)}: the plugin ({host_check_plugin()}) is not active; see "
            f"{airflow_home(settings) / 'logs' / 'api-server.log'}"
        )


class AirflowAPIError(RuntimeError):
    """An HTTP error answer of the Airflow REST API."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _transient(exc: Exception) -> bool:
    """Worth polling again: no answer (yet), or a server error (the database restarting)."""
    if isinstance(exc, AirflowAPIError):
        return exc.status >= 500
    return isinstance(exc, httpx.TransportError)


class AirflowClient:
    """Just enough of the Airflow 3 REST API to trigger and watch a DAG run. The polling
    methods ride out a busy or briefly unavailable api-server (timeouts, 5xx) until their
    deadline."""

    def __init__(
        self, url: str | None = None, user: str | None = None, password: str | None = None
    ):
        login = admin_login() if password is None else None
        self.url = url or base_url()
        self.http = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        r = self.http.post(
            "/auth/token",
            json={
                "username": user or admin_user(),
                "password": password if password is not None else login.password,
            },
        )
        if r.status_code >= 400:
            raise RuntimeError(f"Airflow login failed ({r.status_code}): {r.text[:300]}")
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def _call(self, method: str, path: str, **kw):
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            raise AirflowAPIError(
                f"Airflow API {method} {path}: {r.status_code} {r.text[:500]}", r.status_code
            )
        return r.json() if r.content else {}

    def wait_for_dag(self, dag_id: str = DAG_ID, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                return self._call("GET", f"/api/v2/dags/{dag_id}")
            except (AirflowAPIError, httpx.TransportError) as exc:
                if not (_transient(exc) or getattr(exc, "status", None) == 404):
                    raise
                last = str(exc)[:300]
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"DAG {dag_id} was not parsed within {timeout:.0f}s ({last}); see "
                    f"{airflow_home() / 'logs' / 'dag-processor.log'}"
                )
            time.sleep(3)

    def trigger(self, dag_id: str = DAG_ID, conf: dict | None = None) -> dict:
        self.wait_for_dag(dag_id)
        self._call("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        return self._call(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"logical_date": None, "conf": conf or {}},
        )

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        """The value a task of a run pushed (its return value by default)."""
        return self._call(
            "GET",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
        )["value"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        out = self._call(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000}
        )
        return out.get("task_instances", [])

    def wait(
        self, dag_id: str, run_id: str, timeout: float = 1800, poll: float = 5, echo=None
    ) -> dict:
        deadline = time.monotonic() + timeout
        seen: dict[str, str] = {}
        state, error = "unknown", ""
        while True:
            try:
                run = self.run(dag_id, run_id)
                state, error = run["state"], ""
                if echo:
                    for ti in self.task_instances(dag_id, run_id):
                        key = ti["task_id"] + (
                            f"[{ti['map_index']}]" if ti.get("map_index", -1) >= 0 else ""
                        )
                        if ti.get("state") and seen.get(key) != ti["state"]:
                            seen[key] = ti["state"]
                            echo(f"  {key:<28} {ti['state']}")
                if state in ("success", "failed"):
                    return run
            except (AirflowAPIError, httpx.TransportError) as exc:
                if not _transient(exc):
                    raise
                error = f"; last poll: {str(exc)[:200] or type(exc).__name__}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {state} after {timeout:.0f}s{error}")
            time.sleep(poll)
