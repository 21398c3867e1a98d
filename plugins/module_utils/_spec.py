# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The typed spec of one overlay and its validation (no host access).

The tables here (states, upper kinds, flags, features) are the only place
their choices are spelled; ``ARGUMENT_SPEC`` is built from them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import OverlayError
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import escape_layer
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    UNIT_NAME_MAX,
    is_within,
    normalize_path,
    overlay_id,
    persistent_dirs,
    prepare_unit_name,
    tmpfs_dir_for,
    unit_name,
)

OPTION_STRING_MAX = 4096  # legacy mount(2): the whole string must be < one page

NEW_API_VALUE_MAX = 255  # fsconfig(FSCONFIG_SET_STRING): 256 bytes incl. NUL

MAX_LOWER_LAYERS = 500


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

UNIT_RE = re.compile(r"^[A-Za-z0-9:_.\\@-]+\.[a-z]+$")

_TIMESPAN_RE = re.compile(
    r"^(infinity|(\d+(\.\d+)?\s*(us|usec|ms|msec|s|sec|second|seconds|m|min|minute|minutes|"
    r"h|hr|hour|hours|d|day|days|w|week|weeks)?\s*)+)$"
)

_OWNER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*\$?$")


ARGUMENT_SPEC: dict[str, Any] = dict(
    path=dict(type="str", required=True),
    lowerdir=dict(type="list", elements="str"),
    upper=dict(type="str", choices=list(UPPER_KINDS), default="persistent"),
    upperdir=dict(type="str"),
    workdir=dict(type="str"),
    tmpfs_size=dict(type="str", default="25%"),
    tmpfs_nr_inodes=dict(type="str"),
    tmpfs_mode=dict(type="raw", default="0755"),
    state=dict(type="str", choices=list(STATES), default="mounted"),
    enabled=dict(type="bool", default=True),
    owner=dict(type="str"),
    group=dict(type="str"),
    mode=dict(type="raw"),
    # The overlay features, from FEATURES: a "choice" takes its FEATURE_CHOICES, the others are booleans.
    **{
        name: dict(type="str", choices=list(FEATURE_CHOICES[name])) if kind == "choice" else dict(type="bool")
        for name, kind in FEATURES
    },
    flags=dict(type="list", elements="str", choices=list(ALLOWED_FLAGS), default=["nosuid", "nodev"]),
    description=dict(type="str"),
    before=dict(type="list", elements="str", default=[]),
    after=dict(type="list", elements="str", default=[]),
    requires=dict(type="list", elements="str", default=[]),
    wanted_by=dict(type="list", elements="str", default=[]),
    timeout=dict(type="str"),
    apply=dict(type="str", choices=list(APPLY_POLICIES), default="restart"),
    purge=dict(type="bool", default=False),
    allow_nonempty_mountpoint=dict(type="bool", default=False),
)

# The mount module's cross-parameter rules, shared by every module taking its parameters.
REQUIRED_TOGETHER: list[tuple[str, ...]] = [("upperdir", "workdir")]

REQUIRED_IF: list[tuple[str, str, tuple[str, ...]]] = [
    ("state", "mounted", ("lowerdir",)),
    ("state", "present", ("lowerdir",)),
    ("state", "unmounted", ("lowerdir",)),
]


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
    #: One ``lowerdir+=`` option a layer instead of one ``lowerdir=`` list
    #: (chosen on the host by :func:`choose_lower_form`).
    lower_add: bool = False

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
        if not isinstance(u, str) or not UNIT_RE.match(u) or len(u) > UNIT_NAME_MAX:
            raise OverlayError(
                "%s entry %r is not a unit name; give full names such as 'network-online.target'" % (param, u), param
            )
    return items


#: The kernel that takes ``lowerdir+=`` (one layer an option).
LOWER_ADD_KERNEL = (6, 8)


def lower_add_blocker(
    spec: OverlaySpec, util_linux: tuple[int, int] | None, kernel: tuple[int, int] | None
) -> str | None:
    """Why this host cannot take one ``lowerdir+=`` a layer (None: it can).

    ``lowerdir+=`` values are plain paths: no escape reaches the kernel
    through systemd and mount(8) for a backslash, and a comma is split by
    the legacy mount(2) path, so such paths keep the ``lowerdir=`` list.
    """
    if kernel is None or kernel < LOWER_ADD_KERNEL:
        return "one lowerdir+= a layer needs kernel %d.%d (this host: %s)" % (
            LOWER_ADD_KERNEL + ("%d.%d" % kernel if kernel else "unknown",)
        )
    if util_linux is None or util_linux < (2, 39):
        return "lowerdir+= is used only with util-linux 2.39 or later"
    odd = [x for x in spec.lowerdir if "," in x or "\\" in x]
    if odd:
        return "lowerdir+= cannot carry the ',' or '\\' in %s" % odd[0]
    return None


