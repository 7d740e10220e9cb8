"""Airflow plugin: the api-server answers only requests addressed to this machine, and every
answer carries the browser security headers of the project's own API.

Host check: requests whose Host header names 127.0.0.1, localhost or a name in Airflow's
setting ``[fashion] allowed_hosts`` (comma-separated; ``AIRFLOW__FASHION__ALLOWED_HOSTS``) are
served; any other Host gets HTTP 400, so a web page cannot reach the loopback server by DNS
rebinding. Airflow 3 has no allowed-hosts option of its own.

Security headers (Airflow 3 sends none): ``X-Content-Type-Options: nosniff``,
``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY``,
``Cross-Origin-Opener-Policy: same-origin`` (as services/api/security.py's SECURITY_HEADERS)
and the Content-Security-Policy :data:`CSP`, on every response, the Host check's 400
included. A header the response already has is left as it is.

``fashion-search airflow start`` points ``AIRFLOW__CORE__PLUGINS_FOLDER`` at this folder and
checks both after starting (services/ops/airflow/).
"""

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin
from starlette.datastructures import MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
EXTRA = conf.get("fashion", "allowed_hosts", fallback="")
ALLOWED_HOSTS = [*LOOPBACK_HOSTS, *(h.strip() for h in EXTRA.split(",") if h.strip())]

# What Airflow 3.3's UI (the React app at /, the SimpleAuthManager's login at /auth/login)
# needs, found by loading its pages in headless Chromium and collecting CSP violations
# (tests/test_airflow_headers.py keeps it at none), and nothing more:
CSP_DIRECTIVES = {
    "default-src": ["'self'"],
    # the bundles are module scripts from /static and /auth/static; no inline script, no eval.
    # No 'wasm-unsafe-eval' either: the SQL parser (WebAssembly) of the rendered-templates tab
    # never loads in Airflow 3.3.2 (its loader, /static/wasm/sqlparser_rs_wasm.js, is not in
    # the package: 404), so the policy blocks nothing there.
    "script-src": ["'self'"],
    # Chakra UI (Emotion) and the Monaco editor insert <style> elements at run time, and both
    # index.html files have style attributes; Airflow sets no nonce, so inline styles it is.
    # Styles cannot run script, and nothing from another origin is allowed.
    "style-src": ["'self'", "'unsafe-inline'"],
    # Monaco's stylesheet draws its colour picker and its iPad keyboard button from data: URLs
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    # the graph layout (ELK) and Monaco workers start from blob: URLs the bundles create
    "worker-src": ["'self'", "blob:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],  # index.html sets <base href> to the server's own path
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
CSP = "; ".join(f"{name} {' '.join(values)}" for name, values in CSP_DIRECTIVES.items())
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "content-security-policy": CSP,
}


class SecurityHeadersMiddleware:
    """Pure ASGI middleware (streamed responses stay streamed): adds :data:`SECURITY_HEADERS`
    to every HTTP response that lacks them."""

    def __init__(self, app, headers: dict[str, str] | None = None):
        self.app = app
        self.headers = dict(SECURITY_HEADERS if headers is None else headers)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class FashionHostCheck(AirflowPlugin):
    name = "fashion_host_check"
    # Airflow adds these in order with app.add_middleware, each around the ones before: the
    # headers come last so that they wrap the Host check and its 400 carries them too.
    fastapi_root_middlewares = [  # noqa: RUF012 - the attribute Airflow reads, as in its docs
        {
            "name": "fashion_host_check",
            "middleware": TrustedHostMiddleware,
            "kwargs": {"allowed_hosts": ALLOWED_HOSTS, "www_redirect": False},
        },
        {
            "name": "fashion_security_headers",
            "middleware": SecurityHeadersMiddleware,
        },
    ]
