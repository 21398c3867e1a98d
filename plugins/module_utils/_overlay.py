# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Pure domain rules for overlay mounts managed as systemd units.

Path escaping (``systemd-escape --path``), overlay option rendering and
escaping, ``/proc/self/mountinfo`` parsing, validation of the module
parameters into an :class:`OverlaySpec`, unit-file rendering and the plan of
actions. Everything here takes data and returns data, except the few
functions at the end that read ``/proc`` or create directories; those take
their roots as arguments so tests can point them at a temporary tree.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

#: First line of every unit file this collection writes. Comparisons ignore it.
HEADER = "# Managed by overlayfs.systemd - do not edit; changes are overwritten."
HEADER_PREFIX = "# Managed by overlayfs.systemd"

#: Prefix of the bookkeeping keys in [Unit]; systemd ignores X- keys.
X_PREFIX = "X-OverlayfsSystemd-"

#: Base directory of default persistent upper/work directories.
PERSISTENT_BASE = "/var/lib/overlayfs"
#: Base directory of the per-overlay tmpfs mount points.
TMPFS_BASE = "/run/overlayfs"

UNIT_NAME_MAX = 255
OPTION_STRING_MAX = 4096  # legacy mount(2): the whole string must be < one page
NEW_API_VALUE_MAX = 255  # fsconfig(FSCONFIG_SET_STRING): 256 bytes incl. NUL
MAX_LOWER_LAYERS = 500

INSTALL_BIN = "/usr/bin/install"

UPPER_KINDS = ("persistent", "tmpfs", "none")
STATES = ("mounted", "present", "unmounted", "absent")
APPLY_POLICIES = ("restart", "next_boot")

ALLOWED_FLAGS = (
    "ro",
    "noatime",
    "nosuid",
    "nodev",
    "noexec",
    "relatime",
    "nodiratime",
    "strictatime",
    "sync",
    "dirsync",
)
ATIME_FLAGS = ("noatime", "relatime", "strictatime")
#: Flags compared with the live mount's per-mount options.
VERIFIED_FLAGS = ("ro", "nosuid", "nodev", "noexec")

#: Overlay feature parameters -> how each value is rendered in Options=.
#: "choice": rendered as name=value. "onoff": bool rendered as name=on|off.
#: "switch": bool rendered as bare name when true, omitted when false.
FEATURES: tuple[tuple[str, str], ...] = (
    ("redirect_dir", "choice"),
    ("index", "onoff"),
    ("metacopy", "onoff"),
    ("xino", "choice"),
    ("nfs_export", "onoff"),
    ("uuid", "choice"),
    ("userxattr", "switch"),
    ("volatile", "switch"),
)
FEATURE_CHOICES: dict[str, tuple[str, ...]] = {
    "redirect_dir": ("on", "follow", "nofollow", "off"),
    "xino": ("on", "off", "auto"),
    "uuid": ("on", "off", "auto", "null"),
}

#: API file systems systemd refuses as Where= and that must never hold layers.
API_PATHS = ("/proc", "/sys", "/dev", "/run/systemd")

_TMPFS_SIZE_RE = re.compile(r"^(\d+[kKmMgG]?|\d{1,3}%)$")
_TMPFS_INODES_RE = re.compile(r"^\d+[kKmMgG]?$")
_MODE_RE = re.compile(r"^0?[0-7]{3,4}$")
_UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.[a-z]+$")
_TIMESPAN_RE = re.compile(
    r"^(infinity|(\d+(\.\d+)?\s*(us|usec|ms|msec|s|sec|second|seconds|m|min|minute|minutes|"
    r"h|hr|hour|hours|d|day|days|w|week|weeks)?\s*)+)$"
)
_OWNER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$")


class OverlayError(ValueError):
    """A parameter or the host violates a rule; ``param`` names the culprit."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


# ---------------------------------------------------------------------------
# systemd path escaping and unit names
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Escaping for overlay options and unit files
# ---------------------------------------------------------------------------


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


def escape_unit_value(s: str) -> str:
    """Double ``%`` so systemd's specifier expansion leaves the value alone."""
    return s.replace("%", "%%")


def quote_unit_word(s: str) -> str:
    """Quote one word for ExecStart=/RequiresMountsFor= (quotes, ``\\``, ``%``)."""
    return '"%s"' % escape_unit_value(s.replace("\\", "\\\\").replace('"', '\\"'))


# ---------------------------------------------------------------------------
# mountinfo parsing
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OverlaySpec:
    """The validated module parameters plus the derived layout."""

    path: str
    lowerdir: tuple[str, ...]
    upper: str
    upperdir: str | None
    workdir: str | None
    default_layout: bool
    id: str
    tmpfs_dir: str | None
    tmpfs_size: str | None
    tmpfs_nr_inodes: str | None
    tmpfs_mode: int
    state: str
    enabled: bool
    owner: str | None
    group: str | None
    mode: int | None
    features: tuple[tuple[str, Any], ...]
    flags: tuple[str, ...]
    description: str
    before: tuple[str, ...]
    after: tuple[str, ...]
    requires: tuple[str, ...]
    wanted_by: tuple[str, ...]
    timeout: str | None
    apply: str
    purge: bool
    allow_nonempty_mountpoint: bool
    upper_uid: int | None = None
    upper_gid: int | None = None
    upper_mode: int | None = None

    @property
    def unit(self) -> str:
        return unit_name(self.path)

    @property
    def tmpfs_unit(self) -> str:
        return unit_name(tmpfs_dir_for(self.id), param="path")

    @property
    def prepare_unit(self) -> str:
        return prepare_unit_name(self.id)

    @property
    def feature_map(self) -> dict[str, Any]:
        return dict(self.features)


