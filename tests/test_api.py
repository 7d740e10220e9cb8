"""HTTP tests of the API: the real app on uvicorn, the real database, the real offline encoders.

A tiny live index (120 offline products) is built once per module; requests go over
loopback with httpx. Bad input must come back as a JSON 4xx/503, never a 500.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import zipfile

import httpx
import psycopg
import pytest
from api_harness import CATALOG_SIZE, ServerThread, TcpProxy, copy_version, free_port, jpeg_bytes
from api_harness import assert_error as _assert_error

from services.catalog.schema import FACET_FIELDS, brand_from_name
from services.config import get_settings


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _ids(resp: httpx.Response) -> list[int]:
    return [r["id"] for r in resp.json()["results"]]


# --- system endpoints ---------------------------------------------------------------------
def test_health_ready_index_and_schema(api, live):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["database"] == "ok"
    index = api.get("/v1/index").json()
    assert index["version"] == live.version_id and index["row_count"] == CATALOG_SIZE
    assert index["dense_model"] == index["serving_dense_model"] == live.dense_model
    schema = api.get("/schema/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    assert {
        "/v1/search",
        "/v1/products/{product_id}",
        "/v1/products/{product_id}/image",
        "/v1/products/{product_id}/similar",
        "/healthz",
        "/readyz",
        "/v1/index",
        "/v1/facets",
    } <= set(schema["paths"])
    body = schema["paths"]["/v1/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(body)


def test_search_openapi_is_generated_from_the_request_model(api):
    """Both request bodies of POST /v1/search list every SearchRequest field with the model's
    defaults, limits and enums; the multipart one adds the image file, and its filters part is
    the same object sent as JSON (its ``encoding``)."""
    import msgspec

    from services.api.schemas import SearchRequest
    from services.catalog.schema import FILTER_FIELDS

    content = api.get("/schema/openapi.json").json()["paths"]["/v1/search"]["post"]["requestBody"][
        "content"
    ]
    fields = {f.name: f for f in msgspec.structs.fields(SearchRequest)}
    as_json = content["application/json"]["schema"]["properties"]
    form = content["multipart/form-data"]["schema"]["properties"]
    assert set(as_json) == set(fields)
    assert set(form) == set(fields) | {"image"}
    for props in (as_json, form):
        assert props["k"]["default"] == fields["k"].default
        assert (
            props["k"]["maximum"]
            == msgspec.json.schema(SearchRequest)["$defs"]["SearchRequest"]["properties"]["k"][
                "maximum"
            ]
        )
        assert set(props["mode"]["enum"]) == {"hybrid", "dense", "sparse"}
        assert props["mode"]["default"] == fields["mode"].default
        assert props["exact"]["default"] is fields["exact"].default
        for f in FILTER_FIELDS:  # the filter keys come from the product schema
            assert f.name in props["filters"]["description"]
    assert form["image"]["type"] == "string" and form["image"]["format"] == "binary"
    assert form["filters"]["type"] == "object"
    encoding = content["multipart/form-data"]["encoding"]
    assert encoding["filters"]["contentType"] == "application/json"
    assert "object" in json.dumps(as_json["filters"])


def test_image_errors_have_a_type_per_status():
    from services.encoders.images import (
        InvalidImageError,
        UndecodableImage,
        UnsupportedImageFormat,
        decode_image,
    )

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
    for data in (buf.getvalue(), b"just some text", b"%PDF-1.4 ..."):
        with pytest.raises(UnsupportedImageFormat):
            decode_image(data)
    with pytest.raises(UndecodableImage):
        decode_image(jpeg_bytes()[:40])
    assert issubclass(UnsupportedImageFormat, InvalidImageError)
    assert issubclass(UndecodableImage, InvalidImageError)


def test_dashboard_run_parameter_is_validated(api):
    for bad in ("abc", "1.5", "0"):
        body = _assert_error(api.get("/dashboard", params={"run": bad}), 400)
        assert "run: Expected" in body["detail"] and "ParamType" not in body["detail"]
    _assert_error(api.get("/dashboard/data.json", params={"run": "abc"}), 400)
    _assert_error(api.get("/dashboard", params={"run": 2**40}), 404)


def test_facets_list_filter_values(api, live):
    body = api.get("/v1/facets").json()
    facets = body["values"]
    # every facet field of the product schema (the page builds its filter list from these)
    assert list(facets) == [f.name for f in FACET_FIELDS] and "brand" in facets
    assert list(body["labels"]) == list(facets)  # the page lists them in this order
    assert body["labels"]["baseColour"] == "Colour" and body["labels"]["brand"] == "Brand"
    assert set(facets["gender"]) == {r["gender"] for r in live.rows if r["gender"]}
    # brand is derived from the display name when products are stored
    brands = {brand_from_name(r["productDisplayName"]) for r in live.rows}
    assert set(facets["brand"]) == brands - {None} and len(brands) > 3


def test_brand_filter_end_to_end(api, live):
    """catalogue -> index -> /v1/search filter -> result metadata (the field added by the
    product schema table + migration 0004)."""
    brand = max(
        {brand_from_name(r["productDisplayName"]) for r in live.rows} - {None},
        key=lambda b: sum(brand_from_name(r["productDisplayName"]) == b for r in live.rows),
    )
    expected = {r["id"] for r in live.rows if brand_from_name(r["productDisplayName"]) == brand}
    r = api.post("/v1/search", json={"text": "shirt", "k": 100, "filters": {"brand": brand}})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results and {x["id"] for x in results} <= expected
    assert all(x["metadata"]["brand"] == brand for x in results)
    assert all(x["name"].startswith(brand + " ") for x in results)
    both = api.post("/v1/search", json={"text": "shirt", "filters": {"brand": [brand, "Nobody"]}})
    assert {x["id"] for x in both.json()["results"]} <= expected


def test_storefront_page_and_assets(api):
    page = api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="alpha"' in page.text and "__CONFIG__" not in page.text
    assert api.get("/static/app.js").status_code == 200
    assert api.get("/static/app.css").status_code == 200


# --- search ----------------------------------------------------------------------------------
def test_text_search_returns_products_with_scores_and_terms(api, live, app_settings):
    name = live.rows[7]["productDisplayName"]
    resp = api.post("/v1/search", json={"text": name, "k": 5}, headers={"X-Request-ID": "req-123"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-request-id"] == "req-123"
    data = resp.json()
    assert data["index_version"] == live.version_id
    a = app_settings.default_alpha
    assert data["query"]["alpha"] == pytest.approx(a)
    results = data["results"]
    assert len(results) == 5
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    top = results[0]
    assert set(top) >= {
        "id",
        "name",
        "metadata",
        "image_url",
        "score",
        "dense_score",
        "sparse_score",
        "terms",
    }
    assert top["score"] == pytest.approx(
        a * top["dense_score"] + (1 - a) * top["sparse_score"], abs=1e-4
    )
    assert top["terms"], "the top hit for a product's own name shares sparse terms"
    assert all(t["weight"] > 0 for t in top["terms"])
    assert api.get(top["image_url"]).status_code == 200
    cert = data["certificate"]
    assert cert["threshold_met"] is True and cert["path"] in ("fast", "deepened", "exact")
    assert cert["estimated_rows"] == len(live.rows) and cert["routed"] is False
    # exact is claimed only where it is proven: every product scored
    assert cert["exact"] is (cert["path"] == "exact")
    if cert["path"] != "exact":
        assert cert["kth_score"] == pytest.approx(scores[-1], abs=1e-5)
        assert cert["kth_score"] >= cert["bound"]
        assert cert["reason"] == "dense and sparse sides from HNSW"
        # the build check's measure of each HNSW side, quoted with every unproven answer
        recall = cert["hnsw_recall"]
        assert recall["n"] == 150 and recall["queries"] > 0, recall
        assert 0.0 < recall["dense"] <= 1.0 and 0.0 < recall["sparse"] <= 1.0, recall


def test_search_certificate_follows_the_request(api, live):
    """candidates / budget reach the statement; exact is routed; every answer certified
    here (a small index falls back to the exact scan) equals the exact ranking."""
    text = live.rows[3]["productDisplayName"]
    exact = api.post("/v1/search", json={"text": text, "k": 10, "exact": True}).json()
    assert exact["certificate"] | {"bound": None} == {
        "exact": True,
        "reason": None,
        "hnsw_recall": None,
        "threshold_met": True,
        "path": "exact",
        "candidates": None,
        "budget": 1000,
        "bound": None,
        "kth_score": None,
        "estimated_rows": len(live.rows),
        "routed": True,
    }
    ids = [r["id"] for r in exact["results"]]
    for body in ({"candidates": 10, "budget": 10}, {"candidates": 10, "budget": 400}, {}):
        data = api.post("/v1/search", json={"text": text, "k": 10, **body}).json()
        cert = data["certificate"]
        assert cert["threshold_met"] and cert["budget"] == body.get("budget", 1000)
        assert cert["exact"] is (cert["path"] == "exact")
        if cert["path"] == "fast":
            assert cert["candidates"] == body.get("candidates", 150)
        assert [r["id"] for r in data["results"]] == ids


def test_query_embeddings_are_cached(api):
    first = api.post("/v1/search", json={"text": "cached blue jeans query"}).json()
    second = api.post("/v1/search", json={"text": "cached blue jeans query"}).json()
    assert first["cached_embedding"] is False and second["cached_embedding"] is True
    assert [r["id"] for r in first["results"]] == [r["id"] for r in second["results"]]


def test_image_search_finds_the_product_itself(api, live):
    row = live.rows[3]
    resp = api.post(
        "/v1/search", files={"image": ("q.jpg", row["image"], "image/jpeg")}, data={"k": "3"}
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["query"]["image"] is True and data["query"]["alpha"] == 1.0
    assert data["results"][0]["id"] == row["id"]
    # product vectors blend photo and name (dense_image_weight), so the photo's own product
    # scores below 1 but above every other product
    assert data["results"][0]["dense_score"] > data["results"][1]["dense_score"]


def test_multimodal_search_uses_text_and_image(api, live):
    row = live.rows[5]
    resp = api.post(
        "/v1/search",
        files={"image": ("q.png", row["image"], "image/png")},
        data={
            "text": row["productDisplayName"],
            "alpha": "0.7",
            "k": "4",
            "filters": json.dumps({"gender": row["gender"]}),
        },
    )
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["query"]["image"] is True and data["query"]["text"]
    assert data["query"]["alpha"] == pytest.approx(0.7)
    assert data["results"] and all(
        r["metadata"]["gender"] == row["gender"] for r in data["results"]
    )
    assert data["results"][0]["terms"]


def test_default_alpha_depends_on_the_kind_of_query(api, live, app_settings):
    """Without an alpha, text runs with the text default and photo + text with the
    multimodal default (both chosen by the evaluation's alpha sweep)."""
    assert app_settings.default_alpha != app_settings.default_alpha_multimodal
    row = live.rows[7]
    text_only = api.post("/v1/search", json={"text": row["productDisplayName"], "k": 3})
    assert text_only.json()["query"]["alpha"] == pytest.approx(app_settings.default_alpha)
    both = api.post(
        "/v1/search",
        files={"image": ("q.png", row["image"], "image/png")},
        data={"text": "black", "k": "3"},
    )
    assert both.status_code == 200, both.text
    assert both.json()["query"]["alpha"] == pytest.approx(app_settings.default_alpha_multimodal)


def test_modes_and_alpha_change_the_ranking(api, live):
    text = live.rows[11]["productDisplayName"]
    dense = api.post("/v1/search", json={"text": text, "mode": "dense", "k": 20}).json()
    sparse = api.post("/v1/search", json={"text": text, "mode": "sparse", "k": 20}).json()
    assert dense["query"]["alpha"] == 1.0 and sparse["query"]["alpha"] == 0.0
    assert [r["id"] for r in dense["results"]] != [r["id"] for r in sparse["results"]]
    exact = api.post("/v1/search", json={"text": text, "alpha": 0.0, "k": 5, "exact": True})
    assert _ids(exact)[:3] == [r["id"] for r in sparse["results"]][:3]


def test_filters_restrict_results(api, live):
    colour = live.rows[0]["baseColour"]
    resp = api.post(
        "/v1/search", json={"text": "shirt", "filters": {"baseColour": [colour]}, "k": 50}
    )
    assert resp.status_code == 200
    assert resp.json()["results"]
    assert {r["metadata"]["baseColour"] for r in resp.json()["results"]} == {colour}


def test_sql_looking_text_is_just_searched(api, conn):
    # Other test modules share the session database: compare with the count before.
    before = conn.execute("SELECT count(*) FROM products").fetchone()[0]
    conn.commit()
    assert before >= CATALOG_SIZE
    resp = api.post("/v1/search", json={"text": "'; DROP TABLE products; --"})
    assert resp.status_code == 200, resp.text
    assert conn.execute("SELECT count(*) FROM products").fetchone()[0] == before


# --- products -------------------------------------------------------------------------------
def test_product_image_and_similar(api, live):
    row = live.rows[2]
    product = api.get(f"/v1/products/{row['id']}").json()
    assert product["name"] == row["productDisplayName"]
    assert product["metadata"]["baseColour"] == row["baseColour"]
    image = api.get(f"/v1/products/{row['id']}/image")
    assert image.status_code == 200 and image.headers["content-type"].startswith("image/")
    assert image.content == row["image"]
    similar = api.get(f"/v1/products/{row['id']}/similar", params={"k": 6, "alpha": 0.5})
    assert similar.status_code == 200, similar.text
    ids = _ids(similar)
    assert len(ids) == 6 and row["id"] not in ids


def test_unknown_product_is_404(api):
    for path in (
        "/v1/products/987654321",
        "/v1/products/987654321/image",
        "/v1/products/987654321/similar",
        "/v1/products/99999999999999999999",
    ):
        _assert_error(api.get(path), 404)


# --- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body, status",
    [
        ({}, 422),  # neither text nor image
        ({"text": "   "}, 422),  # whitespace is no text
        ({"text": "dress", "alpha": 1.5}, 422),
        ({"text": "dress", "alpha": -0.1}, 422),
        ({"text": "dress", "k": 0}, 422),
        ({"text": "dress", "k": -3}, 422),
        ({"text": "dress", "k": 10_000}, 422),
        ({"text": "dress", "k": "ten"}, 422),
        ({"text": "dress", "filters": {"price": "x"}}, 422),  # unknown filter
        ({"text": "dress", "filters": {"gender": 3}}, 422),
        ({"text": "dress", "mode": "fuzzy"}, 422),
        ({"text": "dress", "colour": "red"}, 422),  # unknown field
        ({"text": "x" * 100_000}, 422),  # 100 KB text: refused, not truncated
        ({"text": "dress", "candidates": 0}, 422),
        ({"text": "dress", "budget": 10_001}, 422),
    ],
)
def test_invalid_search_requests(api, body, status):
    _assert_error(api.post("/v1/search", json=body), status)


