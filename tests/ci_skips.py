"""Under CI an unexpected skip fails the run (a pytest plugin, loaded by conftest.py).

A skip is how a test says "this machine cannot check that": a missing Chromium, a non-root
user, an external server. On a developer's machine that is a note in the summary; in CI
(the environment variable ``CI`` set to anything but ``""``/``0``/``false``) it is a hole in
what the run claims to have checked, so the session fails and names each skipped test.
A test whose skip is expected in CI too says so with ``@pytest.mark.ci_may_skip("why")``.
"""

from __future__ import annotations

import os

import pytest

_skipped: list[tuple[str, str]] = []


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ci_may_skip(reason): this test's skip is expected in CI too (says why)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    expected = item.get_closest_marker("ci_may_skip") is not None
    if report.skipped and not hasattr(report, "wasxfail") and not expected:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        _skipped.append((item.nodeid, str(reason)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if in_ci() and _skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if in_ci() and _skipped:
        terminalreporter.section("unexpected skips under CI (each fails the run)", red=True)
        for nodeid, reason in _skipped:
            terminalreporter.write_line(f"SKIPPED IN CI: {nodeid}: {reason}")
