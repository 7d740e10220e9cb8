"""The analysts' search analytics page (issue #24) over real HTTP: the real app (no encoders:
the page needs only the database) on uvicorn, the real database, raw rows COPYed as the
API's writer writes them and aggregated by ``aggregate_day`` as the DAG does.

The rows (yesterday and 10 days ago, UTC; the experiments' 40 days ago) are chosen so that every figure is known by
hand: the page and each CSV must show exactly those numbers; the window (``?days=``) must
leave out the days before it; an empty database must give the empty state, never a 500;
``days`` out of range is a 422, not an integer a 400, an unknown table a 404. A shopper's
query is text from the outside: escaped in the HTML, defused in the CSV (a formula).
The browser test (axe-core, keyboard, phone width) is marked ``browser``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from datetime import UTC, date, datetime, time, timedelta
from html.parser import HTMLParser

import httpx
import pytest
from api_harness import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ServerThread, assert_error

TODAY = datetime.now(UTC).date()
YESTERDAY = TODAY - timedelta(days=1)
EXPERIMENT_DAY = TODAY - timedelta(days=40)  # outside the default window
OLD = TODAY - timedelta(days=10)
FORMULA = '=hyperlink("http://x")&<b>'  # a hostile query: a formula, markup


def _at(day: date, minute: int = 0) -> datetime:
    return datetime.combine(day, time(12, 0), tzinfo=UTC) + timedelta(minutes=minute)


class Rows:
    """Raw ``analytics_searches`` / ``analytics_events`` rows, as the writer COPYs them."""

    def __init__(self) -> None:
        self.searches: list[tuple] = []
        self.events: list[tuple] = []

    def search(self, day, query, shown, *, offset=0, image=False, experiment=None, teams=None):
        from psycopg.types.json import Jsonb

        sid = uuid.uuid4()
        at = _at(day, len(self.searches))
        self.searches.append(
            (at, sid, None, query, image, "hybrid", 0.5, Jsonb({}), offset, "relevance")
            + (offset + len(shown), list(shown), True, False, 10.0 + len(self.searches) % 7)
            + (None, experiment, teams)
        )
        return sid, at, list(shown), offset

    def event(self, search, position, kind="click", product=None):
        sid, at, shown, offset = search
        if product is None:
            product = shown[position - offset - 1]
        self.events.append((at + timedelta(seconds=5), sid, kind, product, position, None))


SHOWN = list(range(101, 111))  # ten products at positions 1..10


def _store(conn) -> None:
    """The test's traffic, aggregated; a two-way rule that "red dress" matches."""
    from services.store.analytics import copy_rows, start_experiment, stop_experiment
    from services.store.analytics_aggregate import aggregate_day
    from services.understanding.rules import add_rule, parse_rule

    rows = Rows()
    # yesterday: "red dress" 10 searches, 6 clicked (3 at 1, 3 at 2), one carted and bought
    for i in range(10):
        s = rows.search(YESTERDAY, "red dress", SHOWN)
        if i < 6:
            rows.event(s, 1 if i < 3 else 2)
        if i == 0:
            rows.event(s, 1, "add_to_cart")
            rows.event(s, 1, "purchase")
    rows.search(YESTERDAY, "red dress", SHOWN, offset=10)  # a next page: a page, no search
    # "kicks" 6 searches, one click at 8, and a click naming a product not shown there
    for i in range(6):
        s = rows.search(YESTERDAY, "kicks", SHOWN)
        if i == 0:
            rows.event(s, 8)
            rows.event(s, 3, product=999)
    # "blue jeans" 5 searches, 3 clicked at 7: clicks deep
    for i in range(5):
        s = rows.search(YESTERDAY, "blue jeans", SHOWN)
        if i < 3:
            rows.event(s, 7)
    for _ in range(3):
        rows.search(YESTERDAY, "zzgrb", [])
    rows.search(YESTERDAY, FORMULA.lower(), [])
    rows.search(YESTERDAY, None, SHOWN, image=True)  # a photo: a search without a query
    # ten days ago: "red dress" 4 more, one clicked at 3; a next page clicked at 25
    for i in range(4):
        s = rows.search(OLD, "red dress", SHOWN)
        if i == 0:
            rows.event(s, 3)
    rows.event(rows.search(OLD, "red dress", list(range(121, 131)), offset=20), 25)

    # experiments (photo searches, so the query tables stay as above)
    plans = (
        ("alpha-a-wins", {"alpha": 0.5}, {"alpha": 0.7}, 12, [1] * 10 + [0, None]),
        ("understanding-tie", {"understanding": True}, {"understanding": False}, 4, [1, 1, 2, 2]),
        ("alpha-running", {"alpha": 0.5}, {"alpha": 0.0}, 100, [1, 2, None]),
    )
    for name, a, b, planned, outcomes in plans:
        exp = start_experiment(conn, name, a, b, traffic=0.1, impressions=planned)
        for outcome in outcomes:  # 1: A's product clicked, 2: B's, 0: one of each, None: none
            s = rows.search(
                EXPERIMENT_DAY, None, [201, 202], image=True, experiment=exp.id, teams=[1, 2]
            )
            for position in {1: [1], 2: [2], 0: [1, 2], None: []}[outcome]:
                rows.event(s, position)
        if name != "alpha-running":
            stop_experiment(conn, name)

    with conn.transaction():
        copy_rows(conn, "analytics_searches", rows.searches)
        copy_rows(conn, "analytics_events", rows.events)
    for day in (YESTERDAY, EXPERIMENT_DAY, OLD):
        aggregate_day(conn, day)
    add_rule(conn, parse_rule("red dresses <-> scarlet gown"))  # matches "red dress" (plural)
    conn.commit()


