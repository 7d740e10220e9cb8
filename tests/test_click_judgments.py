"""Click-derived judgments (issue #24, item 6): what the SQL counts from the raw analytics rows,
the position-bias correction and thresholds that turn it into judgments, and an evaluation run
that stores the ``clicks`` family beside the generated ones and shows it on the dashboard.

Rows are written as the pipeline role (``settings.database_url``) with the API writer's own
COPY (``services.store.analytics.copy_rows``), into this module's own database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from psycopg.types.json import Jsonb

from evaluation.click_judgments import (
    CLICK_FAMILY,
    ClickConfig,
    click_qid,
    load_click_family,
    propensity,
    weight,
)
from services.store import click_judgments as click_store
from services.store.analytics import copy_rows

NOW = datetime.now(UTC)
RECENT = NOW - timedelta(hours=2)


def _search(
    query: str | None,
    shown: list[int],
    *,
    at: datetime = RECENT,
    has_image: bool = False,
    page_offset: int = 0,
    sort: str = "relevance",
    experiment_id: int | None = None,
) -> tuple:
    teams = [1 + i % 2 for i in range(len(shown))] if experiment_id is not None else None
    return (
        at,
        uuid.uuid4(),
        "s-" + uuid.uuid4().hex[:8],
        query,
        has_image,
        "hybrid",
        0.5,
        Jsonb({}),
        page_offset,
        sort,
        len(shown) + page_offset,
        shown,
        True,
        False,
        12.5,
        None,
        experiment_id,
        teams,
    )


def _event(search: tuple, product_id: int, position: int, kind: str = "click") -> tuple:
    return (search[0] + timedelta(minutes=1), search[1], kind, product_id, position, search[2])


def _insert(conn, searches: list[tuple], events: list[tuple]) -> None:
    copy_rows(conn, "analytics_searches", searches)
    copy_rows(conn, "analytics_events", events)
    conn.commit()


@pytest.fixture
def clean(conn):
    """This test's rows only: the raw tables emptied (by the pipeline role) before and after."""
    conn.execute("DELETE FROM analytics_events")
    conn.execute("DELETE FROM analytics_searches")
    conn.commit()
    yield conn
    conn.rollback()
    conn.execute("DELETE FROM analytics_events")
    conn.execute("DELETE FROM analytics_searches")
    conn.commit()


# Product ids of the "blue jacket" fixture: A is shown at position 1, C at 2, B at 8.
A, C, B = 101, 102, 108
PAGE = [A, C, 103, 104, 105, 106, 107, B, 109, 110]


def _blue_jacket(conn) -> None:
    """20 first pages of "blue jacket" (spelt three ways: one normalised query): A clicked in
    2 of them at position 1, B in 2 at position 8, C in 8 at position 2: 12 searches with a
    click. Plus what must not count: a second click on the same card, clicks naming the wrong
    product or a position past the page, add-to-cart and purchase events."""
    texts = ("blue jacket", "Blue Jacket", "  BLUE JACKET ")
    searches = [_search(texts[i % 3], PAGE) for i in range(20)]
    events = [_event(searches[0], A, 1), _event(searches[1], A, 1)]
    events += [_event(searches[2], B, 8), _event(searches[3], B, 8)]
    events += [_event(searches[i], C, 2) for i in range(4, 12)]
    events.append(_event(searches[4], C, 2))  # the same card clicked twice: one click
    for s in searches[12:]:
        events.append(_event(s, A, 3))  # A is not at position 3: unmatched
        events.append(_event(s, 999, 1))  # 999 was not shown at all: unmatched
        events.append(_event(s, A, 11))  # past the page: unmatched
        events.append(_event(s, A, 1, "add_to_cart"))  # not a click
        events.append(_event(s, A, 1, "purchase"))
    _insert(conn, searches, events)