def test_malformed_and_unsupported_bodies(api):
    _assert_error(
        api.post(
            "/v1/search", content=b'{"text": "dress",', headers={"content-type": "application/json"}
        ),
        400,
    )
    _assert_error(
        api.post("/v1/search", content=b"", headers={"content-type": "application/json"}), 400
    )
    _assert_error(
        api.post("/v1/search", content=b"<q/>", headers={"content-type": "text/xml"}), 415
    )
    _assert_error(
        api.post(
            "/v1/search",
            files={"image": ("q.jpg", jpeg_bytes(), "image/jpeg")},
            data={"filters": "{not json"},
        ),
        400,
    )


def test_sparse_mode_needs_text(api):
    body = _assert_error(
        api.post(
            "/v1/search",
            files={"image": ("q.jpg", jpeg_bytes(), "image/jpeg")},
            data={"mode": "sparse"},
        ),
        422,
    )
    assert "text" in body["detail"]


def test_oversized_upload_is_413(api):
    big = b"\xff\xd8\xff" + b"\0" * (50 * 1024 * 1024)
    _assert_error(api.post("/v1/search", files={"image": ("big.jpg", big, "image/jpeg")}), 413)


def test_upload_just_over_the_image_limit_is_413(api, settings):
    data = b"\xff\xd8\xff" + b"\0" * settings.max_upload_bytes
    _assert_error(api.post("/v1/search", files={"image": ("big.jpg", data, "image/jpeg")}), 413)


