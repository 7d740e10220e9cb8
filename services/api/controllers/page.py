"""The storefront page at ``/``: static HTML + CSS + vanilla JS (no build step)."""

from __future__ import annotations

import json
from pathlib import Path

from litestar import Controller, MediaType, Response, get
from litestar.di import NamedDependency

from services.api.runtime import Runtime
from services.api.schemas import MAX_K, MAX_TEXT_CHARS
from services.api.security import content_security_policy, inline_hashes

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"


class PageController(Controller):
    include_in_schema = False

    @get("/", sync_to_thread=False, media_type=MediaType.HTML)
    def index(self, runtime: NamedDependency[Runtime]) -> Response[str]:
        s = runtime.settings
        config = {
            "defaultAlpha": s.default_alpha,
            "defaultAlphaMultimodal": s.default_alpha_multimodal,
            "maxUploadBytes": s.max_upload_bytes,
            "maxK": MAX_K,
            "maxTextChars": MAX_TEXT_CHARS,
        }
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        html = html.replace("__CONFIG__", json.dumps(config)).replace(
            "__DEFAULT_ALPHA__", f"{s.default_alpha:.2f}"
        )
        # The page's one inline script (the config above) is allowed by its hash, nothing else.
        scripts, styles = inline_hashes(html)
        csp = content_security_policy(script_hashes=scripts, style_hashes=styles)
        return Response(
            html,
            media_type=MediaType.HTML,
            headers={"Cache-Control": "no-cache", "Content-Security-Policy": csp},
        )
