#!/usr/bin/env bash
# The main job on the embedded default, from a fresh machine:
#   set up -> embedded PostgreSQL -> schema -> offline models -> real Airflow ->
#   fashion_reindex DAG builds the offline catalogue's index and swaps it live ->
#   evaluation run (MAP table) -> the API, storefront page and dashboard, in the foreground.
# Ctrl-C stops the API; `make stop` stops Airflow and PostgreSQL (data persists).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

fs=.venv/bin/fashion-search
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/fashion-runtime-$(id -u)}
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
step() { printf '\n== %s\n' "$*"; }

step "PostgreSQL (embedded unless DATABASE_URL is set)"
$fs db start
$fs db migrate

step "Offline catalogue (${FASHION_CATALOG_SIZE:-10000} products: real Fashion-MNIST images, SYNTHETIC metadata)"
$fs catalog build-offline --size "${FASHION_CATALOG_SIZE:-10000}"

step "Airflow 3 on 127.0.0.1 (metadata in database 'airflow' on the same server)"
$fs airflow start

step "Re-index through the fashion_reindex DAG (watch it in the Airflow UI)"
$fs airflow trigger-reindex --wait --size "${FASHION_CATALOG_SIZE:-10000}"

step "Evaluation: MAP@10 & co. of dense / sparse / hybrid / multimodal on the live index"
$fs eval || echo "evaluation failed (see above); the API still starts"

step "API + storefront on http://${FASHION_API_HOST:-127.0.0.1}:${FASHION_API_PORT:-8000}/  (dashboard: /dashboard, analytics: /analytics, OpenAPI: /schema)"
$fs airflow status || true
exec $fs serve