def test_non_image_uploads(api):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "hello")
    _assert_error(
        api.post("/v1/search", files={"image": ("photo.jpg", buf.getvalue(), "image/jpeg")}), 415
    )
    _assert_error(
        api.post("/v1/search", files={"image": ("a.jpg", b"just some text", "image/jpeg")}), 415
    )
    corrupt = jpeg_bytes()[:40]  # a JPEG header and nothing else
    _assert_error(api.post("/v1/search", files={"image": ("c.jpg", corrupt, "image/jpeg")}), 422)


def test_huge_pixel_count_image_is_refused_or_downscaled(api):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (10_000, 10_000), 1).save(buf, "PNG")  # 100 Mpx, a few KB on the wire
    resp = api.post("/v1/search", files={"image": ("huge.png", buf.getvalue(), "image/png")})
    assert resp.status_code in (200, 422), resp.text
    if resp.status_code == 422:
        assert "too large" in resp.json()["detail"]
    assert api.get("/healthz").status_code == 200


# --- failures of the platform ---------------------------------------------------------------------
def test_database_down_gives_503_and_healthz_stays_up(app_settings, live):
    from services.api.app import create_app

    closed = free_port()
    down = dataclasses.replace(
        app_settings, database_url_override=f"postgresql://postgres@127.0.0.1:{closed}/fashion_test"
    )
    app = create_app(down, pool_timeout=0.5)
    srv = ServerThread(app).start()
    try:
        app.state.runtime.wait_for_models(60)
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.get("/healthz").status_code == 200
            body = _assert_error(c.post("/v1/search", json={"text": "red dress"}), 503)
            assert "database" in body["detail"] and body["request_id"]
            ready = c.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unavailable")
            _assert_error(c.get("/v1/products/1"), 503)
    finally:
        srv.stop()


