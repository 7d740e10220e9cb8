"""The MAP dashboard in headless Chromium: the page renders its charts as pictures and the
previous-run comparison highlights a regression. Screenshot: artifacts/dashboard.png.

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


def test_dashboard_in_headless_chromium(dashboard_url):
    if not Path(CHROMIUM).exists():
        # CI installs Chromium (make test): there a missing browser is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (make test installs it)")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
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