@contextlib.contextmanager
def _served(settings):
    from services.api.app import create_app

    srv = ServerThread(create_app(settings, load_models=False)).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as client:
            yield client
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def analytics_api(settings):
    from services.store.db import connect

    with connect(settings.database_url) as conn:
        _store(conn)
    with _served(settings) as client:
        yield client


class _Tables(HTMLParser):
    """Each table of the page as rows of cell texts, keyed by its region's label id; and
    every link as (href, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[tuple[str, str]] = []
        self._region: str | None = None
        self._cell: list[str] | None = None
        self._link: list | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and a.get("role") == "region":
            self._region = a["aria-labelledby"]
            self.tables[self._region] = []
        elif tag == "tr" and self._region:
            self.tables[self._region].append([])
        elif tag in ("td", "th") and self._region:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")
        elif tag == "a":
            self._link = [a.get("href"), ""]

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._region][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._region = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], self._link[1].strip()))
            self._link = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._link is not None:
            self._link[1] += data


def _page(client, **params) -> _Tables:
    resp = client.get("/analytics", params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    parsed = _Tables()
    parsed.feed(resp.text)
    parsed.html = resp.text
    return parsed


def _csv(client, table: str, **params) -> list[dict[str, str]]:
    resp = client.get(f"/analytics/{table}.csv", params=params)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/csv; charset=utf-8"
    days = params.get("days", 28)
    assert resp.headers["content-disposition"] == (
        f'attachment; filename="analytics-{table}-{days}d.csv"'
    )
    return list(csv.DictReader(io.StringIO(resp.text)))


def _rows(tables: _Tables, region: str) -> dict[str, list[str]]:
    """A table's body rows by their first cell (the header row left out)."""
    return {r[0]: r[1:] for r in tables.tables[region][1:]}


