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

# Steps in the background (make test runs independent lanes side by side on
# the 2 cores): bg_start NAME CMD... runs `timed NAME CMD...` with its output
# in a file of its own; bg_wait NAME waits for it, prints that output (so the
# run's log holds it in one piece) and returns its exit status.
declare -A BG_PIDS=() BG_LOGS=()
bg_start() {
  local name=$1 out
  shift
  out=$(mktemp /tmp/overlayfs-bg.XXXXXX)
  ( timed "$name" "$@" ) > "$out" 2>&1 < /dev/null &
  BG_PIDS[$name]=$!
  BG_LOGS[$name]=$out
  log "started in the background: $name (pid $!, output $out)"
}
bg_wait() {
  local name=$1 rc=0
  [ -n "${BG_PIDS[$name]:-}" ] || die "bg_wait $name: not started"
  log "waiting for the background step $name"
  wait "${BG_PIDS[$name]}" || rc=$?
  echo "---- output of the background step $name ----"
  cat "${BG_LOGS[$name]}"
  echo "---- end of $name (exit $rc) ----"
  rm -f "${BG_LOGS[$name]}"
  unset "BG_PIDS[$name]" "BG_LOGS[$name]"
  return "$rc"
}
# bg_kill_all: stop every background step still running, with the processes
# it started (a failed run exits).
bg_kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do bg_kill_tree "$child"; done
  kill "$1" 2>/dev/null || true
}
bg_kill_all() {
  local name
  for name in "${!BG_PIDS[@]}"; do bg_kill_tree "${BG_PIDS[$name]}"; done
}
