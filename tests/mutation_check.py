"""Mutation check: break the product on purpose and show that the test suite notices.

Each mutation is a textual edit of one source file (the edit must still apply, so a
refactor that moves the code makes this script fail loudly rather than pass vacuously),
made in a scratch copy of the working tree; the tests that guard the claim are run against
that copy. A mutation is *caught* when at least one of them fails.

    .venv/bin/python tests/mutation_check.py            # every mutation, prints the table
    .venv/bin/python tests/mutation_check.py --only alpha-ignored filter-ignored
    .venv/bin/python tests/mutation_check.py --baseline # also run each test set unmutated

The copies share the test session's embedded PostgreSQL (each pytest session makes its own
database) and the model cache. Exit status 1 when a mutation survives.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIP = {".git", ".venv", ".fashion", "artifacts", ".ruff_cache", ".pytest_cache", "__pycache__"}


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    count: int = 1  # how many times ``old`` stands in the file (each is replaced)


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "clip-random-weights",
        "the trained CLIP's checkpoint is not loaded (random image tower)",
        "services/encoders/clip.py",
        "        load_trained_parts(model, Path(call.partial_state))",
        "        pass  # MUTATION: trained parts never loaded",
        ("tests/test_quality.py",),
    ),
    Mutation(
        "hnsw-dense-dropped",
        "the dense HNSW index is never built",
        "services/store/hnsw.py",
        '        ("dense", dense_target, DENSE_INDEXES[dense_index]),\n',
        "",
        ("tests/test_search_scale.py", "tests/test_store.py"),
    ),
    Mutation(
        "fast-is-exact",
        "fast mode runs the exact scan (HNSW never used)",
        "services/search/ranking.py",
        "        route_exact=query.exact\n",
        "        route_exact=True  # MUTATION\n",
        ("tests/test_search_scale.py",),
    ),
    Mutation(
        "certificate-ignores-bound",
        "every answer is certified, whatever the threshold bound says",
        "services/store/sql/search.sql",
        "r.found = %(k)s AND r.kth >= b.bound AS ok",
        "TRUE AS ok",
        ("tests/test_store.py",),
        count=2,  # the fast and the deep stage
    ),
    Mutation(
        "alpha-ignored",
        "alpha is ignored by the fused SQL (always 0.5 / 0.5)",
        "services/store/sql/search.sql",
        "%(alpha)s * coalesce(-(dense <#> %(qd)s::vector), 0)\n"
        "             + (1 - %(alpha)s) * coalesce(",
        "0.5 * coalesce(-(dense <#> %(qd)s::vector), 0)\n             + 0.5 * coalesce(",
        ("tests/test_store.py",),
        count=3,  # the fast, deep and exact stages' scores
    ),
    Mutation(
        "filter-ignored",
        "metadata filters are dropped from the WHERE clause",
        "services/store/search_sql.py",
        '    if not parts:\n        return sql.SQL("TRUE"), params',
        '    if True:  # MUTATION\n        return sql.SQL("TRUE"), params',
        ("tests/test_store.py",),
    ),
    Mutation(
        "sha256-unchecked",
        "model files extracted from a wheel are not checked against their sha256",
        "services/encoders/models_setup.py",
        "                if _sha256(path) != expected:",
        "                if False:  # MUTATION",
        ("tests/test_model_fetch.py",),
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
        ("tests/test_stage_failures.py",),
    ),
    Mutation(
        "cached-version-trusted",
        "the API serves its cached live version without the statement's check",
        "services/api/search_service.py",
        '            if ranking.version_status == "live" or refresh:',
        "            if True:  # MUTATION",
        ("tests/test_api.py",),
    ),
    Mutation(
        "session-settings-skipped",
        "a pooled connection's searches never SET their ef_search",
        "services/store/search_sql.py",
        "        yield lambda settings: _apply_session_settings(conn, settings)\n",
        "        yield lambda settings: None  # MUTATION\n",
        ("tests/test_store.py",),
    ),
    Mutation(
        "encode-off-gpu-queue",
        "the reindex DAG's photo encoder is not routed to the Celery gpu queue",
        "dags/fashion_reindex.py",
        '    @task(queue=GPU_QUEUE, pool="gpu", retries=2, retry_delay=timedelta(seconds=5))\n'
        "    def encode_images",
        '    @task(pool="gpu", retries=2, retry_delay=timedelta(seconds=5))\n    def encode_images',
        ("tests/test_celery.py",),
    ),
    Mutation(
        "sync-hash-ignored",
        "the catalogue sync re-encodes every product, changed or not",
        "services/pipeline/sync.py",
        "        elif live[pid] != content_hash(row):\n",
        "        elif True:  # MUTATION\n",
        ("tests/test_sync.py",),
    ),
    Mutation(
        "replica-never-read",
        "the API reads from the primary only, even with a read replica configured",
        "services/api/runtime.py",
        "        if self.read_pool is None:\n            return [PRIMARY]\n        now",
        "        if True:  # MUTATION\n            return [PRIMARY]\n        now",
        ("tests/test_replica.py",),
    ),
    Mutation(
        "understanding-skips-rewrite",
        "query understanding recognises words but the vectors ignore what it understood",
        "services/understanding/query.py",
        "        if u.text == u.original and u.rewrite is None and not recognitions:\n",
        "        if u.text == u.text:  # MUTATION: the rewrite and labels never reach the vectors\n",
        ("tests/test_understanding_api.py",),
    ),
    Mutation(
        "rules-table-ignored",
        "the merchandiser rules (synonym_rules) never reach the lexicon",
        "services/understanding/lexicon.py",
        '    counts["rule"] = _rule_meanings(phrases, rules, catalogue, reads)\n',
        '    counts["rule"] = 0  # MUTATION: rules dropped\n',
        ("tests/test_understanding.py", "tests/test_understanding_api.py"),
    ),
    Mutation(
        "spelling-corrects-brands",
        "the speller's known-word gate forgets the catalogue's own words: brands get corrected",
        "services/understanding/lexicon.py",
        "            c in self.catalogue_words\n"
        "            or key(word) in self.phrase_words\n"
        "            or word in FUNCTION_WORDS\n",
        "            word in FUNCTION_WORDS  # MUTATION\n",
        ("tests/test_understanding.py",),
    ),
)


def _copy_tree(dest: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP}

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


def _run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[int, str, float]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(tree),
            # share the session server and model cache of this checkout
            "FASHION_TEST_HOME": str(REPO / ".fashion" / "test-home"),
            "FASHION_MODEL_CACHE": str(REPO / ".fashion" / "models"),
        }
    )
    start = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    out = res.stdout + res.stderr
    return res.returncode, out, time.monotonic() - start


def _summary(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    return lines[-1][:100] if lines else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="+", help="mutation names (default: all)")
    p.add_argument("--baseline", action="store_true", help="also run each test set unmutated")
    args = p.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    unknown = set(args.only or []) - {m.name for m in MUTATIONS}
    if unknown:
        p.error(f"unknown mutation(s): {', '.join(sorted(unknown))}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        for m in chosen:
            tree = Path(tmp) / m.name
            _copy_tree(tree)
            if args.baseline:
                rc, out, secs = _run_tests(tree, m.tests)
                if rc != 0:
                    print(f"baseline of {m.name} fails unmutated:\n{out[-3000:]}")
                    return 2
            target = tree / m.path
            text = target.read_text()
            if text.count(m.old) != m.count:
                print(
                    f"{m.name}: the edit no longer applies to {m.path} "
                    f"({text.count(m.old)} matches, {m.count} expected); update this script"
                )
                return 2
            target.write_text(text.replace(m.old, m.new))
            rc, out, secs = _run_tests(tree, m.tests)
            verdict = {0: "SURVIVED", 1: "caught"}.get(rc, f"error (pytest exit {rc})")
            rows.append((m, verdict, secs, _summary(out)))
            print(f"  {m.name}: {verdict} in {secs:.0f} s", flush=True)
            shutil.rmtree(tree, ignore_errors=True)
    print("\n| mutation | what breaks | guarded by | result | seconds | pytest said |")
    print("|---|---|---|---|---:|---|")
    for m, verdict, secs, said in rows:
        print(
            f"| {m.name} | {m.what} | {', '.join(Path(t).name for t in m.tests)} | "
            f"{verdict} | {secs:.0f} | {said} |"
        )
    survived = [m.name for m, verdict, _, _ in rows if verdict != "caught"]
    if survived:
        print(f"\nnot caught: {', '.join(survived)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
