# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""An upper directory turned into a lower layer, in O(changes).

Used as-is as a middle lower, an upper keeps the merged view: its whiteouts
(char 0/0) hide in any layer and ``trusted.overlay.opaque=y`` is honoured in
a lower. Only the overlay's bookkeeping xattrs must not travel (see
:data:`BOOKKEEPING_XATTRS`).

- :func:`dest_problem` says why ``dest`` cannot hold a layer (it sits on an
  overlayfs: a whiteout cannot be created through an overlay) before
  anything is copied.
- :func:`stack_upper` moves the upper of a stopped overlay to ``dest``: a
  rename on the same file system, else a copy of the upper only that keeps
  whiteouts, opaque markers, owners, modes, times, xattrs and hard links.
  Either way the bookkeeping xattrs are dropped.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from ansible_collections.overlayfs.systemd.plugins.module_utils._layercopy import copy_entry
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import MountInfo, mount_containing
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper import UpperError, read_xattrs

#: Overlay xattrs that describe the upper's relation to its old lowers or to
#: the overlay instance (Documentation/filesystems/overlayfs.rst): copy-up
#: origin file handles, "impure" directory hints, index link counts and
#: back-pointers, the upper root's uuid. Stale or meaningless in a lower.
BOOKKEEPING_XATTRS = (
    "trusted.overlay.origin",
    "trusted.overlay.impure",
    "trusted.overlay.nlink",
    "trusted.overlay.upper",
    "trusted.overlay.uuid",
)

#: Overlay xattrs a lower layer needs: opaque directories, xattr whiteouts
#: (Linux 6.7+) and the directories that hold them.
KEPT_OVERLAY_XATTRS = ("trusted.overlay.opaque", "trusted.overlay.whiteout", "trusted.overlay.whiteouts")

#: Data that lives in the old lowers: an upper holding these cannot move.
REFUSED_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")

COUNTS = ("files", "directories", "symlinks", "hardlinks", "whiteouts", "opaque", "specials", "bytes", "dropped_xattrs")


def travels(name: str) -> bool:
    """Whether xattr ``name`` of an upper entry goes into the new lower."""
    return not name.startswith("trusted.overlay.") or name in KEPT_OVERLAY_XATTRS


def dest_problem(dest: str, mounts: Sequence[MountInfo]) -> str | None:
    """Why ``dest`` cannot become a lower layer made from an upper, or None."""
    m = mount_containing(mounts, os.path.dirname(dest) or "/")
    if m is not None and m.fstype == "overlay":
        return (
            "dest %s is on an overlayfs (mounted at %s), which cannot hold the upper's whiteouts; nothing was "
            "copied. Put dest on another file system (ext4, xfs, btrfs, tmpfs, a volume), or set squash: true "
            "for one full copy of the merged view without markers" % (dest, m.mount_point)
        )
    return None


def same_filesystem(upper: str, dest: str) -> bool:
    return os.lstat(upper).st_dev == os.lstat(os.path.dirname(dest) or "/").st_dev


def _refuse(rel: str, xattrs: Mapping[str, bytes]) -> None:
    for name in REFUSED_XATTRS:
        if name in xattrs:
            raise UpperError(
                "%s in the upper carries %s: its data lives in a lower layer, so the upper cannot become a "
                "lower on its own; commit with squash: true" % (rel or ".", name),
                "squash",
            )