def choose_lower_form(
    spec: OverlaySpec, util_linux: tuple[int, int] | None, kernel: tuple[int, int] | None
) -> OverlaySpec:
    """``spec`` with one ``lowerdir+=`` a layer where the ``lowerdir=`` list would pass the new mount API's limit.

    util-linux 2.39 and later hand each option value to fsconfig(), which
    takes at most 255 bytes; kernel 6.8 and later take the layers one by one.
    """
    if util_linux is None or util_linux < (2, 39):
        return dataclasses.replace(spec, lower_add=False)
    listed = len(":".join(escape_layer(x) for x in spec.lowerdir).encode("utf-8"))
    wanted = listed > NEW_API_VALUE_MAX and lower_add_blocker(spec, util_linux, kernel) is None
    return dataclasses.replace(spec, lower_add=wanted)


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


def _choice(p: Mapping[str, Any], name: str, default: str, choices: Sequence[str]) -> str:
    value = p.get(name) or default
    if value not in choices:
        raise OverlayError("%s must be one of %s" % (name, ", ".join(choices)), name)
    return value


def _check_mount_point(raw: Any) -> str:
    """The normalised mount point; never ``/`` or an API file system, with a unit name systemd takes."""
    path = normalize_path(raw, "path")
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
    return path


def _check_lowers(raw: Any, state: str, upper: str) -> tuple[str, ...]:
    """The lower layers, top-most first: normalised, within the kernel's limit, no duplicates."""
    raw_lowers = raw or []
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
    return lowers


@dataclass(frozen=True)
class _Layout:
    upperdir: str | None
    workdir: str | None
    tmpfs_dir: str | None
    default_layout: bool


def _check_layout(p: Mapping[str, Any], upper: str, oid: str) -> _Layout:
    """Where upper and work live: given (persistent), the defaults, the overlay's tmpfs, or nowhere."""
    upperdir_p, workdir_p = p.get("upperdir"), p.get("workdir")
    if (upperdir_p is None) != (workdir_p is None):
        raise OverlayError("upperdir and workdir must be given together (or both left to the defaults)", "workdir")
    if upper == "persistent":
        if upperdir_p is None:
            upperdir, workdir = persistent_dirs(oid)
            return _Layout(upperdir, workdir, None, True)
        return _Layout(normalize_path(upperdir_p, "upperdir"), normalize_path(workdir_p, "workdir"), None, False)
    if upper == "tmpfs":
        if upperdir_p is not None:
            raise OverlayError(
                "upperdir/workdir cannot be set with upper=tmpfs; the module places them on its own tmpfs at %s"
                % tmpfs_dir_for(oid),
                "upperdir",
            )
        tmpfs_dir = tmpfs_dir_for(oid)
        unit_name(tmpfs_dir)
        return _Layout(tmpfs_dir + "/upper", tmpfs_dir + "/work", tmpfs_dir, True)
    if upperdir_p is not None:
        raise OverlayError("upperdir/workdir cannot be set with upper=none (a read-only overlay)", "upperdir")
    return _Layout(None, None, None, False)


def _check_overlaps(path: str, lowers: Sequence[str], layout: _Layout, upper: str) -> None:
    """No layer, mount point or tmpfs root may equal or contain another."""
    named: list[tuple[str, str]] = [("path", path)] + [("lowerdir", x) for x in lowers]
    if layout.upperdir is not None and layout.workdir is not None:
        if layout.upperdir == "/" or layout.workdir == "/":
            raise OverlayError("upperdir and workdir cannot be '/'", "upperdir")
        for name, value in (("upperdir", layout.upperdir), ("workdir", layout.workdir)):
            for api in API_PATHS:
                if is_within(value, api):
                    raise OverlayError("%s %s is inside the API file system %s" % (name, value, api), name)
        named += [("upperdir", layout.upperdir), ("workdir", layout.workdir)]
    if layout.tmpfs_dir is not None:
        named.append(("tmpfs", layout.tmpfs_dir))
    for i, (na, va) in enumerate(named):
        for nb, vb in named[i + 1 :]:
            if na == "lowerdir" and nb == "lowerdir" and va == vb:
                continue  # duplicates reported by _check_lowers
            if "tmpfs" in (na, nb) and {na, nb} & {"upperdir", "workdir"}:
                continue  # upper/work live inside the tmpfs by design
            if is_within(va, vb) or is_within(vb, va):
                defaulted = {"tmpfs", "upperdir", "workdir"} if layout.default_layout else {"tmpfs"}
                culprit = nb if nb != "path" and nb not in defaulted else na
                if "path" in (na, nb):
                    why = "the mount point must not be a layer, lie inside one or contain one (it would hide or loop)"
                else:
                    why = "the kernel refuses overlapping layers (ELOOP) or loops on lookup"
                hint = " or give upperdir/workdir explicitly" if layout.default_layout and upper == "persistent" else ""
                raise OverlayError(
                    "%s %s and %s %s overlap: %s. Choose separate directory trees%s" % (na, va, nb, vb, why, hint),
                    culprit,
                )


