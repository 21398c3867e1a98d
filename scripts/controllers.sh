#!/usr/bin/env bash
# The controller matrix: ansible-test sanity and the unit tests under every
# ansible-core release that meta/runtime.yml's requires_ansible admits and the
# main .venv (2.19, tested by the main steps of scripts/test.sh) does not.
#
#   scripts/controllers.sh venv VERSION     make .cache/controllers/VERSION from
#                                           tests/controllers/requirements-VERSION.txt
#                                           (reused while that file's hash is unchanged)
#   scripts/controllers.sh test VERSION     venv, then sanity and pytest units with it
#   scripts/controllers.sh molecule VERSION SCENARIO
#                                           venv, then `molecule test -s SCENARIO` with
#                                           that venv's ansible-core (the caller holds the
#                                           bench lock and has run scripts/bench.sh up)
#
# The versions: the files in tests/controllers/. Every venv uses this
# machine's python3 (3.11 on Debian 12).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

venv() {
  local version=$1 req dir want
  req=tests/controllers/requirements-$version.txt
  [ -f "$req" ] || die "no $req (the matrix: tests/controllers/requirements-*.txt)"
  dir=.cache/controllers/$version
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
    log "venv $dir up to date"
    return 0
  fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$want" > "$dir/.requirements.sha256"
}

# use VERSION: this shell runs that venv's ansible-core, pytest and molecule.
use() {
  timed "ansible-core $1: venv" venv "$1"
  export PATH="$ROOT/.cache/controllers/$1/bin:$PATH"
  local got
  got=$(python -c 'from ansible.release import __version__; print(__version__)')
  case "$got" in "$1".*) log "ansible-core $got" ;; *) die "venv for $1 runs ansible-core $got" ;; esac
}

case "${1:-}" in
  venv) venv "${2:?version}" ;;
  test)
    use "${2:?version}"
    timed "ansible-core $2: ansible-test sanity" scripts/sanity.sh
    timed "ansible-core $2: pytest units" pytest tests/unit -q -p no:cacheprovider
    ;;
  molecule)
    use "${2:?version}"
    # molecule's docker driver needs community.docker, which this venv lacks
    # (no ansible package): the main .venv's copy (requires_ansible >= 2.15)
    # is put on the collections path behind ours.
    site=$("$ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    export ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections:$site"
    timed "ansible-core $2: molecule $3" molecule test -s "${3:?scenario}"
    ;;
  *) die "usage: $0 venv VERSION | test VERSION | molecule VERSION SCENARIO" ;;
esac
