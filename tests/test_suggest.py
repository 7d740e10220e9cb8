"""Type-ahead (``GET /v1/suggest``): the vocabulary index (``services.search.suggest``), its
cache in the API (``services.api.suggest``), and the endpoint on the real app against the
real database (a tiny live index of 120 offline products, as tests/test_api.py)."""

from __future__ import annotations

import re
import threading
import time

import httpx
import psycopg
import pytest
from api_harness import ServerThread, free_port
from api_harness import assert_error as _assert_error

from services.search.suggest import (
    FACET_KINDS,
    MAX_SUGGESTIONS,
    MIN_PHRASE_PRODUCTS,
    PHRASE,
    SuggestIndex,
    build_index,
    name_phrases,
)


def _texts(found) -> list[str]:
    return [s.text for s in found]


# --- the index ------------------------------------------------------------------------------
ENTRIES = [
    ("Jackets", "articleType", 50),
    ("Denim Jacket", PHRASE, 7),
    ("Black", "baseColour", 80),
    ("Navy Blue", "baseColour", 30),
    ("Blue", "baseColour", 40),
    ("Shirts", "articleType", 100),
    ("Tshirts", "articleType", 60),
    ("Handbags", "articleType", 20),
    ("Jeans", "articleType", 35),
]


@pytest.fixture(scope="module")
def index() -> SuggestIndex:
    return SuggestIndex(ENTRIES)


def test_a_prefix_of_any_word_finds_an_entry(index):
    found = index.suggest("jac")
    assert _texts(found) == ["Jackets", "Denim Jacket"]  # by count
    assert [(s.kind, s.count, s.typo) for s in found] == [
        ("articleType", 50, False),
        (PHRASE, 7, False),
    ]
    assert _texts(index.suggest("den")) == ["Denim Jacket"]
    assert _texts(index.suggest("bl")) == ["Black", "Blue", "Navy Blue"]


def test_exact_matches_rank_by_count_then_label():
    idx = SuggestIndex([("Jb", "brand", 5), ("Ja", "brand", 5), ("Jz", "brand", 9)])
    assert _texts(idx.suggest("j")) == ["Jz", "Ja", "Jb"]


def test_case_and_spaces_are_ignored(index):
    assert _texts(index.suggest("  NAVY   bl ")) == ["Navy Blue"]
    assert _texts(index.suggest("JEANS")) == ["Jeans"]
    assert index.suggest("") == [] and index.suggest("   ") == []


def test_multi_word_earlier_words_exact_the_last_completed(index):
    assert _texts(index.suggest("navy bl")) == ["Navy Blue"]
    assert _texts(index.suggest("navy blue")) == ["Navy Blue"]
    assert _texts(index.suggest("denim ja")) == ["Denim Jacket"]
    assert index.suggest("nav bl") == []  # "nav" is not a whole word
    assert index.suggest("jacket denim") == []  # words in the label's order only
    typo = index.suggest("navy bleu")  # a typo in the last word
    assert _texts(typo) == ["Navy Blue"] and typo[0].typo


def test_typos_only_after_three_characters(index):
    for typed in ("jakc", "jaket", "jcaket"):
        found = index.suggest(typed)
        assert found and found[0].text == "Jackets", typed
        assert all(s.typo for s in found), typed
        assert found[0].count == 50 and found[0].kind == "articleType"
    assert index.suggest("jkc") == []  # 3 characters: no typo tolerance
    assert index.suggest("jak") == []
    assert index.suggest("jkcx") == []  # 2 edits from any prefix of a 4-letter word
    # distance 2 from 8 characters on; 1 below
    assert _texts(index.suggest("hnadbgas")) == ["Handbags"]
    assert index.suggest("hnadbga") == []
    assert _texts(index.suggest("handbga")) == ["Handbags"]


def test_exact_matches_come_before_typo_matches(index):
    found = index.suggest("tshi")
    assert [(s.text, s.typo) for s in found][:2] == [("Tshirts", False), ("Shirts", True)]
    # no typo matches once `limit` match exactly
    assert [(s.text, s.typo) for s in index.suggest("tshi", limit=1)] == [("Tshirts", False)]


def test_typo_matches_rank_by_distance_then_count():
    idx = SuggestIndex([("Sandals", "articleType", 10), ("Scandal", PHRASE, 99)])
    # "scnda" is 1 edit from "sanda" (Sandals) and from "scanda" (Scandal): by count
    found = idx.suggest("scnda")
    assert [(s.text, s.typo) for s in found] == [("Scandal", True), ("Sandals", True)]
    found = idx.suggest("sandl")  # 1 from "sanda" (Sandals) and 2 from "scand" (Scandal)
    assert [(s.text, s.typo) for s in found] == [("Sandals", True)]


