"""Search analytics end to end in headless Chromium (issue #24): the storefront sends a
random per-tab session id with every search and beacons the shoppers' events; the real
analytics writer stores them, the real ``fashion_search_analytics`` DAG aggregates them, and
the analysts' page at ``/analytics`` shows the query with its click.

One flow, in order (each step needs the one before):

1. search "navy casual shirt", open the third card's product (a ``click`` at position 3), add
   it to the bag (``add_to_cart`` at 3), close the dialog with Escape (focus goes back);
2. search "red summer dress", "Load more", open the first product of the second page with
   the keyboard (a ``click`` at position 25: the page's offset 24 + 1);
3. a photo search (multipart: the session header travels there too); then another tab in
   a browser without ``navigator.sendBeacon`` (removed by an init script): its own session
   id, and its click goes by ``fetch`` (keepalive), whose body is checked exactly;
4. the writer flushed, the stored rows hold those products and positions, one session hash
   per tab and no raw session id; the DAG run (both tasks succeed); ``/analytics`` lists
   the queries, the first with 1 click, and its link opens the storefront on that query.

Screenshots land in ``artifacts/``: analytics-product-dialog.png, analytics-page.png.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import httpx
import psycopg
import pytest
from api_harness import ARTIFACTS, build_live_index
from axe import axe_violations, format_violations
from conftest import drop_airflow_db
from dag_runner import dag_test
from psycopg import sql

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
FIRST = "navy casual shirt"
SECOND = "red summer dress"
THIRD = "black formal shoes"
SESSION_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")


@pytest.fixture(scope="module")
def live(app_settings):
    return build_live_index(app_settings)


def _is_events(r) -> bool:
    return r.url.endswith("/v1/events") and r.request.method == "POST"


def _search(page, text: str) -> dict:
    page.fill("#q", text)
    with page.expect_response("**/v1/search") as resp:
        page.press("#q", "Enter")
    page.wait_for_function(
        "() => document.querySelector('#results .card')"
        " && !document.querySelector('#results').classList.contains('loading')"
    )
    assert resp.value.ok
    return resp.value.json()


def _event_sent(page, action) -> str:
    """Runs ``action``; checks the one POST /v1/events it made was taken whole (202, one
    event accepted); returns how it went (Playwright's resource type: "ping" for a beacon,
    "fetch" for the fallback). A beacon's body is not readable here: what it said is checked
    in the database (the rows its events became)."""
    with page.expect_response(_is_events) as resp:
        action()
    assert resp.value.status == 202, resp.value.text()
    assert resp.value.json() == {"accepted": 1, "dropped": 0}
    assert resp.value.request.headers["content-type"].startswith("application/json")
    return resp.value.request.resource_type


def _card_ids(page) -> list[str]:
    return page.eval_on_selector_all("#results .card", "els => els.map(e => e.dataset.id)")


def _csv(base: str, table: str) -> list[dict]:
    resp = httpx.get(f"{base}/analytics/{table}.csv", timeout=60)
    assert resp.status_code == 200, resp.text
    return list(csv.DictReader(io.StringIO(resp.text)))


def test_a_click_in_the_storefront_reaches_the_analytics_page(
    page, browser, server, app, live, app_settings, tmp_path, request
):
    searches: list = []  # every /v1/search request, with its response
    page.on("response", lambda r: searches.append(r) if r.url.endswith("/v1/search") else None)

    # --- 1. a search, a product opened, added to the bag ---------------------------------
    first = _search(page, FIRST)
    session = page.evaluate("sessionStorage.getItem('fashion.session')")
    assert session and SESSION_RE.fullmatch(session), session
    assert first["search_id"] and first["page"]["offset"] == 0 and len(first["results"]) > 3
    third = first["results"][2]
    card = page.locator("#results .card").nth(2)
    assert card.get_attribute("data-id") == str(third["id"])
    opener = card.locator(".name-btn")
    assert opener.inner_text() == third["name"]

    sent = [_event_sent(page, opener.click)]
    dialog = page.locator("#product")
    dialog.wait_for(state="visible")
    assert page.evaluate("document.querySelector('#product').open")
    assert page.get_by_role("dialog", name=third["name"]).is_visible()
    assert page.inner_text("#product-name") == third["name"]
    assert page.get_attribute("#product-img", "src") == third["image_url"]
    assert page.get_attribute("#product-img", "alt") == third["name"]
    shown_meta = dict(
        page.eval_on_selector_all(
            "#product-meta div",
            "els => els.map(d => [d.querySelector('dt').textContent,"
            " d.querySelector('dd').textContent])",
        )
    )
    assert shown_meta["Colour"] == third["metadata"]["baseColour"]
    assert shown_meta["Type"] == third["metadata"]["articleType"]
    # the modal keeps the focus inside
    assert page.evaluate("document.querySelector('#product').contains(document.activeElement)")
    page.wait_for_function(
        "() => { const i = document.querySelector('#product-img');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    violations = axe_violations(page)
    assert not violations, format_violations(violations)

    sent.append(_event_sent(page, lambda: page.click("#add-to-bag")))
    assert page.inner_text("#bag-status") == f"Added “{third['name']}” to your bag."
    page.screenshot(path=str(ARTIFACTS / "analytics-product-dialog.png"))
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    # focus is back on the control that opened it
    assert page.evaluate(
        "document.activeElement === document.querySelectorAll('#results .card .name-btn')[2]"
    )

    # --- 2. the second page of another search: positions count the whole ranking ---------
    second = _search(page, SECOND)
    assert second["search_id"] != first["search_id"] and second["page"]["next_cursor"]
    with page.expect_response("**/v1/search") as resp:
        page.click("#more")
    page2 = resp.value.json()
    page.wait_for_function("() => document.querySelectorAll('#results .card').length > 24")
    assert page2["page"]["offset"] == 24 and page2["search_id"] not in (
        first["search_id"],
        second["search_id"],
    )
    target = page2["results"][0]
    assert _card_ids(page)[24] == str(target["id"])
    button = page.locator("#results .card").nth(24).locator(".name-btn")
    button.focus()
    sent.append(_event_sent(page, lambda: page.keyboard.press("Enter")))
    dialog.wait_for(state="visible")
    assert page.inner_text("#product-name") == target["name"]
    page.locator("#product-close").click()
    dialog.wait_for(state="hidden")

    # --- 3. a photo search sends the session too (multipart) -------------------------------
    page.fill("#q", "")
    with page.expect_response("**/v1/search") as resp:
        page.set_input_files(
            "#image",
            files=[{"name": "q.png", "mimeType": "image/png", "buffer": live.rows[5]["image"]}],
        )
    assert resp.value.ok
    assert resp.value.request.headers["content-type"].startswith("multipart/form-data")
    photo = resp.value.json()

    # every search of the tab carried the same session id
    assert len(searches) == 4
    assert {r.request.headers.get("x-session-id") for r in searches} == {session}
    assert all(r.ok and r.json()["search_id"] for r in searches)
    assert sent == ["ping"] * 3, sent  # navigator.sendBeacon took each batch

    # --- 3b. another tab, in a browser without sendBeacon: its own session, fetch instead ---
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script("delete Navigator.prototype.sendBeacon;")
    try:
        other = context.new_page()
        other.set_default_timeout(30_000)
        other.goto(server.url + "/")
        other.wait_for_selector("select[data-facet='gender'] option:nth-child(2)", state="attached")
        assert other.evaluate("typeof navigator.sendBeacon") == "undefined"
        third_search = _search(other, THIRD)
        other_session = other.evaluate("sessionStorage.getItem('fashion.session')")
        assert SESSION_RE.fullmatch(other_session) and other_session != session
        opened = third_search["results"][0]
        with other.expect_response(_is_events) as resp:
            other.locator("#results .card .name-btn").first.click()
        assert resp.value.status == 202 and resp.value.request.resource_type == "fetch"
        assert json.loads(resp.value.request.post_data) == {
            "session_id": other_session,
            "events": [
                {
                    "search_id": third_search["search_id"],
                    "product_id": opened["id"],
                    "position": 1,
                    "type": "click",
                }
            ],
        }
        assert resp.value.request.headers["content-type"] == "application/json"
    finally:
        context.close()

    # --- 4. stored: the events at their positions, no raw session id anywhere -------------
    assert app.state.runtime.analytics.writer.flush(30)
    with psycopg.connect(app_settings.database_url) as c:
        events = c.execute(
            "SELECT s.query, s.page_offset, e.kind, e.product_id, e.position,"
            " e.product_id = s.product_ids[e.position - s.page_offset],"
            " e.session_hash = s.session_hash"
            " FROM analytics_events e JOIN analytics_searches s USING (search_id)"
            " ORDER BY e.at, e.kind DESC"
        ).fetchall()
        stored = c.execute(
            "SELECT query, page_offset, has_image, cardinality(product_ids),"
            " length(session_hash) FROM analytics_searches ORDER BY at"
        ).fetchall()
        # one hash per tab (the same UTC day): the first tab's four searches, the other's one
        tabs = c.execute(
            "SELECT count(*) FROM analytics_searches GROUP BY session_hash ORDER BY count(*)"
        ).fetchall()
        leaks = [
            c.execute(
                sql.SQL("SELECT count(*) FROM {} t WHERE strpos(t::text, %s) > 0").format(
                    sql.Identifier(table)
                ),
                (raw,),
            ).fetchone()[0]
            for raw in (session, other_session)
            for table in ("analytics_searches", "analytics_events")
        ]
    assert events == [
        (FIRST, 0, "click", third["id"], 3, True, True),
        (FIRST, 0, "add_to_cart", third["id"], 3, True, True),
        (SECOND, 24, "click", target["id"], 25, True, True),
        (THIRD, 0, "click", opened["id"], 1, True, True),
    ]
    assert stored == [
        (FIRST, 0, False, len(first["results"]), 16),
        (SECOND, 0, False, len(second["results"]), 16),
        (SECOND, 24, False, len(page2["results"]), 16),
        (None, 0, True, len(photo["results"]), 16),
        (THIRD, 0, False, len(third_search["results"]), 16),
    ]
    assert tabs == [(1,), (4,)]
    assert leaks == [0, 0, 0, 0]

    # --- 5. the real DAG aggregates the hour ----------------------------------------------
    airflow_db = f"airflow_analytics_{os.getpid()}"
    request.addfinalizer(lambda: drop_airflow_db(app_settings, airflow_db))
    result = dag_test(
        {},
        app_settings,
        home=tmp_path / "airflow",
        dbname=airflow_db,
        timeout=600,
        dag_file=REPO / "dags" / "fashion_search_analytics.py",
    )
    output = result["output"]
    assert result["tasks"] == {"partitions": "success", "aggregate": "success"}, output[-5000:]
    assert result["state"] == "success", output[-5000:]

    # --- 6. the analysts' page shows the query and its click ------------------------------
    page.goto(server.url + "/analytics")
    top = page.get_by_role("region", name="Top queries")
    link = top.get_by_role("link", name=FIRST, exact=True)
    assert link.is_visible()
    row = top.get_by_role("row").filter(has=page.get_by_role("link", name=FIRST, exact=True))
    cells = row.locator("td").all_inner_texts()
    assert cells[:2] == ["1", "0"]  # searches, zero results
    assert cells[3] == "1"  # clicks
    assert top.get_by_role("link", name=SECOND, exact=True).is_visible()
    page.screenshot(path=str(ARTIFACTS / "analytics-page.png"), full_page=True)

    queries = {r["query"]: r for r in _csv(server.url, "top-queries")}
    assert set(queries) == {FIRST, SECOND, THIRD}
    assert (queries[FIRST]["searches"], queries[FIRST]["clicks"]) == ("1", "1")
    assert queries[FIRST]["clicked_searches"] == "1"
    assert float(queries[FIRST]["mean_click_position"]) == 3.0
    # the second page's click counts for its search ("Load more" is the same search)
    assert (queries[SECOND]["searches"], queries[SECOND]["clicks"]) == ("1", "1")
    assert float(queries[SECOND]["mean_click_position"]) == 25.0
    [daily] = _csv(server.url, "daily")
    # every click (the second page's too), the add to bag, and no event off its product
    assert (daily["clicks"], daily["add_to_carts"], daily["unmatched_events"]) == ("3", "1", "0")
    assert (daily["searches"], daily["pages"], daily["unique_queries"]) == ("4", "5", "3")

    # the query's link opens the storefront on that search
    with page.expect_response("**/v1/search") as resp:
        link.click()
    assert resp.value.ok
    page.wait_for_selector("#results .card")
    assert page.input_value("#q") == FIRST
    assert json.loads(resp.value.request.post_data)["text"] == FIRST
