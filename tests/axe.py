"""axe-core accessibility checks inside the Playwright browser tests.

``scripts/setup.sh`` (``WITH_BROWSER=1``, as ``make test`` runs it) installs the pinned
``axe-core`` npm package into the git-ignored ``.fashion/npm``; :func:`axe_violations`
injects its ``axe.min.js`` into a Playwright (sync) page and runs ``axe.run``.

What is checked: the rules tagged :data:`TAGS`, i.e. WCAG 2.0, 2.1 and 2.2 levels A and AA
plus axe's best practices. That is axe's default rule set (every rule axe enables by
default carries one of those tags), named explicitly so that what "passes axe" means does
not change with an upgrade; AAA (``wcag2aaa``, e.g. enhanced contrast) and experimental
rules are left out. The tests then fail on the ``serious`` and ``critical`` impacts.

Injection: ``page.evaluate`` of the library's source, not ``page.add_script_tag``. The
pages send a Content-Security-Policy without ``'unsafe-inline'`` (``services.api.security``),
which blocks the inline ``<script>`` that ``add_script_tag(path=...)`` writes; code
evaluated over the DevTools protocol is not subject to the page's CSP (this is also how
``@axe-core/playwright`` injects it).

A missing ``axe.min.js`` fails the test under CI (``make test`` installs it) and skips it
elsewhere, like a missing Chromium.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from ci_skips import in_ci

REPO = Path(__file__).resolve().parent.parent
AXE_VERSION = "4.14.1"  # the version scripts/setup.sh pins
AXE_JS = Path(os.environ.get("AXE_JS") or REPO / ".fashion/npm/node_modules/axe-core/axe.min.js")
TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice")
SERIOUS = ("serious", "critical")

# Runs in the page: axe.run, then only what the tests need, nodes kept per their own impact
# (a rule's impact is the worst of its nodes').
_RUN = """async ([context, options, impacts]) => {
  const results = await axe.run(context === null ? document : context, options);
  return results.violations.map(v => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    helpUrl: v.helpUrl,
    nodes: v.nodes
      .filter(n => impacts.includes(n.impact || v.impact))
      .map(n => ({
        target: n.target.map(t => Array.isArray(t) ? t.join(' >>> ') : t).join(' '),
        impact: n.impact || v.impact,
        html: n.html,
        summary: n.failureSummary || '',
      })),
  })).filter(v => v.nodes.length > 0);
}"""


def require_axe() -> Path:
    """The path of ``axe.min.js``; a failure under CI, a skip elsewhere when it is missing."""
    if not AXE_JS.is_file():
        msg = f"axe-core not found at {AXE_JS} (WITH_BROWSER=1 bash scripts/setup.sh installs it)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return AXE_JS


def inject_axe(page) -> None:
    """Load axe-core into ``page`` (once per document; a navigation needs it again)."""
    if page.evaluate("() => typeof window.axe === 'object'"):
        return
    page.evaluate(require_axe().read_text(encoding="utf-8"))
    version = page.evaluate("() => window.axe && window.axe.version")
    assert version == AXE_VERSION, f"axe-core {version} injected, expected {AXE_VERSION}"


def axe_violations(
    page,
    impacts: Iterable[str] = SERIOUS,
    context: str | dict[str, Any] | None = None,
    tags: Iterable[str] = TAGS,
) -> list[dict[str, Any]]:
    """axe-core's violations on ``page`` (or within ``context``, an axe context: a selector
    or ``{"include": ..., "exclude": ...}``) whose impact is one of ``impacts``: dicts with
    ``id``, ``impact``, ``help``, ``helpUrl`` and ``nodes`` (each ``target``, the failing
    element's selector, ``impact``, ``html``, ``summary``: axe's how-to-fix)."""
    inject_axe(page)
    options = {"runOnly": {"type": "tag", "values": list(tags)}, "resultTypes": ["violations"]}
    return page.evaluate(_RUN, [context, options, list(impacts)])


def format_violations(violations: list[dict[str, Any]]) -> str:
    """A readable list for an assertion message: one line per rule, one per failing node."""
    if not violations:
        return "no axe-core violations"
    lines = [f"{len(violations)} axe-core violation(s):"]
    for v in violations:
        lines.append(f"- [{v['impact']}] {v['id']}: {v['help']} ({v['helpUrl']})")
        for n in v["nodes"]:
            summary = " ".join(n["summary"].split())
            lines.append(f"    {n['target']}  {n['html'][:120]}")
            if summary:
                lines.append(f"      {summary[:300]}")
    return "\n".join(lines)
