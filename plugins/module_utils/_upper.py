# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The upper layer of an overlay: classify its entries and compare it with the lowers.

Pure rules first (what an upper entry is: whiteout, opaque directory,
redirect, metacopy; how OCI layer tars name whiteouts), then the host
functions, which take paths so tests can point them at synthetic trees:

- :func:`inspect_upper` walks an upper directory and compares it with the
  lower stack: added, modified (data or metadata only), deleted, opaque.

Exporting the upper is ``_oci``; copying a merged view and emptying layer
directories is ``_layercopy``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

OVERLAY_XATTR_PREFIX = "trusted.overlay."
XATTR_OPAQUE = "trusted.overlay.opaque"
XATTR_REDIRECT = "trusted.overlay.redirect"
XATTR_METACOPY = "trusted.overlay.metacopy"
XATTR_WHITEOUT = "trusted.overlay.whiteout"

#: OCI image layer whiteout markers (image-spec layer.md).
OCI_WHITEOUT_PREFIX = ".wh."
OCI_OPAQUE_MARKER = ".wh..wh..opq"

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


def read_xattrs(path: str | int, overlay_only: bool = False, skip_overlay: bool = False) -> dict[str, bytes]:
    """Extended attributes of ``path`` (not following symlinks) or of an open file descriptor; {} where unsupported.

    ``overlay_only``: only the ``trusted.overlay.*`` ones; ``skip_overlay``:
    all but those (their values are then never read).
    """
    # An fd takes no follow_symlinks (os refuses the pair).
    nofollow: dict[str, bool] = {} if isinstance(path, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(path, **nofollow)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
            return {}
        raise
    out: dict[str, bytes] = {}
    for name in names:
        if (overlay_only or skip_overlay) and is_overlay_xattr(name) != overlay_only:
            continue
        try:
            out[name] = os.getxattr(path, name, **nofollow)
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


# ---------------------------------------------------------------------------
# Copying a merged view into a new layer
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# Emptying a layer directory (only while the overlay is not mounted)
# ---------------------------------------------------------------------------
