"""Limits at their exact edge, against the real app served by uvicorn (issue #15, item 5).

Each limit is probed at the value itself (accepted) and one past it (refused): the query text
length (JSON and multipart), the image decoder's pixel budget, the upload size. Also: the real
app's 500 path carries only the request id, and an SQL-looking filter value reaches PostgreSQL
as a bound parameter (no results, nothing dropped).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import httpx
import pytest
from api_harness import ServerThread, jpeg_bytes
from api_harness import assert_error as _assert_error

from services.api.schemas import MAX_TEXT_CHARS
from services.encoders.images import MAX_DECODE_PIXELS


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def _text_of_length(n: int) -> str:
    """Words, exactly ``n`` characters after the API's whitespace normalisation."""
    text = ("blue cotton shirt " * (n // 18 + 2))[:n]
    text = text[:-1] + "x"  # never end on a space (normalisation would strip it)
    assert len(" ".join(text.split())) == n
    return text


def _dims(pixels: int) -> tuple[int, int]:
    """(width, height) with width * height == pixels, as square as the factors allow."""
    for h in range(math.isqrt(pixels), 0, -1):
        if pixels % h == 0:
            return pixels // h, h
    raise AssertionError("unreachable")


def _png(size: tuple[int, int]) -> bytes:
    """A 1-bit, single-colour PNG: millions of pixels, a few KB on the wire."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", size, 1).save(buf, "PNG")
    return buf.getvalue()


# --- query text length ---------------------------------------------------------------------
def test_text_at_the_limit_is_searched_one_more_is_422(api):
    at = _text_of_length(MAX_TEXT_CHARS)
    ok = api.post("/v1/search", json={"text": at, "k": 3})
    assert ok.status_code == 200, ok.text
    assert ok.json()["query"]["text"] == at

    over = _assert_error(api.post("/v1/search", json={"text": at + "y", "k": 3}), 422)
    assert str(MAX_TEXT_CHARS) in over["detail"] and "text" in over["detail"]
    assert str(MAX_TEXT_CHARS + 1) in over["detail"]


def test_text_limit_is_the_same_for_multipart(api):
    at = _text_of_length(MAX_TEXT_CHARS)
    ok = api.post("/v1/search", files={"text": (None, at), "k": (None, "3")})
    assert ok.status_code == 200, ok.text
    assert ok.json()["query"]["text"] == at

    over = _assert_error(
        api.post("/v1/search", files={"text": (None, at + "y"), "k": (None, "3")}), 422
    )
    assert str(MAX_TEXT_CHARS) in over["detail"]


def test_text_limit_counts_characters_after_whitespace_is_collapsed(api):
    """Runs of spaces count once: a text padded with spaces to past the limit is still at it."""
    at = _text_of_length(MAX_TEXT_CHARS)
    padded = "   " + at.replace(" ", "   ") + "   "
    assert len(padded) > MAX_TEXT_CHARS
    ok = api.post("/v1/search", json={"text": padded, "k": 3})
    assert ok.status_code == 200, ok.text
    assert ok.json()["query"]["text"] == at


# --- the decoder's pixel budget -------------------------------------------------------------
def test_image_at_the_pixel_budget_is_accepted(api):
    size = _dims(MAX_DECODE_PIXELS)
    assert size[0] * size[1] == MAX_DECODE_PIXELS
    data = _png(size)
    resp = api.post("/v1/search", files={"image": ("at.png", data, "image/png")}, data={"k": "3"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["query"]["image"] is True and resp.json()["results"]


def test_image_one_pixel_over_the_budget_is_422(api):
    size = _dims(MAX_DECODE_PIXELS + 1)
    assert size[0] * size[1] == MAX_DECODE_PIXELS + 1
    data = _png(size)
    body = _assert_error(
        api.post("/v1/search", files={"image": ("over.png", data, "image/png")}), 422
    )
    assert "too large" in body["detail"] and f"{MAX_DECODE_PIXELS:,}" in body["detail"]
    assert f"{size[0]}x{size[1]}" in body["detail"]
    assert api.get("/healthz").status_code == 200


# --- upload size -----------------------------------------------------------------------------
def test_upload_of_exactly_max_upload_bytes_is_accepted_one_more_is_413(app_settings, live):
    from services.api.app import create_app

    image = jpeg_bytes((48, 48), (20, 90, 200))
    small = dataclasses.replace(app_settings, max_upload_bytes=len(image))
    srv = ServerThread(create_app(small)).start()
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            ok = c.post("/v1/search", files={"image": ("q.jpg", image, "image/jpeg")})
            assert ok.status_code == 200, ok.text
            assert ok.json()["results"]
            # the same JPEG with one trailing byte: still decodable, one byte over the limit
            over = c.post("/v1/search", files={"image": ("q.jpg", image + b"\0", "image/jpeg")})
            body = _assert_error(over, 413)
            assert f"{len(image):,}" in body["detail"]
            assert f"{len(image) + 1:,}" in body["detail"]
            # far over (past the whole-body limit as well): still a JSON 413
            huge = b"\xff\xd8\xff" + b"\0" * (len(image) + 512 * 1024)
            _assert_error(c.post("/v1/search", files={"image": ("h.jpg", huge, "image/jpeg")}), 413)
            assert c.get("/healthz").status_code == 200
    finally:
        srv.stop()


# --- the real app's 500 -------------------------------------------------------------------------
def test_a_bug_in_the_real_app_is_a_json_500_with_only_the_request_id(api, monkeypatch, caplog):
    import logging

    from services.api import search_service

    def broken(*args, **kwargs):
        raise RuntimeError("boom secret /srv/internal/path.py")

    monkeypatch.setattr(search_service, "search", broken)
    with caplog.at_level(logging.ERROR, logger="services.api.errors"):
        resp = api.post(
            "/v1/search", json={"text": "red dress"}, headers={"X-Request-ID": "bug-500"}
        )
    body = _assert_error(resp, 500)
    assert body["request_id"] == "bug-500" == resp.headers["x-request-id"]
    assert body["error"] == "internal_error"
    for leak in ("boom", "secret", "Traceback", "RuntimeError", "/srv/internal", ".py"):
        assert leak not in resp.text, resp.text
    # the trace goes to the log instead
    assert any(
        r.exc_info and "boom secret" in str(r.exc_info[1])
        for r in caplog.records
        if r.name == "services.api.errors"
    )
    monkeypatch.undo()
    assert api.post("/v1/search", json={"text": "red dress", "k": 2}).status_code == 200


# --- SQL injection through a filter value ------------------------------------------------------
INJECTIONS = [
    "Red'; DROP TABLE products; --",
    "Red' OR '1'='1",
    'x"; DELETE FROM index_versions; --',
]


def _database_state(conn) -> tuple[int, int, int]:
    products = conn.execute("SELECT count(*) FROM products").fetchone()[0]
    live_rows = conn.execute(
        "SELECT row_count FROM index_versions WHERE status = 'live'"
    ).fetchone()[0]
    versions = conn.execute("SELECT count(*) FROM index_versions").fetchone()[0]
    conn.commit()
    return products, live_rows, versions


@pytest.mark.parametrize("value", INJECTIONS)
def test_sql_in_a_filter_value_is_just_a_value(api, conn, live, value):
    before = _database_state(conn)
    colour = max(
        {r["baseColour"] for r in live.rows if r["baseColour"]},
        key=lambda c: sum(r["baseColour"] == c for r in live.rows),
    )
    alone = api.post("/v1/search", json={"text": "shirt", "filters": {"baseColour": value}})
    assert alone.status_code == 200, alone.text
    assert alone.json()["results"] == []
    both = api.post(
        "/v1/search", json={"text": "shirt", "k": 50, "filters": {"baseColour": [colour, value]}}
    )
    assert both.status_code == 200, both.text
    results = both.json()["results"]
    assert results and {r["metadata"]["baseColour"] for r in results} == {colour}
    anded = api.post(
        "/v1/search", json={"text": "shirt", "filters": {"baseColour": colour, "gender": value}}
    )
    assert anded.status_code == 200 and anded.json()["results"] == []
    form = api.post(
        "/v1/search",
        files={"text": (None, "shirt"), "filters": (None, json.dumps({"articleType": value}))},
    )
    assert form.status_code == 200, form.text
    assert form.json()["results"] == []
    assert conn.execute("SELECT to_regclass('public.products') IS NOT NULL").fetchone()[0]
    assert _database_state(conn) == before
    assert api.get("/readyz").status_code == 200
