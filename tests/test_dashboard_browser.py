"""The MAP dashboard in headless Chromium: the page renders its charts as pictures and the
previous-run comparison highlights a regression; it passes axe-core (no serious or critical
violation, tests/axe.py), every control is reached by Tab with a visible focus indicator,
and every picture has a text alternative. Screenshot: artifacts/dashboard.png.

Two SYNTHETIC runs are stored (numbers made up for the picture, marked
``details.synthetic``); the real numbers come from ``fashion-search eval``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from api_harness import CHROMIUM, CHROMIUM_ARGS
from axe import axe_violations, format_violations, require_axe

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"

pytestmark = pytest.mark.browser


def _store_synthetic_runs(conn) -> tuple[int, int]:
    from evaluation.queries import FAMILIES
    from services.store import evaluations as storage
    from services.store.evaluations import MetricRow

    def curve(peak_alpha: float, peak: float, lo: float, hi: float):
        out = {}
        for i in range(11):
            a = i / 10
            left = lo + (peak - lo) * (a / peak_alpha) if a <= peak_alpha else None
            right = hi + (peak - hi) * ((1 - a) / (1 - peak_alpha)) if a >= peak_alpha else None
            out[round(a, 1)] = left if left is not None else right
        return out

    ids = []
    for hybrid_peak, multi_peak in ((0.86, 0.82), (0.80, 0.83)):  # second run regresses
        run_id = storage.start_run(
            conn,
            index_version_id=None,
            dense_model="fashion-clip-offline",
            sparse_model="splade-tiny-offline",
            query_set_version="qs1-synthetic",
            details={
                "default_alpha": 0.5,
                "synthetic": True,
                "n_queries_scored": 300,
                "n_products": 10000,
            },
        )
        rows = []
        h = curve(0.4, hybrid_peak, 0.72, 0.58)
        m = curve(0.7, multi_peak, 0.35, 0.70)
        rows.append(MetricRow("dense", 1.0, "all", "map@10", h[1.0], 240))
        rows.append(MetricRow("sparse", 0.0, "all", "map@10", h[0.0], 240))
        for a in h:
            rows.append(MetricRow("hybrid", a, "all", "map@10", h[a], 240))
            rows.append(MetricRow("multi", a, "all", "map@10", m[a], 60))
            for j, fam in enumerate(FAMILIES[:-1]):
                rows.append(MetricRow("hybrid", a, fam, "map@10", max(0.0, h[a] - 0.04 * j), 48))
            rows.append(MetricRow("multi", a, "multimodal", "map@10", m[a], 60))
        for j, fam in enumerate(FAMILIES[:-1]):
            rows.append(MetricRow("dense", 1.0, fam, "map@10", max(0.0, h[1.0] - 0.03 * j), 48))
            rows.append(MetricRow("sparse", 0.0, fam, "map@10", max(0.0, h[0.0] - 0.05 * j), 48))
        storage.store_metrics(conn, run_id, rows)
        storage.finish_run(conn, run_id, status="succeeded")
        ids.append(run_id)
    return ids[0], ids[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard_url(settings, conn):
    import uvicorn
    from api_harness import dashboard_app

    _store_synthetic_runs(conn)
    stack = contextlib.ExitStack()
    app = stack.enter_context(dashboard_app(settings))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/dashboard"
    server.should_exit = True
    thread.join(timeout=10)
    stack.close()


def _require_chromium() -> None:
    if not Path(CHROMIUM).exists():
        # CI installs Chromium (make test): there a missing browser is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (make test installs it)")
        pytest.skip(f"Chromium not found at {CHROMIUM}")


def test_dashboard_in_headless_chromium(dashboard_url):
    _require_chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            response = page.goto(dashboard_url, wait_until="networkidle")
            assert response is not None and response.status == 200
            assert page.title() == "Search quality dashboard"
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])"
            )
            srcs = [s for s, _, _ in images]
            assert any(s.endswith("history.png") for s in srcs)
            assert any("alpha.png" in s for s in srcs)
            for src, complete, width in images:
                assert complete and width > 300, f"{src} did not load as a picture"
            # the synthetic second run regresses: highlighted row
            regressed = page.locator("tr.regressed")
            assert regressed.count() >= 1
            assert "hybrid MAP@10 (best alpha)" in regressed.first.inner_text()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.exists() and shot.stat().st_size > 10_000


# Everything a keyboard user can act on (the dashboard's links, its scrollable tables).
_FOCUSABLE = (
    "a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]),"
    " textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])"
)
# The focus indicator of the focused element: outline and box-shadow as computed.
_RING = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e);
  const outline = s.outlineStyle === 'none' || parseFloat(s.outlineWidth) === 0
    ? 'none' : `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}`;
  return {id: e.dataset.a11y || null, outline, shadow: s.boxShadow};
}"""