def test_limit_defaults_to_ten_and_is_bounded():
    idx = SuggestIndex([(f"Jacket {i:02d}", PHRASE, 100 - i) for i in range(15)])
    assert len(idx.suggest("ja")) == MAX_SUGGESTIONS == 10
    assert _texts(idx.suggest("ja", limit=3)) == ["Jacket 00", "Jacket 01", "Jacket 02"]
    for bad in (0, 11, -1):
        with pytest.raises(ValueError, match="limit"):
            idx.suggest("ja", limit=bad)


def test_duplicates_are_one_entry_with_the_highest_count():
    idx = SuggestIndex(
        [("Jackets", PHRASE, 30), ("jackets", "articleType", 20), ("JACKETS ", "brand", 5)]
    )
    assert [(s.text, s.kind, s.count) for s in idx.suggest("jack")] == [("Jackets", PHRASE, 30)]
    tie = SuggestIndex([("Black", PHRASE, 20), ("black", "baseColour", 20)])
    assert [(s.text, s.kind) for s in tie.suggest("bl")] == [("black", "baseColour")]
    assert len(tie) == 1


def test_answers_are_cached_and_not_shared():
    idx = SuggestIndex(ENTRIES)
    first = idx.suggest("jac")
    first.clear()
    assert _texts(idx.suggest("jac")) == ["Jackets", "Denim Jacket"]


# --- the vocabulary ---------------------------------------------------------------------------
NAMES = (
    ["Puma Men Black Jacket"] * 6
    + ["Peter England Men Navy Blue Shirt (Set of 2)"] * 5
    + ["Nike Black Black Jacket"] * 2
    + ["Roadster Women Denim Jacket"] * 4
    + ["United Colors of Benetton Women Blue Top"] * 5
)


def test_name_phrases_count_products_not_occurrences():
    phrases = name_phrases(NAMES, min_products=1)
    assert phrases[("black",)] == ("Black", 8)  # "Black Black" counts once
    assert phrases[("black", "jacket")] == ("Black Jacket", 8)
    assert phrases[("puma", "men", "black")] == ("Puma Men Black", 6)
    assert ("puma", "men", "black", "jacket") not in phrases  # at most 3 words
    assert phrases[("set",)] == ("Set", 5)  # "(Set" trimmed
    assert ("of",) not in phrases and ("2",) not in phrases  # a stop word, digits only
    assert ("set", "of") not in phrases and ("of", "2") not in phrases  # ends / starts
    assert ("colors", "of", "benetton") in phrases  # a stop word inside is fine
    frequent = name_phrases(NAMES)
    assert ("denim", "jacket") not in frequent  # 4 < MIN_PHRASE_PRODUCTS
    assert all(count >= MIN_PHRASE_PRODUCTS for _, count in frequent.values())


def test_build_index_joins_facets_and_phrases():
    counts = {
        "articleType": [("Jackets", 12), ("Shirts", 5), ("Tops", 5)],
        "brand": [("Peter England", 5), ("Puma", 6), ("United Colors of Benetton", 5)],
        "baseColour": [("Black", 8), ("Navy Blue", 5), ("Blue", 10)],
    }
    idx = build_index(counts, NAMES)
    by_text = {e.text: e for e in idx.entries}
    assert by_text["Jackets"].kind == "articleType" and by_text["Jackets"].count == 12
    assert by_text["Black Jacket"].kind == PHRASE and by_text["Black Jacket"].count == 8
    # contained in a longer entry matching as many products: typing it finds that one
    assert "Peter" not in by_text and "England" not in by_text
    assert "United" not in by_text and "Colors of Benetton" not in by_text
    assert _texts(idx.suggest("pete")) == ["Peter England", "Peter England Men"]
    # the singular of a facet value matching no more products than it
    assert "Jacket" not in by_text and "Shirt" not in by_text
    # same text as a facet value: the higher count wins (a tie: the facet value)
    assert by_text["Black"].kind == "baseColour" and by_text["Black"].count == 8
    assert {e.kind for e in idx.entries} <= {*FACET_KINDS, PHRASE}
    assert _texts(idx.suggest("jac"))[:2] == ["Jackets", "Black Jacket"]


