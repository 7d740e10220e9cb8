"""The evaluation's tuning / test split (issue #26): which half a query is on never changes,
and what is reported is the test half, never the half that weights were chosen on.

Every query family is split in two by a stable hash of the query (``split_of``): the tuning
half chooses alphas, weights, thresholds and checkpoints (``eval-sweep``,
``eval-sweep-understanding``), the test half is what ``fashion-search eval``, the nightly DAG
and the reports show. Swapping the halves (or a default that reports the tuning half) would
report figures measured on the very queries the weights were fitted to; the tests below fail
on either. No database, no model: the run is stopped as soon as its query set is drawn.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import inspect

import pytest
from synthetic import catalogue_rows

from evaluation import queries as Q
from evaluation.queries import PINNED_PARAPHRASES, SPLITS, generate_queries, split_of

# Known queries and their half, pinned: a change of the split re-shuffles what was tuned on,
# so it must be deliberate (and re-tune). (family, text, photo id) -> split.
PINNED = {
    ("paraphrase", "trainers", None): "test",
    ("paraphrase", "wmns top", None): "test",
    ("paraphrase_heldout", "jumper", None): "tune",
    ("paraphrase_heldout", "kicks", None): "test",
    ("colour_category", "olive trousers", None): "test",
    ("colour_category", "black jackets", None): "tune",
    ("category", "dresses", None): "test",
    ("multimodal", "red", 12): "test",
    ("multimodal", "red", 13): "tune",
}


def _catalogue(n: int = 600, seed: int = 1) -> list[dict]:
    return catalogue_rows(n, seed)


_DRAWN: dict[tuple, Q.QuerySet] = {}


def _queries(**kw) -> Q.QuerySet:
    """generate_queries over _catalogue(), once per set of arguments (about 2 s each)."""
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items()))
    if key not in _DRAWN:
        _DRAWN[key] = generate_queries(_catalogue(), **kw)
    return _DRAWN[key]


def _key(q) -> tuple:
    return (q.family, q.text, q.image_product_id)


def _always_asked(key: tuple) -> bool:
    """The issue's own paraphrases are asked whatever the catalogue (in the paraphrase family
    of their lexicon side)."""
    return key[0] in ("paraphrase", "paraphrase_heldout") and key[1] in PINNED_PARAPHRASES


def test_known_queries_keep_their_side():
    for (family, text, image), side in PINNED.items():
        assert split_of(family, text, image) == side, (family, text, image)
    assert set(PINNED.values()) == set(SPLITS) == {"tune", "test"}


def test_the_split_is_the_documented_hash():
    """``test`` when the first 8 bytes of sha256("split:<family>:<text>:<photo>") fall below
    TEST_SHARE (one half), ``tune`` otherwise; recomputed here for the pinned queries and a
    few hundred generated ones."""
    assert Q.TEST_SHARE == 0.5
    every = [_key(q) for q in _queries(seed=0).queries]
    for family, text, image in [*PINNED, *every]:
        digest = hashlib.sha256(f"split:{family}:{text}:{image}".encode()).digest()
        side = "test" if int.from_bytes(digest[:8], "big") / 2**64 < 0.5 else "tune"
        assert split_of(family, text, image) == side, (family, text, image)


def test_each_half_holds_its_pinned_queries_and_none_of_the_other():
    every = {_key(q) for q in _queries(seed=0).queries}
    halves = {s: {_key(q) for q in _queries(seed=0, split=s).queries} for s in SPLITS}
    assert halves["tune"] | halves["test"] == every and not halves["tune"] & halves["test"]
    always = [k for k in PINNED if _always_asked(k)]
    assert {k[1] for k in always} == set(PINNED_PARAPHRASES)
    for key in always:
        side = PINNED[key]
        other = next(s for s in SPLITS if s != side)
        assert key in halves[side] and key not in halves[other], (key, side)
    for side, keys in halves.items():
        assert all(split_of(*k) == side for k in keys), side


# --- what each entry point runs on by default ----------------------------------------------------
def test_defaults_report_the_test_half_and_tune_on_the_other():
    from evaluation import cli, run, sweep, understanding_sweep

    def default(fn, name="split"):
        return inspect.signature(fn).parameters[name].default

    assert default(run.run_evaluation) == default(run.evaluate) == "test"
    assert default(sweep.run_sweep) == "tune"
    assert default(understanding_sweep.run_understanding_sweep) == "tune"
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["eval"]).split == "test"
    assert parser.parse_args(["eval-sweep"]).split == "tune"


class _Drawn(Exception):
    """Raised by the patched generator: the run's query set, caught before anything runs."""

    def __init__(self, query_set, split):
        super().__init__("drawn")
        self.query_set, self.split = query_set, split


@pytest.fixture
def drawn(monkeypatch):
    """Patch the evaluation run so that it stops right after drawing its query set from a
    synthetic catalogue (no database, no model); raises _Drawn with what it drew."""
    from evaluation import cli as eval_cli
    from evaluation import nightly, run

    class _Conn:
        def close(self):
            pass

        def commit(self):
            pass

    class _Version:
        id = 1

    def draw(products, **kw):
        assert products == _catalogue()
        raise _Drawn(_queries(**kw), kw.get("split"))

    @contextlib.contextmanager
    def connection():
        yield _Conn()

    monkeypatch.setattr(run, "connect", lambda *a, **k: _Conn())
    monkeypatch.setattr(run, "live_version", lambda conn: _Version())
    monkeypatch.setattr(run, "product_metadata", lambda conn, vid: _catalogue())
    monkeypatch.setattr(run, "generate_queries", draw)
    monkeypatch.setattr(nightly, "connection", connection)
    monkeypatch.setattr(nightly, "live_version", lambda conn: _Version())
    monkeypatch.setattr(eval_cli, "connect", lambda *a, **k: _Conn())


def _check_test_half(exc: _Drawn) -> None:
    keys = {_key(q) for q in exc.query_set.queries}
    assert exc.split == "test"
    assert keys and all(q.split == "test" for q in exc.query_set.queries)
    for key, side in PINNED.items():
        if _always_asked(key):  # present exactly when on the test side
            assert (key in keys) == (side == "test"), key


def test_a_default_run_draws_only_the_test_half(drawn):
    from evaluation import cli, nightly, run

    with pytest.raises(_Drawn) as exc:
        run.run_evaluation(object(), write_report=False)
    _check_test_half(exc.value)
    with pytest.raises(_Drawn) as exc:  # the nightly DAG's task
        nightly.evaluate_live()
    _check_test_half(exc.value)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    with pytest.raises(_Drawn) as exc:  # fashion-search eval
        cli._eval(parser.parse_args(["eval"]))
    _check_test_half(exc.value)
    with pytest.raises(_Drawn) as exc:  # asked for the tuning half: gets it, and only it
        run.run_evaluation(object(), split="tune", write_report=False)
    assert exc.value.split == "tune"
    assert all(q.split == "tune" for q in exc.value.query_set.queries)
    assert ("paraphrase_heldout", "jumper", None) in {_key(q) for q in exc.value.query_set.queries}
