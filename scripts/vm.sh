#!/usr/bin/env bash
# Real-boot test harness: a Debian 12 VM (13 with OVERLAYFS_VM_SUITE=trixie;
# OVERLAYFS_VM_DIR keeps its images and machines apart) built from Debian packages, booted
# with qemu-system-x86_64 under software emulation (TCG), reached over SSH on
# a 127.0.0.1 port forward. Used by tests/vm/ (the "vm real-boot tests" step).
#
#   scripts/vm.sh deps              install qemu-system-x86, debootstrap, openssh-client if missing
#   scripts/vm.sh build             build the cached images (good, nobusybox, bare) unless their inputs are unchanged
#   scripts/vm.sh image VARIANT     print the cached image path of VARIANT (good | nobusybox | bare), building it if needed
#   scripts/vm.sh new NAME VARIANT  fresh machine NAME: a copy of the image + an empty ext4 disk labelled "persist"
#   scripts/vm.sh boot NAME         read kernel, initramfs and command line out of NAME's disk, boot, wait for SSH
#   scripts/vm.sh stop NAME         clean shutdown (ssh poweroff), wait for qemu to exit, kill after a timeout
#   scripts/vm.sh reboot NAME       stop + boot (so a changed kernel, initramfs or command line is used)
#   scripts/vm.sh wait NAME [SECS]  wait until NAME answers on SSH again (after a reboot from inside the guest)
#   scripts/vm.sh kill NAME         SIGKILL qemu: a power cut
#   scripts/vm.sh detach NAME       the next boots have no persist disk (a dead disk); attach NAME undoes it
#   scripts/vm.sh console NAME      the serial console of the current boot so far
#   scripts/vm.sh ssh NAME [CMD..]  run CMD (or a shell) as root on NAME
#   scripts/vm.sh port NAME         the 127.0.0.1 port forwarded to NAME's sshd
#   scripts/vm.sh disk NAME         the path of NAME's system disk (raw ext4: loop-mount it while NAME is off)
#   scripts/vm.sh rm NAME           stop NAME if running and delete its disks
#
# Booting: qemu loads kernel and initramfs with -kernel/-initrd, but this
# script takes them FROM THE IMAGE (debugfs, while the machine is off) at every
# boot, with the command line from the image's /etc/kernel/cmdline, the way a
# bootloader would. A reboot from inside the guest (systemctl reboot) resets
# the machine with the kernel and initramfs loaded at boot; an initramfs
# rebuilt inside the guest takes effect at the next "vm.sh reboot".
#
# Images (cached under .cache/vm/images/ by a hash of their inputs):
#   good       minbase + kernel, initramfs-tools, openssh-server, systemd-networkd (DHCP),
#              python3, python3-apt, overlayroot and busybox; initramfs (MODULES=list: virtio, ext4)
#              rebuilt in a chroot on the host
#   nobusybox  the same without busybox: overlayroot's initramfs script lacks grep
#   bare       the same without overlayroot and busybox (initramfs rebuilt without them), and apt's
#              only source a flat local archive, /var/local/overlayfs-archive, holding the .debs (from debootstrap's
#              download) of every package the image lacks: what the role installs with no network
# All have fixed SSH host keys, a fixed /etc/machine-id and root login with
# the key in .cache/vm/id_ed25519 (generated once).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

