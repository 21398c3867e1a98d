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
