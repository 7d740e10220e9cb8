"""Query understanding through the real API (tiny live index, real encoders, real database):
what the response says was understood, ``literal`` ranking exactly as before understanding
existed, removing a chip (``ignore``), and a merchandiser rule reaching a running API.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from api_harness import jpeg_bytes


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        deadline = time.monotonic() + 120
        while not client.get("/readyz").json()["checks"]["understanding"].startswith("ready"):
            assert time.monotonic() < deadline, "query understanding never became ready"
            time.sleep(0.5)
        yield client


def _search(api, **body) -> dict:
    resp = api.post("/v1/search", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _attr_keys(data: dict) -> set[str]:
    return {a["key"] for a in data["understood"]["attributes"]}


def test_readiness_reports_the_understanding(api):
    checks = api.get("/readyz").json()["checks"]
    assert checks["understanding"].startswith("ready: ") and "phrases" in checks["understanding"]


def test_a_misspelt_word_is_corrected_and_said(api, live):
    assert any(r["articleType"] == "Jackets" for r in live.rows), "the tiny catalogue has jackets"
    data = _search(api, text="jakcet", k=10)
    u = data["understood"]
    assert u["status"] == "understood" and u["original"] == "jakcet" and u["query"] == "jacket"
    assert u["corrections"] == [
        {
            "original": "jakcet",
            "corrected": "jacket",
            "confidence": u["corrections"][0]["confidence"],
        }
    ]
    assert "articleType:Jackets" in _attr_keys(data)
    top = [r["metadata"]["articleType"] for r in data["results"][:5]]
    assert top.count("Jackets") >= 4, top
    literal = _search(api, text="jakcet", k=10, literal=True)
    assert (
        literal["understood"]["status"] == "literal" and literal["understood"]["corrections"] == []
    )
    assert [r["id"] for r in literal["results"]] != [r["id"] for r in data["results"]]


def test_a_shoppers_word_is_rewritten_to_the_catalogues(api):
    data = _search(api, text="navy jumper for men", k=10)
    u = data["understood"]
    assert u["rewrite"] == "navy blue sweater for men"
    assert {"baseColour:Navy Blue", "articleType:Sweaters", "gender:Men"} <= _attr_keys(data)
    rewritten = {a["key"] for a in u["attributes"] if a["rewritten"]}
    assert rewritten == {"baseColour:Navy Blue", "articleType:Sweaters"}  # "men" is literal
    assert {r["rule"] for r in u["rules"]} >= {"navy -> navy blue", "jumper -> sweater"}
    assert data["query"]["literal"] is False


def test_literal_ranks_exactly_as_before_understanding(api, live, app_settings):
    """``literal: true`` is the ranking the platform gave before query understanding: the
    query text through both encoders as sent, the one fused statement. Recomputed here
    without the API (encoders and the store called directly)."""
    from services.encoders.clip import load_clip
    from services.encoders.splade import load_splade
    from services.search import SearchQuery, certified_search
    from services.store.db import connect
    from services.store.index_versions import live_version

    text = "navy jumper for men"
    data = _search(api, text=text, k=12, literal=True)
    dense = load_clip(live.dense_model).encode_texts([text])[0]
    sparse = load_splade(live.sparse_model).encode([text])[0]
    with connect(app_settings.database_url) as conn:
        version = live_version(conn)
        query = SearchQuery(dense=dense, sparse=sparse, alpha=app_settings.default_alpha, k=12)
        expected = certified_search(conn, query, version).hits
    assert [r["id"] for r in data["results"]] == [h.product_id for h in expected]
    got = np.array([r["score"] for r in data["results"]])
    assert np.allclose(got, [round(float(h.score), 6) for h in expected], atol=1e-6)
    understood = _search(api, text=text, k=12)
    assert [r["id"] for r in understood["results"]] != [r["id"] for r in data["results"]]


def test_a_query_in_the_catalogues_words_is_not_changed(api):
    """Nothing to understand: the understood search is the literal one, result for result."""
    data = _search(api, text="black trousers", k=12)
    assert data["understood"]["rewrite"] is None and data["understood"]["corrections"] == []
    literal = _search(api, text="black trousers", k=12, literal=True)
    assert [(r["id"], r["score"]) for r in data["results"]] == [
        (r["id"], r["score"]) for r in literal["results"]
    ]


def test_removing_a_chip_leaves_that_attribute_out(api):
    """A removed attribute is neither recognised nor rewritten, and its words are not read
    as anything else instead (the shopper said "not that")."""
    data = _search(api, text="navy jumper", k=12)
    assert {"baseColour:Navy Blue", "articleType:Sweaters"} <= _attr_keys(data)
    without = _search(api, text="navy jumper", k=12, ignore=["articleType:Sweaters"])
    u = without["understood"]
    assert _attr_keys(without) == {"baseColour:Navy Blue"}
    assert u["ignored"] == ["articleType:Sweaters"] and u["rewrite"] == "navy blue jumper"
    assert [r["id"] for r in without["results"]] != [r["id"] for r in data["results"]]


def test_ignore_in_a_multipart_search(api):
    files = {"image": ("q.jpg", jpeg_bytes(colour=(30, 40, 90)), "image/jpeg")}
    form = {"text": "navy jumper", "ignore": ["articleType:Sweaters", "gender:Men"], "k": "5"}
    resp = api.post("/v1/search", data=form, files=files)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["understood"]["ignored"] == ["articleType:Sweaters", "gender:Men"]
    assert "articleType:Sweaters" not in _attr_keys(body)


@pytest.mark.parametrize(
    "ignore",
    [
        "baseColour:Green",  # not a list
        ["no colon here"],
        [":Green"],
        ["baseColour:Green\u0000"],
        [f"baseColour:{'x' * 100}"],
        [f"f:{i}" for i in range(21)],  # over the limit
        [1],
    ],
)
def test_malformed_ignore_is_a_422(api, ignore):
    resp = api.post("/v1/search", json={"text": "dress", "ignore": ignore})
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["status_code"] == 422 and "ignore" in body["detail"]


def test_understood_queries_are_cached(api):
    text = "wmns coral top"
    first = _search(api, text=text)
    second = _search(api, text=text)
    assert second["cached_embedding"] is True
    assert [r["id"] for r in first["results"]] == [r["id"] for r in second["results"]]


def test_an_image_only_search_has_nothing_to_understand(api):
    files = {"image": ("q.jpg", jpeg_bytes(), "image/jpeg")}
    resp = api.post("/v1/search", data={"k": "3"}, files=files)
    assert resp.status_code == 200 and resp.json()["understood"] is None


def test_a_rule_change_reaches_the_running_api_without_a_reindex(api, app_settings):
    """A merchandiser adds a rule (the store, as `fashion-search synonyms add` does): the
    running API applies it within seconds; removing it takes it back out."""
    from services.store.db import connect
    from services.understanding.rules import add_rule, parse_rule, remove_rule

    word = "zorblax"  # no catalogue word, no English word: nothing else explains it
    before = _search(api, text=word)["understood"]
    assert before["rules"] == [] and before["rewrite"] is None
    with connect(app_settings.database_url) as conn:
        rule = add_rule(conn, parse_rule(f"{word} -> handbag"))

    def rules_applied() -> list[str]:
        return [r["rule"] for r in _search(api, text=word)["understood"]["rules"]]

    try:
        deadline = time.monotonic() + 30
        while rules_applied() != [f"{word} -> handbag"]:
            assert time.monotonic() < deadline, "the new rule never reached the API"
            time.sleep(0.3)
        data = _search(api, text=word, k=5)
        assert data["understood"]["rewrite"] == "handbag"
        assert "articleType:Handbags" in _attr_keys(data)
    finally:
        with connect(app_settings.database_url) as conn:
            remove_rule(conn, rule.id)
    deadline = time.monotonic() + 30
    while rules_applied():
        assert time.monotonic() < deadline, "the removed rule was still applied"
        time.sleep(0.3)
