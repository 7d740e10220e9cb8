"""The storefront's shopping around the ranking in headless Chromium, against the real app:
type-ahead picked with the keyboard, facet counts in the filters, "Load more" pages that
never repeat a card, the place kept on back/forward and reload, and axe-core on the pages.

A live index of 400 offline products (three pages of 24 after a filter need enough of them).
Screenshots land in ``artifacts/``: storefront-typeahead.png, storefront-pages.png.
"""

from __future__ import annotations

import json

import pytest
from api_harness import ARTIFACTS, build_live_index
from axe import axe_violations, format_violations

pytestmark = pytest.mark.browser

SIZE = 400


@pytest.fixture(scope="module")
def live(app_settings):
    return build_live_index(app_settings, size=SIZE)


def _cards(page) -> list[str]:
    return page.eval_on_selector_all("#results .card", "els => els.map(e => e.dataset.id)")


def _prefix_of_a_type(live) -> tuple[str, str]:
    """The issue's example: "jac" for Jackets (an article type of the offline catalogue)."""
    assert any(r["articleType"] == "Jackets" for r in live.rows)
    return "Jackets", "jac"


def test_typeahead_keyboard_facet_counts_and_three_pages(page, live):
    kind, prefix = _prefix_of_a_type(live)
    responses: list[dict] = []
    page.on(
        "response",
        lambda r: responses.append(r.json()) if r.url.endswith("/v1/search") and r.ok else None,
    )
    page.locator("#q").focus()
    with page.expect_response(lambda r: "/v1/suggest" in r.url):
        page.keyboard.type(prefix)
    options = page.locator("#suggestions [role=option]")
    options.first.wait_for()
    assert page.get_attribute("#q", "aria-expanded") == "true"
    texts = options.all_inner_texts()
    assert any(kind.lower() in t.lower() for t in texts), texts
    # arrows move the active option (aria-activedescendant), Enter picks it
    target = next(i for i, t in enumerate(texts) if kind.lower() in t.lower())
    for _ in range(target + 1):
        page.keyboard.press("ArrowDown")
    assert page.get_attribute("#q", "aria-activedescendant") == f"sug-{target}"
    chosen = options.nth(target).get_attribute("data-text")
    with page.expect_response("**/v1/search"):
        page.keyboard.press("Enter")
    page.wait_for_selector("#results .card")
    assert page.input_value("#q") == chosen
    assert page.locator("#suggestions").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "storefront-typeahead.png"))

    # the selects show the query's facet counts and hide values it has none of
    first = responses[-1]
    counts = {c["value"]: c["count"] for c in first["facet_counts"]["counts"]["gender"]}
    shown = page.eval_on_selector_all(
        "select[data-facet='gender'] option[data-count]",
        "els => els.map(o => [o.value, Number(o.dataset.count), o.textContent])",
    )
    assert {v: n for v, n, _ in shown} == counts and all(n > 0 for _, n, _ in shown)
    assert all(f"({n})" in label for _, n, label in shown)
    value, count = max(counts.items(), key=lambda kv: kv[1])
    assert count > 48, "three pages need more than 48 products of that value"
    with page.expect_response("**/v1/search"):
        page.select_option("select[data-facet='gender']", value)
    page.wait_for_function(
        "() => !document.querySelector('#results').classList.contains('loading')"
    )
    filtered = responses[-1]
    assert filtered["query"]["filters"] == {"gender": value}

    # three pages with "Load more": no card twice, every card from a response
    for _ in range(2):
        before = len(_cards(page))
        with page.expect_response("**/v1/search"):
            page.click("#more")
        page.wait_for_function(
            "n => document.querySelectorAll('#results .card').length > n", arg=before
        )
    ids = _cards(page)
    pages = responses[-3:]
    served = [str(r["id"]) for p in pages for r in p["results"]]
    assert len(ids) == len(set(ids)) == len(served) == 72
    assert ids == served and pages[0]["results"] and pages[2]["page"]["offset"] == 48
    assert all(r["metadata"]["gender"] == value for p in pages for r in p["results"])
    assert page.inner_text("#status").startswith("72 products")
    page.screenshot(path=str(ARTIFACTS / "storefront-pages.png"), full_page=True)

    # the place is kept: the address holds the search and its pages
    page.locator("#results .card").nth(60).scroll_into_view_if_needed()
    scrolled = page.evaluate("window.scrollY")
    assert scrolled > 0
    # the page remembers the position once scrolling stops (in history.state)
    page.wait_for_function(
        "y => history.state && Math.abs(history.state.scrollY - y) < 2", arg=scrolled
    )
    assert "pages=3" in page.url and f"gender={value}" in page.url
    page.reload()
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 72")
    assert _cards(page) == ids
    assert abs(page.evaluate("window.scrollY") - scrolled) < 50
    page.goto(page.url.split("?")[0] + "healthz")
    page.go_back()
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 72")
    assert _cards(page) == ids


