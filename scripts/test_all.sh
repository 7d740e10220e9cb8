#!/usr/bin/env bash
# `make test`: every check, in order, each timed, and the total at the end (CI runs this
# through .ci/run). Stops at the first failing step, still printing the times so far.
#   setup  scripts/setup.sh with the browser (Debian chromium), idempotent
#   lint   ruff check + ruff format --check + lint-imports (the layers)
#   docs   mkdocs build --strict (a broken link or anchor fails)
#   tests  pytest, shuffled with a fixed seed (TEST_SEED)
#   mutations  tests/mutation_check.py: each planted bug must fail its guarding tests
set -uo pipefail
cd "$(dirname "$0")/.."

TEST_SEED=${TEST_SEED:-20261127}
names=() secs=()
start_all=$(date +%s)

report() {
  local total=$(( $(date +%s) - start_all ))
  printf '\n== make test: time per step\n'
  for i in "${!names[@]}"; do
    printf '  %-10s %4d min %02d s\n' "${names[$i]}" $(( secs[i] / 60 )) $(( secs[i] % 60 ))
  done
  printf '  %-10s %4d min %02d s  (%s)\n' "total" $(( total / 60 )) $(( total % 60 )) "$1"
}

step() {
  local name=$1; shift
  printf '\n== make test: %s\n' "$name"
  local t0; t0=$(date +%s)
  "$@"
  local rc=$?
  names+=("$name"); secs+=($(( $(date +%s) - t0 )))
  if (( rc != 0 )); then
    report "FAILED at $name, exit $rc"
    exit "$rc"
  fi
}

step setup env WITH_BROWSER=1 bash scripts/setup.sh
step lint make --no-print-directory lint
step docs make --no-print-directory docs
step tests .venv/bin/python -m pytest -q -p randomly --randomly-seed="$TEST_SEED"
step mutations .venv/bin/python tests/mutation_check.py
report "passed"