def _walk(root: str):
    """(relative path, real path, lstat) of every entry below ``root``, parents first, sorted."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        real_dir = os.path.join(root, rel_dir) if rel_dir else root
        subdirs = []
        for name in sorted(os.listdir(real_dir)):
            rel = "%s/%s" % (rel_dir, name) if rel_dir else name
            p = os.path.join(real_dir, name)
            st = os.lstat(p)
            yield rel, p, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(rel)
        stack.extend(reversed(subdirs))


def check_upper(upper: str) -> None:
    """Refuse an upper with redirects or metacopy (before anything moves)."""
    _refuse("", read_xattrs(upper, overlay_only=True))
    for rel, p, st in _walk(upper):
        if not stat.S_ISLNK(st.st_mode):
            _refuse(rel, read_xattrs(p, overlay_only=True))


def strip_bookkeeping(root: str) -> int:
    """Remove the bookkeeping xattrs below and on ``root`` (directory times kept); returns how many."""
    dropped = 0
    for p, st in [(root, os.lstat(root))] + [(p, st) for dummy, p, st in _walk(root)]:
        if stat.S_ISLNK(st.st_mode):
            continue
        names = [n for n in read_xattrs(p, overlay_only=True) if not travels(n)]
        for n in names:
            os.removexattr(p, n, follow_symlinks=False)
        if names:
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            dropped += len(names)
    return dropped


def _metadata(st: os.stat_result, xattrs: Mapping[str, bytes], dest: str) -> int:
    """Owner, the travelling xattrs, mode, times of ``dest``; returns the number of xattrs dropped."""
    os.lchown(dest, st.st_uid, st.st_gid)
    dropped = 0
    for name, value in xattrs.items():
        if travels(name):
            os.setxattr(dest, name, value, follow_symlinks=False)
        else:
            dropped += 1
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dest, stat.S_IMODE(st.st_mode))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    return dropped


def copy_upper(upper: str, dest: str) -> dict[str, int]:
    """Copy the upper directory into the new directory ``dest``: entries as they are, markers included."""
    stats: Counter[str] = Counter()
    os.mkdir(dest, 0o700)
    dirs = [(os.lstat(upper), read_xattrs(upper), dest)]
    links: dict[tuple[int, int], str] = {}
    for rel, p, st in _walk(upper):
        dp = os.path.join(dest, rel)
        mode = st.st_mode
        xa = read_xattrs(p) if not stat.S_ISLNK(mode) else {}
        if stat.S_ISDIR(mode):
            os.mkdir(dp, 0o700)
            dirs.append((st, xa, dp))
            stats["directories"] += 1
            if xa.get("trusted.overlay.opaque", b"").rstrip(b"\0") == b"y":
                stats["opaque"] += 1
            continue
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            os.link(links[key], dp, follow_symlinks=False)
            stats["hardlinks"] += 1
            continue
        kind = copy_entry(p, dp, st, fsync=True)
        if kind == "specials" and stat.S_ISCHR(mode) and st.st_rdev == 0:
            kind = "whiteouts"
        stats[kind] += 1
        if stat.S_ISREG(mode):
            stats["bytes"] += st.st_size
        stats["dropped_xattrs"] += _metadata(st, xa, dp)
        if st.st_nlink > 1:
            links[key] = dp
    for st, xa, d in reversed(dirs):
        stats["dropped_xattrs"] += _metadata(st, xa, d)
    return {k: stats[k] for k in COUNTS}


def count_upper(root: str) -> dict[str, int]:
    """What :func:`copy_upper` would report for ``root`` (for a rename, which copies nothing)."""
    stats: Counter[str] = Counter()
    seen: set[tuple[int, int]] = set()
    for _rel, p, st in _walk(root):
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            stats["directories"] += 1
            if read_xattrs(p, overlay_only=True).get("trusted.overlay.opaque", b"").rstrip(b"\0") == b"y":
                stats["opaque"] += 1
        elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in seen:
            stats["hardlinks"] += 1
        elif stat.S_ISREG(mode):
            stats["files"] += 1
            stats["bytes"] += st.st_size
        elif stat.S_ISLNK(mode):
            stats["symlinks"] += 1
        elif stat.S_ISCHR(mode) and st.st_rdev == 0:
            stats["whiteouts"] += 1
        else:
            stats["specials"] += 1
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            seen.add((st.st_dev, st.st_ino))
    return {k: stats[k] for k in COUNTS}


def stack_upper(
    upper: str, dest: str, *, check: bool = True, before_copy: Callable[[], None] | None = None
) -> tuple[str, dict[str, int]]:
    """Make the (unmounted) upper directory the new layer ``dest``; returns ("rename"|"copy", counts).

    ``dest`` must not exist or be an empty directory (rename(2) replaces
    it). A rename leaves no ``upper`` behind (the caller
    creates the new empty one); a copy leaves ``upper`` as it was. The copy
    goes to a hidden sibling of ``dest`` and is renamed when complete.
    ``check``: refuse redirects and metacopy first (:func:`check_upper`;
    off when the caller did). ``before_copy`` runs before a copy starts
    (the commit journal records the method there).
    """
    if check:
        check_upper(upper)
    if same_filesystem(upper, dest):
        counts = count_upper(upper)
        try:
            os.rename(upper, dest)
        except OSError as exc:
            # Two bind mounts of one file system (two volumes of a container) share st_dev
            # but not a mount: rename(2) says EXDEV, and the upper is copied instead.
            if exc.errno != errno.EXDEV:
                raise
        else:
            counts["dropped_xattrs"] = strip_bookkeeping(dest)
            return "rename", counts
    if before_copy is not None:
        before_copy()
    parent, base = os.path.split(dest)
    tmp = os.path.join(parent, ".%s.overlayfs-partial-%d" % (base, os.getpid()))  # a dead run's: _leftovers
    try:
        counts = copy_upper(upper, tmp)
        os.rename(tmp, dest)
    except BaseException:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp)
        raise
    return "copy", counts
