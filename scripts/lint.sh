#!/usr/bin/env bash
# The linters of make test, alone (make lint): ruff (lint + format check),
# yamllint --strict, ansible-lint (production profile). Prints each step's
# duration; stops at the first red step. Needs no root and no Docker.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh
[ -x .venv/bin/ruff ] || scripts/venv.sh
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections"
# ansible-lint resolves overlayfs.systemd.* through a collections tree linking the repo.
mkdir -p .cache/collections/ansible_collections/overlayfs
ln -sfn "$ROOT" .cache/collections/ansible_collections/overlayfs/systemd

timed "ruff" bash -c 'ruff check . && ruff format --check .'
timed "yamllint" yamllint --strict .
timed "ansible-lint" ansible-lint --profile production