def _keyboard_walk(page) -> None:
    """Tab through the page: every control is reached, in document order, each with a
    focus indicator (outline or box-shadow) it does not have unfocused."""
    controls = page.evaluate(
        """(sel) => [...document.querySelectorAll(sel)].map((e, i) => {
             e.dataset.a11y = String(i);
             const s = getComputedStyle(e);
             return {id: String(i), html: e.outerHTML.slice(0, 100), shadow: s.boxShadow,
                     outline: s.outlineStyle === 'none' || parseFloat(s.outlineWidth) === 0
                       ? 'none' : `${s.outlineStyle} ${s.outlineWidth} ${s.outlineColor}`};
           })""",
        _FOCUSABLE,
    )
    assert controls, "the dashboard has no keyboard control to check"
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    reached = []
    for _ in range(len(controls) + 1):
        page.keyboard.press("Tab")
        ring = page.evaluate(_RING)
        if ring is None:  # past the last control
            break
        assert ring["id"] is not None, f"Tab reached an element that is no control: {ring}"
        idle = controls[int(ring["id"])]
        assert (
            ring["outline"] != "none"
            and ring["outline"] != idle["outline"]
            or (ring["shadow"] != idle["shadow"])
        ), f"no visible focus indicator on {idle['html']}: {ring} (unfocused: {idle})"
        reached.append(ring["id"])
    missing = [c["html"] for c in controls if c["id"] not in reached]
    assert not missing, f"not reachable by Tab: {missing}"
    assert reached == [c["id"] for c in controls], "Tab order is not the document order"
    # a link is usable by keyboard: Enter on the focused one follows it
    page.focus("[data-a11y='0']")
    href = page.eval_on_selector("[data-a11y='0']", "e => e.href || null")
    if href:
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.url == href


def test_dashboard_accessibility(dashboard_url, conn):
    """axe-core: no serious or critical violation on /dashboard (desktop and phone widths,
    with an alert shown, and the page with no run yet); on a phone the page does not scroll
    sideways; the keyboard walk; pictures with a text alternative."""
    _require_chromium()
    require_axe()
    from playwright.sync_api import sync_playwright

    from evaluation.dashboard import DashboardData, render_page
    from services.store import evaluations as storage

    latest = storage.latest_run(conn)
    storage.record_alert(
        conn, source="synthetic", message="hybrid MAP@10 regressed", run_id=latest.id
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for viewport in ({"width": 1280, "height": 900}, {"width": 390, "height": 844}):
                page = browser.new_page(viewport=viewport)
                response = page.goto(dashboard_url, wait_until="networkidle")
                assert response is not None and response.status == 200
                assert page.locator("main").count() == 1
                found = axe_violations(page)
                assert not found, f"{viewport}: " + format_violations(found)
                alts = page.eval_on_selector_all("img", "els => els.map(e => e.alt.trim())")
                assert len(alts) == 3 and all(alts), f"a picture without alt text: {alts}"
                width = page.evaluate("() => document.documentElement.scrollWidth")
                assert width <= viewport["width"], f"{viewport}: the page scrolls sideways"
                if viewport["width"] == 1280:
                    _keyboard_walk(page)
                page.close()

            empty = DashboardData([], {}, None, [], None, None, [], [], 0.5, 0.02)
            page = browser.new_page()
            page.goto(dashboard_url, wait_until="networkidle")  # same origin, for the picture
            page.set_content(render_page(empty, "/dashboard"))
            found = axe_violations(page)
            assert not found, "no run yet: " + format_violations(found)
            assert page.eval_on_selector("img", "e => e.alt.trim()")
            page.close()
        finally:
            browser.close()