def tmpfs_dir_for(oid: str) -> str:
    return "%s/%s" % (TMPFS_BASE, oid)


def prepare_unit_name(oid: str) -> str:
    return "overlayfs-prepare-%s.service" % oid


def candidate_units(path: str) -> list[str]:
    """Every unit name this collection may manage for the overlay at ``path``."""
    oid = overlay_id(path)
    return [unit_name(path), unit_name(tmpfs_dir_for(oid)), prepare_unit_name(oid)]


def parse_mode(value: Any, param: str) -> int | None:
    """Accept an octal string ('0755', '755') or an int; return the mode bits."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise OverlayError("%s must be an octal string such as '0755', got %r" % (param, value), param)
    if isinstance(value, int):
        if 0 <= value <= 0o7777:
            return value
        raise OverlayError("%s %r is out of range; give an octal string such as '0755'" % (param, value), param)
    if isinstance(value, str) and _MODE_RE.match(value):
        return int(value, 8)
    raise OverlayError("%s %r is not an octal mode; quote it, e.g. '0755'" % (param, value), param)


def _unit_list(value: Any, param: str) -> tuple[str, ...]:
    items = tuple(value or ())
    for u in items:
        if not isinstance(u, str) or not _UNIT_RE.match(u) or len(u) > UNIT_NAME_MAX:
            raise OverlayError(
                "%s entry %r is not a unit name; give full names such as 'network-online.target'" % (param, u), param
            )
    return items


def check_option_limits(options: Sequence[str], per_value_limit: int | None) -> None:
    """Refuse option lists the mount syscalls cannot take.

    The whole comma-joined string must stay below one page (legacy mount(2));
    with util-linux >= 2.39 (new mount API) each value must be at most
    ``per_value_limit`` bytes.
    """
    total = len(",".join(options).encode("utf-8"))
    if total >= OPTION_STRING_MAX:
        raise OverlayError(
            "the overlay option string is %d bytes; the kernel takes fewer than %d. "
            "Use fewer or shorter lowerdir paths (for example bind-mount deep layers to short paths)"
            % (total, OPTION_STRING_MAX),
            "lowerdir",
        )
    if per_value_limit is None:
        return
    for opt in options:
        key, dummy, value = opt.partition("=")
        size = len(value.encode("utf-8"))
        if size > per_value_limit:
            param = "lowerdir" if key.startswith("lowerdir") else key
            raise OverlayError(
                "option %s= is %d bytes; util-linux >= 2.39 passes each value through fsconfig(), "
                "which takes at most %d. Use fewer or shorter %s paths" % (key, size, per_value_limit, param),
                param,
            )


def build_spec(params: Mapping[str, Any]) -> OverlaySpec:
    """Validate the module parameters (pure: no host access) into a spec."""
    p = dict(params)
    state = p.get("state") or "mounted"
    if state not in STATES:
        raise OverlayError("state must be one of %s" % ", ".join(STATES), "state")
    apply = p.get("apply") or "restart"
    if apply not in APPLY_POLICIES:
        raise OverlayError("apply must be one of %s" % ", ".join(APPLY_POLICIES), "apply")
    upper = p.get("upper") or "persistent"
    if upper not in UPPER_KINDS:
        raise OverlayError("upper must be one of %s" % ", ".join(UPPER_KINDS), "upper")

    path = normalize_path(p.get("path"), "path")
    if path == "/":
        raise OverlayError(
            "path '/' cannot be an overlay .mount unit; a read-only root needs an initramfs mechanism", "path"
        )
    for api in API_PATHS:
        if is_within(path, api):
            raise OverlayError(
                "path %s is inside the API file system %s; choose another mount point" % (path, api), "path"
            )
    unit_name(path)  # raises on over-long names
    oid = overlay_id(path)

    raw_lowers = p.get("lowerdir") or []
    if isinstance(raw_lowers, str):
        raw_lowers = [raw_lowers]
    if state != "absent" and not raw_lowers:
        raise OverlayError("lowerdir needs at least one directory (top-most first)", "lowerdir")
    lowers = tuple(normalize_path(x, "lowerdir") for x in raw_lowers)
    if len(lowers) > MAX_LOWER_LAYERS:
        raise OverlayError(
            "lowerdir has %d entries; the kernel allows %d" % (len(lowers), MAX_LOWER_LAYERS), "lowerdir"
        )
    seen: set[str] = set()
    for low in lowers:
        if low in seen:
            raise OverlayError("lowerdir lists %s twice; the kernel refuses duplicate layers" % low, "lowerdir")
        seen.add(low)
    if upper == "none" and state != "absent" and len(lowers) < 2:
        raise OverlayError(
            "upper=none (read-only overlay) needs at least 2 lowerdir entries; the kernel refuses one", "lowerdir"
        )

    upperdir_p, workdir_p = p.get("upperdir"), p.get("workdir")
    if (upperdir_p is None) != (workdir_p is None):
        raise OverlayError("upperdir and workdir must be given together (or both left to the defaults)", "workdir")
    tmpfs_dir = None
    if upper == "persistent":
        if upperdir_p is None:
            default_layout = True
            upperdir = "%s/%s/upper" % (PERSISTENT_BASE, oid)
            workdir = "%s/%s/work" % (PERSISTENT_BASE, oid)
        else:
            default_layout = False
            upperdir = normalize_path(upperdir_p, "upperdir")
            workdir = normalize_path(workdir_p, "workdir")
    elif upper == "tmpfs":
        if upperdir_p is not None:
            raise OverlayError(
                "upperdir/workdir cannot be set with upper=tmpfs; the module places them on its own tmpfs at %s"
                % tmpfs_dir_for(oid),
                "upperdir",
            )
        default_layout = True
        tmpfs_dir = tmpfs_dir_for(oid)
        upperdir = tmpfs_dir + "/upper"
        workdir = tmpfs_dir + "/work"
        unit_name(tmpfs_dir)
    else:
        if upperdir_p is not None:
            raise OverlayError("upperdir/workdir cannot be set with upper=none (a read-only overlay)", "upperdir")
        default_layout = False
        upperdir = workdir = None

    # Layout: no layer, mount point or tmpfs root may equal or contain another.
    named: list[tuple[str, str]] = [("path", path)] + [("lowerdir", x) for x in lowers]
    if upperdir is not None and workdir is not None:
        if upperdir == "/" or workdir == "/":
            raise OverlayError("upperdir and workdir cannot be '/'", "upperdir")
        for name, value in (("upperdir", upperdir), ("workdir", workdir)):
            for api in API_PATHS:
                if is_within(value, api):
                    raise OverlayError("%s %s is inside the API file system %s" % (name, value, api), name)
        named += [("upperdir", upperdir), ("workdir", workdir)]
    if tmpfs_dir is not None:
        named.append(("tmpfs", tmpfs_dir))
    for i, (na, va) in enumerate(named):
        for nb, vb in named[i + 1 :]:
            if na == "lowerdir" and nb == "lowerdir":
                if va == vb:
                    continue  # duplicates reported above
            if "tmpfs" in (na, nb) and {na, nb} & {"upperdir", "workdir"}:
                continue  # upper/work live inside the tmpfs by design
            if is_within(va, vb) or is_within(vb, va):
                defaulted = {"tmpfs", "upperdir", "workdir"} if default_layout else {"tmpfs"}
                culprit = nb if nb != "path" and nb not in defaulted else na
                if "path" in (na, nb):
                    why = "the mount point must not be a layer, lie inside one or contain one (it would hide or loop)"
                else:
                    why = "the kernel refuses overlapping layers (ELOOP) or loops on lookup"
                raise OverlayError(
                    "%s %s and %s %s overlap: %s. Choose separate directory trees%s"
                    % (
                        na,
                        va,
                        nb,
                        vb,
                        why,
                        " or give upperdir/workdir explicitly" if default_layout and upper == "persistent" else "",
                    ),
                    culprit,
                )

    # tmpfs parameters
    tmpfs_size = p.get("tmpfs_size")
    tmpfs_nr_inodes = p.get("tmpfs_nr_inodes")
    if tmpfs_size is not None:
        tmpfs_size = str(tmpfs_size)
        if not _TMPFS_SIZE_RE.match(tmpfs_size):
            raise OverlayError(
                "tmpfs_size %r is invalid; give bytes with an optional k/m/g suffix (256M) "
                "or a percentage of RAM (25%%)" % tmpfs_size,
                "tmpfs_size",
            )
    if tmpfs_nr_inodes is not None:
        tmpfs_nr_inodes = str(tmpfs_nr_inodes)
        if not _TMPFS_INODES_RE.match(tmpfs_nr_inodes):
            raise OverlayError(
                "tmpfs_nr_inodes %r is invalid; give a number with an optional k/m/g suffix" % tmpfs_nr_inodes,
                "tmpfs_nr_inodes",
            )
    tmpfs_mode = parse_mode(p.get("tmpfs_mode") or "0755", "tmpfs_mode") or 0
    mode = parse_mode(p.get("mode"), "mode")
    owner, group = p.get("owner"), p.get("group")
    for name, value in (("owner", owner), ("group", group)):
        if value is not None and (not isinstance(value, str) or not _OWNER_RE.match(value)):
            raise OverlayError("%s %r is not a user/group name or numeric id" % (name, value), name)

    # Features
    features: list[tuple[str, Any]] = []
    for name, kind in FEATURES:
        value = p.get(name)
        if value is None:
            continue
        if kind == "choice":
            if value not in FEATURE_CHOICES[name]:
                raise OverlayError("%s must be one of %s" % (name, ", ".join(FEATURE_CHOICES[name])), name)
        elif not isinstance(value, bool):
            raise OverlayError("%s must be a boolean" % name, name)
        features.append((name, value))
    fm = dict(features)
    if fm.get("metacopy") is True and fm.get("redirect_dir") in ("off", "follow", "nofollow"):
        raise OverlayError(
            "metacopy=true needs redirect_dir=on (the kernel refuses metacopy=on,redirect_dir=%s); "
            "drop redirect_dir or set it to 'on'" % fm["redirect_dir"],
            "metacopy",
        )
    if fm.get("nfs_export") is True and fm.get("index") is False:
        raise OverlayError("nfs_export=true needs the inode index; drop index=false", "nfs_export")
    if fm.get("nfs_export") is True and fm.get("metacopy") is True:
        raise OverlayError("nfs_export=true conflicts with metacopy=true in the kernel; drop one", "nfs_export")
    if fm.get("userxattr") is True and fm.get("redirect_dir") not in (None, "nofollow"):
        raise OverlayError(
            "userxattr conflicts with redirect_dir=%s in the kernel; drop redirect_dir or use 'nofollow'"
            % fm["redirect_dir"],
            "userxattr",
        )
    if fm.get("userxattr") is True and fm.get("metacopy") is True:
        raise OverlayError("userxattr conflicts with metacopy=true in the kernel; drop one", "userxattr")
    if fm.get("volatile") is True and upper != "tmpfs":
        if upper == "persistent":
            raise OverlayError(
                "volatile with upper=persistent is refused: the kernel leaves work/incompat/volatile behind and "
                "refuses every later mount. Use upper=tmpfs (fresh at every boot) or drop volatile",
                "volatile",
            )
        raise OverlayError("volatile is meaningless with upper=none (no upper layer); drop it", "volatile")

    raw_flags = p.get("flags")
    flags = tuple(["nosuid", "nodev"] if raw_flags is None else raw_flags)
    for f in flags:
        if f not in ALLOWED_FLAGS:
            raise OverlayError("flags entry %r is not one of %s" % (f, ", ".join(ALLOWED_FLAGS)), "flags")
    if len(set(flags)) != len(flags):
        raise OverlayError("flags lists an entry twice: %s" % ", ".join(flags), "flags")
    if len([f for f in flags if f in ATIME_FLAGS]) > 1:
        raise OverlayError("flags may hold only one of %s" % ", ".join(ATIME_FLAGS), "flags")

    description = p.get("description") or "OverlayFS %s" % path
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in description) or description.endswith("\\"):
        raise OverlayError(
            "description must be one line without control characters or a trailing backslash", "description"
        )
    timeout = p.get("timeout")
    if timeout is not None:
        timeout = str(timeout).strip()
        if not _TIMESPAN_RE.match(timeout):
            raise OverlayError(
                "timeout %r is not a systemd time span; give e.g. '90', '90s' or '2min'" % timeout, "timeout"
            )

    return OverlaySpec(
        path=path,
        lowerdir=lowers,
        upper=upper,
        upperdir=upperdir,
        workdir=workdir,
        default_layout=default_layout,
        id=oid,
        tmpfs_dir=tmpfs_dir,
        tmpfs_size=tmpfs_size if upper == "tmpfs" else None,
        tmpfs_nr_inodes=tmpfs_nr_inodes if upper == "tmpfs" else None,
        tmpfs_mode=tmpfs_mode,
        state=state,
        enabled=bool(p.get("enabled", True)),
        owner=owner,
        group=group,
        mode=mode,
        features=tuple(features),
        flags=flags,
        description=description,
        before=_unit_list(p.get("before"), "before"),
        after=_unit_list(p.get("after"), "after"),
        requires=_unit_list(p.get("requires"), "requires"),
        wanted_by=_unit_list(p.get("wanted_by"), "wanted_by"),
        timeout=timeout,
        apply=apply,
        purge=bool(p.get("purge", False)),
        allow_nonempty_mountpoint=bool(p.get("allow_nonempty_mountpoint", False)),
    )


def resolve_ownership(spec: OverlaySpec, uid: int, gid: int, mode: int) -> OverlaySpec:
    """Return ``spec`` with the upper root's numeric owner and mode filled in."""
    return dataclasses.replace(spec, upper_uid=uid, upper_gid=gid, upper_mode=mode)


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def render_options(spec: OverlaySpec) -> list[str]:
    """The overlay's mount options in a fixed order (unit-file % not yet doubled)."""
    opts = ["lowerdir=" + ":".join(escape_layer(x) for x in spec.lowerdir)]
    if spec.upperdir is not None and spec.workdir is not None:
        opts.append("upperdir=" + escape_layer(spec.upperdir))
        opts.append("workdir=" + escape_layer(spec.workdir))
    fm = spec.feature_map
    for name, kind in FEATURES:
        if name not in fm:
            continue
        value = fm[name]
        if kind == "choice":
            opts.append("%s=%s" % (name, value))
        elif kind == "onoff":
            opts.append("%s=%s" % (name, "on" if value else "off"))
        elif value:
            opts.append(name)
    opts.extend(spec.flags)
    return opts


