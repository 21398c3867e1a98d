# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Copying a merged view into a new layer, and emptying layer directories.

- :func:`copy_tree` copies a merged view into a new directory, preserving
  owners, modes, extended attributes (except ``trusted.overlay.*``),
  symlinks, hard links, device nodes and times.
- :func:`mask_lowers` adds the whiteouts a copy stacked on old lowers needs.
- :func:`swap_empty` moves a layer directory aside and puts an empty one with
  the same owner and mode in its place (restorable until discarded).
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    is_within,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper import (
    CHUNK,
    UpperError,
    _sorted_names,
    is_overlay_xattr,
    join_rel,
    lower_entry,
    read_xattrs,
)

#: What copy_tree counts, in the order it reports them.
COPY_COUNTS = ("files", "directories", "symlinks", "hardlinks", "specials", "bytes")


def _copy_data(sfd: int, dfd: int) -> None:
    copied = 0
    cfr = getattr(os, "copy_file_range", None)
    if cfr is not None:
        try:
            while True:
                n = cfr(sfd, dfd, CHUNK * 64)
                if n == 0:
                    return
                copied += n
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            if copied:
                os.lseek(sfd, copied, os.SEEK_SET)
                os.lseek(dfd, copied, os.SEEK_SET)
    while True:
        buf = os.read(sfd, CHUNK)
        if not buf:
            return
        view = memoryview(buf)
        while view:
            view = view[os.write(dfd, view) :]


def _open_source(path: str) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        return os.open(path, flags)


def copy_metadata(src_st: os.stat_result, xattrs: Mapping[str, bytes], dest: str) -> None:
    """Owner, xattrs (never trusted.overlay.*), mode and times of ``dest``, in the order that keeps them.

    chown clears set-id bits and file capabilities, so it comes first; the
    mode after the xattrs (an ACL xattr rewrites the group bits).
    """
    os.lchown(dest, src_st.st_uid, src_st.st_gid)
    for name, value in xattrs.items():
        if is_overlay_xattr(name):
            continue
        os.setxattr(dest, name, value, follow_symlinks=False)
    if not stat.S_ISLNK(src_st.st_mode):
        os.chmod(dest, stat.S_IMODE(src_st.st_mode))
    os.utime(dest, ns=(src_st.st_atime_ns, src_st.st_mtime_ns), follow_symlinks=False)


