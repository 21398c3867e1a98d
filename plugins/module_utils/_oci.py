# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""An upper layer as an OCI image layer tar (``state: exported``).

:func:`write_oci_layer` streams the upper into any binary sink, overlay
whiteouts and opaque directories turned into the OCI ``.wh.`` markers.
"""

from __future__ import annotations

import gzip
import os
import stat
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from ansible_collections.overlayfs.systemd.plugins.module_utils._upper import (
    METACOPY,
    OPAQUE_DIR,
    REDIRECT_DIR,
    WHITEOUT,
    UpperError,
    _sorted_names,
    classify,
    is_overlay_xattr,
    join_rel,
    oci_opaque_name,
    oci_whiteout_name,
    read_xattrs,
)

COMPRESSIONS = ("none", "gzip")


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