def _check_tmpfs(p: Mapping[str, Any]) -> tuple[str | None, str | None, int]:
    """(tmpfs_size, tmpfs_nr_inodes, tmpfs_mode) as the tmpfs unit takes them."""
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
    return tmpfs_size, tmpfs_nr_inodes, parse_mode(p.get("tmpfs_mode") or "0755", "tmpfs_mode") or 0


def _check_ownership(p: Mapping[str, Any]) -> tuple[str | None, str | None, int | None]:
    """(owner, group, mode) of the upper root as given (names or numeric ids; resolved on the host)."""
    mode = parse_mode(p.get("mode"), "mode")
    owner, group = p.get("owner"), p.get("group")
    for name, value in (("owner", owner), ("group", group)):
        if value is not None and (not isinstance(value, str) or not _OWNER_RE.match(value)):
            raise OverlayError("%s %r is not a user/group name or numeric id" % (name, value), name)
    return owner, group, mode


def _check_features(p: Mapping[str, Any], upper: str) -> tuple[tuple[str, Any], ...]:
    """The overlay features set, in FEATURES order; refuses the combinations the kernel refuses."""
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
    _check_feature_conflicts(dict(features), upper)
    return tuple(features)


def _check_feature_conflicts(fm: Mapping[str, Any], upper: str) -> None:
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


def _check_flags(raw: Any) -> tuple[str, ...]:
    """The generic mount flags (default nosuid,nodev): known, once each, one atime flag at most."""
    flags = tuple(["nosuid", "nodev"] if raw is None else raw)
    for f in flags:
        if f not in ALLOWED_FLAGS:
            raise OverlayError("flags entry %r is not one of %s" % (f, ", ".join(ALLOWED_FLAGS)), "flags")
    if len(set(flags)) != len(flags):
        raise OverlayError("flags lists an entry twice: %s" % ", ".join(flags), "flags")
    if len([f for f in flags if f in ATIME_FLAGS]) > 1:
        raise OverlayError("flags may hold only one of %s" % ", ".join(ATIME_FLAGS), "flags")
    return flags


def _check_unit_text(p: Mapping[str, Any], path: str) -> tuple[str, str | None]:
    """(description, timeout) as unit-file values: one line, a systemd time span."""
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
    return description, timeout


def build_spec(params: Mapping[str, Any]) -> OverlaySpec:
    """Validate the module parameters (pure: no host access) into a spec, one check per concern."""
    p = dict(params)
    state = _choice(p, "state", "mounted", STATES)
    apply = _choice(p, "apply", "restart", APPLY_POLICIES)
    upper = _choice(p, "upper", "persistent", UPPER_KINDS)
    path = _check_mount_point(p.get("path"))
    oid = overlay_id(path)
    lowers = _check_lowers(p.get("lowerdir"), state, upper)
    layout = _check_layout(p, upper, oid)
    _check_overlaps(path, lowers, layout, upper)
    tmpfs_size, tmpfs_nr_inodes, tmpfs_mode = _check_tmpfs(p)
    owner, group, mode = _check_ownership(p)
    features = _check_features(p, upper)
    flags = _check_flags(p.get("flags"))
    description, timeout = _check_unit_text(p, path)
    return OverlaySpec(
        path=path,
        lowerdir=lowers,
        upper=upper,
        upperdir=layout.upperdir,
        workdir=layout.workdir,
        default_layout=layout.default_layout,
        id=oid,
        tmpfs_dir=layout.tmpfs_dir,
        tmpfs_size=tmpfs_size if upper == "tmpfs" else None,
        tmpfs_nr_inodes=tmpfs_nr_inodes if upper == "tmpfs" else None,
        tmpfs_mode=tmpfs_mode,
        state=state,
        enabled=bool(p.get("enabled", True)),
        owner=owner,
        group=group,
        mode=mode,
        features=features,
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
