# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""``/proc/self/mountinfo`` parsing and the overlay layer escaping.

The kernel shows option values octal-escaped; the overlay's own escapes
(``\\,`` ``\\:`` ``\\\\``) come on top. Pure: text in, records out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ansible_collections.overlayfs.systemd.plugins.module_utils._names import is_within


def escape_layer(path: str) -> str:
    """Escape a layer path for ``lowerdir=``/``upperdir=``/``workdir=``.

    The kernel's option splitter honours ``\\,`` and the lowerdir splitter
    ``\\:``; a literal backslash is written ``\\\\``.
    """
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def unescape_layer(value: str) -> str:
    """Undo :func:`escape_layer` (the kernel's ``ovl_unescape``)."""
    out = []
    it = iter(value)
    for c in it:
        if c == "\\":
            nxt = next(it, None)
            if nxt is not None:
                out.append(nxt)
        else:
            out.append(c)
    return "".join(out)


_OCTAL_RE = re.compile(r"\\([0-7]{3})")


def decode_mountinfo_octal(s: str) -> str:
    """Decode the kernel's ``\\NNN`` octal escapes (bytes, then UTF-8)."""
    if "\\" not in s:
        return s
    raw = bytearray()
    i = 0
    data = s.encode("utf-8", "surrogateescape")
    while i < len(data):
        if data[i] == 0x5C and i + 3 < len(data) and re.match(rb"[0-7]{3}", data[i + 1 : i + 4]):
            raw.append(int(data[i + 1 : i + 4], 8) & 0xFF)
            i += 4
        else:
            raw.append(data[i])
            i += 1
    return raw.decode("utf-8", "surrogateescape")


def split_unescaped(s: str, sep: str) -> list[str]:
    """Split ``s`` at ``sep`` characters not escaped by a backslash; keep escapes."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            cur.append(s[i : i + 2])
            i += 2
            continue
        if c == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


@dataclass(frozen=True)
class MountInfo:
    """One line of /proc/self/mountinfo, octal escapes decoded."""

    mount_id: int
    parent_id: int
    major_minor: str
    root: str
    mount_point: str
    mount_options: str
    fstype: str
    source: str
    super_options: str
    optional_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class OverlayOptions:
    """The layers and options of a live overlay, escapes undone."""

    lowerdir: list[str] = field(default_factory=list)
    datadir: list[str] = field(default_factory=list)
    upperdir: str | None = None
    workdir: str | None = None
    options: dict[str, str | None] = field(default_factory=dict)
    readonly: bool = False


def parse_mountinfo(text: str) -> list[MountInfo]:
    """Parse mountinfo text; malformed lines are skipped, never raised."""
    result: list[MountInfo] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 4 or sep < 6:
            continue
        try:
            mount_id = int(fields[0])
            parent_id = int(fields[1])
        except ValueError:
            continue
        if ":" not in fields[2]:
            continue
        result.append(
            MountInfo(
                mount_id=mount_id,
                parent_id=parent_id,
                major_minor=fields[2],
                root=decode_mountinfo_octal(fields[3]),
                mount_point=decode_mountinfo_octal(fields[4]),
                mount_options=fields[5],
                optional_fields=tuple(fields[6:sep]),
                fstype=fields[sep + 1],
                source=decode_mountinfo_octal(fields[sep + 2]),
                super_options=" ".join(fields[sep + 3 :]),
            )
        )
    return result


def parse_overlay_options(super_options: str, mount_options: str = "") -> OverlayOptions:
    """Parse an overlay's super options from mountinfo.

    Options are split at commas first (commas inside values are octal-escaped
    by the kernel), then each value is octal-decoded. ``lowerdir=``,
    ``upperdir=`` and ``workdir=`` show the string as the user passed it, so
    the overlay escapes (``\\:`` ``\\,`` ``\\\\``) are undone as well and
    ``lowerdir=`` is split at unescaped colons (``::`` starts data-only
    layers). ``lowerdir+=``/``datadir+=`` values are plain paths.
    """
    lower: list[str] = []
    data: list[str] = []
    upper = work = None
    other: dict[str, str | None] = {}
    readonly = False
    for opt in super_options.split(","):
        if not opt:
            continue
        key, eq, value = opt.partition("=")
        val = decode_mountinfo_octal(value) if eq else None
        if key == "lowerdir" and val is not None:
            pieces = split_unescaped(val, ":")
            in_data = False
            for piece in pieces:
                if piece == "":
                    in_data = True
                    continue
                (data if in_data else lower).append(unescape_layer(piece))
        elif key == "lowerdir+" and val is not None:
            lower.append(val)
        elif key == "datadir+" and val is not None:
            data.append(val)
        elif key == "upperdir" and val is not None:
            upper = unescape_layer(val)
        elif key == "workdir" and val is not None:
            work = unescape_layer(val)
        elif key == "ro":
            readonly = True
        else:
            other[key] = val
    if "ro" in mount_options.split(","):
        readonly = True
    return OverlayOptions(lower, data, upper, work, other, readonly)


def mount_at(mounts: Sequence[MountInfo], path: str) -> MountInfo | None:
    """The top-most mount whose mount point is ``path`` (None if not a mount point)."""
    found = None
    for m in mounts:
        if m.mount_point == path:
            found = m
    return found


def mount_containing(mounts: Sequence[MountInfo], path: str) -> MountInfo | None:
    """The mount (longest mount point prefix, last wins) that contains ``path``."""
    best = None
    for m in mounts:
        if is_within(path, m.mount_point) and (best is None or len(m.mount_point) >= len(best.mount_point)):
            best = m
    return best


def submounts(mounts: Sequence[MountInfo], path: str) -> list[str]:
    """Mount points strictly below ``path``."""
    return sorted({m.mount_point for m in mounts if m.mount_point != path and is_within(m.mount_point, path)})