def render_tmpfs_options(spec: OverlaySpec) -> list[str]:
    opts = ["mode=%04o" % spec.tmpfs_mode, "uid=0", "gid=0", "nosuid", "nodev"]
    if spec.tmpfs_size:
        opts.append("size=" + spec.tmpfs_size)
    if spec.tmpfs_nr_inodes:
        opts.append("nr_inodes=" + spec.tmpfs_nr_inodes)
    return opts


def _x_keys(spec: OverlaySpec, role: str) -> list[str]:
    lines = [
        "%sId=%s" % (X_PREFIX, spec.id),
        "%sRole=%s" % (X_PREFIX, role),
        "%sPath=%s" % (X_PREFIX, escape_unit_value(spec.path)),
        "%sUpper=%s" % (X_PREFIX, spec.upper),
    ]
    if spec.upperdir is not None and spec.workdir is not None:
        lines.append("%sUpperdir=%s" % (X_PREFIX, escape_unit_value(spec.upperdir)))
        lines.append("%sWorkdir=%s" % (X_PREFIX, escape_unit_value(spec.workdir)))
    return lines


def _section(name: str, lines: Iterable[str]) -> str:
    return "[%s]\n%s\n" % (name, "\n".join(lines))


def render_units(spec: OverlaySpec) -> dict[str, str]:
    """Render every unit file of the overlay: name -> full text (with header)."""
    units: dict[str, str] = {}
    overlay = spec.unit
    unit_lines = ["Description=%s" % escape_unit_value(spec.description)] + _x_keys(spec, "overlay")
    mounts_for = list(spec.lowerdir)
    if spec.upper == "tmpfs" and spec.tmpfs_dir is not None:
        mounts_for.append(spec.tmpfs_dir)
        unit_lines += ["Requires=%s" % spec.prepare_unit, "After=%s" % spec.prepare_unit]
    elif spec.upperdir is not None and spec.workdir is not None:
        mounts_for += [spec.upperdir, spec.workdir]
    unit_lines.append("RequiresMountsFor=%s" % " ".join(quote_unit_word(x) for x in mounts_for))
    for u in spec.requires:
        unit_lines.append("Requires=%s" % u)
    for u in spec.after:
        unit_lines.append("After=%s" % u)
    unit_lines.append("Before=local-fs.target")
    for u in spec.before:
        unit_lines.append("Before=%s" % u)
    mount_lines = [
        "What=overlay",
        "Where=%s" % escape_unit_value(spec.path),
        "Type=overlay",
        "Options=%s" % escape_unit_value(",".join(render_options(spec))),
    ]
    if spec.timeout is not None:
        mount_lines.append("TimeoutSec=%s" % spec.timeout)
    wanted = ["local-fs.target"] + [u for u in spec.wanted_by if u != "local-fs.target"]
    units[overlay] = "%s\n%s\n%s\n%s" % (
        HEADER,
        _section("Unit", unit_lines),
        _section("Mount", mount_lines),
        _section("Install", ["WantedBy=%s" % u for u in wanted]),
    )

    if spec.upper == "tmpfs" and spec.tmpfs_dir is not None and spec.upperdir is not None and spec.workdir is not None:
        if spec.upper_uid is None or spec.upper_gid is None or spec.upper_mode is None:
            raise OverlayError("the upper root's owner and mode must be resolved before rendering", "mode")
        tmpfs_unit = spec.tmpfs_unit
        units[tmpfs_unit] = "%s\n%s\n%s" % (
            HEADER,
            _section(
                "Unit",
                ["Description=tmpfs upper layer of overlay %s" % escape_unit_value(spec.path)]
                + _x_keys(spec, "tmpfs")
                + [
                    "DefaultDependencies=no",
                    "Conflicts=umount.target",
                    "Before=umount.target",
                    "After=swap.target local-fs-pre.target",
                ],
            ),
            _section(
                "Mount",
                [
                    "What=tmpfs",
                    "Where=%s" % escape_unit_value(spec.tmpfs_dir),
                    "Type=tmpfs",
                    "Options=%s" % escape_unit_value(",".join(render_tmpfs_options(spec))),
                ],
            ),
        )
        prepare = spec.prepare_unit
        units[prepare] = "%s\n%s\n%s" % (
            HEADER,
            _section(
                "Unit",
                ["Description=Create upper and work directories of overlay %s" % escape_unit_value(spec.path)]
                + _x_keys(spec, "prepare")
                + [
                    "DefaultDependencies=no",
                    "BindsTo=%s" % tmpfs_unit,
                    "After=%s" % tmpfs_unit,
                    "Before=%s" % overlay,
                    "Conflicts=shutdown.target",
                    "Before=shutdown.target",
                ],
            ),
            _section(
                "Service",
                [
                    "Type=oneshot",
                    "RemainAfterExit=yes",
                    "ExecStart=%s -d -m %04o -o %d -g %d %s"
                    % (INSTALL_BIN, spec.upper_mode, spec.upper_uid, spec.upper_gid, quote_unit_word(spec.upperdir)),
                    "ExecStart=%s -d -m 0700 -o 0 -g 0 %s" % (INSTALL_BIN, quote_unit_word(spec.workdir)),
                ],
            ),
        )
    return units


