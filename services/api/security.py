"""Security headers on every response, and the API docs page served from this app.

Every response (errors and 404s included: a Litestar ``before_send`` hook, not a route
middleware) gets ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
``X-Frame-Options: DENY`` and ``Cross-Origin-Opener-Policy: same-origin``. HTML responses
also get a Content-Security-Policy that allows scripts, styles, fonts and fetches from this
origin only, images from this origin and ``data:``/``blob:`` (the storefront previews the
shopper's photo from a ``blob:`` URL; Swagger UI's icons are ``data:`` SVGs), and no
framing. Inline code is allowed only by hash: a page with inline script/style sends its own
policy (:func:`content_security_policy` with the hashes, as the storefront does) or has the
hashes of its static inline code added here (the dashboard's ``<style>``, from
:func:`template_inline_hashes`). The policy has no ``'unsafe-inline'`` and no
``'unsafe-eval'``.

The docs page (:class:`LocalSwaggerRenderPlugin`, ``/schema/swagger``) loads Swagger UI from
this app (the ``swagger-ui-py`` wheel's dist files, served at ``/static/swagger-ui``), not a
CDN, and starts it with ``/static/swagger-init.js`` instead of an inline script.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib.util
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2
from litestar import Request, Router
from litestar.datastructures import MutableScopeHeaders
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.types import BeforeMessageSendHookHandler, Message, Scope

from evaluation import dashboard

log = logging.getLogger(__name__)

SECURITY_HEADERS: dict[str, str] = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}

SWAGGER_ASSETS_PATH = "/static/swagger-ui"
SWAGGER_INIT_JS = "/static/swagger-init.js"

_INLINE_SCRIPT = re.compile(
    r"<script\b(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.IGNORECASE | re.DOTALL
)
_INLINE_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.IGNORECASE | re.DOTALL)


def csp_hash(source: str) -> str:
    """The CSP source expression allowing exactly this inline script or style text."""
    digest = hashlib.sha256(source.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


def inline_hashes(markup: str) -> tuple[list[str], list[str]]:
    """(script hashes, style hashes) of the inline ``<script>``/``<style>`` elements of
    ``markup``. Only for markup this app writes itself (a template, never user data)."""
    scripts = [csp_hash(m) for m in _INLINE_SCRIPT.findall(markup)]
    styles = [csp_hash(m) for m in _INLINE_STYLE.findall(markup)]
    return scripts, styles


def content_security_policy(
    *, script_hashes: Iterable[str] = (), style_hashes: Iterable[str] = ()
) -> str:
    """The HTML pages' policy, allowing the given inline script/style hashes."""
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'", *script_hashes],
        "style-src": ["'self'", *style_hashes],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(
        f"{name} {' '.join(dict.fromkeys(values))}" for name, values in directives.items()
    )


def template_inline_hashes(env: Any, name: str) -> tuple[list[str], list[str]]:
    """(script, style) hashes of the inline elements of Jinja2 template ``name`` as ``env``
    renders them. Each element is rendered alone, without context: only for elements whose
    content is static (includes of static files, no variables). An element that needs a
    context is skipped with a warning (the page's CSP will then block it)."""
    source, _, _ = env.loader.get_source(env, name)
    scripts: list[str] = []
    styles: list[str] = []
    for pattern, out in ((_INLINE_SCRIPT, scripts), (_INLINE_STYLE, styles)):
        for match in pattern.finditer(source):
            try:
                rendered = env.from_string(match.group(0)).render()
            except jinja2.TemplateError as exc:  # e.g. StrictUndefined: not static
                log.warning("inline element of %s is not static, not hashed: %s", name, exc)
                continue
            found = _INLINE_SCRIPT if out is scripts else _INLINE_STYLE
            out.extend(csp_hash(m) for m in found.findall(rendered))
    return scripts, styles


def security_headers_hook(
    *, script_hashes: Iterable[str] = (), style_hashes: Iterable[str] = ()
) -> BeforeMessageSendHookHandler:
    """A ``before_send`` hook adding :data:`SECURITY_HEADERS` to every response, and a CSP
    (allowing these hashes) to HTML responses that carry none of their own."""
    csp = content_security_policy(script_hashes=script_hashes, style_hashes=style_hashes)

    async def add_security_headers(message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        headers = MutableScopeHeaders.from_message(message)
        for name, value in SECURITY_HEADERS.items():
            if name not in headers:
                headers[name] = value
        content_type = headers.get("content-type", "")
        if content_type.startswith("text/html") and "content-security-policy" not in headers:
            headers["content-security-policy"] = csp

    return add_security_headers


def swagger_ui_dir() -> Path | None:
    """The Swagger UI dist files of the ``swagger-ui-py`` wheel (not imported), or None."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


class LocalSwaggerRenderPlugin(SwaggerRenderPlugin):
    """Swagger UI at ``/schema/swagger`` with every asset from this app and no inline
    script or style (the spec is fetched from ``/schema/openapi.json``)."""

    def __init__(self, assets: str = SWAGGER_ASSETS_PATH, init_js: str = SWAGGER_INIT_JS) -> None:
        super().__init__(
            js_url=f"{assets}/swagger-ui-bundle.js",
            css_url=f"{assets}/swagger-ui.css",
            standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
            favicon=f'<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">',
            style=f'<link rel="stylesheet" href="{assets}/index.css">',
        )
        self.init_js = init_js

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(openapi_schema["info"]["title"]))
        spec_url = html.escape(self.get_openapi_json_route(request))
        page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{self.favicon}
<link rel="stylesheet" href="{self.css_url}">
{self.style}
</head>
<body>
<div id="swagger-container" data-spec-url="{spec_url}"></div>
<script src="{self.js_url}"></script>
<script src="{self.standalone_preset_js_url}"></script>
<script src="{self.init_js}"></script>
</body>
</html>
"""
        return page.encode("utf-8")

    def receive_router(self, router: Router) -> None:
        """No OAuth2 redirect page: the API has no OAuth (and that page is inline script)."""
        return


def dashboard_style_hashes() -> list[str]:
    """Hashes of the evaluation dashboard's static inline ``<style>`` (its CSS file)."""
    return template_inline_hashes(dashboard.TEMPLATES, "dashboard.html.j2")[1]