def test_propensity_and_weights():
    assert propensity(1) == 1.0 and propensity(8) == pytest.approx(1 / 8)
    assert propensity(4, eta=2.0) == pytest.approx(1 / 16)
    assert propensity(8, eta=0.0) == 1.0  # eta 0: no correction
    config = ClickConfig()
    assert weight(1, config) == 1.0 and weight(8, config) == pytest.approx(8.0)
    assert weight(30, config) == 10.0  # clipped at max_weight
    with pytest.raises(ValueError):
        propensity(0)
    with pytest.raises(ValueError):
        ClickConfig(relative_threshold=0.0)


def test_counts_normalise_the_query_and_ignore_unmatched_events(clean):
    _blue_jacket(clean)
    since = NOW - timedelta(days=28)
    counts = click_store.query_counts(clean, since)
    assert counts == [click_store.QueryCount("blue jacket", 20, 12, 12)]
    cells = {
        (c.product_id, c.position): (c.impressions, c.clicks)
        for c in click_store.position_cells(clean, ["blue jacket"], since)
    }
    assert len(cells) == len(PAGE)  # one cell per product, each always at its position
    assert cells[(A, 1)] == (20, 2)  # the unmatched, add-to-cart and purchase events: none
    assert cells[(C, 2)] == (20, 8)  # clicked twice in one search: counted once
    assert cells[(B, 8)] == (20, 2)
    assert cells[(103, 3)] == (20, 0)
    assert click_store.position_cells(clean, [], since) == []


def test_ips_weighs_a_deep_click_over_a_top_one(clean):
    """A and B are clicked equally often (2 of 20 impressions, raw click-through 0.1 each);
    B's clicks came at position 8, where a shopper looks 8 times less often: its weighted
    click-through is 0.8 against A's 0.1, and only B (with C) is judged relevant."""
    _blue_jacket(clean)
    family = load_click_family(clean, ClickConfig())
    assert family.qualifies and [q.text for q in family.queries] == ["blue jacket"]
    q = family.queries[0]
    assert q.family == CLICK_FAMILY and q.qid == click_qid("blue jacket")
    assert (q.searches, q.clicked_searches) == (20, 12)
    ev = {e.product_id: e for e in family.evidence["blue jacket"]}
    assert (ev[A].impressions, ev[A].clicks) == (20, 2) and ev[A].ctr == pytest.approx(0.1)
    assert (ev[B].impressions, ev[B].clicks) == (20, 2) and ev[B].ctr == pytest.approx(0.1)
    assert ev[A].wctr == pytest.approx(2 * 1 / 20)
    assert ev[B].wctr == pytest.approx(2 * 8 / 20)
    assert ev[C].wctr == pytest.approx(8 * 2 / 20)
    assert ev[B].mean_position == 8.0
    # best 0.8 (B and C); threshold 0.25 x 0.8 = 0.2: A's 0.1 is under it
    assert q.judged == frozenset({B, C})
    assert q.relevant([{"id": A}, {"id": B}, {"id": 555}]) == {B}
    # without the correction (eta 0) A and B are the same and all three pass 0.25 x 0.4
    raw = load_click_family(clean, ClickConfig(eta=0.0))
    raw_ev = {e.product_id: e for e in raw.evidence["blue jacket"]}
    assert raw_ev[A].wctr == raw_ev[B].wctr == pytest.approx(0.1)
    assert raw.queries[0].judged == frozenset({A, B, C})
    # a click in one search only is never enough, whatever its weight
    assert load_click_family(clean, ClickConfig(min_clicks=3)).queries[0].judged == {C}


