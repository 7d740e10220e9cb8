"""The API's strict edges (issue #27), over real HTTP against the real app (tests/api_harness.py):

1. Host allow-list: loopback names (any port) and ``FASHION_ALLOWED_HOSTS`` are served; any
   other Host is a 400 with the API's JSON error body and the security headers, on every
   route (API, pages, static files, the schema, unknown paths).
2. Strict content types: a search body is ``application/json`` (any case, with parameters)
   or ``multipart/form-data``; anything else, or none, is a 415 naming both.
3. HEAD wherever GET works: same status and headers, no body; HEAD on a POST-only path 405.
4. A text of invisible characters only is no text: 422 exactly as whitespace.
5. The OpenAPI document says what the API does: the regressions of five disagreements.
"""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from api_harness import ServerThread, assert_error, jpeg_bytes

from services.api.security import SECURITY_HEADERS

FOREIGN = "evil.example"
HOST_DETAIL = (
    "Host {!r} is not served here; use a loopback address or a name in FASHION_ALLOWED_HOSTS"
)
ACCEPTED = (
    "send a search as Content-Type application/json or multipart/form-data (with its boundary)"
)
NO_TEXT = "give a text, an image, or both"
# Headers that differ between two answers to the same request.
PER_RESPONSE = {"date", "x-request-id", "server-timing"}


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def spec(api) -> dict:
    return api.get("/schema/openapi.json").json()


