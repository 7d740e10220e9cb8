"""The storefront page in headless Chromium against the real app, database and encoders.

Screenshots land in ``artifacts/`` (gitignored): storefront-desktop.png, storefront-why.png,
storefront-image.png, storefront-phone.png, storefront-error.png.
"""

from __future__ import annotations

import pytest
from api_harness import ARTIFACTS

from services.catalog.schema import FACET_FIELDS, brand_from_name

pytestmark = pytest.mark.browser


def _search(page, text: str) -> list[str]:
    page.fill("#q", text)
    with page.expect_response("**/v1/search"):
        page.press("#q", "Enter")
    page.wait_for_selector("#results .card")
    return page.eval_on_selector_all("#results .card", "els => els.map(e => e.dataset.id)")


def test_text_query_shows_results_and_why(page, live):
    name = live.rows[7]["productDisplayName"]
    ids = _search(page, name)
    assert ids and str(live.rows[7]["id"]) in ids
    first = page.locator("#results .card").first
    assert first.locator(".name").inner_text().strip()
    page.wait_for_function(
        "() => { const i = document.querySelector('#results .card img');"
        " return i && i.complete && i.naturalWidth > 0; }"
    )
    assert "products" in page.inner_text("#status")
    page.screenshot(path=str(ARTIFACTS / "storefront-desktop.png"))

    first.locator("summary").click()  # open "why"
    terms = first.locator(".terms li")
    assert terms.count() > 0 and terms.first.inner_text().strip()
    assert first.locator(".dense-v").inner_text() != "–"
    page.screenshot(path=str(ARTIFACTS / "storefront-why.png"))


def test_keyboard_only_search(page):
    page.locator("body").press("/")  # "/" focuses the search box
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("casual shirt")
    with page.expect_response("**/v1/search"):
        page.keyboard.press("Enter")
    page.wait_for_selector("#results .card")
    # the "why" disclosure is reachable and opens with the keyboard
    page.locator("#results .card summary").first.focus()
    page.keyboard.press("Enter")
    assert page.locator("#results .card details").first.get_attribute("open") is not None


def test_moving_the_slider_changes_the_order(page, live):
    _search(page, live.rows[11]["productDisplayName"])
    orders = {}
    for value in ("0", "1"):
        with page.expect_response("**/v1/search") as resp:
            page.locator("#alpha").fill(value)
        assert resp.value.ok
        page.wait_for_function(
            "v => document.querySelector('#status').textContent.includes('alpha ' + v)",
            arg=f"{float(value):.2f}",
        )
        orders[value] = page.eval_on_selector_all(
            "#results .card", "els => els.map(e => e.dataset.id)"
        )
        assert page.inner_text("#alpha-out") == f"{float(value):.2f}"
    assert orders["0"] != orders["1"]


def test_image_upload_searches_by_photo(page, live):
    row = live.rows[3]
    with page.expect_response("**/v1/search") as resp:
        page.set_input_files(
            "#image", files=[{"name": "query.png", "mimeType": "image/png", "buffer": row["image"]}]
        )
    assert resp.value.ok
    # A function, not a bare expression: Playwright polls a bare expression through eval(),
    # which the page's CSP (no 'unsafe-eval') refuses whenever the first check is false.
    page.wait_for_function(
        "() => document.querySelector('#results-title').textContent.includes('photo')"
    )
    assert page.locator("#preview").is_visible()
    first_id = page.locator("#results .card").first.get_attribute("data-id")
    assert first_id == str(row["id"])
    page.screenshot(path=str(ARTIFACTS / "storefront-image.png"))


def test_api_error_shows_a_banner(page, live):
    page.set_input_files(
        "#image",
        files=[{"name": "q.png", "mimeType": "image/png", "buffer": live.rows[0]["image"]}],
    )
    page.wait_for_selector("#results .card")
    with page.expect_response("**/v1/search") as resp:
        page.select_option("#mode", "sparse")  # keywords-only with no text: 422
    assert resp.value.status == 422
    banner = page.locator("#error")
    banner.wait_for(state="visible")
    assert "text" in banner.inner_text()
    page.screenshot(path=str(ARTIFACTS / "storefront-error.png"))
    page.click("#error-close")
    assert banner.is_hidden()


