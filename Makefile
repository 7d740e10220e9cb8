# One command per job. `make run` = the main job on the embedded default; `make test` = every test.
.PHONY: setup run test docs test-order mutation-check bench-search bench-build bench-sync bench-encoders bench-api bench-load-fault bench-fuzz bench-hostile-uploads bench-understanding bench-storefront bench-analytics stop lint

setup:
	bash scripts/setup.sh

run:
	bash scripts/run_main.sh

# `make test` (scripts/test_all.sh): setup, lint, docs, the tests in a shuffled order
# (pytest-randomly) with a fixed seed, the mutation check; each step timed, and the total.
# `make test-order` checks another seed and every module alone.
TEST_SEED ?= 20261127

test:
	TEST_SEED=$(TEST_SEED) bash scripts/test_all.sh

test-order:
	.venv/bin/python -m pytest -q -p randomly --randomly-seed=7
	for f in tests/test_*.py; do .venv/bin/python -m pytest -q -p randomly --randomly-seed=1 "$$f" || exit 1; done

mutation-check:
	.venv/bin/python tests/mutation_check.py

stop:
	-.venv/bin/fashion-search airflow stop
	-.venv/bin/fashion-search db stop

bench-search: setup
	.venv/bin/fashion-search db start
	.venv/bin/python benchmarks/bench_search.py

bench-build: setup
	.venv/bin/python benchmarks/bench_build.py

bench-sync: setup
	.venv/bin/python benchmarks/bench_sync.py

bench-encoders: setup
	.venv/bin/python benchmarks/bench_encoders.py

bench-api: setup
	.venv/bin/python benchmarks/bench_api.py

bench-load-fault: setup
	.venv/bin/python benchmarks/bench_load_fault.py

bench-fuzz: setup
	.venv/bin/python benchmarks/bench_fuzz.py

bench-hostile-uploads: setup
	.venv/bin/python benchmarks/bench_hostile_uploads.py

bench-understanding: setup
	.venv/bin/python benchmarks/bench_understanding.py

bench-storefront: setup
	.venv/bin/python benchmarks/bench_storefront.py
	.venv/bin/python benchmarks/bench_suggest.py

bench-analytics: setup
	.venv/bin/python benchmarks/bench_analytics.py

# The docs site (docs/, mkdocs.yml; mkdocs + mkdocs-material come with the test extras), built into
# .fashion/site (git-ignored). --strict: a broken link or anchor fails it, and so `make test`.
docs:
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir .fashion/site

# ruff comes with the test extras (scripts/setup.sh installs them); `make test` runs this first.
lint:
	.venv/bin/ruff check services evaluation dags tests benchmarks db infra
	.venv/bin/ruff format --check services evaluation dags tests benchmarks db infra
	.venv/bin/lint-imports