# --- the page ---------------------------------------------------------------------------
def test_the_page_shows_the_window_s_numbers(analytics_api):
    page = _page(analytics_api)
    # top queries over 28 days: searches, zero results, click-through, clicks, mean position
    top = _rows(page, "t-top")
    assert list(top) == ["red dress", "kicks", "blue jeans", "zzgrb", FORMULA.lower()]
    assert top["red dress"][:5] == ["14", "0", "50.0%", "7", "1.7"]  # (6 x 1.5 + 3) / 7
    assert top["kicks"][:5] == ["6", "0", "16.7%", "1", "8.0"]  # the unmatched click: no click
    assert top["blue jeans"][:5] == ["5", "0", "60.0%", "3", "7.0"]
    assert top["zzgrb"][:5] == ["3", "3", "0.0%", "0", "—"]
    assert list(_rows(page, "t-zero")) == ["zzgrb", FORMULA.lower()]
    # queries to fix: searched >= 5 times, click-through < 25 % or mean position > 5
    fix = _rows(page, "t-fix")
    assert list(fix) == ["kicks", "blue jeans"]
    assert fix["kicks"][5] == "click-through 17%; clicks deep (mean position 8.0)"
    assert fix["blue jeans"][5] == "clicks deep (mean position 7.0)"
    # the rules: "kicks" has the starting set's rule, "red dress" the two-way one (plural)
    assert "kicks -> sports shoes, casual shoes" in fix["kicks"][6]
    assert top["red dress"][5].endswith("red dresses <-> scarlet gown")
    assert top["blue jeans"][5] == "none"
    # clicks per position, 1..20 and the deeper ones together
    positions = page.tables["t-positions"]
    assert positions[0][1:4] == ["1", "2", "3"] and positions[0][-1] == "21+"
    clicks = dict(zip(positions[0][1:], positions[1][1:]))
    assert (clicks["1"], clicks["2"], clicks["3"], clicks["7"], clicks["8"]) == (
        "3",
        "3",
        "1",
        "3",
        "1",
    )
    assert clicks["21+"] == "1" and clicks["4"] == "0"
    # the day: 26 searches (first pages), 27 pages, zero-result rate 4 / 26, click-through:
    # 10 of the 22 searches that showed products
    day = _rows(page, "t-daily")[YESTERDAY.isoformat()]
    assert day[:6] == ["26", "27", "5", "15.4%", f"{10 / 22:.1%}", "3.80"]
    assert day[9:13] == ["10", "1", "1", "1"]  # clicks, carts, purchases, unmatched
    assert set(_rows(page, "t-daily")) == {YESTERDAY.isoformat(), OLD.isoformat()}


def test_each_query_links_to_the_storefront_and_markup_is_escaped(analytics_api):
    page = _page(analytics_api)
    links = {text: href for href, text in page.links}
    assert links["red dress"] == "/?q=red+dress"
    assert links["kicks"] == "/?q=kicks"
    assert links[FORMULA.lower()] == "/?q=%3Dhyperlink%28%22http%3A%2F%2Fx%22%29%26%3Cb%3E"
    assert "&amp;&lt;b&gt;" in page.html and FORMULA.lower() not in page.html
    assert links["MAP dashboard"] == "/dashboard"
    assert "/analytics/top-queries.csv?days=28" in links.values()


def test_the_window_leaves_out_older_days(analytics_api):
    page = _page(analytics_api, days=2)
    top = _rows(page, "t-top")
    assert top["red dress"][:5] == ["10", "0", "60.0%", "6", "1.5"]
    assert set(_rows(page, "t-daily")) == {YESTERDAY.isoformat()}
    assert "21+" not in page.tables["t-positions"][0]
    week = _csv(analytics_api, "daily", days=7)
    assert [r["day"] for r in week] == [YESTERDAY.isoformat()]
    longer = _csv(analytics_api, "daily", days=60)
    assert [r["day"] for r in longer] == [d.isoformat() for d in (EXPERIMENT_DAY, OLD, YESTERDAY)]
    assert [int(r["searches"]) for r in longer] == [19, 4, 26]  # the experiments: 12 + 4 + 3


def test_experiments_follow_the_stop_rule(analytics_api):
    from services.analytics.interleave import sign_test

    rows = _rows(_page(analytics_api), "t-experiments")
    # newest first; arms, traffic, status, impressions (planned), A wins, B wins, ties, p, verdict
    assert list(rows) == ["alpha-running", "understanding-tie", "alpha-a-wins"]
    assert rows["alpha-a-wins"] == [
        "alpha 0.5", "alpha 0.7", "10.0%", "stopped", "12 (12)", "10", "0", "1",
        f"{sign_test(10, 0):.4g}", "arm A wins (alpha 0.5)",
    ]  # fmt: skip
    assert sign_test(10, 0) == pytest.approx(2 / 2**10)
    assert rows["understanding-tie"][4:] == ["4 (4)", "2", "2", "0", "1", "no difference shown"]
    assert rows["understanding-tie"][:2] == ["understanding on", "understanding off"]
    assert rows["alpha-running"][3:] == [
        "running", "3 (100)", "1", "1", "0", "read at 100", "running: 3 of 100 impressions",
    ]  # fmt: skip
    exported = {r["name"]: r for r in _csv(analytics_api, "experiments")}
    assert float(exported["alpha-a-wins"]["p_value"]) == pytest.approx(0.001953, abs=1e-6)
    assert exported["alpha-running"]["p_value"] == ""  # not read before the horizon
    assert exported["alpha-a-wins"]["arm_b"] == '{"alpha": 0.7}'
    assert (exported["understanding-tie"]["wins"], exported["understanding-tie"]["ties"]) == (
        "2",
        "0",
    )
    assert exported["alpha-running"]["planned_impressions"] == "100"