def test_a_big_vocabulary_finds_every_word_by_prefix_and_with_a_swap():
    """20,000 names over 400 random 7-letter words: every word is found by its first four
    letters, and with its first two letters swapped (one edit, a typo match)."""
    import random

    rng = random.Random(7)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(7)) for _ in range(400)
    ]
    names = [" ".join(rng.choice(words) for _ in range(6)) for _ in range(20_000)]
    idx = build_index({"brand": [(w.title(), 50) for w in words[:50]]}, names)
    assert len(idx) > 400
    for w in words[:100]:
        assert w in [t.lower() for t in _texts(idx.suggest(w[:4]))], w
        swapped = idx.suggest(w[1] + w[0] + w[2:6])
        typo = w[0] != w[1]  # "ss...": the swap is no typo
        assert any(s.text.lower() == w and s.typo == typo for s in swapped), (w, swapped)


# --- the API's cache of the live version's index ---------------------------------------------
class _FakeVersion:
    def __init__(self, vid: int):
        self.id = vid
        self.table = f"index_v{vid}"


class _FakeRuntime:
    def read(self, fn, *, background=False):
        assert background  # the type-ahead's reads are the API's upkeep, not searches
        return fn(None)


@pytest.fixture
def fake_store(monkeypatch):
    """The cache's database reads replaced by a dict the test changes."""
    from services.api import suggest as svc

    state = {
        "version": _FakeVersion(1),
        "counts": {"article_type": [("Jackets", 12)]},
        "names": ["Puma Men Black Jacket"] * 6 + ["Nike Women Black Jacket"] * 4,
        "fail": None,
        "reads": 0,
    }

    def live(conn):
        state["reads"] += 1
        if state["fail"]:
            raise state["fail"]
        return state["version"]

    def counts(conn, version, columns):
        return {c: list(state["counts"].get(c, [])) for c in columns}

    monkeypatch.setattr(svc, "live_version", live)
    monkeypatch.setattr(svc, "facet_value_counts", counts)
    monkeypatch.setattr(svc, "display_names", lambda conn, version: list(state["names"]))
    return state