def strip_header(text: str | None) -> str | None:
    """Drop our header comment (any version of it) so comparisons ignore it."""
    if text is None:
        return None
    first, nl, rest = text.partition("\n")
    if first.startswith(HEADER_PREFIX):
        return rest
    return text


def managed_keys(text: str | None) -> dict[str, str]:
    """The ``X-OverlayfsSystemd-*`` keys of a unit file (``%%`` undone); {} if none."""
    keys: dict[str, str] = {}
    if not text:
        return keys
    section = None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("["):
            section = s
            continue
        if section == "[Unit]" and s.startswith(X_PREFIX) and "=" in s:
            k, dummy, v = s.partition("=")
            keys[k[len(X_PREFIX) :]] = v.replace("%%", "%")
    return keys


def is_managed(text: str | None) -> bool:
    return bool(text) and (bool(managed_keys(text)) or (text or "").startswith(HEADER_PREFIX))


def unit_section(text: str | None, name: str) -> str | None:
    """The body of section ``[name]`` (None if the text or section is missing)."""
    if text is None:
        return None
    out: list[str] = []
    inside = False
    found = False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            inside = s == "[%s]" % name
            found = found or inside
            continue
        if inside:
            out.append(line)
    return "\n".join(out) if found else None


# ---------------------------------------------------------------------------
# Live state and plan
# ---------------------------------------------------------------------------