def copy_tree(src: str, dest: str) -> dict[str, int]:
    """Copy the tree at ``src`` (a merged view) into the new directory ``dest``.

    Regular files, directories, symlinks, device nodes and FIFOs keep their
    owner, mode, xattrs (except ``trusted.overlay.*``), access and
    modification times; hard links stay hard links (by device and inode);
    directory times are set after their content. ``dest`` must not exist.
    """
    stats: Counter[str] = Counter()
    root_st = os.lstat(src)
    if not stat.S_ISDIR(root_st.st_mode):
        raise UpperError("%s is not a directory" % src, "path")
    os.mkdir(dest, 0o700)
    dirs: list[tuple[os.stat_result, dict[str, bytes], str]] = [(root_st, read_xattrs(src), dest)]
    links: dict[tuple[int, int], str] = {}
    stack = [(src, dest)]
    while stack:
        sdir, ddir = stack.pop()
        for name in _sorted_names(sdir):
            sp, dp = os.path.join(sdir, name), os.path.join(ddir, name)
            st = os.lstat(sp)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(dp, 0o700)
                dirs.append((st, read_xattrs(sp), dp))
                stack.append((sp, dp))
                stats["directories"] += 1
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                os.link(links[key], dp)
                stats["hardlinks"] += 1
                continue
            if stat.S_ISREG(mode):
                sfd = _open_source(sp)
                try:
                    dfd = os.open(dp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    try:
                        _copy_data(sfd, dfd)
                    finally:
                        os.close(dfd)
                finally:
                    os.close(sfd)
                stats["files"] += 1
                stats["bytes"] += st.st_size
            elif stat.S_ISLNK(mode):
                os.symlink(os.readlink(sp), dp)
                stats["symlinks"] += 1
            else:
                os.mknod(dp, stat.S_IFMT(mode) | 0o600, st.st_rdev)
                stats["specials"] += 1
            copy_metadata(st, read_xattrs(sp), dp)
            if st.st_nlink > 1:
                links[key] = dp
    for st, xa, d in reversed(dirs):
        copy_metadata(st, xa, d)
    return {k: stats[k] for k in COPY_COUNTS}


def mask_lowers(dest: str, lowers: Sequence[str]) -> list[str]:
    """Whiteouts in ``dest`` for every entry the lower stack ``lowers`` shows and ``dest`` lacks.

    A full copy of a merged view stacked on the old lowers would let them show
    through where something was deleted or a directory replaced (the lower
    entries come back). A character device 0/0 in a lower layer is the
    kernel's way to hide them; nothing else is added (no xattr). Directory
    times in ``dest`` are kept. Returns the masked paths, relative to ``dest``.
    """
    masked: list[str] = []
    stack: list[tuple[str, list[str]]] = [("", list(lowers))]
    while stack:
        rel, lower_dirs = stack.pop()
        ddir = os.path.join(dest, rel) if rel else dest
        present = set(os.listdir(ddir))
        names: set[str] = set()
        for d in lower_dirs:
            names.update(os.listdir(d))
        dir_st = os.lstat(ddir)
        made = False
        for name in sorted(names):
            low, dummy, dirs = lower_entry(lower_dirs, name)
            if low is None:
                continue
            child = join_rel(rel, name)
            if name not in present:
                os.mknod(os.path.join(ddir, name), stat.S_IFCHR, os.makedev(0, 0))
                masked.append(child)
                made = True
            elif dirs and stat.S_ISDIR(os.lstat(os.path.join(ddir, name)).st_mode):
                stack.append((child, dirs))
        if made:
            os.utime(ddir, ns=(dir_st.st_atime_ns, dir_st.st_mtime_ns))
    return sorted(masked)


def aside_name(path: str, tag: str) -> str:
    """A sibling of ``path`` on the same file system, hidden, naming the operation."""
    parent, base = os.path.split(path)
    return os.path.join(parent, ".%s.overlayfs-%s-%d" % (base, tag, os.getpid()))


def swap_empty(path: str, tag: str, template: str | None = None) -> str:
    """Move directory ``path`` aside and create an empty one in its place; return the aside path.

    The new directory gets the old one's owner and mode, or, with
    ``template``, the owner, mode, xattrs and times of that directory (so a
    merged root keeps its look after its content moved to a lower).
    """
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UpperError("%s is not a directory" % path, "path")
    aside = aside_name(path, tag)
    os.rename(path, aside)
    try:
        os.mkdir(path, 0o700)
        if template is not None:
            copy_metadata(os.lstat(template), read_xattrs(template), path)
        else:
            os.lchown(path, st.st_uid, st.st_gid)
            os.chmod(path, stat.S_IMODE(st.st_mode))
    except OSError:
        restore_swap(path, aside)
        raise
    return aside


def restore_swap(path: str, aside: str) -> None:
    """Undo :func:`swap_empty`: drop the new directory, move the old one back."""
    if os.path.lexists(path):
        shutil.rmtree(path)
    os.rename(aside, path)


def remove_tree(path: str) -> None:
    if os.path.lexists(path):
        shutil.rmtree(path)


def dest_problems(dest: str, layers: Iterable[tuple[str, str]]) -> list[str]:
    """Why ``dest`` cannot become a new lower: it overlaps one of ``layers`` ((name, path) pairs)."""
    out = []
    for name, layer in layers:
        if is_within(dest, layer) or is_within(layer, dest):
            out.append("dest %s overlaps %s %s" % (dest, name, layer))
    return out