def test_recovers_when_the_database_comes_back(app_settings, live):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from services.api.app import create_app

    db = conninfo_to_dict(app_settings.database_url)
    proxy = TcpProxy(int(db["port"]))
    proxy.restore()
    via_proxy = dataclasses.replace(
        app_settings,
        database_url_override=make_conninfo(app_settings.database_url, port=proxy.port),
    )
    srv = ServerThread(create_app(via_proxy, pool_timeout=1.0)).start()
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.post("/v1/search", json={"text": "watch"}).status_code == 200
            proxy.cut()
            _assert_error(c.post("/v1/search", json={"text": "watch"}), 503)
            assert c.get("/readyz").status_code == 503
            proxy.restore()
            statuses = []
            for _ in range(40):  # the pool reconnects by itself; no restart
                statuses.append(c.post("/v1/search", json={"text": "watch"}).status_code)
                if statuses[-1] == 200:
                    break
            assert statuses[-1] == 200, statuses
            assert c.get("/readyz").status_code == 200
    finally:
        srv.stop()
        proxy.cut()


def test_a_dead_pooled_connection_is_retried_not_a_503(
    app_settings, live, conn, monkeypatch, caplog
):
    """Busy pooled connections are not checked before use (one round trip saved per
    request): a search that finds its connection dead runs again on another."""
    import services.api.runtime as runtime_module
    from services.api.app import create_app

    monkeypatch.setattr(runtime_module, "POOL_CHECK_IDLE_S", 3600.0)  # never checked here
    # one pooled connection, the searches': query understanding's checks would hold another,
    # and a pool of one keeps the type-ahead's warm-up on that same connection
    app = create_app(dataclasses.replace(app_settings, understanding=False, api_pool_size=1))
    srv = ServerThread(app).start()
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            assert c.post("/v1/search", json={"text": "watch"}).status_code == 200
            with app.state.runtime.pool.connection() as pooled:
                pid = pooled.info.backend_pid
            # the scratch role may end the search role's session (pg_signal_backend)
            with psycopg.connect(app_settings.scratch_url_for("postgres")) as killer:
                killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
            conn.commit()
            with caplog.at_level(logging.INFO, logger="services.api.runtime"):
                resp = c.post("/v1/search", json={"text": "watch"})
            assert resp.status_code == 200, resp.text
            assert "pooled connection was dead" in caplog.text
    finally:
        srv.stop()