def live_matches(spec: OverlaySpec, live: OverlayOptions, mount_options: str) -> bool:
    """True if a live overlay has the spec's layers and verified flags."""
    if list(live.lowerdir) != list(spec.lowerdir) or live.datadir:
        return False
    if live.upperdir != spec.upperdir or (spec.upperdir is not None and live.workdir != spec.workdir):
        return False
    live_flags = set(mount_options.split(",")) & set(VERIFIED_FLAGS)
    if live.readonly and spec.upper != "none":
        live_flags.add("ro")
    wanted = set(spec.flags) & set(VERIFIED_FLAGS)
    if spec.upper == "none":
        live_flags.discard("ro")
        wanted.discard("ro")
    return live_flags == wanted


def describe_mismatch(spec: OverlaySpec, live: OverlayOptions, mount_options: str) -> str:
    return (
        "live lowerdir=%s upperdir=%s workdir=%s mount options=%s; wanted lowerdir=%s upperdir=%s workdir=%s flags=%s"
        % (
            ":".join(live.lowerdir),
            live.upperdir,
            live.workdir,
            mount_options,
            ":".join(spec.lowerdir),
            spec.upperdir,
            spec.workdir,
            ",".join(spec.flags),
        )
    )


@dataclass
class Plan:
    """What a run has to do, in order: stop, write/remove, reload, start, enable."""

    write: dict[str, str] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    start: list[str] = field(default_factory=list)
    reload_units: list[str] = field(default_factory=list)
    daemon_reload: bool = False
    enable: list[str] = field(default_factory=list)
    reenable: list[str] = field(default_factory=list)
    disable: list[str] = field(default_factory=list)
    restart: bool = False
    reboot_required: bool = False
    purge: list[str] = field(default_factory=list)
    keep_unmanaged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(
            self.write
            or self.remove
            or self.stop
            or self.start
            or self.reload_units
            or self.daemon_reload
            or self.enable
            or self.reenable
            or self.disable
            or self.purge
        )

    @property
    def needs_busy_check(self) -> bool:
        return bool(self.stop)


