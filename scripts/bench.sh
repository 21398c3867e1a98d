#!/usr/bin/env bash
# Test bench for overlayfs.systemd: Docker engine + a systemd base image built
# from Debian packages (no image registry needed).
#
#   scripts/bench.sh deps        install docker.io and debootstrap if missing
#   scripts/bench.sh docker-up   start dockerd unless one answers; records whether we started it
#   scripts/bench.sh docker-down stop dockerd only if docker-up started it
#   scripts/bench.sh image       build and import the base image unless an identical one exists
#   scripts/bench.sh up          deps + docker-up + image
#
# OVERLAYFS_DEBIAN selects the release of the image (12: bookworm, the
# default; 13: trixie); each release has its own image repository
# (overlayfs-systemd/debian12, overlayfs-systemd/debian13) built from the same
# package set, so `OVERLAYFS_DEBIAN=13 scripts/bench.sh image` adds the
# Debian 13 image next to the Debian 12 one.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

DEBIAN=${OVERLAYFS_DEBIAN:-12}
case "$DEBIAN" in
  12) SUITE=bookworm ;;
  13) SUITE=trixie ;;
  *) die "OVERLAYFS_DEBIAN=$DEBIAN: the bench builds Debian 12 or 13" ;;
esac
IMAGE_REPO=overlayfs-systemd/debian$DEBIAN
MIRROR=${OVERLAYFS_BENCH_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd,systemd-sysv,dbus,python3,util-linux,procps,psmisc,attr,kmod,coreutils,findutils,tar,gzip
# Units that make no sense in a container and slow the boot: masked.
MASKED_UNITS="systemd-remount-fs.service systemd-firstboot.service getty@tty1.service
  systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount
  dev-hugepages.mount dev-mqueue.mount apt-daily.timer apt-daily-upgrade.timer
  e2scrub_all.timer fstrim.timer"
# Bump when the way the image is made changes (not for edits elsewhere here).
IMAGE_RECIPE=1
STATE_DIR=${OVERLAYFS_BENCH_STATE:-/run/overlayfs-bench}
DOCKERD_LOG=$STATE_DIR/dockerd.log

deps() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The overlay module must be loaded on the host kernel: containers cannot load it.
  if ! grep -qw overlay /proc/filesystems; then
    modprobe overlay 2>/dev/null || die "the host kernel has no overlay filesystem (modprobe overlay failed)"
  fi
}

docker_up() {
  mkdir -p "$STATE_DIR"
  if docker info >/dev/null 2>&1; then
    log "a Docker engine already answers; using it"
    return 0
  fi
  log "starting dockerd (--bridge=none --iptables=false)"
  # setsid: the daemon must not get our terminal's signals; it is stopped by docker-down.
  # The daemon outlives this script: it must not inherit any other file
  # descriptor, above all a lock held by a caller (`flock LOCK scripts/bench.sh
  # up && ...` would otherwise stay locked as long as dockerd runs).
  (
    for fd in "/proc/$BASHPID/fd/"*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] && eval "exec $fd>&-"
    done
    exec setsid dockerd --bridge=none --iptables=false --ip6tables=false \
      --pidfile "$STATE_DIR/dockerd.pid" >"$DOCKERD_LOG" 2>&1 < /dev/null
  ) &
  echo started > "$STATE_DIR/started-by-us"
  local i
  for i in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "dockerd ready after ${i}x0.5s"; return 0; }
    sleep 0.5
  done
  tail -n 30 "$DOCKERD_LOG" >&2 || true
  die "dockerd did not become ready in 30 s (log: $DOCKERD_LOG)"
}

docker_down() {
  [ -f "$STATE_DIR/started-by-us" ] || { log "dockerd was not started by the bench; leaving it"; return 0; }
  # Remove leftover bench containers first so the next run starts clean.
  local ids
  ids=$(docker ps -aq --filter label=overlayfs-systemd.bench 2>/dev/null || true)
  # shellcheck disable=SC2086  # one container id per word
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  local pid
  pid=$(cat "$STATE_DIR/dockerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    log "stopping dockerd (pid $pid)"
    kill "$pid"
    local i
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  # containerd is started by dockerd as a child; make sure nothing is left.
  pkill -f '^containerd --config /var/run/docker/containerd' 2>/dev/null || true
  rm -f "$STATE_DIR/started-by-us"
}

image_tag() {
  # The tag is a hash of everything that goes into the image, so a changed
  # input builds a new image and an unchanged one is reused.
  echo "$IMAGE_RECIPE $SUITE $MIRROR $PACKAGES $MASKED_UNITS" | sha256sum | cut -c1-12
}

image() {
  local tag ref
  tag=$(image_tag)
  ref="$IMAGE_REPO:$tag"
  if docker image inspect "$ref" >/dev/null 2>&1; then
    log "base image $ref exists; reusing it"
  else
    local root
    root=$(mktemp -d /var/tmp/overlayfs-bench-root.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" RETURN
    debootstrap_minbase "$SUITE" "$MIRROR" "$PACKAGES" "$root" "$STATE_DIR/debootstrap.log"
    # Trim and prepare for booting systemd as PID 1 in a container.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    : > "$root/etc/machine-id"
    echo bench > "$root/etc/hostname"
    # Units that make no sense in a container and slow the boot.
    local u
    for u in $MASKED_UNITS; do
      ln -sf /dev/null "$root/etc/systemd/system/$u"
    done
    log "docker import as $IMAGE_REPO:rootfs-$tag"
    tar -C "$root" -c . | docker import - "$IMAGE_REPO:rootfs-$tag" >/dev/null
    # docker import cannot set STOPSIGNAL; a one-line build on top of the
    # imported root can (no registry involved). SIGRTMIN+3 makes systemd shut
    # down cleanly, so "docker stop" is a real shutdown.
    printf '%s\n' "FROM $IMAGE_REPO:rootfs-$tag" \
      'ENV container=docker' \
      'STOPSIGNAL SIGRTMIN+3' \
      "LABEL overlayfs-systemd.bench-inputs=$tag" \
      'CMD ["/lib/systemd/systemd"]' \
      | DOCKER_BUILDKIT=0 docker build -q -t "$ref" - >/dev/null
    docker rmi "$IMAGE_REPO:rootfs-$tag" >/dev/null
  fi
  docker tag "$ref" "$IMAGE_REPO:test"
  # Older bench images (other inputs) are no longer used by anything.
  local old
  for old in $(docker images "$IMAGE_REPO" --format '{{.Repository}}:{{.Tag}}'); do
    case "$old" in "$ref"|"$IMAGE_REPO:test") ;; *) docker rmi "$old" >/dev/null 2>&1 || true ;; esac
  done
  log "base image ready: $IMAGE_REPO:test (= $ref)"
}

case "${1:-up}" in
  deps) timed "bench deps" deps ;;
  docker-up) timed "bench docker-up" docker_up ;;
  docker-down) timed "bench docker-down" docker_down ;;
  image) timed "bench image debian$DEBIAN" image ;;
  up) timed "bench deps" deps; timed "bench docker-up" docker_up; timed "bench image debian$DEBIAN" image ;;
  *) die "usage: $0 deps|docker-up|docker-down|image|up" ;;
esac
