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
import queue
import shutil
import stat
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    is_within,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper import (
    CHUNK,
    UpperError,
    is_overlay_xattr,
    join_rel,
    lower_entry,
    read_xattrs,
)

#: What copy_tree counts, in the order it reports them.
COPY_COUNTS = ("files", "directories", "symlinks", "hardlinks", "specials", "bytes")


# The ways to copy a file's data, fastest first: copy_file_range (a reflink
# or in-kernel copy; refused across most file systems, overlayfs included),
# sendfile (in-kernel, any regular source), read and write.
COPY_RANGE, SENDFILE, READ_WRITE = 0, 1, 2
_NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)

#: Threads copying the non-directories in copy_tree at most (data and
#: metadata; the system calls release the GIL), and the entries one
#: hand-over holds.
WORKERS = 3
BATCH = 256


def default_workers() -> int:
    """copy_tree's threads: one per idle CPU this process may use, at most WORKERS; none unless two are idle.

    The threads only gain where CPUs idle (the copy is system calls); on a
    busy machine they cost CPU time and gain nothing, so the copy stays in
    one thread. Idle is the CPU count minus the load average of a minute.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):
        busy = 0
    idle = cpus - busy
    return min(WORKERS, idle) if idle >= 2 else 0


def _kernel_copy(way: int, sfd: int, dfd: int, count: int) -> int:
    call = getattr(os, "copy_file_range" if way == COPY_RANGE else "sendfile", None)
    if call is None:  # a Python built without it (copy_file_range needs glibc 2.27)
        raise OSError(errno.ENOSYS, "no %s in this Python" % ("copy_file_range" if way == COPY_RANGE else "sendfile"))
    return call(sfd, dfd, count) if way == COPY_RANGE else call(dfd, sfd, None, count)


def _copy_data(sfd: int, dfd: int, size: int | None = None, way: int = COPY_RANGE) -> int:
    """Copy ``size`` bytes (all up to the end of file if None) from ``sfd`` to ``dfd``, both at their offsets.

    Tries ``way`` first, then the slower ones where the kernel refuses it;
    returns the way that worked, for the next file of the same file system.
    With a ``size`` (the source's ``st_size``) a file takes one call.
    """
    copied = 0
    while way < READ_WRITE and (size is None or copied < size):
        try:
            n = _kernel_copy(way, sfd, dfd, CHUNK * 64 if size is None else size - copied)
        except OSError as exc:
            if exc.errno not in _NO_KERNEL_COPY:
                raise
            way += 1  # nothing was copied by the refused call: both offsets are still at ``copied``
            continue
        if n == 0:
            return way
        copied += n
    while way == READ_WRITE and (size is None or copied < size):
        buf = os.read(sfd, CHUNK if size is None else min(CHUNK, size - copied))
        if not buf:
            break
        copied += len(buf)
        view = memoryview(buf)
        while view:
            view = view[os.write(dfd, view) :]
    return way


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


def copy_metadata_fd(src_st: os.stat_result, xattrs: Mapping[str, bytes], fd: int, *, owner=None) -> None:
    """:func:`copy_metadata` on an open regular file (no path look-ups), in the same order.

    ``owner`` is the (uid, gid) the new file already has; the chown is
    skipped when the source has it too (a new file has no set-id bits or
    capabilities to lose).
    """
    if owner != (src_st.st_uid, src_st.st_gid):
        os.fchown(fd, src_st.st_uid, src_st.st_gid)
    for name, value in xattrs.items():
        if not is_overlay_xattr(name):
            os.setxattr(fd, name, value)
    os.fchmod(fd, stat.S_IMODE(src_st.st_mode))
    os.utime(fd, ns=(src_st.st_atime_ns, src_st.st_mtime_ns))


def _create(dest: str) -> int:
    return os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)


def copy_entry(src: str, dest: str, st: os.stat_result, *, fsync: bool = False) -> str:
    """Create the non-directory ``dest`` like ``src`` (content, link target or device; no metadata yet).

    Returns what it was: ``files``, ``symlinks`` or ``specials``. With
    ``fsync``, a file's data is synced before it is closed.
    """
    mode = st.st_mode
    if stat.S_ISREG(mode):
        sfd = _open_source(src)
        try:
            dfd = _create(dest)
            try:
                _copy_data(sfd, dfd)
                if fsync:
                    os.fsync(dfd)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
        return "files"
    if stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dest)
        return "symlinks"
    os.mknod(dest, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    return "specials"


class _FileCopier:
    """Copies non-directories (data, then metadata) for :func:`copy_tree`, remembering the data copy that works."""

    def __init__(self, owner: tuple[int, int]) -> None:
        self.owner = owner
        self.ways: dict[int, int] = {}

    def copy(self, src: str, dest: str, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            copy_entry(src, dest, st)
            copy_metadata(st, read_xattrs(src), dest)
            return
        sfd = _open_source(src)
        try:
            dfd = _create(dest)
            try:
                if st.st_size:
                    way = self.ways.get(st.st_dev, COPY_RANGE)
                    self.ways[st.st_dev] = _copy_data(sfd, dfd, st.st_size, way)
                copy_metadata_fd(st, read_xattrs(sfd, skip_overlay=True), dfd, owner=self.owner)
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def copy_all(self, batch: list[tuple[str, str, os.stat_result]]) -> None:
        for src, dest, st in batch:
            self.copy(src, dest, st)


class _Pool:
    """``workers`` threads running ``fn`` on the batches put in (none: ``put`` runs it).

    The first error stops the work and is raised by ``put`` or ``close``.
    """

    def __init__(self, fn, workers: int) -> None:
        self.fn = fn
        self.errors: list[BaseException] = []
        self.queue: queue.Queue = queue.Queue(maxsize=max(workers, 1) * 4)
        self.threads = [threading.Thread(target=self._run, daemon=True) for dummy in range(workers)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                self.queue.put(None)  # the end, for the next worker too
                return
            if self.errors:
                continue
            try:
                self.fn(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller by close()
                self.errors.append(exc)

    def put(self, batch: list) -> None:
        if self.errors:
            raise self.errors[0]
        if not self.threads:
            self.fn(batch)
        elif batch:
            self.queue.put(batch)

    def close(self) -> None:
        """Wait for the batches put in; raise the first error of a worker."""
        if self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()
        if self.errors:
            raise self.errors[0]


def copy_tree(src: str, dest: str, *, workers: int | None = None) -> dict[str, int]:
    """Copy the tree at ``src`` (a merged view) into the new directory ``dest``.

    Regular files, directories, symlinks, device nodes and FIFOs keep their
    owner, mode, xattrs (except ``trusted.overlay.*``), access and
    modification times; hard links stay hard links (by device and inode);
    directory times are set after their content. ``dest`` must not exist.

    This thread walks the tree, creates the directories and counts; the
    other entries are copied by ``workers`` threads (0: all here; None:
    :func:`default_workers`). Hard
    links are made once every file is there, then the directories'
    metadata is set, deepest first.
    """
    stats: Counter[str] = Counter()
    root_st = os.lstat(src)
    if not stat.S_ISDIR(root_st.st_mode):
        raise UpperError("%s is not a directory" % src, "path")
    os.mkdir(dest, 0o700)
    made = os.lstat(dest)  # a new entry's owner in dest: ours, the group maybe the set-gid parent's
    copier = _FileCopier((made.st_uid, made.st_gid))
    pool = _Pool(copier.copy_all, default_workers() if workers is None else workers)
    try:
        dirs, links = _walk_copy(src, root_st, dest, stats, pool)
    finally:
        pool.close()
    for target, dp in links:
        os.link(target, dp, follow_symlinks=False)  # a hard-linked symlink stays one
    for st, xa, d in reversed(dirs):
        copy_metadata(st, xa, d)
    return {k: stats[k] for k in COPY_COUNTS}


def _walk_copy(
    src: str, root_st: os.stat_result, dest: str, stats: Counter[str], pool: _Pool
) -> tuple[list, list[tuple[str, str]]]:
    """The walker of :func:`copy_tree`: returns the directories (parents first) and the hard links to make."""
    dirs: list[tuple[os.stat_result, dict[str, bytes], str]] = [(root_st, read_xattrs(src), dest)]
    first: dict[tuple[int, int], str] = {}
    links: list[tuple[str, str]] = []
    batch: list[tuple[str, str, os.stat_result]] = []
    stack = [(src, dest)]
    while stack:
        sdir, ddir = stack.pop()
        with os.scandir(sdir) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            sp, dp = entry.path, os.path.join(ddir, entry.name)
            st = entry.stat(follow_symlinks=False)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                os.mkdir(dp, 0o700)
                dirs.append((st, read_xattrs(sp), dp))
                stack.append((sp, dp))
                stats["directories"] += 1
                continue
            if st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in first:
                    links.append((first[key], dp))
                    stats["hardlinks"] += 1
                    continue
                first[key] = dp
            if stat.S_ISREG(mode):
                stats["files"] += 1
                stats["bytes"] += st.st_size
            else:
                stats["symlinks" if stat.S_ISLNK(mode) else "specials"] += 1
            batch.append((sp, dp, st))
            if len(batch) >= BATCH:
                pool.put(batch)
                batch = []
        pool.put(batch)  # one directory's entries: the workers seldom create in the same directory at once
        batch = []
    return dirs, links


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
