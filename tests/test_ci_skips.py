"""The CI skip rule (tests/ci_skips.py) on a throwaway suite run by a real pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SUITE = """
import pytest

def test_runs():
    assert True

def test_cannot_check_here():
    pytest.skip("no such thing on this machine")

@pytest.mark.ci_may_skip("a GPU is lent to some machines only")
def test_needs_a_gpu():
    pytest.skip("no GPU")
"""


def _run(tmp_path: Path, ci: str | None, suite: str = SUITE) -> subprocess.CompletedProcess:
    (tmp_path / "test_suite.py").write_text(suite)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = str(TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "ci_skips", "-q", "-p", "no:cacheprovider", "."],
        cwd=tmp_path,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("ci", ["true", "1"])
def test_an_unexpected_skip_fails_the_run_in_ci(tmp_path, ci):
    res = _run(tmp_path, ci)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "SKIPPED IN CI: test_suite.py::test_cannot_check_here" in res.stdout
    assert "test_needs_a_gpu" not in res.stdout.split("unexpected skips under CI")[1]


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_outside_ci_a_skip_is_only_reported(tmp_path, ci):
    res = _run(tmp_path, ci)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed, 2 skipped" in res.stdout
    assert "SKIPPED IN CI" not in res.stdout


def test_a_failure_keeps_its_own_exit_status_in_ci(tmp_path):
    res = _run(tmp_path, "true", SUITE + "\ndef test_broken():\n    assert 1 == 2\n")
    assert res.returncode == 1 and "1 failed" in res.stdout, res.stdout
