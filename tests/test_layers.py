"""The code's shape, guarded: the areas import each other only downwards (import-linter's
contract in pyproject.toml, run by ``make lint``; checked here too), and SQL text lives
only in ``services/store/``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# A string that starts like an SQL statement (upper-case keywords, as the project writes SQL).
SQL_STATEMENT = re.compile(
    r"^\s*(SELECT\s|INSERT\s+INTO\s|UPDATE\s+\S+\s+SET\s|DELETE\s+FROM\s|WITH\s+\w+\s+AS\b|"
    r"CREATE\s+(TABLE|INDEX|EXTENSION|DATABASE|ROLE|SCHEMA|VIEW)\s|ALTER\s+(TABLE|ROLE|DATABASE)\s|"
    r"DROP\s+(TABLE|INDEX|DATABASE|ROLE|SCHEMA)\s|TRUNCATE\s|SET\s+LOCAL\s|EXPLAIN\b|GRANT\s|"
    r"REVOKE\s|VACUUM\b|COPY\s+\S+\s+(FROM|TO)\b)"
)
# Where the product's code is; tests, benchmarks and migrations may speak SQL.
CODE = ("services", "evaluation", "dags")


def sql_outside_store() -> list[str]:
    found = []
    for root in CODE:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith("services/store/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and SQL_STATEMENT.match(node.value)
                ):
                    found.append(f"{rel}:{node.lineno}: {node.value.strip()[:60]!r}")
    return found


def test_sql_lives_in_the_store():
    assert sql_outside_store() == []


def test_the_check_sees_sql(tmp_path):
    """The pattern catches what it must (so an empty list above means something)."""
    for text in (
        "SELECT 1",
        "  SELECT product_id FROM t",
        "DELETE FROM pipeline_shards WHERE run_key = %s",
        "INSERT INTO synonym_rules (terms) VALUES (%s)",
        "WITH fast_d AS MATERIALIZED (",
        "SET LOCAL hnsw.ef_search = 40",
    ):
        assert SQL_STATEMENT.match(text), text
    for text in ("Select a model", "select the best alpha", "DELETE", "an UPDATE of the rows"):
        assert not SQL_STATEMENT.match(text), text


def test_the_areas_import_downwards_only():
    """import-linter's layers contract (pyproject.toml [tool.importlinter]): api on top, then
    ops, then evaluation | pipeline | training, understanding | search, store, catalog,
    encoders, config; an area never imports one above it, nor a sibling of its layer."""
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def _uses(name: str, within: type[ast.AST] = ast.AST) -> list[str]:
    """Where the product's code names ``name`` (inside a node of type ``within``)."""
    found = []
    for root in CODE:
        for path in sorted((REPO / root).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for outer in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(outer, within):
                    continue
                for node in ast.walk(outer) if within is not ast.AST else (outer,):
                    named = getattr(node, "id", None) if isinstance(node, ast.Name) else None
                    if named == name or (isinstance(node, ast.Attribute) and node.attr == name):
                        found.append(rel)
    return found


def test_the_alpha_rule_is_applied_in_one_place():
    """query_alpha (range, a missing side forces 1 or 0, MIN_ALPHA) is called once, by
    validate, which every ranking goes through; nothing else compares against MIN_ALPHA."""
    contract = (REPO / "services/search/contract.py").read_text(encoding="utf-8")
    assert contract.count("def query_alpha(") == 1
    assert _uses("query_alpha", ast.Call) == ["services/search/contract.py"]  # in validate
    assert re.search(r"def validate\(.*?query_alpha\(", contract, re.DOTALL)
    assert _uses("MIN_ALPHA", ast.Compare) == ["services/search/contract.py"]
    ranking = (REPO / "services/search/ranking.py").read_text(encoding="utf-8")
    assert ranking.count("validate(query, version)") == 1
