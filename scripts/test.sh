#!/usr/bin/env bash
# The one test command (make test): installs the pinned tools, then runs every
# check in order and stops at the first red step. Prints each step's duration.
#
#   ruff -> yamllint -> ansible-lint (scripts/lint.sh) -> ansible-test sanity -> pytest units
#   (with coverage) -> collection build/install -> galaxy-importer, release
#   notes, docs site in headless Chromium -> molecule scenarios
#   -> vm real-boot tests (a VM lane in the background from the venv on, beside every other step)
#
# Needs root on Debian 12 for the molecule steps (installs docker.io and
# debootstrap, starts dockerd if none runs and stops it again at the end) and
# for the VM steps (installs qemu-system-x86, builds the VM images with
# debootstrap, boots them with qemu under software emulation).
# OVERLAYFS_SKIP_MOLECULE=1 runs everything else (no root needed; it skips
# the VM steps too unless OVERLAYFS_SKIP_VM=0). OVERLAYFS_SKIP_VM=1 skips
# only the VM steps.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh
export OVERLAYFS_TIMINGS=${OVERLAYFS_TIMINGS:-$(mktemp /tmp/overlayfs-timings.XXXXXX)}
: > "$OVERLAYFS_TIMINGS"
export NO_COLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 ANSIBLE_NOCOLOR=1
T0=$(date +%s)
LOG=$(mktemp /tmp/overlayfs-test-log.XXXXXX)
exec > >(tee "$LOG") 2>&1

summary() {
  local rc=$?
  bg_kill_all
  echo "---- step durations ----"
  cat "$OVERLAYFS_TIMINGS"
  echo "total $(( $(date +%s) - T0 ))s, exit $rc"
  # One closing line over every pytest session of the run (units and each
  # scenario's testinfra verification).
  python3 scripts/pytest_totals.py "$LOG" "$rc"
}
trap summary EXIT

need_apt() {
  # Debian tools the checks use: shellcheck (ansible-test's shell sanity
  # test), git (sanity finds files through git), systemd-escape.
  local missing=()
  command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
  command -v git >/dev/null 2>&1 || missing+=(git)
  # The unit tests compare unit names with the real systemd-escape.
  command -v systemd-escape >/dev/null 2>&1 || missing+=(systemd)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "install ${missing[*]} (Debian packages) first"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
timed "debian tools" need_apt
timed "venv" scripts/venv.sh
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections"
# The collection must be importable as overlayfs.systemd for ansible-lint,
# molecule and ansible-doc: link the repo into a collections tree.
mkdir -p .cache/collections/ansible_collections/overlayfs
ln -sfn "$ROOT" .cache/collections/ansible_collections/overlayfs/systemd

RUN_VM=0
[ "${OVERLAYFS_SKIP_VM:-${OVERLAYFS_SKIP_MOLECULE:-0}}" != 1 ] && RUN_VM=1
# The VM images (Debian 12 and 13, cached by their inputs, each in a
# directory of its own: a build removes the images of other inputs in its
# directory) are built in the VM lane, which starts right after the venv: the
# real boots are the longest part of the run, so they run beside every other
# step. Debian 13's images first (its jobs come first), then Debian 12's in
# the background while the first jobs run; a job waits for its release's images.
VM13_DIR=$ROOT/.cache/vm13
vm_build() {
  local release dir
  IFS='|' read -r release dir <<< "$(vm_release "$1")"
  echo "$BASHPID" > "$VM_QUEUE/images-$1.pid"
  if timed "vm images ($release)" env OVERLAYFS_VM_SUITE="$1" OVERLAYFS_VM_DIR="$dir" scripts/vm.sh build; then
    touch "$VM_QUEUE/images-$1"
  else
    touch "$VM_QUEUE/images-$1.failed"
    return 1
  fi
}
# alive PIDFILE: the process of that pid file runs.
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
# vm_images_wait SUITE: until that release's images are built. Fails if their build failed, or if nothing
# will build them any more (the VM lane and the build are gone without a result: killed).
vm_images_wait() {
  while [ ! -e "$VM_QUEUE/images-$1" ]; do
    [ -e "$VM_QUEUE/images-$1.failed" ] && return 1
    if ! alive "$VM_QUEUE/lane.pid" && ! alive "$VM_QUEUE/images-$1.pid" && [ ! -e "$VM_QUEUE/images-$1" ]; then
      log "no $1 VM images will come: the VM lane and their build ended without a result"
      return 1
    fi
    sleep 5
  done
}
# Real boots (qemu, TCG, one vCPU each) as six jobs, longest first: the two chains of boots of the good image
# on each release (pytest -m fallback: the unconfirmed trial, enable again, the dead disk; -m kiosk: check,
# enable, idempotent, disable), then the other machines (the busybox refusal on Debian 12, the package step
# from a local archive on Debian 13, an image baked offline on both). Molecule keeps one core busy, not two, so the VM lane takes jobs while
# molecule runs, and the main lane takes the rest once molecule is done.
VM_JOBS=("trixie|fallback" "trixie|kiosk" "bookworm|fallback" "bookworm|kiosk"
  "trixie|not kiosk and not fallback" "bookworm|not kiosk and not fallback")
# vm_release SUITE: "debian N|images directory" of that suite.
vm_release() {
  case "$1" in
    trixie) echo "debian 13|$VM13_DIR" ;;
    *) echo "debian 12|$ROOT/.cache/vm" ;;
  esac
}
VM_QUEUE=$(mktemp -d /tmp/overlayfs-vm-queue.XXXXXX)
vm_job() {
  local suite=$1 mark=$2 release dir
  IFS='|' read -r release dir <<< "$(vm_release "$suite")"
  vm_images_wait "$suite"
  OVERLAYFS_VM_SUITE=$suite OVERLAYFS_VM_DIR=$dir pytest tests/vm -v -p no:cacheprovider --durations=0 -m "$mark"
}
# vm_take: the index of the next job (each index is handed out once, across both lanes).
vm_take() {
  local n
  {
    flock 8
    n=$(cat "$VM_QUEUE/next" 2>/dev/null || echo 0)
    echo $((n + 1)) > "$VM_QUEUE/next"
    echo "$n"
  } 8> "$VM_QUEUE/lock"
}
# vm_worker: take the next job until none is left; stop (failing) once any job failed, in either lane.
vm_worker() {
  local i suite mark release
  while :; do
    [ -e "$VM_QUEUE/failed" ] && return 1
    i=$(vm_take)
    [ "$i" -lt "${#VM_JOBS[@]}" ] || return 0
    IFS='|' read -r suite mark <<< "${VM_JOBS[$i]}"
    IFS='|' read -r release _ <<< "$(vm_release "$suite")"
    timed "vm real-boot tests ($release, -m '$mark')" vm_job "$suite" "$mark" || { touch "$VM_QUEUE/failed"; return 1; }
  done
}
vm_lane() {
  local builder rc=0
  if ! vm_build trixie; then
    touch "$VM_QUEUE/images-bookworm.failed"   # no job waits for images that will not come
    return 1
  fi
  vm_build bookworm &
  builder=$!
  vm_worker || rc=$?
  wait "$builder" || rc=1
  return "$rc"
}
if [ "$RUN_VM" = 1 ]; then
  scripts/vm.sh deps   # apt, before any other apt run of the steps below
  bg_start "vm lane" vm_lane
  echo "${BG_PIDS[vm lane]}" > "$VM_QUEUE/lane.pid"   # for vm_images_wait: is the lane still there
