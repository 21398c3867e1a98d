#!/usr/bin/env bash
# Build the collection tarball and install it into an empty collections path:
# proves what we publish is installable and its docs load.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ansible-galaxy collection build "$ROOT" --output-path "$work" --force >/dev/null
tarball=$(ls "$work"/overlayfs-systemd-*.tar.gz)
echo "built $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"
ANSIBLE_COLLECTIONS_PATH="$work/installed" ansible-galaxy collection install "$tarball" -p "$work/installed" >/dev/null
ANSIBLE_COLLECTIONS_PATH="$work/installed" ansible-galaxy collection list overlayfs.systemd -p "$work/installed" | grep -q 'overlayfs.systemd *0.1.0'
# Every module's documentation must render from the installed copy.
for m in "$ROOT"/plugins/modules/*.py; do
  name=$(basename "$m" .py)
  ANSIBLE_COLLECTIONS_PATH="$work/installed" ansible-doc "overlayfs.systemd.$name" >/dev/null
  echo "ansible-doc overlayfs.systemd.$name: ok"
done
for f in "$ROOT"/plugins/filter/*.py; do
  name=$(basename "$f" .py)
  ANSIBLE_COLLECTIONS_PATH="$work/installed" ansible-doc -t filter "overlayfs.systemd.$name" >/dev/null
  echo "ansible-doc -t filter overlayfs.systemd.$name: ok"
done