def _security_headers(resp: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value, (name, resp.headers)


# --- 1. Host allow-list ------------------------------------------------------------------------
FOREIGN_PATHS = [
    ("POST", "/v1/search"),
    ("GET", "/"),
    ("GET", "/dashboard"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/static/app.css"),
    ("GET", "/schema"),
    ("GET", "/schema/openapi.json"),
    ("GET", "/v1/suggest?q=jac"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize("method, path", FOREIGN_PATHS)
def test_a_foreign_host_is_refused_with_a_json_400(api, method, path):
    resp = api.request(method, path, headers={"Host": FOREIGN}, json={"text": "red dress"})
    body = assert_error(resp, 400)
    assert body == {
        "status_code": 400,
        "error": "bad_request",
        "detail": HOST_DETAIL.format(FOREIGN),
        "request_id": resp.headers["x-request-id"],
    }
    _security_headers(resp)
    assert resp.headers["content-length"] == str(len(resp.content))


def test_a_foreign_host_with_a_port_is_refused_as_sent(api):
    resp = api.get("/healthz", headers={"Host": "evil.example:8000"})
    assert assert_error(resp, 400)["detail"] == HOST_DETAIL.format("evil.example:8000")


@pytest.mark.parametrize(
    "host", ["localhost:8000", "localhost", "LOCALHOST:1", "127.0.0.1", "127.0.0.1:9", "[::1]:8000"]
)
def test_loopback_hosts_are_served(api, host):
    resp = api.get("/healthz", headers={"Host": host})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"status": "ok"}
    search = api.post("/v1/search", headers={"Host": host}, json={"text": "red dress"})
    assert search.status_code == 200, search.text


def test_the_test_clients_use_loopback_hosts(server):
    """The harness's and the benchmarks' servers are reached by 127.0.0.1, so the default
    allow-list serves them."""
    from pathlib import Path

    assert server.url.startswith("http://127.0.0.1:")
    bench = (Path(__file__).resolve().parent.parent / "benchmarks" / "bench_api.py").read_text()
    assert 'f"http://127.0.0.1:{' in bench


def test_allowed_hosts_come_from_the_environment(monkeypatch):
    from services.config import Settings

    monkeypatch.setenv("FASHION_ALLOWED_HOSTS", " shop.example.com, *.cdn.example ,")
    assert Settings.from_env().allowed_hosts == ("shop.example.com", "*.cdn.example")
    monkeypatch.delenv("FASHION_ALLOWED_HOSTS")
    assert Settings.from_env().allowed_hosts == ()


def test_names_in_fashion_allowed_hosts_are_served(app_settings, live):
    from services.api.app import create_app

    settings = dataclasses.replace(
        app_settings, allowed_hosts=("Shop.Example.com", "*.cdn.example")
    )
    srv = ServerThread(create_app(settings, load_models=False)).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for host in ("shop.example.com", "SHOP.example.com:443", "img.cdn.example", "[::1]"):
                resp = c.get("/healthz", headers={"Host": host})
                assert resp.status_code == 200, (host, resp.text)
                page = c.get("/", headers={"Host": host})
                assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            for host in ("example.com", "cdn.example", "shop.example.com.evil.example"):
                resp = c.get("/healthz", headers={"Host": host})
                assert assert_error(resp, 400)["detail"] == HOST_DETAIL.format(host)
    finally:
        srv.stop()


# --- 2. strict content types -------------------------------------------------------------------
@pytest.mark.parametrize(
    "content_type, shown",
    [
        ("text/plain", "Content-Type 'text/plain'"),
        ("application/x-www-form-urlencoded", "Content-Type 'application/x-www-form-urlencoded'"),
        ("text/xml", "Content-Type 'text/xml'"),
        ("application/jsonx", "Content-Type 'application/jsonx'"),
        (None, "no Content-Type"),
    ],
)
def test_a_json_body_needs_application_json(api, content_type, shown):
    headers = {"content-type": content_type} if content_type else {}
    resp = api.post("/v1/search", content=b'{"text": "red dress"}', headers=headers)
    body = assert_error(resp, 415)
    assert body["error"] == "unsupported_media_type"
    assert body["detail"] == f"{ACCEPTED}; got {shown}"
    _security_headers(resp)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/JSON; charset=utf-8", "Application/Json"]
)
def test_application_json_is_accepted_in_any_case_with_parameters(api, content_type):
    resp = api.post(
        "/v1/search", content=b'{"text": "red dress"}', headers={"content-type": content_type}
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["query"]["text"] == "red dress"


def test_multipart_is_accepted_in_any_case(api):
    boundary = "edgeboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\nred dress\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    resp = api.post(
        "/v1/search",
        content=body,
        headers={"content-type": f"Multipart/Form-Data; boundary={boundary}"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["query"]["text"] == "red dress"


def test_the_schema_lists_415_on_the_body_route(spec):
    responses = spec["paths"]["/v1/search"]["post"]["responses"]
    assert "415" in responses
    assert "application/json nor multipart/form-data" in responses["415"]["description"]
    assert set(spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]) == {
        "application/json",
        "multipart/form-data",
    }


def test_every_operation_lists_the_host_400(spec):
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert "400" in op["responses"], (method, path)
            assert "FASHION_ALLOWED_HOSTS" in op["responses"]["400"]["description"], path


# --- 3. HEAD wherever GET works ----------------------------------------------------------------
def _get_paths(live) -> list[str]:
    pid = live.rows[0]["id"]
    return [
        "/healthz",
        "/readyz",
        "/",
        "/static/app.css",
        "/static/app.js",
        "/schema/openapi.json",
        "/schema/swagger",
        "/v1/suggest?q=jac",
        "/v1/index",
        "/v1/facets",
        "/v1/events/stats",
        "/analytics",
        "/analytics/daily.csv",
        f"/v1/products/{pid}",
        f"/v1/products/{pid}/image",
        f"/v1/products/{pid}/similar?k=3",
        "/v1/products/987654321",  # a 404 is the same 404
        "/dashboard",
        "/dashboard/data.json",
    ]


STATIC_BODIES = {"/healthz", "/", "/static/app.css", "/static/app.js", "/schema/openapi.json"}


def test_head_answers_as_get_without_the_body(api, live):
    for path in _get_paths(live):
        got = api.get(path)
        head = api.head(path)
        assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
        assert head.content == b"", path
        varying = PER_RESPONSE | {"content-length"}  # took_ms: a search's length varies
        same = {k: v for k, v in got.headers.items() if k not in varying}
        assert {k: v for k, v in head.headers.items() if k not in varying} == same, path
        assert ("content-length" in head.headers) == ("content-length" in got.headers), path
        if path in STATIC_BODIES:
            assert int(head.headers["content-length"]) == len(got.content), path


def test_head_healthz_has_the_security_headers(api):
    resp = api.head("/healthz")
    assert resp.status_code == 200
    assert resp.content == b""
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["content-length"] == str(len(b'{"status":"ok"}'))
    _security_headers(resp)


def test_head_on_a_post_route_is_405(api):
    resp = api.head("/v1/search")
    assert resp.status_code == 405
    assert resp.content == b""
    assert set(resp.headers["allow"].split(", ")) == {"POST", "OPTIONS"}
    _security_headers(resp)


def test_head_with_a_foreign_host_is_refused_without_a_body(api):
    resp = api.head("/healthz", headers={"Host": FOREIGN})
    assert resp.status_code == 400 and resp.content == b""
    _security_headers(resp)


def test_head_is_not_an_operation_of_the_schema(spec):
    assert not [path for path, item in spec["paths"].items() if "head" in item]


# --- 4. invisible text is no text --------------------------------------------------------------
INVISIBLE = ["\u200b", "\u0301", "\u202e", "\u200b \u200d", "\ufeff\u2060", "\u3164", "\t\u00a0"]


@pytest.mark.parametrize("text", INVISIBLE, ids=lambda t: t.encode("unicode_escape").decode())
def test_invisible_only_text_is_refused_as_whitespace_is(api, text):
    blank = assert_error(api.post("/v1/search", json={"text": "   "}), 422)
    invisible = assert_error(api.post("/v1/search", json={"text": text}), 422)
    assert invisible["detail"] == blank["detail"] == NO_TEXT
    assert invisible["error"] == blank["error"] == "invalid_request"
    form = assert_error(api.post("/v1/search", files={"text": (None, text.encode())}), 422)
    assert form["detail"] == NO_TEXT


def test_invisible_text_beside_an_image_is_an_image_search(api):
    resp = api.post(
        "/v1/search",
        files={"image": ("q.jpg", jpeg_bytes(), "image/jpeg")},
        data={"text": "\u200b\u200d"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["query"]["text"] is None and resp.json()["query"]["image"] is True


@pytest.mark.parametrize("text", ["red\u200b dress", "caf\u00e9", "cafe\u0301", "\u202ered dress"])
def test_visible_text_with_invisible_characters_still_searches(api, text):
    resp = api.post("/v1/search", json={"text": text})
    assert resp.status_code == 200, resp.text
    assert resp.json()["results"]


def test_the_schema_pattern_agrees_with_the_api(spec):
    import re

    pattern = spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["properties"]["text"]["pattern"]
    for text in [*INVISIBLE, " ", ""]:
        assert not re.search(pattern, text), repr(text)
    for text in ["red\u200b dress", "a", "\u202ered", "x"]:
        assert re.search(pattern, text), repr(text)


def test_suggest_treats_invisible_text_as_blank(api):
    blank = api.get("/v1/suggest", params={"q": " "})
    invisible = api.get("/v1/suggest", params={"q": "\u200b"})
    assert blank.status_code == invisible.status_code == 200
    assert invisible.json()["suggestions"] == blank.json()["suggestions"] == []


# --- 5. the OpenAPI document says what the API does --------------------------------------------
def _form(**fields: str) -> dict:
    """httpx kwargs of a multipart/form-data body of plain text fields."""
    return {"files": {name: (None, value.encode()) for name, value in fields.items()}}


def _search_form_schema(spec) -> dict:
    return spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]["multipart/form-data"]


def test_similar_k_bounds_are_in_the_schema_and_enforced(api, spec, live):
    params = {
        p["name"]: p
        for p in spec["paths"]["/v1/products/{product_id}/similar"]["get"]["parameters"]
    }
    assert params["k"]["schema"]["minimum"] == 1 and params["k"]["schema"]["maximum"] == 100
    assert params["alpha"]["schema"]["minimum"] == 0 and params["alpha"]["schema"]["maximum"] == 1
    pid = live.rows[0]["id"]
    for k in (0, 101):
        body = assert_error(api.get(f"/v1/products/{pid}/similar", params={"k": k}), 422)
        assert body["detail"] == f"k must be in 1..100, got {k}"
    assert api.get(f"/v1/products/{pid}/similar", params={"k": 100}).status_code == 200
    # found by bench_fuzz (seed 7): the text "null" read as no alpha (the default)
    body = assert_error(api.get(f"/v1/products/{pid}/similar", params={"alpha": "null"}), 422)
    assert body["detail"] == "alpha must be a number, not null (leave the parameter out)"
    assert api.get(f"/v1/products/{pid}/similar", params={"alpha": 0.3}).status_code == 200


def test_an_empty_multipart_search_is_a_listed_422(api, spec):
    form = _search_form_schema(spec)["schema"]
    assert {"required": ["text"]}.items() <= form["anyOf"][0].items()
    assert form["anyOf"][1]["required"] == ["image"]
    assert "422" in spec["paths"]["/v1/search"]["post"]["responses"]
    boundary = "emptyform"
    resp = api.post(
        "/v1/search",
        content=f"--{boundary}--\r\n".encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert assert_error(resp, 422)["detail"] == NO_TEXT


def test_a_pdf_as_image_is_a_listed_415(api, spec):
    encoding = _search_form_schema(spec)["encoding"]["image"]["contentType"]
    assert "application/pdf" not in encoding and "image/jpeg" in encoding
    assert "415" in spec["paths"]["/v1/search"]["post"]["responses"]
    pdf = b"%PDF-1.4\n1 0 obj\n<</Type/Catalog>>\nendobj\ntrailer\n<</Root 1 0 R>>\n%%EOF\n"
    resp = api.post("/v1/search", files={"image": ("a.pdf", pdf, "application/pdf")})
    body = assert_error(resp, 415)
    assert body["error"] == "unsupported_media_type"


def test_non_json_multipart_filters_are_a_listed_400(api, spec):
    form = _search_form_schema(spec)
    assert form["encoding"]["filters"]["contentType"] == "application/json"
    assert form["schema"]["properties"]["filters"]["type"] == "object"
    assert "400" in spec["paths"]["/v1/search"]["post"]["responses"]
    resp = api.post("/v1/search", **_form(text="red dress", filters="{not json"))
    assert assert_error(resp, 400)["detail"].startswith("filters is not valid JSON")
    null = api.post("/v1/search", **_form(text="red dress", filters="null"))
    assert assert_error(null, 422)["detail"].startswith("filters must be a flat JSON object")


@pytest.mark.parametrize("field", ["budget", "candidates", "alpha", "k", "offset"])
def test_multipart_null_is_no_number(api, spec, field):
    prop = _search_form_schema(spec)["schema"]["properties"][field]
    assert prop["type"] in ("integer", "number"), prop
    resp = api.post("/v1/search", **_form(text="red dress", **{field: "null"}))
    body = assert_error(resp, 422)
    assert body["detail"] == f"{field} must be a number, not null (leave the field out)"
    ok = api.post("/v1/search", **_form(text="red dress", budget="100", candidates="100"))
    assert ok.status_code == 200, ok.text
