"""The conformance checks of the fuzzing (tests/test_fuzz.py, benchmarks/bench_fuzz.py): every
check of schemathesis's ``--checks all`` (4.32.5) that a stateless run can fail on, and the
ones that cannot, kept so that a future stateful run or an auth scheme arms them.

``negative_data_rejection`` runs through :func:`rejects_invalid_data`. schemathesis 4.32.5
excuses a negative form whose fields turn valid once sent, but it cannot read a form with a
file part (its validator fails on the image bytes: "Unsupported type: 'Binary'"), so a
multipart search with an image that its negative generation left valid (its record of the
case: "Positive test case", no mutation) counted as "invalid data accepted". The wrapper
validates such a form itself with schemathesis's own validator, on the operation's schema,
the image part taken as the string the schema declares (``format: binary``) and empty
lists and objects left out as they send no part: a form that
satisfies the schema is not negative data, and is left out (counted in :data:`SKIPPED`);
every other negative case, of every operation, is checked. Measured before the wrapper
(``bench_fuzz.py --requests 1200 --per-operation 300``): 5 of 92 negative forms with an
image "accepted", each valid by the schema; 0 of 48 without an image. After: those 5 left
out, 0 failures.
"""

from __future__ import annotations

import collections
import io

import httpx
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.jsonschema import make_validator
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)

# Negative cases left out because the form as sent satisfies its schema, by operation.
SKIPPED: collections.Counter = collections.Counter()


def _placeholder(value):
    """A file part as the schema sees it: a string (``format: binary``)."""
    return (
        "" if isinstance(value, (bytes, bytearray)) or type(value).__name__ == "Binary" else value
    )


def _empty(value) -> bool:
    return isinstance(value, (list, dict)) and not value


def form_satisfies_schema(case) -> bool:
    """True for a multipart case whose fields satisfy the operation's multipart schema, the
    file parts taken as the strings the schema declares (validated as schemathesis validates
    a body: its own validator, on the operation's schema for that media type)."""
    media_type = case.media_type or ""
    if not media_type.startswith("multipart/") or not isinstance(case.body, dict):
        return False
    body = case.operation.get_body_for_media_type(media_type)
    if body is None:
        return False
    validator = make_validator(
        body.optimized_schema, case.operation.schema.adapter.jsonschema_validator_cls
    )
    # Empty lists and objects put no part on the wire (as schemathesis reads a form).
    sent = {k: _placeholder(v) for k, v in case.body.items() if not _empty(v)}
    return validator.is_valid(sent)


def rejects_invalid_data(ctx, response, case):
    """``negative_data_rejection`` on every negative case but a form that satisfies its
    schema (module docstring)."""
    if (
        case.meta is not None
        and case.meta.generation.mode.is_negative
        and form_satisfies_schema(case)
    ):
        SKIPPED[f"{case.operation.label} {case.media_type}"] += 1
        return None
    return negative_data_rejection(ctx, response, case)


rejects_invalid_data.__name__ = "negative_data_rejection"  # reported under its own name

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    positive_data_acceptance,  # schema-valid input is answered 2xx (or 404, 503)
    rejects_invalid_data,  # schema-invalid input is answered 4xx
    unsupported_method,  # a method the path does not declare: 405 with Allow
    allow_header_conformance,  # OPTIONS' Allow lists exactly the declared methods
    missing_required_header,  # vacuous: no operation declares a required header
    ignored_auth,  # vacuous: no operation declares security
    use_after_free,  # vacuous: no DELETE, and stateless cases have no parent case
    ensure_resource_availability,  # vacuous: no POST creates a resource
]


def _image(fmt: str, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def register_image_media_types() -> None:
    """Real files for the image part of a multipart search (its ``encoding`` names the
    formats): schemathesis draws the bytes of a declared media type from a registered
    strategy, and a random byte string is no JPEG."""
    colours = [(200, 30, 30), (20, 20, 160), (240, 240, 240), (10, 120, 40)]
    for mime, fmt in (
        ("image/jpeg", "JPEG"),
        ("image/png", "PNG"),
        ("image/webp", "WEBP"),
        ("image/gif", "GIF"),
        ("image/bmp", "BMP"),
        ("image/tiff", "TIFF"),
    ):
        samples = [_image(fmt, size, c) for c in colours for size in ((16, 16), (48, 32))]
        schemathesis.openapi.media_type(mime, st.sampled_from(samples))


def aim_at_real_searches(case, base_url: str) -> None:
    """A search id only comes from a search response (signed, with the page's positions):
    a positive events batch gets a real search's id, positions on its page and the products
    shown there, and no client time (a generated one is rarely within the search's day), as
    a storefront would send; negative cases keep what was generated."""
    body = case.body
    if not (
        case.path == "/v1/events"
        and case.meta is not None
        and case.meta.generation.mode.is_positive
        and isinstance(body, dict)
        and isinstance(body.get("events"), list)
    ):
        return
    resp = httpx.post(base_url + "/v1/search", json={"text": "shirt", "k": 24}, timeout=120)
    data = resp.json() if resp.status_code == 200 else {}
    shown = [r["id"] for r in data.get("results", ())]
    if not shown or not data.get("search_id"):
        return
    for i, event in enumerate(body["events"]):
        if not isinstance(event, dict):
            continue
        place = i % len(shown)
        event["search_id"] = data["search_id"]
        event["position"] = place + 1
        event["product_id"] = shown[place]
        event.pop("at", None)