def test_phone_width_layout(browser, server, live):
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        _search(page, "blue casual")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, "no horizontal scrolling on a phone"
        page.screenshot(path=str(ARTIFACTS / "storefront-phone.png"), full_page=False)
    finally:
        context.close()


def test_brand_filter_from_facets_narrows_the_page(page, live):
    """The page lists one select per /v1/facets field, brand included; choosing a brand
    sends it as a filter and every card shown is of that brand."""
    labels = page.eval_on_selector_all(
        "#filters select[data-facet]", "els => els.map(e => e.dataset.facet)"
    )
    assert labels == [f.name for f in FACET_FIELDS]
    brands = [b for b in (brand_from_name(r["productDisplayName"]) for r in live.rows) if b]
    brand = max(set(brands), key=brands.count)
    _search(page, "shirt")
    with page.expect_response("**/v1/search") as resp:
        page.select_option("select[data-facet='brand']", brand)
    assert resp.value.ok
    assert resp.value.request.post_data_json["filters"] == {"brand": brand}
    page.wait_for_selector("#results .card")
    metas = page.eval_on_selector_all("#results .card .meta", "els => els.map(e => e.textContent)")
    assert metas and all(m.startswith(brand + " · ") for m in metas)


def _wait_understanding(server):
    import time

    import httpx

    deadline = time.monotonic() + 120
    while (
        not httpx.get(server.url + "/readyz").json()["checks"]["understanding"].startswith("ready")
    ):
        assert time.monotonic() < deadline, "query understanding never became ready"
        time.sleep(0.5)


def test_the_page_says_what_it_corrected_and_searches_instead(page, server):
    """ "Showing results for jacket — search instead for jakcet": the second link searches
    the words exactly as typed (``literal``), and the page then says so."""
    _wait_understanding(server)
    _search(page, "jakcet")
    dym = page.locator("#did-you-mean")
    dym.wait_for(state="visible")
    assert "Showing results for jacket" in dym.inner_text()
    with page.expect_response("**/v1/search") as resp:
        dym.get_by_role("button", name="jakcet").click()
    assert resp.value.ok and resp.value.request.post_data_json["literal"] is True
    page.wait_for_function(
        "() => document.querySelector('#did-you-mean').textContent.includes('exactly')"
    )
    page.screenshot(path=str(ARTIFACTS / "storefront-did-you-mean.png"))
    with page.expect_response("**/v1/search") as resp:
        dym.get_by_role("button", name="show results with corrections").click()
    assert "literal" not in resp.value.request.post_data_json


def test_understood_attributes_are_chips_a_shopper_can_remove(page, server):
    _wait_understanding(server)
    _search(page, "navy jumper for men")
    chips = page.locator("#chips .chip")
    chips.first.wait_for(state="visible")
    keys = page.eval_on_selector_all("#chips .chip", "els => els.map(e => e.dataset.key)")
    assert set(keys) == {"baseColour:Navy Blue", "articleType:Sweaters"}
    assert (
        "from “jumper”"
        in page.locator("#chips .chip[data-key='articleType:Sweaters']").inner_text()
    )
    page.screenshot(path=str(ARTIFACTS / "storefront-chips.png"))
    with page.expect_response("**/v1/search") as resp:
        page.get_by_role("button", name="Remove Sweaters (understood from “jumper”)").click()
    assert resp.value.request.post_data_json["ignore"] == ["articleType:Sweaters"]
    page.wait_for_function("() => document.querySelectorAll('#chips .chip').length === 1")
    # a new query starts with no chip removed
    with page.expect_response("**/v1/search") as resp:
        page.fill("#q", "navy jumper")
        page.press("#q", "Enter")
    assert "ignore" not in resp.value.request.post_data_json
