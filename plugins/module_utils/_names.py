# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Names and places of an overlay: paths, systemd unit names, ids, default directories.

``escape_path`` is ``systemd-escape --path``; ``overlay_id`` names the
tmpfs and prepare units and the default persistent layout. Pure: data in,
data out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import OverlayError


@dataclass(frozen=True)
class Roots:
    """Where the host keeps what the collection reads and writes.

    One record, replaced as a whole only by the unit tests' fake host
    (``ROOTS``): the default places of the layers, the unit directory and
    the files read from /proc, /sys and /etc.
    """

    #: Base directory of default persistent upper/work directories.
    persistent_base: str = "/var/lib/overlayfs"
    #: Base directory of the per-overlay tmpfs mount points.
    tmpfs_base: str = "/run/overlayfs"
    unit_dir: str = "/etc/systemd/system"
    mountinfo: str = "/proc/self/mountinfo"
    proc: str = "/proc"
    fstab: str = "/etc/fstab"
    #: The overlay module's defaults (what a mount shows no option for).
    overlay_params: str = "/sys/module/overlay/parameters"
    #: The directory a running systemd creates at boot (what ``sd_booted()`` looks for).
    booted_marker: str = "/run/systemd/system"


ROOTS = Roots()
#: Mode of the directories only the overlay uses (workdir, the default layout's parents).
PRIVATE_DIR_MODE = 0o700

UNIT_NAME_MAX = 255


def _escape_byte(b: int) -> str:
    return "\\x%02x" % b


def escape_path(path: str) -> str:
    """Escape ``path`` exactly like ``systemd-escape --path`` (systemd 252).

    Redundant slashes and ``.`` components are dropped, leading and trailing
    slashes removed, ``/`` becomes ``-``, every byte that is not an ASCII
    letter, digit, ``_``, ``:`` or a non-leading ``.`` becomes ``\\xNN``.
    The root directory escapes to ``-``. ``..`` components are refused, like
    systemd does ("not a normalized file system path").
    """
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise OverlayError("path %r contains a '..' component; give a normalised absolute path" % path, "path")
    if not parts:
        return "-"
    raw = "/".join(parts).encode("utf-8", "surrogateescape")
    out = []
    for i, b in enumerate(raw):
        if b == 0x2F:
            out.append("-")
        elif b == 0x2E and i == 0:
            out.append(_escape_byte(b))
        elif (0x30 <= b <= 0x39) or (0x41 <= b <= 0x5A) or (0x61 <= b <= 0x7A) or b in (0x5F, 0x3A, 0x2E):
            out.append(chr(b))
        else:
            out.append(_escape_byte(b))
    return "".join(out)


def unit_name(path: str, suffix: str = "mount", param: str = "path") -> str:
    """Return the unit name systemd requires for ``path``; refuse names > 255 bytes."""
    name = "%s.%s" % (escape_path(path), suffix)
    if len(name.encode("utf-8")) > UNIT_NAME_MAX:
        raise OverlayError(
            "%s %r gives the unit name %r of %d bytes; systemd allows at most %d. "
            "Use a shorter path (escaped characters such as '-' or non-ASCII count 4 bytes each)"
            % (param, path, name[:60] + "...", len(name.encode("utf-8")), UNIT_NAME_MAX),
            param,
        )
    return name


def normalize_path(path: Any, param: str) -> str:
    """Validate an absolute path and return it normalised (no ``//``, no trailing ``/``)."""
    if not isinstance(path, str) or not path:
        raise OverlayError("%s must be a non-empty absolute path, got %r" % (param, path), param)
    if "\x00" in path:
        raise OverlayError("%s %r contains a NUL byte; remove it" % (param, path), param)
    bad = [c for c in path if ord(c) < 0x20 or ord(c) == 0x7F]
    if bad:
        raise OverlayError(
            "%s %r contains a newline or another control character (%r); unit files cannot carry it, "
            "rename the directory" % (param, path, bad[0]),
            param,
        )
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise OverlayError(
            "%s %r is not valid UTF-8; systemd refuses such unit values" % (param, path), param
        ) from None
    if not path.startswith("/"):
        raise OverlayError("%s %r is relative; give an absolute path starting with '/'" % (param, path), param)
    parts = [p for p in path.split("/") if p]
    for p in parts:
        if p in (".", ".."):
            raise OverlayError(
                "%s %r contains a %r component; give the resolved absolute path" % (param, path, p), param
            )
    norm = "/" + "/".join(parts)
    if norm.endswith("\\"):
        raise OverlayError(
            "%s %r ends with a backslash, which continues lines in unit files; rename it" % (param, path), param
        )
    if norm != norm.rstrip():
        raise OverlayError(
            "%s %r ends with whitespace, which systemd strips from unit values; rename it" % (param, path), param
        )
    return norm


def is_within(child: str, parent: str) -> bool:
    """True if normalised ``child`` equals ``parent`` or lies below it."""
    if parent == "/":
        return True
    return child == parent or child.startswith(parent + "/")


def overlay_id(path: str) -> str:
    """Collision-free, readable id of the overlay at normalised ``path``."""
    slug = re.sub(r"[^A-Za-z0-9.]", "_", "_".join(p for p in path.split("/") if p))[:48]
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return "%s_%s" % (slug, digest)


def tmpfs_dir_for(oid: str) -> str:
    return "%s/%s" % (ROOTS.tmpfs_base, oid)


def persistent_dirs(oid: str) -> tuple[str, str]:
    """The default (upperdir, workdir) of a persistent overlay with id ``oid``."""
    base = ROOTS.persistent_base
    return "%s/%s/upper" % (base, oid), "%s/%s/work" % (base, oid)


def prepare_unit_name(oid: str) -> str:
    return "overlayfs-prepare-%s.service" % oid


def candidate_units(path: str) -> list[str]:
    """Every unit name this collection may manage for the overlay at ``path``."""
    oid = overlay_id(path)
    return [unit_name(path), unit_name(tmpfs_dir_for(oid)), prepare_unit_name(oid)]