def plan(
    spec: OverlaySpec,
    desired: Mapping[str, str],
    current: Mapping[str, str | None],
    live_overlay: MountInfo | None,
    live_tmpfs: MountInfo | None,
    enabled_now: bool,
    pending_reload: bool = False,
    purge_paths: Sequence[str] = (),
) -> Plan:
    """Compute the actions that bring the host to ``spec``.

    ``desired``: rendered units; ``current``: text on disk (None if missing)
    for every candidate unit; ``live_overlay``/``live_tmpfs``: mountinfo
    entries at the mount point and the tmpfs root (None if not mounted);
    ``enabled_now``: UnitFileState of the overlay unit is 'enabled';
    ``pending_reload``: systemd reports NeedDaemonReload=yes for a unit.
    """
    pl = Plan()
    overlay = spec.unit
    mounted = live_overlay is not None and live_overlay.fstype == "overlay"

    if spec.state == "absent":
        if mounted:
            pl.stop.append(overlay)
        for name in (spec.prepare_unit, spec.tmpfs_unit):
            cur = current.get(name)
            if name == spec.tmpfs_unit and live_tmpfs is not None and is_managed(cur):
                pl.stop.append(name)
            elif name == spec.prepare_unit and cur is not None and is_managed(cur):
                pl.stop.append(name)
        for name, cur in current.items():
            if cur is None:
                continue
            if is_managed(cur):
                pl.remove.append(name)
            else:
                pl.keep_unmanaged.append(name)
        if overlay in pl.remove and enabled_now:
            pl.disable.append(overlay)
        if pl.remove:
            pl.daemon_reload = True
        pl.purge = list(purge_paths)
        # A prepare service is inactive unless its overlay ran: stopping it is harmless and
        # needs no busy check, but only count it as a change when something else changes.
        if pl.stop == [spec.prepare_unit] and not pl.remove:
            pl.stop = []
        return pl

    for name, text in desired.items():
        if strip_header(current.get(name)) != strip_header(text):
            pl.write[name] = text
    for name, cur in current.items():
        if name in desired or cur is None:
            continue
        if is_managed(cur):
            pl.remove.append(name)
        else:
            pl.keep_unmanaged.append(name)

    mount_changed = overlay in pl.write and unit_section(current.get(overlay), "Mount") != unit_section(
        desired[overlay], "Mount"
    )
    live_ok = False
    if mounted and live_overlay is not None:
        live_ok = live_matches(spec, parse_overlay_options(live_overlay.super_options), live_overlay.mount_options)
    stale = mounted and (not live_ok or mount_changed)

    if spec.state == "mounted":
        if not mounted:
            pl.start.append(overlay)
        elif stale:
            if spec.apply == "restart":
                pl.restart = True
                pl.stop.append(overlay)
                pl.start.append(overlay)
            else:
                pl.reboot_required = True
    elif spec.state == "present":
        if mounted and stale:
            pl.reboot_required = True
    elif spec.state == "unmounted":
        if mounted:
            pl.stop.append(overlay)

    # Obsolete tmpfs/prepare units (the upper kind changed). The live overlay
    # Requires= them, so stopping them would stop it: only when it goes down.
    overlay_down = not mounted or overlay in pl.stop
    for name in list(pl.remove):
        if name not in (spec.tmpfs_unit, spec.prepare_unit):
            continue
        if not overlay_down:
            pl.remove.remove(name)
            pl.reboot_required = True
            continue
        if name == spec.prepare_unit or live_tmpfs is not None:
            pl.stop.append(name)
    pl.daemon_reload = bool(pl.write or pl.remove or pending_reload)
    # A tmpfs whose options changed while it stays mounted is resized by remount.
    if (
        spec.upper == "tmpfs"
        and live_tmpfs is not None
        and spec.tmpfs_unit in pl.write
        and unit_section(current.get(spec.tmpfs_unit), "Mount") != unit_section(desired[spec.tmpfs_unit], "Mount")
    ):
        pl.reload_units.append(spec.tmpfs_unit)

    install_changed = overlay in pl.write and unit_section(current.get(overlay), "Install") != unit_section(
        desired[overlay], "Install"
    )
    if spec.enabled:
        if not enabled_now:
            pl.enable.append(overlay)
        elif install_changed:
            pl.reenable.append(overlay)
    elif enabled_now:
        pl.disable.append(overlay)
    return pl


# ---------------------------------------------------------------------------
# Host inspection (reads /proc; roots are arguments for tests)
# ---------------------------------------------------------------------------


