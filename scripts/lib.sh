# shellcheck shell=bash
# Shared helpers for the scripts in this folder (sourced, not run).
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# timed NAME CMD...: run CMD, print how long it took, keep its exit status.
timed() {
  local name=$1 start rc
  shift
  start=$(date +%s)
  log "==> $name"
  set +e
  # A subshell with errexit on: a failing command inside a function fails the step.
  ( set -e; "$@" )
  rc=$?
  set -e
  printf '[%s] <== %s: %ss (exit %s)\n' "$(date +%H:%M:%S)" "$name" "$(( $(date +%s) - start ))" "$rc" >&2
  echo "$name $(( $(date +%s) - start ))s rc=$rc" >> "${OVERLAYFS_TIMINGS:-/dev/null}"
  return "$rc"
}

# debootstrap_minbase SUITE MIRROR PACKAGES DIR LOG: a Debian minbase root
# with PACKAGES (comma-separated) in DIR; on failure the log's tail, then die.
debootstrap_minbase() {
  local suite=$1 mirror=$2 packages=$3 dir=$4 logf=$5
  log "debootstrap $suite (minbase + $packages) into $dir"
  debootstrap --variant=minbase --include="$packages" "$suite" "$dir" "$mirror" > "$logf" 2>&1 \
    || { tail -n 30 "$logf" >&2; die "debootstrap failed"; }
}