# --- CSV ----------------------------------------------------------------------------------
def test_each_table_downloads_as_csv(analytics_api):
    top = _csv(analytics_api, "top-queries")
    assert list(top[0]) == [
        "query", "searches", "zero_results", "clicked_searches", "clicks",
        "click_through_rate", "mean_click_position", "synonym_rules",
    ]  # fmt: skip
    red = top[0]
    assert (red["query"], red["searches"], red["clicked_searches"], red["clicks"]) == (
        "red dress",
        "14",
        "7",
        "7",
    )
    assert float(red["click_through_rate"]) == 0.5
    assert float(red["mean_click_position"]) == pytest.approx(12 / 7, abs=1e-6)
    assert red["synonym_rules"].endswith("red dresses <-> scarlet gown")
    # a query a spreadsheet would run as a formula is defused
    zero = _csv(analytics_api, "zero-result-queries")
    assert [(r["query"], r["zero_results"]) for r in zero] == [
        ("zzgrb", "3"),
        ("'" + FORMULA.lower(), "1"),
    ]
    fix = _csv(analytics_api, "queries-to-fix")
    assert [(r["query"], r["reason"]) for r in fix] == [
        ("kicks", "click-through 17%; clicks deep (mean position 8.0)"),
        ("blue jeans", "clicks deep (mean position 7.0)"),
    ]
    assert "kicks -> sports shoes, casual shoes" in fix[0]["synonym_rules"]
    positions = {
        int(r["position"]): (int(r["clicks"]), float(r["share"]))
        for r in _csv(analytics_api, "positions")
    }
    assert positions == {
        1: (3, 0.25), 2: (3, 0.25), 3: (1, pytest.approx(1 / 12, abs=1e-6)), 7: (3, 0.25),
        8: (1, pytest.approx(1 / 12, abs=1e-6)), 25: (1, pytest.approx(1 / 12, abs=1e-6)),
    }  # fmt: skip
    daily = {r["day"]: r for r in _csv(analytics_api, "daily")}
    y = daily[YESTERDAY.isoformat()]
    assert (y["searches"], y["pages"], y["unique_queries"], y["clicks"]) == ("26", "27", "5", "10")
    assert float(y["zero_result_rate"]) == pytest.approx(4 / 26, abs=1e-6)
    assert float(y["mean_click_position"]) == pytest.approx(3.8, abs=1e-6)
    assert (y["add_to_carts"], y["purchases"], y["unmatched_events"]) == ("1", "1", "1")


def test_the_charts_are_pictures(analytics_api):
    page = _page(analytics_api).html
    for chart in ("trend", "positions", "queries"):
        assert f"/analytics/{chart}.png?days=28" in page
        resp = analytics_api.get(f"/analytics/{chart}.png", params={"days": 28})
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
        assert resp.content.startswith(b"\x89PNG\r\n\x1a\n") and len(resp.content) > 5_000


def test_the_page_allows_only_its_own_inline_style(analytics_api):
    from services.api.security import SECURITY_HEADERS, inline_hashes

    resp = analytics_api.get("/analytics")
    csp = resp.headers["content-security-policy"]
    scripts, styles = inline_hashes(resp.text)
    assert not scripts and len(styles) == 1 and styles[0] in csp
    assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers[name] == value