def test_experiments_other_pages_photos_and_old_rows_do_not_count(clean):
    """ "red dress" has 12 clicked searches of every kind that must not count, and 9 that do:
    it does not qualify (10 needed) and the family says so."""
    searches, events = [], []
    for i in range(12):
        for kwargs in (
            {"experiment_id": 7},  # interleaved: the experiment's, not the judgments'
            {"page_offset": 10},  # a next page
            {"sort": "newest"},  # not the relevance ranking
            {"has_image": True},  # a photo search
            {"at": NOW - timedelta(days=40)},  # out of the window
        ):
            s = _search("red dress", [201, 202, 203], **kwargs)
            searches.append(s)
            events.append(_event(s, 201, 1 + kwargs.get("page_offset", 0)))
    for i in range(9):
        s = _search("red dress", [201, 202, 203])
        searches.append(s)
        events.append(_event(s, 202, 2))
    searches.append(_search(None, [201]))  # a photo-only search has no text: never counted
    searches.append(_search("   ", [201]))
    _insert(clean, searches, events)
    since = NOW - timedelta(days=28)
    assert click_store.query_counts(clean, since) == [click_store.QueryCount("red dress", 9, 9, 9)]
    assert click_store.query_counts(clean, since, min_clicked_searches=10) == []
    family = load_click_family(clean, ClickConfig())
    assert not family.qualifies and family.queries == []
    assert family.message().startswith("no click family: 0 queries qualify, need 1 (")
    assert ">= 10 first-page text searches with a click in the last 28 days" in family.message()
    details = family.details()
    assert details["evaluated"] is False and details["n_queries"] == 0
    # a wider window brings the old rows in: 12 + 9 clicked searches, 201 and 202 judged
    wide = load_click_family(clean, ClickConfig(days=60))
    assert [(q.text, q.clicked_searches) for q in wide.queries] == [("red dress", 21)]
    assert wide.queries[0].judged == frozenset({201, 202})
    # fewer needed: the 9 qualify
    assert load_click_family(clean, ClickConfig(min_clicked_searches=9)).qualifies


def test_judged_products_outside_the_index_exclude_a_query(clean):
    _blue_jacket(clean)
    family = load_click_family(clean, ClickConfig(), in_index={B, 500})
    assert family.queries[0].judged == frozenset({B})
    gone = load_click_family(clean, ClickConfig(), in_index={A, 500})
    assert gone.queries == [] and not gone.qualifies
    assert gone.excluded == [
        {
            "text": "blue jacket",
            "clicked_searches": 12,
            "reason": "none of its 2 judged products is in the index",
        }
    ]
    assert gone.message().startswith("no click family: 0 queries qualify, need 1")


def test_which_runs_ask_the_family():
    """A full run of a reported split asks it; a --families subset or a tuning-split run only
    when told to; the CLI's flags give its configuration or turn it off."""
    import argparse

    from evaluation.cli import _clicks, register
    from evaluation.run import _click_config

    assert _click_config(None, None, "test") == ClickConfig()
    assert _click_config(None, None, None) == ClickConfig()  # --split all
    assert _click_config(None, ["category"], "test") is None
    assert _click_config(None, None, "tune") is None
    assert _click_config(True, ["category"], "tune") == ClickConfig()
    assert _click_config(False, None, "test") is None
    mine = ClickConfig(min_clicked_searches=3)
    assert _click_config(mine, ["category"], "test") is mine

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    assert _clicks(parser.parse_args(["eval"])) is None
    assert _clicks(parser.parse_args(["eval", "--no-clicks"])) is False
    got = _clicks(parser.parse_args(["eval", "--click-min-searches", "5", "--click-days", "7"]))
    assert (got.min_clicked_searches, got.days, got.eta) == (5, 7, 1.0)


# --- an evaluation run on a real (tiny) index stores the family ---------------------------------
@pytest.fixture(scope="module")
def tiny_index(settings):
    from api_harness import build_live_index

    return build_live_index(settings)


