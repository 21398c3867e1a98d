# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The upper layer of an overlay: classify, compare, export, copy, empty.

Pure rules first (what an upper entry is: whiteout, opaque directory,
redirect, metacopy; how OCI layer tars name whiteouts), then the host
functions, which take paths so tests can point them at synthetic trees:

- :func:`inspect_upper` walks an upper directory and compares it with the
  lower stack: added, modified (data or metadata only), deleted, opaque.
- :func:`write_oci_layer` writes the upper as an OCI image layer tar.
- :func:`copy_tree` copies a merged view into a new directory, preserving
  owners, modes, extended attributes (except ``trusted.overlay.*``),
  symlinks, hard links, device nodes and times.
- :func:`swap_empty` moves a layer directory aside and puts an empty one with
  the same owner and mode in its place (restorable until discarded).
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import tarfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    is_within,
)

OVERLAY_XATTR_PREFIX = "trusted.overlay."
XATTR_OPAQUE = "trusted.overlay.opaque"
XATTR_REDIRECT = "trusted.overlay.redirect"
XATTR_METACOPY = "trusted.overlay.metacopy"
XATTR_WHITEOUT = "trusted.overlay.whiteout"

#: OCI image layer whiteout markers (image-spec layer.md).
OCI_WHITEOUT_PREFIX = ".wh."
OCI_OPAQUE_MARKER = ".wh..wh..opq"

COMPRESSIONS = ("none", "gzip")
CHUNK = 1 << 20

# Kinds of upper entries.
WHITEOUT = "whiteout"
OPAQUE_DIR = "opaque_dir"
REDIRECT_DIR = "redirect_dir"
DIRECTORY = "dir"
METACOPY = "metacopy"
REGULAR = "file"
SYMLINK = "symlink"
SPECIAL = "special"


class UpperError(ValueError):
    """The upper layer cannot be handled as asked; ``param`` names the culprit."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# ---------------------------------------------------------------------------
# Pure rules
# ---------------------------------------------------------------------------


def is_overlay_xattr(name: str) -> bool:
    """True for the overlay's private xattrs, which must never leave a layer."""
    return name.startswith(OVERLAY_XATTR_PREFIX)


def is_whiteout(mode: int, rdev: int, size: int, xattrs: Mapping[str, bytes]) -> bool:
    """A whiteout: a char device 0/0, or (Linux 6.7+) a zero-size file with ``trusted.overlay.whiteout``."""
    if stat.S_ISCHR(mode) and rdev == 0:
        return True
    return stat.S_ISREG(mode) and size == 0 and XATTR_WHITEOUT in xattrs


def is_opaque(xattrs: Mapping[str, bytes]) -> bool:
    """An opaque directory hides every lower directory of the same name.

    ``trusted.overlay.opaque=y`` marks it. The value ``x`` (Linux 6.7+) means
    "not opaque, but may hold xattr whiteouts"; it does not hide lowers.
    """
    return xattrs.get(XATTR_OPAQUE, b"").rstrip(b"\0") == b"y"


def classify(mode: int, rdev: int, size: int, xattrs: Mapping[str, bytes]) -> str:
    """The kind of one upper entry from its stat fields and overlay xattrs."""
    if is_whiteout(mode, rdev, size, xattrs):
        return WHITEOUT
    if stat.S_ISDIR(mode):
        if is_opaque(xattrs):
            return OPAQUE_DIR
        if XATTR_REDIRECT in xattrs:
            return REDIRECT_DIR
        return DIRECTORY
    if stat.S_ISREG(mode):
        return METACOPY if XATTR_METACOPY in xattrs else REGULAR
    if stat.S_ISLNK(mode):
        return SYMLINK
    return SPECIAL


def redirect_target(rel_parent: str, value: bytes) -> str:
    """The lower path (relative to the layer root) a ``trusted.overlay.redirect`` value points at.

    Absolute values start at the layer root; a relative value is a name in
    the same parent directory.
    """
    target = value.rstrip(b"\0").decode("utf-8", "surrogateescape")
    if target.startswith("/"):
        return target.strip("/")
    return join_rel(rel_parent, target)


def join_rel(parent: str, name: str) -> str:
    return "%s/%s" % (parent, name) if parent else name