def _link_reason(link: str, label: str, mount_point: str) -> str | None:
    """Why the /proc symlink ``link`` holds ``mount_point`` (None if it does not)."""
    try:
        target = os.readlink(link)
    except OSError:
        return None
    if target.endswith(" (deleted)"):
        target = target[: -len(" (deleted)")]
    if target.startswith("/") and is_within(target, mount_point):
        return label if label in ("cwd", "root") else "%s %s" % (label, target)
    return None


def find_holders(mount_point: str, proc_root: str = "/proc") -> list[dict[str, Any]]:
    """Processes using files at or below ``mount_point`` (cwd, root, open fds, maps).

    Vanished processes and unreadable entries are skipped; the calling
    process is ignored. One entry per process, reasons joined by ', '.
    """
    me = os.getpid()
    holders: list[dict[str, Any]] = []
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return holders
    for entry in sorted((e for e in entries if e.isdigit()), key=int):
        pid = int(entry)
        if pid == me:
            continue
        base = os.path.join(proc_root, entry)
        reasons: list[str] = []

        for label in ("cwd", "root"):
            reason = _link_reason(os.path.join(base, label), label, mount_point)
            if reason:
                reasons.append(reason)
        try:
            fds = os.listdir(os.path.join(base, "fd"))
        except OSError:
            fds = []
        for fd in sorted(fds, key=lambda x: int(x) if x.isdigit() else 0):
            reason = _link_reason(os.path.join(base, "fd", fd), "fd %s" % fd, mount_point)
            if reason:
                reasons.append(reason)
        try:
            with open(os.path.join(base, "maps"), encoding="utf-8", errors="surrogateescape") as fh:
                mapped: list[str] = []
                for line in fh:
                    parts = line.rstrip("\n").split(None, 5)
                    if len(parts) == 6 and parts[5].startswith("/"):
                        target = parts[5]
                        if target.endswith(" (deleted)"):
                            target = target[: -len(" (deleted)")]
                        if is_within(target, mount_point) and target not in mapped:
                            mapped.append(target)
                reasons += ["maps %s" % m for m in mapped]
        except OSError:
            pass
        if not reasons:
            continue
        try:
            with open(os.path.join(base, "comm"), encoding="utf-8", errors="replace") as fh:
                comm = fh.read().strip()
        except OSError:
            comm = "?"
        holders.append({"pid": pid, "comm": comm, "reason": ", ".join(reasons)})
    return holders


def dir_entries(path: str) -> list[str] | None:
    """Names in directory ``path`` (None if it does not exist or is not a directory)."""
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return None


def workdir_is_fresh(path: str) -> bool:
    """True if ``path`` is missing, empty, or holds only empty ``work``/``index`` dirs."""
    names = dir_entries(path)
    if names is None:
        return True
    for name in names:
        if name not in ("work", "index"):
            return False
        sub = os.path.join(path, name)
        if os.path.islink(sub) or not os.path.isdir(sub) or os.listdir(sub):
            return False
    return True


def nearest_existing(path: str) -> str:
    """``path`` or its closest existing ancestor."""
    cur = path
    while cur != "/" and not os.path.lexists(cur):
        cur = os.path.dirname(cur)
    return cur


class UnsafePathError(OverlayError):
    pass


def make_dirs_secure(path: str, mode: int, uid: int, gid: int, created: list[str], parent_mode: int = 0o755) -> bool:
    """Create ``path`` (and missing parents) without following symlinks.

    Walks from ``/`` with ``O_NOFOLLOW|O_DIRECTORY``; refuses symlinked
    components and existing ancestors writable by others than root (or the
    running user) unless sticky. Missing parents get ``parent_mode`` and
    root ownership; the leaf gets ``mode``/``uid``/``gid`` set on the open fd.
    Appends every created directory to ``created``; returns True if the leaf
    was created.
    """
    me = os.geteuid()
    parts = [p for p in path.split("/") if p]
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open("/", flags)
    cur = ""
    leaf_created = False
    try:
        for i, name in enumerate(parts):
            cur = cur + "/" + name
            last = i == len(parts) - 1
            parent_st = os.fstat(fd)
            made = False
            try:
                nfd = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                if parent_st.st_uid not in (0, me) or (
                    parent_st.st_mode & 0o022 and not parent_st.st_mode & stat.S_ISVTX
                ):
                    raise UnsafePathError(
                        "refusing to create %s: its parent is writable by other users (mode %04o, uid %d)"
                        % (cur, stat.S_IMODE(parent_st.st_mode), parent_st.st_uid)
                    ) from None
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass
                try:
                    nfd = os.open(name, flags, dir_fd=fd)
                except OSError as exc:
                    raise UnsafePathError("cannot open %s after creating it: %s" % (cur, exc)) from exc
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(
                        "refusing %s: component %s is a symlink or not a directory; layer paths must be real "
                        "directories" % (path, cur)
                    ) from exc
                raise
            os.close(fd)
            fd = nfd
            if made:
                created.append(cur)
                if last:
                    leaf_created = True
                    os.fchown(fd, uid, gid)
                    os.fchmod(fd, mode)
                else:
                    os.fchown(fd, 0 if me == 0 else me, 0 if me == 0 else os.getegid())
                    os.fchmod(fd, parent_mode)
            elif not last:
                st = os.fstat(fd)
                if st.st_uid not in (0, me):
                    raise UnsafePathError(
                        "refusing %s: ancestor %s is owned by uid %d, not root" % (path, cur, st.st_uid)
                    )
                if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
                    raise UnsafePathError(
                        "refusing %s: ancestor %s is writable by other users (mode %04o) without the sticky bit"
                        % (path, cur, stat.S_IMODE(st.st_mode))
                    )
    finally:
        os.close(fd)
    return leaf_created