@pytest.mark.slow
def test_evaluation_stores_and_shows_the_click_family(settings, clean, tiny_index):
    """A run without clicks says there is no family and succeeds. Then the click judgments of
    one generated query's text are made exactly its metadata judgments (every relevant
    product clicked in every search), for a query the index does not rank perfectly: the
    ``clicks`` family must score exactly what the generated family scored for that query, at
    every alpha, through its own path (SQL, judgments, search, metrics)."""
    from evaluation import dashboard
    from evaluation.report import family_table, text_report
    from evaluation.run import evaluate
    from evaluation.summary import headline, value
    from services.store import evaluations as storage
    from services.store.index_versions import live_version, product_metadata

    conn = clean
    products = product_metadata(conn, live_version(conn).id)
    conn.commit()
    common = {
        "alphas": [0.0, 0.5, 1.0],
        "families": ["category", "colour_category"],
        "sizes": {"category": 6, "colour_category": 8},
        "fast_recall_queries": 2,
    }
    none = evaluate(conn, **common, clicks=ClickConfig())
    run = storage.get_run(conn, none.run_id)
    assert run.status == "succeeded" and none.clicks["evaluated"] is False
    assert run.details["clicks"]["message"].startswith("no click family: 0 queries qualify, need 1")
    assert not any(r.family == CLICK_FAMILY for r in storage.metrics_for(conn, run.id))
    conn.commit()

    # the query the index ranks worst (at its worst alpha), with 2 to 20 relevant products
    candidates = [
        q
        for q in none.query_set.queries
        if q.qid in none.per_query and 2 <= none.per_query[q.qid]["n_relevant"] <= 20
    ]
    target = min(candidates, key=lambda q: (min(none.per_query[q.qid]["ap"].values()), q.qid))
    assert min(none.per_query[target.qid]["ap"].values()) < 0.99, "every query ranked perfectly"
    assert target.text == target.text.lower().strip()
    relevant = sorted(target.relevant(products))
    others = [int(p["id"]) for p in products if int(p["id"]) not in relevant][:4]
    searches = [_search(target.text.upper(), relevant + others) for _ in range(12)]
    events = [_event(s, pid, i + 1) for s in searches for i, pid in enumerate(relevant)]
    # a query with too few clicked searches stays out
    few = [_search("something else", others) for _ in range(5)]
    events += [_event(s, others[0], 1) for s in few]
    _insert(conn, searches + few, events)

    outcome = evaluate(conn, **common, clicks=ClickConfig())
    run = storage.get_run(conn, outcome.run_id)
    rows = storage.metrics_for(conn, run.id)
    conn.commit()
    assert run.status == "succeeded" and run.details["clicks"]["evaluated"] is True
    assert run.details["clicks"]["n_queries"] == 1
    [entry] = run.details["clicks"]["queries"]
    assert entry["text"] == target.text and entry["n_relevant"] == len(relevant)
    assert entry["clicked_searches"] == 12
    clicks = [r for r in rows if r.family == CLICK_FAMILY]
    assert {r.mode for r in clicks} == {"dense", "sparse", "hybrid", "literal"}
    assert all(r.n_queries == 1 for r in clicks)
    ap = outcome.per_query[target.qid]["ap"]
    for alpha in (0.0, 0.5, 1.0):
        got = value(rows, "hybrid", alpha, family=CLICK_FAMILY)
        assert got == pytest.approx(ap[str(alpha)], abs=1e-4), alpha
    assert value(rows, "literal", family=CLICK_FAMILY) == pytest.approx(
        outcome.per_query[target.qid]["literal_ap"], abs=1e-4
    )
    assert entry["ap_default_alpha"] == pytest.approx(ap[str(run.details["default_alpha"])])
    # never in "all": the overall means count the generated queries only
    overall = [r for r in rows if r.family == "all" and r.metric == "map@10"]
    text_scored = len(outcome.per_query)
    assert overall and all(r.n_queries == text_scored for r in overall if r.mode == "hybrid")

    # shown beside the generated families: the table (with its query count), the chart, the page
    head = headline(rows, run.details["default_alpha"], run.details["default_alpha_multi"])
    table = family_table(rows, head)
    [row] = [r for r in table if r[0] == CLICK_FAMILY]
    assert row[1] == "shoppers" and row[2] == "1"
    assert float(row[6]) == pytest.approx(
        value(rows, "hybrid", run.details["default_alpha"], family=CLICK_FAMILY), abs=1e-3
    )
    data = dashboard.load_data(conn, run.id, current_default_alpha=0.5)
    page = dashboard.render_page(data, "/dashboard")
    assert '<th scope="row">clicks</th><td>shoppers</td><td>1</td>' in page
    assert "click family: 1 queries, " in page
    assert dashboard.families_png(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "click family: 1 queries" in text_report(conn, run.id)
    assert outcome.report_path and "`clicks` family" in outcome.report_path.read_text()