def oci_whiteout_name(rel: str) -> str:
    """``a/b/name`` deleted -> ``a/b/.wh.name``."""
    parent, dummy, name = rel.rpartition("/")
    return join_rel(parent, OCI_WHITEOUT_PREFIX + name)


def oci_opaque_name(rel_dir: str) -> str:
    """The marker that makes directory ``rel_dir`` opaque in an OCI layer."""
    return join_rel(rel_dir, OCI_OPAQUE_MARKER)


def metadata_differs(a: os.stat_result, b: os.stat_result, xa: Mapping[str, bytes], xb: Mapping[str, bytes]) -> bool:
    """Owner, mode, file type or user-visible xattrs differ (times are not compared)."""
    return (
        a.st_mode != b.st_mode or a.st_uid != b.st_uid or a.st_gid != b.st_gid or public_xattrs(xa) != public_xattrs(xb)
    )


def public_xattrs(xattrs: Mapping[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in xattrs.items() if not is_overlay_xattr(k)}


@dataclass
class Inspection:
    """What an upper layer changes compared with its lowers."""

    added: list[str] = field(default_factory=list)
    modified: list[dict[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)
    redirects: list[dict[str, str]] = field(default_factory=list)
    metacopy: list[str] = field(default_factory=list)
    bytes_added: int = 0
    bytes_modified: int = 0
    entries: int = 0

    @property
    def empty(self) -> bool:
        return self.entries == 0

    def as_result(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "modified": self.modified,
            "deleted": self.deleted,
            "opaque": self.opaque,
            "redirects": self.redirects,
            "metacopy": self.metacopy,
            "counts": {
                "added": len(self.added),
                "modified": len(self.modified),
                "deleted": len(self.deleted),
                "opaque": len(self.opaque),
                "entries": self.entries,
            },
            "bytes": {"added": self.bytes_added, "modified": self.bytes_modified},
        }

    def summary(self) -> str:
        """A text listing for diff mode: one line per change, ``+`` ``~`` ``-`` ``!``."""
        lines = ["+ %s" % p for p in self.added]
        lines += ["~ %s (%s)" % (m["path"], m["change"]) for m in self.modified]
        lines += ["- %s" % p for p in self.deleted]
        lines += ["! %s (opaque: replaces the lower directory)" % p for p in self.opaque]
        lines += ["> %s (renamed from %s)" % (r["path"], r["from"]) for r in self.redirects]
        return "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------------------
# Host helpers
# ---------------------------------------------------------------------------


def read_xattrs(path: str, overlay_only: bool = False) -> dict[str, bytes]:
    """Extended attributes of ``path`` (not following symlinks); {} where unsupported."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
            return {}
        raise
    out: dict[str, bytes] = {}
    for name in names:
        if overlay_only and not is_overlay_xattr(name):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    return out


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def lower_entry(lower_dirs: Sequence[str], name: str) -> tuple[str | None, os.stat_result | None, list[str]]:
    """Look ``name`` up in a merged lower directory given as its real directories, top first.

    Returns the real path and stat of the visible entry (None if absent or
    whited out) and, when it is a directory, the real directories that make
    it up (stopping at a whiteout, a non-directory or an opaque directory).
    """
    found: str | None = None
    found_st: os.stat_result | None = None
    dirs: list[str] = []
    for d in lower_dirs:
        p = os.path.join(d, name)
        st = _lstat(p)
        if st is None:
            continue
        xa = read_xattrs(p, overlay_only=True) if not stat.S_ISLNK(st.st_mode) else {}
        if is_whiteout(st.st_mode, st.st_rdev, st.st_size, xa):
            break
        if found is None:
            found, found_st = p, st
        if not stat.S_ISDIR(st.st_mode):
            break
        dirs.append(p)
        if is_opaque(xa):
            break
    return found, found_st, dirs


def lower_dirs_for(lowers: Sequence[str], rel: str) -> list[str]:
    """The real lower directories that make up directory ``rel`` of the lower stack."""
    dirs = list(lowers)
    for name in [p for p in rel.split("/") if p]:
        dummy, st, dirs = lower_entry(dirs, name)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return []
    return dirs


def same_content(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _sorted_names(path: str) -> list[str]:
    return sorted(os.listdir(path))


def inspect_upper(upper: str, lowers: Sequence[str]) -> Inspection:
    """Compare the upper directory ``upper`` with the lower stack ``lowers`` (top first).

    Paths in the result are relative to the overlay root. A whiteout is a
    deletion; an opaque directory replaces the lower one (its content counts
    as added); a directory that only exists because something below it
    changed is not reported unless its owner, mode or xattrs changed; a file
    copied up without a change is not reported.
    """
    rep = Inspection()
    stack: list[tuple[str, str, list[str]]] = [("", upper, list(lowers))]
    while stack:
        rel_dir, real_dir, lower_dirs = stack.pop()
        for name in reversed(_sorted_names(real_dir)):
            rel = join_rel(rel_dir, name)
            p = os.path.join(real_dir, name)
            st = os.lstat(p)
            xa = read_xattrs(p)
            kind = classify(st.st_mode, st.st_rdev, st.st_size, xa)
            rep.entries += 1
            low, low_st, low_dirs = lower_entry(lower_dirs, name)
            if kind == WHITEOUT:
                rep.deleted.append(rel)
                continue
            if stat.S_ISDIR(st.st_mode):
                if kind == OPAQUE_DIR:
                    rep.opaque.append(rel)
                    child_lowers: list[str] = []
                elif kind == REDIRECT_DIR:
                    origin = redirect_target(rel_dir, xa[XATTR_REDIRECT])
                    rep.redirects.append({"path": rel, "from": origin})
                    child_lowers = lower_dirs_for(lowers, origin)
                    low, low_st = (child_lowers[0], os.lstat(child_lowers[0])) if child_lowers else (None, None)
                else:
                    child_lowers = low_dirs
                if low is None or low_st is None:
                    if kind != REDIRECT_DIR:
                        rep.added.append(rel)
                elif not stat.S_ISDIR(low_st.st_mode):
                    rep.modified.append({"path": rel, "change": "type"})
                elif kind != OPAQUE_DIR and metadata_differs(st, low_st, xa, read_xattrs(low)):
                    rep.modified.append({"path": rel, "change": "metadata"})
                stack.append((rel, p, child_lowers))
                continue
            size = st.st_size if stat.S_ISREG(st.st_mode) and kind != METACOPY else 0
            if kind == METACOPY:
                rep.metacopy.append(rel)
            if low is None or low_st is None:
                rep.added.append(rel)
                rep.bytes_added += size
                continue
            change = _file_change(p, st, xa, kind, low, low_st)
            if change is not None:
                rep.modified.append({"path": rel, "change": change})
                if change in ("data", "type"):
                    rep.bytes_modified += size
    rep.added.sort()
    rep.deleted.sort()
    rep.opaque.sort()
    rep.metacopy.sort()
    rep.modified.sort(key=lambda m: m["path"])
    rep.redirects.sort(key=lambda m: m["path"])
    return rep


def _file_change(
    p: str, st: os.stat_result, xa: Mapping[str, bytes], kind: str, low: str, low_st: os.stat_result
) -> str | None:
    """'type', 'data', 'metadata' or None (copied up unchanged) for a non-directory."""
    if stat.S_IFMT(st.st_mode) != stat.S_IFMT(low_st.st_mode):
        return "type"
    if stat.S_ISLNK(st.st_mode):
        if os.readlink(p) != os.readlink(low):
            return "data"
    elif stat.S_ISREG(st.st_mode) and kind != METACOPY:
        if st.st_size != low_st.st_size or not same_content(p, low):
            return "data"
    elif not stat.S_ISREG(st.st_mode) and st.st_rdev != low_st.st_rdev:
        return "data"
    if kind == METACOPY:
        return "metadata"
    if metadata_differs(st, low_st, xa, read_xattrs(low)) or st.st_mtime_ns != low_st.st_mtime_ns:
        return "metadata"
    return None


# ---------------------------------------------------------------------------
# OCI image layer tar
# ---------------------------------------------------------------------------


@dataclass
class ExportStats:
    entries: int = 0
    whiteouts: int = 0
    opaque: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


def _pax_time(ns: int) -> str:
    return "%d.%09d" % divmod(ns, 1_000_000_000)


def tar_info(rel: str, st: os.stat_result, xattrs: Mapping[str, bytes]) -> tarfile.TarInfo:
    """A PAX TarInfo for one entry: numeric owner, mode, nanosecond mtime, xattrs (never trusted.overlay.*)."""
    ti = tarfile.TarInfo(rel)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.mtime = st.st_mtime_ns / 1e9
    headers = {"mtime": _pax_time(st.st_mtime_ns)}
    for name, value in sorted(xattrs.items()):
        if not is_overlay_xattr(name):
            headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    ti.pax_headers = headers
    return ti


def _marker(rel: str, st: os.stat_result) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(rel)
    ti.type = tarfile.REGTYPE
    ti.size = 0
    ti.mode = 0o644
    ti.uname = ti.gname = ""
    ti.mtime = int(st.st_mtime)
    return ti


def iter_upper(upper: str) -> Iterable[tuple[str, str, os.stat_result, dict[str, bytes]]]:
    """(relative path, real path, lstat, xattrs) of every upper entry, parents first, names sorted."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        real_dir = os.path.join(upper, rel_dir) if rel_dir else upper
        names = _sorted_names(real_dir)
        subdirs = []
        for name in names:
            rel = join_rel(rel_dir, name)
            p = os.path.join(real_dir, name)
            st = os.lstat(p)
            xa = read_xattrs(p)
            yield rel, p, st, xa
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(rel)
        stack.extend(reversed(subdirs))


def write_oci_layer(upper: str, out: BinaryIO, compression: str = "none") -> ExportStats:
    """Write the upper directory as an OCI image layer tar to the binary stream ``out``.

    Whiteouts become ``.wh.<name>`` entries, opaque directories get a
    ``.wh..wh..opq`` entry, hard links within the upper become link entries.
    Redirected directories and metacopy files have no OCI form (their data
    lives in a lower): they are refused.
    """
    if compression not in COMPRESSIONS:
        raise UpperError("compression must be one of %s" % ", ".join(COMPRESSIONS), "compression")
    stats = ExportStats()
    stream: BinaryIO = out
    gz = None
    if compression == "gzip":
        gz = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0)
        stream = gz  # type: ignore[assignment]
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for rel, p, st, xa in iter_upper(upper):
            kind = classify(st.st_mode, st.st_rdev, st.st_size, xa)
            if kind in (REDIRECT_DIR, METACOPY):
                raise UpperError(
                    "%s in %s is a %s entry (redirect_dir/metacopy): its data lives in a lower layer and an OCI "
                    "layer cannot express it. Export from an overlay mounted with redirect_dir and metacopy off"
                    % (rel, upper, "redirected directory" if kind == REDIRECT_DIR else "metacopy"),
                    "state",
                )
            if kind == WHITEOUT:
                tf.addfile(_marker(oci_whiteout_name(rel), st))
                stats.whiteouts += 1
                stats.entries += 1
                continue
            ti = tar_info(rel, st, xa)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
                stats.entries += 1
                if kind == OPAQUE_DIR:
                    tf.addfile(_marker(oci_opaque_name(rel), st))
                    stats.opaque += 1
                    stats.entries += 1
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                ti.type = tarfile.LNKTYPE
                ti.linkname = links[key]
                tf.addfile(ti)
            elif stat.S_ISREG(mode):
                ti.type = tarfile.REGTYPE
                ti.size = st.st_size
                with open(p, "rb") as fh:
                    tf.addfile(ti, fh)
                stats.bytes += st.st_size
            elif stat.S_ISLNK(mode):
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(p)
                tf.addfile(ti)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                tf.addfile(ti)
            elif stat.S_ISFIFO(mode):
                ti.type = tarfile.FIFOTYPE
                tf.addfile(ti)
            else:
                stats.skipped.append(rel)
                continue
            if st.st_nlink > 1:
                links.setdefault(key, rel)
            stats.entries += 1
    if gz is not None:
        gz.close()
    return stats


# ---------------------------------------------------------------------------
# Copying a merged view into a new layer
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Emptying a layer directory (only while the overlay is not mounted)
# ---------------------------------------------------------------------------


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