fi

# -- matrix (issue 12): sanity + units under the older controllers (their own
# venvs), in the background beside the main steps, which are ansible-core
# 2.19 (see docs/testing.md "Tested matrix").
matrix() { local v; for v in 2.16 2.17 2.18; do scripts/controllers.sh test "$v"; done; }
bg_start "controller matrix (ansible-core 2.16, 2.17, 2.18)" matrix
scripts/lint.sh   # ruff, yamllint, ansible-lint (make lint), each timed
timed "ansible-test sanity" scripts/sanity.sh
timed "pytest units" pytest tests/unit -q -p no:cacheprovider \
  --cov=plugins --cov-report=term --cov-report=xml:.cache/coverage.xml
timed "collection build+install" scripts/build_install.sh
# What a user meets first: Galaxy's import of the tarball and the release
# notes, then the documentation site loaded in a browser (scripts/publish.sh).
timed "galaxy-importer + release notes" scripts/publish.sh check
timed "docs site + browser check" scripts/publish.sh docs
if [ "${OVERLAYFS_SKIP_MOLECULE:-0}" != 1 ]; then
  # One Docker suite at a time on a machine: wait for others holding the
  # bench lock (developers' runs); released when this script exits.
  exec 9>/tmp/overlayfs-bench.lock
  flock 9
  scripts/bench.sh deps
  scripts/bench.sh up   # times its own steps
  trap 'rc=$?; bg_kill_all; scripts/bench.sh docker-down; (exit $rc); summary' EXIT
  # The fleet scenario's printed benchmark: one round here (3 by default: medians of three).
  export OVERLAYFS_FLEET_BENCH_ROUNDS=${OVERLAYFS_FLEET_BENCH_ROUNDS:-1}
  for scenario_file in molecule/*/molecule.yml; do
    scenario=$(basename "$(dirname "$scenario_file")")
    timed "molecule $scenario" molecule test -s "$scenario"
  done
  # -- matrix (issue 12): the main scenarios on Debian 13, one on the oldest controller.
  OVERLAYFS_DEBIAN=13 scripts/bench.sh image
  for scenario in mount mount_info overlays upper bench escaping; do
    timed "molecule $scenario (debian 13)" env OVERLAYFS_DEBIAN=13 molecule test -s "$scenario"
  done
  scripts/controllers.sh molecule 2.16 mount
fi
# The main lane takes the VM jobs still left.
rc_vm=0
if [ "$RUN_VM" = 1 ]; then
  vm_worker || rc_vm=$?
fi
bg_wait "controller matrix (ansible-core 2.16, 2.17, 2.18)"
if [ "$RUN_VM" = 1 ]; then
  bg_wait "vm lane" || rc_vm=$?
fi
[ "$rc_vm" = 0 ]   # the exit status: the VM jobs' (errexit stops a failed run here)
