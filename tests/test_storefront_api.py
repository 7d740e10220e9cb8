"""The storefront's API: next pages (cursor or offset), sorting, facet counts for the query.

The real app on uvicorn, the real database and the real offline encoders, over HTTP, on a
live index of 400 offline products (ten pages of 24 need 240). The reference ranking is
the exact path (``exact: true``: every filtered row scored), which is the same ranking at
every depth.
"""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
from api_harness import build_live_index, copy_version

from services.search import MAX_DEPTH, RELEVANT_POOL

SIZE = 400
PAGE = 24


@pytest.fixture(scope="module")
def live(app_settings):
    return build_live_index(app_settings, size=SIZE)


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _search(api, **body) -> dict:
    resp = api.post("/v1/search", json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _ids(data: dict) -> list[int]:
    return [r["id"] for r in data["results"]]


def _pages_by_cursor(api, pages: int, **body) -> list[dict]:
    out = [_search(api, k=PAGE, **body)]
    while len(out) < pages and out[-1]["page"]["has_more"]:
        out.append(_search(api, k=PAGE, cursor=out[-1]["page"]["next_cursor"], **body))
    return out


def _exact(api, depth: int, **body) -> list[int]:
    """The exact fused ranking's first ``depth`` products, in pages of 100."""
    ids: list[int] = []
    for offset in range(0, depth, 100):
        data = _search(api, k=min(100, depth - offset), offset=offset, exact=True, **body)
        assert data["certificate"]["exact"] is True
        ids += _ids(data)
    return ids


CASES = [
    {"text": "shirt", "alpha": 0.5},
    {"text": "black shoes for men", "alpha": 0.0},
    {"text": "summer dress", "alpha": 1.0},
    {"text": "casual", "alpha": 0.3, "filters": {"gender": ["Men", "Women"]}},
]


@pytest.mark.parametrize("body", CASES, ids=lambda b: f"{b['text']}@{b['alpha']}")
def test_ten_pages_are_one_ranking_240_deep(api, live, body):
    pages = _pages_by_cursor(api, 10, **body)
    ids = [i for p in pages for i in _ids(p)]
    assert len(ids) == len(set(ids)), "a product came twice"
    expected = _exact(api, len(ids) + PAGE, **body)
    assert ids == expected[: len(ids)], "the pages are not the exact ranking's slices"
    for n, p in enumerate(pages):
        assert p["page"]["offset"] == n * PAGE and p["page"]["late"] == 0
        assert "path" in p["certificate"]  # each page carries its certificate
    if len(pages) == 10:
        assert len(ids) == 240
    else:  # fewer products pass the filters: the last page says so
        assert pages[-1]["page"]["has_more"] is False and len(ids) == len(expected)
    # offset pages are the same slices
    for n in (1, 4, len(pages) - 1):
        by_offset = _search(api, k=PAGE, offset=n * PAGE, **body)
        assert _ids(by_offset) == _ids(pages[n])


def test_the_last_page_has_no_next(api, live):
    body = {"text": "shoes", "filters": {"gender": "Boys"}}
    total = sum(1 for r in live.rows if r["gender"] == "Boys")
    assert 10 < total < 100
    seen: list[int] = []
    data = _search(api, k=10, **body)
    while True:
        seen += _ids(data)
        if not data["page"]["has_more"]:
            assert data["page"]["next_cursor"] is None and data["page"]["next_offset"] is None
            break
        data = _search(api, k=10, cursor=data["page"]["next_cursor"], **body)
    assert sorted(seen) == sorted(r["id"] for r in live.rows if r["gender"] == "Boys")


def test_newest_orders_the_relevant_set_and_pages_through_it(api, live):
    body = {"text": "jacket", "alpha": 0.5}
    pages = [_search(api, k=100, sort="newest", **body)]
    while pages[-1]["page"]["has_more"]:
        pages.append(
            _search(api, k=100, sort="newest", cursor=pages[-1]["page"]["next_cursor"], **body)
        )
    newest = [r for p in pages for r in p["results"]]
    assert len(newest) == RELEVANT_POOL and pages[-1]["page"]["has_more"] is False
    relevance = (
        _search(api, k=100, **body)["results"] + _search(api, k=100, offset=100, **body)["results"]
    )
    assert {r["id"] for r in newest} == {r["id"] for r in relevance}  # the same products
    keys = [(-(r["metadata"]["year"] or 0), -r["score"], r["id"]) for r in newest]
    assert keys == sorted(keys)  # latest year first, then relevance
    assert len({r["metadata"]["year"] for r in newest}) > 1  # the order is not vacuous
    assert pages[0]["query"]["sort"] == "newest"


def test_facet_counts_count_the_relevant_set_without_their_own_filter(api, live):
    body = {"text": "casual shirt", "alpha": 0.5}
    men = {**body, "filters": {"gender": "Men"}}
    data = _search(api, k=PAGE, facets=True, **men)
    counts = {
        f: {c["value"]: c["count"] for c in v} for f, v in data["facet_counts"]["counts"].items()
    }
    assert data["facet_counts"]["pool"] == RELEVANT_POOL
    # another field's counts: the filtered relevant set (here its exact ranking)
    filtered = _exact(api, RELEVANT_POOL, **men)
    by_id = {r["id"]: r for r in live.rows}
    assert counts["baseColour"] == dict(Counter(by_id[i]["baseColour"] for i in filtered))
    # the filtered field's own counts: as if its filter were off
    unfiltered = _exact(api, RELEVANT_POOL, **body)
    assert counts["gender"] == dict(Counter(by_id[i]["gender"] for i in unfiltered))
    assert len(counts["gender"]) > 1 and "Men" in counts["gender"]
    # most first, none empty
    for values in data["facet_counts"]["counts"].values():
        numbers = [c["count"] for c in values]
        assert numbers == sorted(numbers, reverse=True) and all(n > 0 for n in numbers)
    assert _search(api, k=PAGE, **men)["facet_counts"] is None  # only when asked for


def test_image_search_pages_continue_over_multipart(api, live):
    image = live.rows[3]["image"]
    form = {"text": "top", "k": "12"}
    first = api.post("/v1/search", data=form, files={"image": ("q.jpg", image, "image/jpeg")})
    assert first.status_code == 200, first.text
    cursor = first.json()["page"]["next_cursor"]
    second = api.post(
        "/v1/search",
        data={**form, "cursor": cursor},
        files={"image": ("q.jpg", image, "image/jpeg")},
    )
    assert second.status_code == 200, second.text
    both = _ids(first.json()) + _ids(second.json())
    assert len(set(both)) == 24 and second.json()["page"]["offset"] == 12
    # the same cursor with another photo belongs to another search
    other = api.post(
        "/v1/search",
        data={**form, "cursor": cursor},
        files={"image": ("q.jpg", live.rows[4]["image"], "image/jpeg")},
    )
    assert other.status_code == 422 and "another search" in other.json()["detail"]


def _error(resp: httpx.Response, status: int, words: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert words in body["detail"] and "Traceback" not in resp.text


def test_bad_cursors_and_offsets_are_4xx_with_a_message(api, live):
    body = {"text": "shirt"}
    cursor = _search(api, k=PAGE, **body)["page"]["next_cursor"]
    head, tag = cursor.split(".")
    flipped = head[:-1] + ("A" if head[-1] != "A" else "B") + "." + tag
    _error(api.post("/v1/search", json={**body, "cursor": flipped}), 422, "not valid")
    _error(api.post("/v1/search", json={**body, "cursor": cursor[:-3]}), 422, "not valid")
    _error(api.post("/v1/search", json={**body, "cursor": "garbage"}), 422, "not valid")
    _error(api.post("/v1/search", json={"text": "dress", "cursor": cursor}), 422, "another search")
    _error(
        api.post("/v1/search", json={**body, "cursor": cursor, "sort": "newest"}), 422, "another"
    )
    _error(api.post("/v1/search", json={**body, "cursor": cursor, "offset": 5}), 422, "either")
    _error(api.post("/v1/search", json={**body, "offset": MAX_DEPTH - 10, "k": 24}), 422, "1000")
    _error(api.post("/v1/search", json={**body, "offset": -1}), 422, "offset")
    _error(api.post("/v1/search", json={**body, "sort": "price"}), 422, "sort")
    # the deepest page there is: empty here (400 products), and no next one
    last = _search(api, k=24, offset=MAX_DEPTH - 24, **body)
    assert last["results"] == [] and last["page"]["has_more"] is False


def test_a_cursor_of_a_swapped_out_version_is_410(api, live, conn):
    from services.store import index_versions as iv

    body = {"text": "shirt"}
    first = _search(api, k=PAGE, **body)
    copy = copy_version(conn, live.version_id)
    try:
        iv.swap_live(conn, copy)
        resp = api.post("/v1/search", json={**body, "cursor": first["page"]["next_cursor"]})
        _error(resp, 410, "start again")
        assert resp.json()["error"] == "cursor_expired"
        fresh = _search(api, k=PAGE, **body)  # a new first page works on the new version
        assert fresh["index_version"] == copy
        again = _search(api, k=PAGE, cursor=fresh["page"]["next_cursor"], **body)
        assert again["page"]["offset"] == PAGE
    finally:
        iv.swap_live(conn, live.version_id)
        conn.commit()


def test_a_product_the_earlier_pages_missed_comes_next_not_never(api, live, app_settings):
    """A cursor lists what the earlier pages showed; a product they missed (their HNSW
    candidates lacked it) comes first on the next page, counted as late, and one they showed
    out of order never comes again. The "page 1" here is forged with the server's own key:
    the top 24 of the exact ranking without its 6th product, plus its 31st."""
    from services.api import paging

    body = {"text": "shirt", "alpha": 0.5}
    exact = _exact(api, 80, **body)
    key = paging.cursor_key(app_settings)
    real = paging.decode_cursor(_search(api, k=PAGE, **body)["page"]["next_cursor"], key)
    missed, early = exact[5], exact[30]
    shown = tuple(i for i in exact[:PAGE] if i != missed) + (early,)
    forged = paging.Cursor(
        real.index_version, real.fingerprint, PAGE, None, (0.0, 2**62), shown
    )  # last: a key after every product's, so what comes before it is late
    data = _search(api, k=PAGE, cursor=paging.encode_cursor(forged, key), **body)
    ids = _ids(data)
    assert ids == [i for i in exact if i not in shown][:PAGE]
    assert ids[0] == missed and early not in ids and not set(ids) & set(shown)
    assert data["page"]["late"] == PAGE  # every product sorts before that last key
    nxt = paging.decode_cursor(data["page"]["next_cursor"], key)
    assert set(shown) <= set(nxt.shown)  # still excluded on the pages after


def test_cursor_ids_pack_and_unpack():
    from services.api.paging import _pack_ids, _unpack_ids

    for ids in [(), (1,), (5, 3, 2**40, 0, 127, 128, 16384)]:
        assert _unpack_ids(_pack_ids(ids)) == tuple(sorted(ids))
    with pytest.raises(ValueError):
        _unpack_ids(b"\x80")  # cut short