def test_searches_follow_swaps_and_dropped_versions_at_once(api, live, conn):
    """The API caches the live version; each search checks it in its own statement, so a
    swap (or the old version's table dropped) is seen by the very next search."""
    from psycopg import sql

    from services.store import index_versions as iv

    def served() -> int:
        resp = api.post("/v1/search", json={"text": "watch"})
        assert resp.status_code == 200, resp.text
        return resp.json()["index_version"]

    assert served() == live.version_id
    first = copy_version(conn, live.version_id)
    second = copy_version(conn, live.version_id)
    try:
        iv.swap_live(conn, first)
        assert served() == first  # the cached version is no longer live
        iv.swap_live(conn, second)
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(iv.table_name(first))))
        conn.execute("UPDATE index_versions SET status = 'retired' WHERE id = %s", (first,))
        conn.commit()
        assert served() == second  # the cached version's table is gone
    finally:
        iv.swap_live(conn, live.version_id)
        conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(iv.table_name(second)))
        )
        conn.execute(
            "UPDATE index_versions SET status = 'retired' WHERE id IN (%s, %s)", (first, second)
        )
        conn.commit()
    assert served() == live.version_id


def test_search_reports_where_its_time_went(api, live):
    resp = api.post("/v1/search", json={"text": "blue shirt"})
    assert resp.status_code == 200
    phases = {
        part.split(";dur=")[0].strip(): float(part.split(";dur=")[1])
        for part in resp.headers["server-timing"].split(",")
    }
    assert set(phases) == {"encode", "wait", "db", "build", "thread"}
    assert all(ms >= 0 for ms in phases.values())
    assert phases["encode"] + phases["wait"] + phases["db"] <= resp.json()["took_ms"] + 0.01