SUITE=${OVERLAYFS_VM_SUITE:-bookworm}
MIRROR=${OVERLAYFS_VM_MIRROR:-http://deb.debian.org/debian}
# python3-apt: ansible.builtin.apt needs it (the bare image's archive has only what that image lacks).
PACKAGES=linux-image-amd64,initramfs-tools,openssh-server,systemd-sysv,udev,dbus,kmod,e2fsprogs,python3,python3-apt,overlayroot,busybox
# Bump when the way the images are made changes (not for edits elsewhere here).
IMAGE_RECIPE=5
# Installed into every image (see the file): compiled AnsiballZ code kept, so software emulation compiles it once.
ZIPCACHE=$ROOT/tests/vm/image/overlayfs_vm_zipcache.py
# The bare image's local apt archive (a flat repository: the .debs and a Packages file).
ARCHIVE=/var/local/overlayfs-archive
IMAGE_SIZE=2G
PERSIST_SIZE=256M
MEMORY=${OVERLAYFS_VM_MEMORY:-1024}
BOOT_TIMEOUT=${OVERLAYFS_VM_BOOT_TIMEOUT:-300}
STOP_TIMEOUT=${OVERLAYFS_VM_STOP_TIMEOUT:-120}
VM_DIR=${OVERLAYFS_VM_DIR:-$ROOT/.cache/vm}
IMAGES=$VM_DIR/images
KEY=$VM_DIR/id_ed25519
MACHINE_ID=0d5e1f0a7c3b4e6f9a8b7c6d5e4f3a2b
# fsck.mode=skip: the boot-time fsck of a 2 GB root costs seconds under emulation; the tests cut power on
# purpose, and ext4's journal (replayed at mount) is what they rely on, not fsck.
CMDLINE="root=/dev/vda ro rootfstype=ext4 net.ifnames=0 panic=10 fsck.mode=skip"

deps() {
  local missing=()
  command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
  command -v debugfs >/dev/null 2>&1 || missing+=(e2fsprogs)
  command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "install ${missing[*]} (Debian packages) first"
    log "installing ${missing[*]} from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

ensure_key() {
  mkdir -p "$VM_DIR"
  [ -f "$KEY" ] || ssh-keygen -q -t ed25519 -N '' -C overlayfs-vm -f "$KEY"
}

inputs_hash() {
  # Everything that goes into an image: a changed input builds new images.
  echo "$IMAGE_RECIPE $SUITE $MIRROR $PACKAGES $ARCHIVE $IMAGE_SIZE $MACHINE_ID $CMDLINE $(cat "$KEY.pub")" \
    "$(sha256sum < "$ZIPCACHE")" \
    | sha256sum | cut -c1-12
}

image_path() { echo "$IMAGES/$1-$(inputs_hash).raw"; }

# in_chroot DIR CMD...: run CMD in DIR with /proc, /sys and /dev bound, unmount after.
in_chroot() {
  local dir=$1 rc=0 m
  shift
  mount -t proc proc "$dir/proc"
  mount --rbind /sys "$dir/sys" && mount --make-rslave "$dir/sys"
  mount --rbind /dev "$dir/dev" && mount --make-rslave "$dir/dev"
  DEBIAN_FRONTEND=noninteractive chroot "$dir" "$@" || rc=$?
  for m in dev sys proc; do
    umount -R "$dir/$m" 2>/dev/null || umount -lR "$dir/$m"
  done
  return "$rc"
}

configure_root() {
  local dir=$1
  echo vm > "$dir/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 vm\n' > "$dir/etc/hosts"
  echo "$MACHINE_ID" > "$dir/etc/machine-id"
  printf '%s\n' '/dev/vda / ext4 defaults,errors=remount-ro 0 1' > "$dir/etc/fstab"
  mkdir -p "$dir/etc/kernel"
  echo "$CMDLINE" > "$dir/etc/kernel/cmdline"
  install -d -m 0700 "$dir/root/.ssh"
  install -m 0600 "$KEY.pub" "$dir/root/.ssh/authorized_keys"
  mkdir -p "$dir/etc/systemd/network"
  printf '%s\n' '[Match]' 'Name=eth* en*' '' '[Network]' 'DHCP=ipv4' > "$dir/etc/systemd/network/20-dhcp.network"
  # No DNS inside the VM (qemu's resolver would forward elsewhere): sshd must not wait for it.
  printf '%s\n' 'UseDNS no' > "$dir/etc/ssh/sshd_config.d/overlayfs-vm.conf"
  in_chroot "$dir" systemctl enable systemd-networkd.service >/dev/null 2>&1
  # A small initramfs (only what this VM's boot needs, not MODULES=most): unpacked at every boot and listed by
  # the role's preflight, both slow under software emulation. overlayroot's hook adds the overlay module.
  printf '%s\n' 'MODULES=list' > "$dir/etc/initramfs-tools/conf.d/overlayfs-vm.conf"
  printf '%s\n' virtio_pci virtio_blk ext4 crc32c_generic >> "$dir/etc/initramfs-tools/modules"
  # One emulated vCPU does all of a boot's work: no drivers for q35's devices the tests never use, no e2scrub
  # (its boot-time reap costs ~8 s here).
  printf 'blacklist %s\n' kvm kvm_amd kvm_intel cfg80211 iTCO_wdt i2c_i801 lpc_ich pcspkr ppdev ahci sr_mod \
    > "$dir/etc/modprobe.d/overlayfs-vm.conf"
  in_chroot "$dir" systemctl mask e2scrub_reap.service e2scrub_all.timer >/dev/null 2>&1
  # Generators run before any unit at every boot and daemon-reload (~4 s a boot here). Masked (a link to
  # /dev/null, see systemd.generator(7)) are those for what this VM has not: no encrypted, integrity or
  # verity volumes, no GPT, TPM, hibernation, SysV scripts, rc.local or kernel-command-line units. Kept:
  # fstab (the role's real-root mounts) and getty (the serial console).
  local gen
  mkdir -p "$dir/etc/systemd/system-generators"
  for gen in cryptsetup debug gpt-auto hibernate-resume integritysetup rc-local run ssh system-update sysv \
    tpm2 veritysetup; do
    ln -sfn /dev/null "$dir/etc/systemd/system-generators/systemd-$gen-generator"
  done
  # Python compiles every module of an AnsiballZ zip from source at every module call (zipimport writes no
  # bytecode): about half of a call's time under emulation. A .pth loads a cache for it at every start.
  local site=$dir/usr/lib/python3/dist-packages
  install -m 0644 "$ZIPCACHE" "$site/overlayfs_vm_zipcache.py"
  echo 'import overlayfs_vm_zipcache' > "$site/overlayfs-vm-zipcache.pth"
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
}

make_image() {
  # make_image ROOTDIR OUT: an ext4 file system image made from ROOTDIR, no loop device.
  local dir=$1 out=$2
  rm -f "$out.tmp"
  mkfs.ext4 -q -L vmroot -d "$dir" "$out.tmp" "$IMAGE_SIZE" >/dev/null
  mv "$out.tmp" "$out"
}

# flat_archive ROOTDIR DEBDIR: the .debs in DEBDIR of the packages not installed in ROOTDIR, as a flat
# repository in ROOTDIR$ARCHIVE (a Packages file made with dpkg-deb), and apt's only source.
flat_archive() {
  local dir=$1 debs=$2 deb pkg status name
  mkdir -p "$dir$ARCHIVE"
  : > "$dir$ARCHIVE/Packages"
  for deb in "$debs"/*.deb; do
    pkg=$(dpkg-deb -f "$deb" Package)
    # shellcheck disable=SC2016  # a dpkg-query format, not a shell expansion
    status=$(chroot "$dir" dpkg-query -W -f '${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = installed ] && continue
    # A name without the epoch's %3a (apt would unquote it to a colon).
    name=${pkg}_$(dpkg-deb -f "$deb" Architecture).deb
    cp "$deb" "$dir$ARCHIVE/$name"
    {
      dpkg-deb -f "$deb"
      echo "Filename: ./$name"
      echo "Size: $(stat -c %s "$deb")"
      echo "SHA256: $(sha256sum "$deb" | cut -d' ' -f1)"
      echo
    } >> "$dir$ARCHIVE/Packages"
  done
  grep -q '^Package: overlayroot$' "$dir$ARCHIVE/Packages" || die "no overlayroot .deb for the bare image's archive"
  rm -f "$dir/etc/apt/sources.list" "$dir"/etc/apt/sources.list.d/*
  echo "deb [trusted=yes] file:$ARCHIVE ./" > "$dir/etc/apt/sources.list.d/overlayfs-archive.list"
  rm -rf "$dir"/var/lib/apt/lists/*
}

build() {
  ensure_key
  local good bad bare
  good=$(image_path good)
  bad=$(image_path nobusybox)
  bare=$(image_path bare)
  if [ -f "$good" ] && [ -f "$bad" ] && [ -f "$bare" ]; then
    log "VM images exist for inputs $(inputs_hash); reusing them"
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "building the VM images needs root (debootstrap, chroot)"
  mkdir -p "$IMAGES"
  local dir debs
  dir=$(mktemp -d /var/tmp/overlayfs-vm-root.XXXXXX)
  debs=$(mktemp -d /var/tmp/overlayfs-vm-debs.XXXXXX)
  # "|| true": umount exits 3 for paths no longer mounted, and errexit applies inside traps.
  # shellcheck disable=SC2064  # expand now: the trap must remove this run's directories
  trap "umount -lR '$dir/proc' '$dir/sys' '$dir/dev' 2>/dev/null || true; rm -rf '$dir' '$debs'" RETURN
  debootstrap_minbase "$SUITE" "$MIRROR" "$PACKAGES" "$dir" "$VM_DIR/debootstrap.log"
  # debootstrap's download, kept for the bare image's archive (configure_root empties apt's cache).
  mv "$dir"/var/cache/apt/archives/*.deb "$debs/"
  configure_root "$dir"
  log "update-initramfs in a chroot on the host (good: with busybox)"
  in_chroot "$dir" update-initramfs -u -k all > "$VM_DIR/initramfs-good.log" 2>&1 \
    || { tail -n 20 "$VM_DIR/initramfs-good.log" >&2; die "update-initramfs failed"; }
  make_image "$dir" "$good"
  log "nobusybox variant: purge busybox, rebuild the initramfs"
  in_chroot "$dir" dpkg --purge busybox > "$VM_DIR/initramfs-nobusybox.log" 2>&1
  in_chroot "$dir" update-initramfs -u -k all >> "$VM_DIR/initramfs-nobusybox.log" 2>&1 \
    || { tail -n 20 "$VM_DIR/initramfs-nobusybox.log" >&2; die "update-initramfs failed"; }
  make_image "$dir" "$bad"
  log "bare variant: purge overlayroot too, rebuild the initramfs, a local archive as apt's only source"
  in_chroot "$dir" dpkg --purge overlayroot > "$VM_DIR/initramfs-bare.log" 2>&1
  in_chroot "$dir" update-initramfs -u -k all >> "$VM_DIR/initramfs-bare.log" 2>&1 \
    || { tail -n 20 "$VM_DIR/initramfs-bare.log" >&2; die "update-initramfs failed"; }
  flat_archive "$dir" "$debs"
  make_image "$dir" "$bare"
  # Images of older inputs are no longer used by anything.
  find "$IMAGES" -name '*.raw' ! -name "*-$(inputs_hash).raw" -delete
  log "VM images ready: $good $bad $bare"
}

run_dir() { echo "$VM_DIR/run/$1"; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

new() {
  local name=$1 variant=$2 dir image
  case "$variant" in good|nobusybox|bare) ;; *) die "unknown image variant '$variant' (good | nobusybox | bare)" ;; esac
  dir=$(run_dir "$name")
  image=$(image_path "$variant")
  [ -f "$image" ] || build
  if [ -f "$dir/qemu.pid" ] && kill -0 "$(cat "$dir/qemu.pid")" 2>/dev/null; then
    die "machine $name is running; stop it first"
  fi
  rm -rf "$dir"
  mkdir -p "$dir"
  cp --sparse=always "$image" "$dir/disk.raw"
  rm -f "$dir/persist.raw"
  mkfs.ext4 -q -L persist "$dir/persist.raw" "$PERSIST_SIZE" >/dev/null
  free_port > "$dir/port"
  log "machine $name ($variant) created in $dir, ssh port $(cat "$dir/port")"
}

# One SSH connection a machine, shared by the calls (a new one costs ~1.5 s of the guest's emulated CPU
# for the key exchange): a master kept for 60 s after the last call, under TMPDIR (a socket path must be
# short). ssh_close ends it when the machine goes down, so no call waits on a dead master.
ssh_control() { echo "${TMPDIR:-/tmp}/overlayfs-vm-ssh-%C"; }

ssh_opts() {
  local name=$1
  printf '%s\n' -i "$KEY" -p "$(cat "$(run_dir "$name")/port")" \
    -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
    -o BatchMode=yes -o ConnectTimeout=5 -o ServerAliveInterval=5 -o ServerAliveCountMax=6 \
    -o ControlMaster=auto -o "ControlPath=$(ssh_control)" -o ControlPersist=60
}

ssh_close() {
  local opts
  [ -f "$(run_dir "$1")/port" ] || return 0
  mapfile -t opts < <(ssh_opts "$1")
  ssh "${opts[@]}" -O exit root@127.0.0.1 >/dev/null 2>&1 || true
}

vm_ssh() {
  local name=$1 opts
  shift
  mapfile -t opts < <(ssh_opts "$name")
  # shellcheck disable=SC2029  # the command is meant to run on the guest as given
  ssh "${opts[@]}" root@127.0.0.1 "$@"
}

running() {
  local pidfile
  pidfile="$(run_dir "$1")/qemu.pid"
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

boot() {
  local name=$1 dir kver start
  dir=$(run_dir "$name")
  [ -f "$dir/disk.raw" ] || die "no machine $name (scripts/vm.sh new $name VARIANT)"
  running "$name" && die "machine $name is already running"
  ssh_close "$name"
  # Kernel, initramfs and command line come from the image, every boot. debugfs -c (catastrophic mode:
  # no bitmaps read) also reads a disk whose journal a power cut left un-replayed, where the bitmaps'
  # checksums do not match until the kernel mounts it.
  kver=$(debugfs -c -R 'ls /boot' "$dir/disk.raw" 2>/dev/null | tr -s ' ' '\n' \
    | sed -n 's/^vmlinuz-//p' | sort -V | tail -n 1)
  [ -n "$kver" ] || die "no /boot/vmlinuz-* in $dir/disk.raw"
  rm -f "$dir/vmlinuz" "$dir/initrd.img"
  debugfs -c -R "dump /boot/vmlinuz-$kver $dir/vmlinuz" "$dir/disk.raw" >/dev/null 2>&1
  debugfs -c -R "dump /boot/initrd.img-$kver $dir/initrd.img" "$dir/disk.raw" >/dev/null 2>&1
  if [ ! -s "$dir/vmlinuz" ] || [ ! -s "$dir/initrd.img" ]; then
    die "could not read kernel/initramfs $kver from the image"
  fi
  debugfs -c -R 'cat /etc/kernel/cmdline' "$dir/disk.raw" 2>/dev/null | head -n 1 > "$dir/cmdline"
  [ -s "$dir/cmdline" ] || die "no /etc/kernel/cmdline in the image"
  log "booting $name: kernel $kver, cmdline: $(cat "$dir/cmdline")"
  echo "==== boot $(date -u +%FT%TZ) kernel $kver" >> "$dir/serial.log"
  local persist_drive=(-drive "file=$dir/persist.raw,if=virtio,format=raw")
  if [ -f "$dir/persist.detached" ]; then
    persist_drive=()
    log "$name: booting without its persist disk (scripts/vm.sh attach $name puts it back)"
  fi
  start=$(date +%s)
  qemu-system-x86_64 -machine q35 -accel tcg -m "$MEMORY" -smp 1 \
    -nodefaults -vga none -display none -monitor none -serial "file:$dir/serial.cur" \
    -drive "file=$dir/disk.raw,if=virtio,format=raw" \
    "${persist_drive[@]}" \
    -kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" \
    -append "$(cat "$dir/cmdline") console=ttyS0" \
    -netdev "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:$(cat "$dir/port")-:22" \
    -device virtio-net-pci,netdev=n0 \
    -daemonize -pidfile "$dir/qemu.pid"
  while ! vm_ssh "$name" true 2>/dev/null; do
    if ! running "$name"; then
      collect_serial "$name"
      tail -n 40 "$dir/serial.log" >&2
      die "qemu for $name exited during boot"
    fi
    if [ $(( $(date +%s) - start )) -gt "$BOOT_TIMEOUT" ]; then
      collect_serial "$name"
      tail -n 40 "$dir/serial.log" >&2
      die "$name: no SSH after ${BOOT_TIMEOUT}s (serial console: $dir/serial.log)"
    fi
    sleep 2
  done
  log "$name: SSH up after $(( $(date +%s) - start ))s"
}

wait_ssh() {
  # wait_ssh NAME SECS: SSH answers again, or fail with the console's tail.
  local name=$1 limit=$2 start dir
  dir=$(run_dir "$name")
  ssh_close "$name"   # a master from before the guest's own reboot would wait for its dead connection
  start=$(date +%s)
  while ! vm_ssh "$name" true 2>/dev/null; do
    running "$name" || die "qemu for $name is not running"
    if [ $(( $(date +%s) - start )) -gt "$limit" ]; then
      tail -n 40 "$dir/serial.cur" >&2 || true
      die "$name: no SSH after ${limit}s"
    fi
    sleep 2
  done
  log "$name: SSH up after $(( $(date +%s) - start ))s"
}

kill_vm() {
  local dir
  dir=$(run_dir "$1")
  running "$1" || die "machine $1 is not running"
  kill -9 "$(cat "$dir/qemu.pid")"
  while running "$1"; do sleep 0.2; done
  rm -f "$dir/qemu.pid"
  ssh_close "$1"
  collect_serial "$1"
  log "$1: qemu killed (power cut)"
}

collect_serial() {
  # The serial console of the current boot, appended to serial.log.
  local dir
  dir=$(run_dir "$1")
  [ -f "$dir/serial.cur" ] || return 0
  cat "$dir/serial.cur" >> "$dir/serial.log"
  rm -f "$dir/serial.cur"
}

stop() {
  local name=$1 dir pid start
  dir=$(run_dir "$name")
  if ! running "$name"; then
    collect_serial "$name"
    return 0
  fi
  pid=$(cat "$dir/qemu.pid")
  start=$(date +%s)
  vm_ssh "$name" systemctl poweroff >/dev/null 2>&1 || true
  while kill -0 "$pid" 2>/dev/null && [ $(( $(date +%s) - start )) -lt "$STOP_TIMEOUT" ]; do
    sleep 1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: no clean shutdown in ${STOP_TIMEOUT}s; killing qemu (pid $pid)"
    kill "$pid" 2>/dev/null || true
    sleep 2
    kill -9 "$pid" 2>/dev/null || true
  else
    log "$name: powered off after $(( $(date +%s) - start ))s"
  fi
  rm -f "$dir/qemu.pid"
  ssh_close "$name"
  collect_serial "$name"
}

case "${1:-}" in
  deps) timed "vm deps" deps ;;
  build) deps; timed "vm image build" build ;;
  image) [ $# -eq 2 ] || die "usage: $0 image VARIANT"; ensure_key
    [ -f "$(image_path "$2")" ] || build >&2
    image_path "$2" ;;
  new) [ $# -eq 3 ] || die "usage: $0 new NAME VARIANT"; ensure_key; new "$2" "$3" ;;
  boot) [ $# -eq 2 ] || die "usage: $0 boot NAME"; boot "$2" ;;
  stop) [ $# -eq 2 ] || die "usage: $0 stop NAME"; stop "$2" ;;
  reboot) [ $# -eq 2 ] || die "usage: $0 reboot NAME"; stop "$2"; boot "$2" ;;
  wait) [ $# -ge 2 ] || die "usage: $0 wait NAME [SECS]"; wait_ssh "$2" "${3:-$BOOT_TIMEOUT}" ;;
  kill) [ $# -eq 2 ] || die "usage: $0 kill NAME"; kill_vm "$2" ;;
  detach) [ $# -eq 2 ] || die "usage: $0 detach NAME"; touch "$(run_dir "$2")/persist.detached" ;;
  attach) [ $# -eq 2 ] || die "usage: $0 attach NAME"; rm -f "$(run_dir "$2")/persist.detached" ;;
  console) [ $# -eq 2 ] || die "usage: $0 console NAME"; cat "$(run_dir "$2")/serial.cur" 2>/dev/null || true ;;
  ssh) [ $# -ge 2 ] || die "usage: $0 ssh NAME [CMD...]"; name=$2; shift 2; vm_ssh "$name" "$@" ;;
  port) [ $# -eq 2 ] || die "usage: $0 port NAME"; cat "$(run_dir "$2")/port" ;;
  disk) [ $# -eq 2 ] || die "usage: $0 disk NAME"; echo "$(run_dir "$2")/disk.raw" ;;
  key) ensure_key; echo "$KEY" ;;
  rm) [ $# -eq 2 ] || die "usage: $0 rm NAME"; stop "$2"; rm -rf "$(run_dir "$2")" ;;
  *) die "usage: $0 deps|build|image VARIANT|new NAME VARIANT|boot NAME|stop NAME|reboot NAME|wait NAME [SECS]|kill NAME|detach NAME|attach NAME|console NAME|ssh NAME [CMD]|port NAME|disk NAME|key|rm NAME" ;;
esac