# --- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/analytics", "/analytics/trend.png", "/analytics/daily.csv"])
def test_days_out_of_range_is_a_422_and_not_a_number_a_400(analytics_api, path):
    for bad in (0, -1, 367, 10**6):
        body = assert_error(analytics_api.get(path, params={"days": bad}), 422)
        assert "days must be in 1..366" in body["detail"]
    assert_error(analytics_api.get(path, params={"days": "abc"}), 400)
    assert_error(analytics_api.get(path, params={"days": "1.5"}), 400)
    assert analytics_api.get(path, params={"days": 366}).status_code == 200
    assert analytics_api.get(path, params={"days": 1}).status_code == 200


def test_an_unknown_table_is_a_404(analytics_api):
    for name in ("nope.csv", "daily", "daily.json", "trend.csv", "..%2Fdaily.csv"):
        assert_error(analytics_api.get(f"/analytics/{name}"), 404)


def test_the_dashboard_links_to_the_page_and_back(analytics_api):
    from evaluation.dashboard import DashboardData, render_page

    empty = DashboardData([], {}, None, [], None, None, [], [], 0.5, 0.02)
    assert '<a href="/analytics">' in render_page(empty, "/dashboard")
    assert ("/dashboard", "MAP dashboard") in _page(analytics_api).links


def test_no_data_is_the_empty_state_not_an_error(empty_db):
    from services.config import get_settings

    with _served(get_settings()) as client:
        page = _page(client)
        assert "No searches recorded yet in this window." in page.html
        assert "No experiment yet" in page.html
        assert not page.tables  # no table without rows
        for chart in ("trend", "positions", "queries"):
            resp = client.get(f"/analytics/{chart}.png")
            assert resp.status_code == 200 and resp.content.startswith(b"\x89PNG")
        for table, first in (
            ("daily", "day"),
            ("positions", "position"),
            ("top-queries", "query"),
            ("zero-result-queries", "query"),
            ("queries-to-fix", "query"),
            ("experiments", "name"),
        ):
            resp = client.get(f"/analytics/{table}.csv")
            assert resp.status_code == 200
            lines = resp.text.splitlines()
            assert len(lines) == 1 and lines[0].split(",")[0] == first, (table, lines)


# --- in the browser -----------------------------------------------------------------------
@pytest.mark.browser
def test_the_page_passes_axe_in_chromium(analytics_api):
    """axe-core: no serious or critical violation, on a desktop and a phone (where the page
    does not scroll sideways), and with no data; every picture has a text alternative and
    loads; the keyboard walk of the MAP dashboard's test (every control by Tab, in order,
    with a visible focus ring). Screenshot: artifacts/analytics.png."""
    from axe import axe_violations, format_violations, require_axe
    from test_dashboard_browser import _keyboard_walk, _require_chromium

    _require_chromium()
    require_axe()
    from playwright.sync_api import sync_playwright

    from evaluation.analytics_page import AnalyticsData, render_page

    url = str(analytics_api.base_url).rstrip("/") + "/analytics"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for viewport in ({"width": 1280, "height": 900}, {"width": 390, "height": 844}):
                page = browser.new_page(viewport=viewport)
                response = page.goto(url, wait_until="networkidle")
                assert response is not None and response.status == 200
                assert page.title() == "Search analytics"
                found = axe_violations(page)
                assert not found, f"{viewport}: " + format_violations(found)
                images = page.eval_on_selector_all(
                    "img", "els => els.map(e => [e.alt.trim(), e.complete, e.naturalWidth])"
                )
                assert len(images) == 3
                for alt, complete, width in images:
                    assert alt and complete and width > 300, images
                width = page.evaluate("() => document.documentElement.scrollWidth")
                assert width <= viewport["width"], f"{viewport}: the page scrolls sideways"
                if viewport["width"] == 1280:
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "analytics.png"), full_page=True)
                    _keyboard_walk(page)
                page.close()
            empty = AnalyticsData(28, TODAY, [], [], 0, [], [], [], [])
            page = browser.new_page()
            page.goto(url, wait_until="networkidle")  # same origin
            page.set_content(render_page(empty, "/analytics"))
            found = axe_violations(page)
            assert not found, "no data: " + format_violations(found)
            page.close()
        finally:
            browser.close()