def test_no_live_index_is_503(empty_db):
    """An app on a database of its own with no index version (the module's index is untouched)."""
    from services.api.app import create_app

    app = create_app(get_settings())
    srv = ServerThread(app).start()
    try:
        app.state.runtime.wait_for_models(60)
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            body = _assert_error(c.post("/v1/search", json={"text": "dress"}), 503)
            assert "no index version is live" in body["detail"]
            assert c.get("/readyz").json()["checks"]["index"] == "no live index version"
    finally:
        srv.stop()


def test_unexpected_errors_are_generic_json_500_with_request_id(caplog):
    """A handler bug: JSON 500 with the request id, trace only in the log."""
    from litestar import Litestar, get
    from litestar.testing import TestClient

    from services.api.errors import EXCEPTION_HANDLERS
    from services.api.logs import request_id_middleware

    @get("/boom", sync_to_thread=False)
    def boom() -> None:
        raise RuntimeError("secret internals")

    app = Litestar(
        [boom],
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=[request_id_middleware],
        logging_config=None,
    )
    with caplog.at_level(logging.INFO), TestClient(app) as c:
        resp = c.get("/boom")
    body = _assert_error(resp, 500)
    assert "secret" not in resp.text and body["request_id"] == resp.headers["x-request-id"]
    assert any(
        "secret internals" in (r.exc_text or "") or r.exc_info
        for r in caplog.records
        if r.name == "services.api.errors"
    )
    access = [r for r in caplog.records if r.name == "services.api.access"]
    assert access and access[-1].request_id == body["request_id"] and access[-1].status == 500


@pytest.mark.parametrize(
    "params, status",
    [
        ({"k": 0}, 422),
        ({"k": 101}, 422),
        ({"alpha": 1.5}, 422),
        ({"alpha": -0.1}, 422),
        ({"k": "many"}, 400),  # does not parse
    ],
)
def test_similar_parameters_are_checked_once_at_the_edge(api, live, params, status):
    pid = live.rows[0]["id"]
    r = api.get(f"/v1/products/{pid}/similar", params=params)
    assert r.status_code == status, r.text
    assert r.json()["status_code"] == status and r.json()["detail"]