def _settle(cache, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while cache._refreshing and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not cache._refreshing


def test_the_index_is_built_once_and_refreshed_in_the_background(fake_store):
    from services.api.suggest import SuggestCache, answer

    cache = SuggestCache(ttl=3600)
    runtime = _FakeRuntime()
    assert cache.current(runtime) is None
    built = cache.get(runtime)
    assert cache.builds == 1 and built.version_id == 1
    assert [s.text for s in answer(built, "jac").suggestions][:2] == ["Jackets", "Black Jacket"]
    for _ in range(50):
        assert cache.get(runtime) is built  # fresh: no database read
    assert fake_store["reads"] == 1
    # past its TTL: served as is, refreshed in the background; nothing changed, no rebuild
    cache.ttl = 0.0
    assert cache.current(runtime) is built
    _settle(cache)
    assert fake_store["reads"] == 2 and cache.builds == 1
    assert cache._built.index is built.index and cache._built.stamp > built.stamp
    # the catalogue changed: rebuilt
    fake_store["names"] = ["Nike Women Red Jacket"] * 5
    cache.current(runtime)
    _settle(cache)
    assert cache.builds == 2
    assert "Black Jacket" not in [s.text for s in answer(cache._built, "jac").suggestions]
    assert [s.text for s in answer(cache._built, "nik").suggestions] == ["Nike Women Red"]
    # another version went live
    fake_store["version"] = _FakeVersion(2)
    cache.current(runtime)
    _settle(cache)
    assert cache.builds == 3 and answer(cache._built, "ja").index_version == 2


def test_a_failed_refresh_keeps_the_index(fake_store, caplog):
    from services.api.suggest import SuggestCache

    cache = SuggestCache(ttl=3600)
    runtime = _FakeRuntime()
    built = cache.get(runtime)
    cache.ttl = 0.0
    fake_store["fail"] = psycopg.OperationalError("connection refused")
    assert cache.current(runtime) is built
    _settle(cache)
    assert cache._built.index is built.index
    assert "type-ahead refresh failed" in caplog.text


def test_no_index_before_the_first_build_fails_loudly(fake_store):
    from services.api.suggest import SuggestCache
    from services.search import NoLiveIndex

    fake_store["version"] = None
    with pytest.raises(NoLiveIndex):
        SuggestCache().get(_FakeRuntime())


def test_concurrent_first_requests_build_once(fake_store):
    from services.api.suggest import SuggestCache

    cache = SuggestCache()
    runtime = _FakeRuntime()
    got = []
    threads = [threading.Thread(target=lambda: got.append(cache.get(runtime))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.builds == 1 and len({id(b) for b in got}) == 1


def test_request_validation():
    from services.api.suggest import MAX_QUERY_CHARS, check_request
    from services.search import SearchValidationError

    check_request("x" * MAX_QUERY_CHARS, 10)
    check_request("", 1)
    for q, limit, words in (
        ("ja\x00", 10, "NUL"),
        ("x" * (MAX_QUERY_CHARS + 1), 10, "the limit is 100"),
        ("ja", 0, "limit must be in 1..10"),
        ("ja", 11, "limit must be in 1..10"),
    ):
        with pytest.raises(SearchValidationError, match=words):
            check_request(q, limit)


# --- the endpoint, against the real database ---------------------------------------------------
@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def _sql_count(conn, live, column: str, value: str) -> int:
    return conn.execute(
        f"SELECT count(*) FROM index_v{int(live.version_id)} WHERE {column} = %s", (value,)
    ).fetchone()[0]


def _top_value(conn, live, column: str) -> tuple[str, int]:
    return conn.execute(
        f"SELECT {column}, count(*) FROM index_v{int(live.version_id)} "
        f"WHERE {column} IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1"
    ).fetchone()


def test_article_type_prefix_counts_match_the_database(api, live, conn):
    article, n = _top_value(conn, live, "article_type")
    resp = api.get("/v1/suggest", params={"q": article[:3].lower()})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["q"] == article[:3].lower() and body["index_version"] == live.version_id
    found = {(s["text"], s["kind"]): s for s in body["suggestions"]}
    hit = found[article, "articleType"]
    assert hit["count"] == n == _sql_count(conn, live, "article_type", article)
    assert hit["typo"] is False
    assert 1 <= len(body["suggestions"]) <= MAX_SUGGESTIONS
    counts = [s["count"] for s in body["suggestions"] if not s["typo"]]
    assert counts == sorted(counts, reverse=True)
    for s in body["suggestions"]:
        words = s["text"].lower().split()
        assert any(w.startswith(article[:3].lower()) for w in words) or s["typo"], s


def test_every_facet_kind_is_suggested_with_its_count(api, live, conn):
    from services.catalog.schema import BY_NAME

    for kind in FACET_KINDS:
        column = BY_NAME[kind].column
        value, n = _top_value(conn, live, column)
        body = api.get("/v1/suggest", params={"q": value, "limit": 10}).json()
        hits = [s for s in body["suggestions"] if s["text"].lower() == value.lower()]
        assert len(hits) == 1, (kind, value, body)
        if hits[0]["kind"] == kind:
            assert hits[0]["count"] == n, (kind, value, hits)
        else:  # a name phrase with the same text matched more products
            assert hits[0]["kind"] == PHRASE and hits[0]["count"] > n, (kind, value, hits)


def _phrase_count(live, phrase: str) -> int:
    want = phrase.lower().split()
    n = 0
    for row in live.rows:
        words = [w.strip("\"'()[]{},.;:!?*").lower() for w in row["productDisplayName"].split()]
        words = [w for w in words if w]
        if any(words[i : i + len(want)] == want for i in range(len(words) - len(want) + 1)):
            n += 1
    return n


def test_phrase_counts_are_products_whose_name_contains_them(api, live):
    name = live.rows[0]["productDisplayName"]
    checked = 0
    for word in name.split():
        body = api.get("/v1/suggest", params={"q": word[:4]}).json()
        for s in body["suggestions"]:
            if s["kind"] == PHRASE and not s["typo"]:
                assert s["count"] == _phrase_count(live, s["text"]) >= MIN_PHRASE_PRODUCTS, s
                checked += 1
    assert checked >= 3


def test_a_typo_finds_the_same_entry(api, live, conn):
    article, n = _top_value(conn, live, "article_type")
    assert len(article) >= 5
    typed = (article[0] + article[2] + article[1] + article[3:5]).lower()  # swap 2nd and 3rd
    body = api.get("/v1/suggest", params={"q": typed}).json()
    hits = [s for s in body["suggestions"] if s["text"] == article]
    assert hits and hits[0]["typo"] is True and hits[0]["count"] == n, body
    short = typed[:3]  # three characters: exact prefixes only
    for s in api.get("/v1/suggest", params={"q": short}).json()["suggestions"]:
        assert not s["typo"]
        assert any(w.lower().startswith(short) for w in s["text"].split()), s


def test_multi_word_and_limit(api, live, conn):
    colour, _ = _top_value(conn, live, "base_colour")
    assert len(api.get("/v1/suggest", params={"q": colour, "limit": 3}).json()["suggestions"]) == 3
    found = api.get("/v1/suggest", params={"q": f"{colour.upper()}  "}).json()["suggestions"]
    longer = [s["text"] for s in found if s["text"].lower().startswith(colour.lower() + " ")]
    assert longer, found  # "<colour> <word>": complete the next word from its first letters
    typed = longer[0][: len(colour) + 2]
    texts = [s["text"] for s in api.get("/v1/suggest", params={"q": typed}).json()["suggestions"]]
    assert longer[0] in texts
    assert all(re.search(rf"(^| ){re.escape(typed)}", t, re.IGNORECASE) for t in texts), texts


def test_blank_q_answers_no_suggestions(api, live):
    for q in ("", "   "):
        resp = api.get("/v1/suggest", params={"q": q})
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"q": q, "index_version": live.version_id, "suggestions": []}


@pytest.mark.parametrize(
    "params, status, words",
    [
        ({"q": "ja\x00ck"}, 422, "q contains a NUL character"),
        ({"q": "x" * 101}, 422, "q is 101 characters; the limit is 100"),
        ({"q": "ja", "limit": 0}, 422, "limit must be in 1..10, got 0"),
        ({"q": "ja", "limit": 11}, 422, "limit must be in 1..10, got 11"),
        ({"q": "ja", "limit": "ten"}, 400, "limit"),
        ({}, 400, "q"),
    ],
    ids=["nul", "too-long", "limit-0", "limit-11", "limit-not-int", "no-q"],
)
def test_bad_requests_are_clear_4xx(api, params, status, words):
    body = _assert_error(api.get("/v1/suggest", params=params), status)
    assert words in body["detail"], body


def test_openapi_documents_the_endpoint(api):
    spec = api.get("/schema/openapi.json").json()
    op = spec["paths"]["/v1/suggest"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert params["q"]["required"] is True and params["q"]["in"] == "query"
    assert params["limit"]["schema"]["default"] == 10
    assert {int(code) for code in op["responses"]} == {200, 400, 422, 503}
    assert op["responses"]["503"]["headers"]["Retry-After"]["required"] is True
    for code in ("400", "422", "503"):
        schema = op["responses"][code]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    body = spec["components"]["schemas"]["SuggestionBody"]
    assert set(body["properties"]["kind"]["enum"]) == {*FACET_KINDS, PHRASE}
    assert set(spec["components"]["schemas"]["Suggestions"]["required"]) == {
        "q",
        "index_version",
        "suggestions",
    }


def test_a_warm_request_is_answered_from_memory(app_settings, live, conn, monkeypatch):
    """After the first request, the service function reads nothing from the database: the
    store's three reads (live version, value counts, names) are counted on the real
    database."""
    from services.api import suggest as svc
    from services.api.runtime import Runtime

    calls = {"live_version": 0, "facet_value_counts": 0, "display_names": 0}
    for name in calls:
        real = getattr(svc, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(svc, name, counted)
    runtime = Runtime(app_settings, load_models=False)
    runtime.start()
    try:
        first = svc.suggest(runtime, "bla")
        assert first.index_version == live.version_id and first.suggestions
        cache = svc.cache_of(runtime)
        assert cache.builds == 1 and all(n == 1 for n in calls.values()), calls
        article, _ = _top_value(conn, live, "article_type")
        queries = [article[:n] for n in range(1, 6)] + ["bla", "whi", "sport", "jakc", "shrt"]
        for _ in range(20):
            for q in queries:
                svc.suggest(runtime, q)
        assert cache.builds == 1 and all(n == 1 for n in calls.values()), calls
    finally:
        runtime.stop()


def test_503_without_a_live_index_or_a_database(empty_db, app_settings):
    import dataclasses

    from services.api.app import create_app
    from services.config import get_settings

    down = dataclasses.replace(
        app_settings, database_url_override=f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    )
    for settings, words in (
        (get_settings(), "no index version is live"),
        (down, "the database is unavailable"),
    ):
        srv = ServerThread(create_app(settings, pool_timeout=0.5, load_models=False)).start()
        try:
            resp = httpx.get(srv.url + "/v1/suggest", params={"q": "jac"}, timeout=30)
            body = _assert_error(resp, 503)
            assert words in body["detail"], body
            assert int(resp.headers["retry-after"]) >= 1
        finally:
            srv.stop()