def test_escape_closes_the_suggestions_and_keeps_the_text(page, live):
    _, prefix = _prefix_of_a_type(live)
    page.locator("#q").focus()
    with page.expect_response(lambda r: "/v1/suggest" in r.url):
        page.keyboard.type(prefix)
    page.locator("#suggestions [role=option]").first.wait_for()
    page.keyboard.press("Escape")
    assert page.locator("#suggestions").is_hidden()
    assert page.get_attribute("#q", "aria-expanded") == "false"
    assert page.input_value("#q") == prefix


def test_newest_sort_from_the_page(page, live):
    page.fill("#q", "shirt")
    with page.expect_response("**/v1/search"):
        page.press("#q", "Enter")
    page.wait_for_selector("#results .card")
    with page.expect_response("**/v1/search") as resp:
        page.select_option("#sort", "newest")
    body = resp.value.json()
    assert json.loads(resp.value.request.post_data)["sort"] == "newest"
    years = [r["metadata"]["year"] or 0 for r in body["results"]]
    assert years == sorted(years, reverse=True)
    page.wait_for_function(
        "() => !document.querySelector('#results').classList.contains('loading')"
    )
    assert _cards(page) == [str(r["id"]) for r in body["results"]]


@pytest.mark.parametrize("where", ["start", "results", "suggestions"])
def test_axe_finds_no_serious_or_critical_violation(page, live, where):
    if where == "suggestions":  # the list open, an option highlighted
        page.locator("#q").focus()
        with page.expect_response(lambda r: "/v1/suggest" in r.url):
            page.keyboard.type(_prefix_of_a_type(live)[1])
        page.locator("#suggestions [role=option]").first.wait_for()
        page.keyboard.press("ArrowDown")
    if where == "results":
        page.fill("#q", "casual shirt")
        with page.expect_response("**/v1/search"):
            page.press("#q", "Enter")
        page.wait_for_selector("#results .card")
        page.locator("#results .card summary").first.click()  # an open "why" too
    violations = axe_violations(page)
    assert not violations, format_violations(violations)


def test_every_control_is_reachable_by_keyboard_with_a_visible_focus(page, live):
    page.fill("#q", "casual shirt")
    with page.expect_response("**/v1/search"):
        page.press("#q", "Enter")
    page.wait_for_selector("#results .card")
    page.locator("#q").focus()
    reached: set[str] = set()
    for _ in range(120):  # 24 cards of 3 stops each (product, "why", "more like this")
        page.keyboard.press("Tab")
        info = page.evaluate(
            """() => { const e = document.activeElement; const s = getComputedStyle(e);
              return { id: e.id || e.className || e.tagName, tag: e.tagName,
                       outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0,
                       shadow: s.boxShadow !== 'none' }; }"""
        )
        if info["tag"] == "BODY":
            break
        assert info["outline"] or info["shadow"], f"no visible focus on {info['id']}"
        reached.add(info["id"])
    for control in ("drop-label", "alpha", "sort", "mode", "more", "go", "name-btn"):
        assert control in reached, f"#{control} is not reachable by Tab"
    alts = page.eval_on_selector_all(
        "#results .card img",
        "els => els.map(i => [i.alt, i.closest('.card').querySelector('.name').textContent])",
    )
    assert alts and all(alt == name for alt, name in alts)
