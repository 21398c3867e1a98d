#!/usr/bin/env bash
# ansible-test sanity for Python 3.11 on a copy of the tree laid out as
# ansible_collections/overlayfs/systemd (ansible-test requires that path).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# One copy per ansible-core release: make test runs the controller matrix's
# sanity beside the main one.
core=$(python -c 'from ansible.release import __version__; print(__version__)')
dest=$ROOT/.cache/sanity/$core/ansible_collections/overlayfs/systemd
rm -rf "$dest"
mkdir -p "$dest"
# Only what git tracks (or would track): the same files a clean clone has.
git -C "$ROOT" ls-files -z --cached --others --exclude-standard | (cd "$ROOT" && xargs -0 cp --parents -t "$dest")
# ansible-test bootstraps pip into each test venv from a script it downloads
# from a host we cannot reach; give it an offline stand-in for every pip
# version this ansible-test may ask for.
cache=${HOME}/.ansible/test/cache
mkdir -p "$cache"
v=$(python - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11"))["pip"])
PY
)
cp "$ROOT/scripts/get_pip_offline.py" "$cache/get_pip_${v//./_}.py"
cd "$dest"
git init -q && git add -A   # ansible-test finds the collection's files through git
ansible-test sanity --python 3.11 --color no --requirements "$@"