# ---------------------------------------------------------------------------
# The aggregate target of many overlays
# ---------------------------------------------------------------------------

TARGET_WANTED_BY = "multi-user.target"


def check_target_name(name: str, param: str = "target") -> str:
    """A target unit name such as ``overlays.target``; refuse anything else."""
    if not _UNIT_RE.match(name) or not name.endswith(".target") or len(name.encode("utf-8")) > UNIT_NAME_MAX:
        raise OverlayError(
            "%s %r is not a target unit name; give a name such as overlays.target (letters, digits, "
            "':', '_', '.', '-', '@', ending in .target)" % (param, name),
            param,
        )
    return name


def render_target(name: str, mount_units: Sequence[str]) -> str:
    """Render the aggregate target that requires and orders after every overlay's mount unit.

    Services declare ``After=<name>`` and ``Requires=<name>``; the target is
    wanted by multi-user.target (never by local-fs.target, which the overlay
    units already precede, so the target cannot take part in an ordering
    cycle of the early boot).
    """
    lines = ["Description=Overlays declared by overlayfs.systemd", "%sRole=target" % X_PREFIX]
    lines += ["Requires=%s" % u for u in mount_units]
    lines += ["After=%s" % u for u in mount_units]
    return "%s\n%s\n%s" % (HEADER, _section("Unit", lines), _section("Install", ["WantedBy=%s" % TARGET_WANTED_BY]))


# ---------------------------------------------------------------------------
# Reading the parameters back from managed units
# ---------------------------------------------------------------------------


def _unit_values(text: str | None, section: str) -> list[tuple[str, str]]:
    """(key, value) pairs of one section, ``%%`` undone, in file order."""
    out: list[tuple[str, str]] = []
    for line in (unit_section(text, section) or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            out.append((key, value.replace("%%", "%")))
    return out


def params_from_unit(
    text: str, tmpfs_text: str | None = None, prepare_text: str | None = None, enabled: bool = True
) -> dict[str, Any]:
    """The mount module parameters that render the managed overlay unit ``text`` again.

    The inverse of :func:`render_units` for our own units: the layers and
    upper kind come from the ``X-OverlayfsSystemd-*`` keys and ``Options=``,
    the tmpfs size and inode limit from the tmpfs unit, the upper root's
    owner and mode from the prepare service (tmpfs uppers). ``enabled`` is
    not in the files; pass what systemd reports. Raises OverlayError for a
    unit this collection did not write.
    """
    keys = managed_keys(text)
    if not keys.get("Path") or keys.get("Role") != "overlay":
        raise OverlayError("the unit was not written by overlayfs.systemd (no %sPath key)" % X_PREFIX, "path")
    path = keys["Path"]
    oid = overlay_id(path)
    upper = keys.get("Upper", "persistent")
    params: dict[str, Any] = {"path": path, "upper": upper, "state": "mounted", "enabled": enabled}
    before, after, requires, wanted_by = [], [], [], []
    for key, value in _unit_values(text, "Unit"):
        if key == "Description":
            params["description"] = value
        elif key == "Requires" and value != prepare_unit_name(oid):
            requires.append(value)
        elif key == "After" and value != prepare_unit_name(oid):
            after.append(value)
        elif key == "Before" and value != "local-fs.target":
            before.append(value)
    flags: list[str] = []
    kinds = dict(FEATURES)
    for key, value in _unit_values(text, "Mount"):
        if key == "TimeoutSec":
            params["timeout"] = value
        if key != "Options":
            continue
        for opt in split_unescaped(value, ","):
            name, eq, val = opt.partition("=")
            if name == "lowerdir":
                params["lowerdir"] = [unescape_layer(x) for x in split_unescaped(val, ":") if x]
            elif name in kinds and kinds[name] == "choice":
                params[name] = val
            elif name in kinds and kinds[name] == "onoff":
                params[name] = val == "on"
            elif name in kinds:
                params[name] = True
            elif name in ALLOWED_FLAGS and not eq:
                flags.append(name)
    params["flags"] = flags
    for key, value in _unit_values(text, "Install"):
        if key == "WantedBy" and value != "local-fs.target":
            wanted_by.append(value)
    params.update(before=before, after=after, requires=requires, wanted_by=wanted_by)
    if upper == "persistent":
        default_up = "%s/%s/upper" % (PERSISTENT_BASE, oid)
        default_work = "%s/%s/work" % (PERSISTENT_BASE, oid)
        if (keys.get("Upperdir"), keys.get("Workdir")) != (default_up, default_work):
            params.update(upperdir=keys.get("Upperdir"), workdir=keys.get("Workdir"))
    if upper == "tmpfs":
        params["tmpfs_size"] = None
        for key, value in _unit_values(tmpfs_text, "Mount"):
            if key != "Options":
                continue
            for opt in value.split(","):
                name, dummy, val = opt.partition("=")
                if name == "size":
                    params["tmpfs_size"] = val
                elif name == "nr_inodes":
                    params["tmpfs_nr_inodes"] = val
                elif name == "mode":
                    params["tmpfs_mode"] = val
        for key, value in _unit_values(prepare_text, "Service"):
            words = value.split()
            if key == "ExecStart" and "-o" in words and words[-1].strip('"') == keys.get("Upperdir"):
                params.update(
                    mode=words[words.index("-m") + 1],
                    owner=words[words.index("-o") + 1],
                    group=words[words.index("-g") + 1],
                )
    return params
