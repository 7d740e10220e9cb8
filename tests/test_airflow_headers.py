"""The security headers of the real Airflow api-server (the plugin
infra/airflow_plugins/fashion_host_check.py, started by ``services.ops.airflow.start`` on an
embedded PostgreSQL of this module's own), and its UI under that Content-Security-Policy in
headless Chromium: the login page and, logged in, the home page and a DAG's code (the Monaco
editor, its workers) render with no CSP violation. Slow: one Airflow start for the module."""

from __future__ import annotations

import httpx
import pytest
from test_airflow_outage import stack  # noqa: F401 - the module's Airflow (a fixture)

pytestmark = pytest.mark.slow

# Collects the violations the page sees (the console shows them too; both are checked).
REPORT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(
  `${e.effectiveDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


def test_ui_pages_and_api_answers_carry_the_security_headers(stack):  # noqa: F811
    from services.ops import airflow

    settings, _ = stack
    base = airflow.base_url(settings.airflow_port)
    for path in ("/", "/auth/login", "/dags", "/api/v2/monitor/health", "/static/pin_32.png"):
        r = httpx.get(base + path, trust_env=False, timeout=30)
        assert r.status_code == 200, (path, r.status_code)
        assert airflow.missing_security_headers(r.headers) == [], (path, dict(r.headers))
        csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
        assert csp["script-src"] == "'self'", csp  # no inline script, no eval
    r = httpx.get(base + "/auth/login", headers={"Host": "evil.example"}, trust_env=False)
    assert r.status_code == 400
    assert airflow.missing_security_headers(r.headers) == [], dict(r.headers)
    # Swagger UI / ReDoc would load from a CDN the CSP refuses: not served (infra/airflow.env)
    for path, marker in (("/docs", "swagger-ui"), ("/redoc", "redoc.standalone")):
        r = httpx.get(base + path, trust_env=False, timeout=30)
        assert marker not in r.text.lower(), (path, r.status_code)


@pytest.mark.browser
def test_ui_renders_without_csp_violations(stack, browser):  # noqa: F811
    from services.ops import airflow

    _, info = stack
    airflow.AirflowClient().wait_for_dag("fashion_reindex")  # parsed: its code page has code
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(REPORT_VIOLATIONS)
    page = context.new_page()
    page.set_default_timeout(60_000)
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))

    def violations() -> list[str]:
        seen = page.evaluate("window.__cspViolations")
        return seen + [m for m in console if "Content Security Policy" in m]

    try:
        base = info["url"]
        page.goto(base + "/auth/login")
        page.locator("input[type=password]").wait_for()
        assert violations() == []

        page.locator("input").first.fill(info["user"])
        page.locator("input[type=password]").fill(info["password"])
        page.keyboard.press("Enter")
        page.wait_for_url(lambda url: "/auth/" not in url)
        page.get_by_role("link", name="Dags").first.wait_for()  # the React app's navigation
        page.wait_for_load_state("networkidle")
        assert violations() == []

        # Monaco: styles inserted at run time, its workers started from blob: URLs
        page.goto(base + "/dags/fashion_reindex/code")
        page.locator(".monaco-editor .view-lines").first.wait_for()
        page.wait_for_load_state("networkidle")
        assert violations() == []
        assert [m for m in console if m.startswith(("error", "pageerror"))] == []
    finally:
        context.close()
