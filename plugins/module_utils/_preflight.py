# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The preflight: host checks that mirror the kernel's rules, one function per check.

Each check reads the host facts it is given (mountinfo records, unit texts)
plus the directories it names; it raises OverlayError (naming the parameter)
or returns warnings.
"""

from __future__ import annotations

from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._facts import HostFacts, MountPoint
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import (
    OverlayOptions,
    mount_at,
    mount_containing,
    parse_overlay_options,
    submounts,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    is_within,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import (
    NEW_API_VALUE_MAX,
    OverlaySpec,
    check_option_limits,
    lower_add_blocker,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._units import (
    parse_unit,
    render_options,
)

UNSUITABLE_UPPER_FS = (
    "overlay",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "vfat",
    "msdos",
    "exfat",
    "iso9660",
    "squashfs",
    "erofs",
)


def preflight(spec: OverlaySpec, facts: HostFacts) -> list[str]:
    """Checks mirroring the kernel's rules on the host's facts; raises OverlayError, returns warnings."""
    if spec.state == "absent":
        check_purge(spec, facts)
        return []
    warnings = check_lowers_exist(spec, facts)
    if spec.upper == "persistent" and spec.upperdir is not None and spec.workdir is not None:
        check_persistent_upper(spec, facts)
        check_workdir_fresh(spec, facts)
    if spec.upperdir is not None and spec.workdir is not None:
        check_shared_upper(spec, facts.mounts)
    warnings += lower_overlap_warnings(spec, facts.mounts)
    if facts.mount_point is not None:
        check_mount_point(spec, facts.mount_point)
    warnings += check_option_sizes(spec, facts.util_linux, facts.kernel)
    if facts.fstab is not None:
        warnings.append(
            "%s also appears in %s; a unit in /etc/systemd/system takes precedence, remove the fstab line"
            % (spec.path, facts.fstab)
        )
    return warnings


def check_lowers_exist(spec: OverlaySpec, facts: HostFacts) -> list[str]:
    """A missing lower refuses state=mounted; the other states only warn."""
    warnings = []
    for low in spec.lowerdir:
        what = facts.lowers.get(low, "")
        if what:
            if spec.state == "mounted":
                raise OverlayError("lowerdir %s %s; create it or remove it from lowerdir" % (low, what), "lowerdir")
            warnings.append("lowerdir %s %s; the overlay will fail to mount until it does" % (low, what))
    return warnings


def check_persistent_upper(spec: OverlaySpec, facts: HostFacts) -> None:
    """upperdir and workdir on one writable mount of a file system the kernel takes as an upper."""
    if spec.upperdir is None or spec.workdir is None:
        return
    m_up = mount_containing(facts.mounts, spec.upperdir)
    m_work = mount_containing(facts.mounts, spec.workdir)
    if m_up is not None and m_work is not None and m_up.mount_id != m_work.mount_id:
        raise OverlayError(
            "upperdir %s (on the mount at %s) and workdir %s (on the mount at %s) must be on the same mount; "
            "put both under one directory of one file system"
            % (spec.upperdir, m_up.mount_point, spec.workdir, m_work.mount_point),
            "workdir",
        )
    if facts.layer_devs is not None and facts.layer_devs[0] != facts.layer_devs[1]:
        raise OverlayError(
            "upperdir %s and workdir %s must be on the same file system" % (spec.upperdir, spec.workdir), "workdir"
        )
    if m_up is not None and m_up.fstype in UNSUITABLE_UPPER_FS:
        if m_up.fstype == "overlay":
            why = "the kernel refuses an upper on overlayfs (for example a container's root)"
        else:
            why = "the kernel needs xattrs, d_type and whiteouts that %s lacks" % m_up.fstype
        raise OverlayError(
            "upperdir %s is on a %s mount at %s: %s. Put upperdir and workdir on a real file system, "
            "a volume, or use upper: tmpfs" % (spec.upperdir, m_up.fstype, m_up.mount_point, why),
            "upperdir",
        )
    if m_up is not None and "ro" in m_up.mount_options.split(","):
        raise OverlayError(
            "upperdir %s is on the read-only mount at %s; the kernel needs a writable upper"
            % (spec.upperdir, m_up.mount_point),
            "upperdir",
        )


def check_workdir_fresh(spec: OverlaySpec, facts: HostFacts) -> None:
    """A workdir this overlay does not use yet must be empty: the kernel empties its work/ at mount."""
    recorded = parse_unit(facts.current.get(spec.unit)).managed
    live_opts = parse_overlay_options(facts.live.super_options) if facts.live is not None else None
    used_here = recorded.get("Workdir") == spec.workdir or (live_opts is not None and live_opts.workdir == spec.workdir)
    if not used_here and spec.workdir is not None and not facts.workdir_fresh:
        raise OverlayError(
            "workdir %s is not empty and this overlay's managed unit does not use it; the kernel deletes what "
            "is in %s/work at mount. Give an empty or new directory" % (spec.workdir, spec.workdir),
            "workdir",
        )


def _other_overlays(spec: OverlaySpec, mounts: list[_mountinfo.MountInfo]) -> list[tuple[str, OverlayOptions]]:
    """(mount point, layers) of every overlay mounted elsewhere than the spec's path."""
    return [
        (m.mount_point, parse_overlay_options(m.super_options, m.mount_options))
        for m in mounts
        if m.fstype == "overlay" and m.mount_point != spec.path
    ]


def check_shared_upper(spec: OverlaySpec, mounts: list[_mountinfo.MountInfo]) -> None:
    """No other overlay's layer may overlap this upper or work (they would corrupt each other)."""
    for point, other in _other_overlays(spec, mounts):
        theirs = [("upperdir", other.upperdir), ("workdir", other.workdir)] + [("lowerdir", x) for x in other.lowerdir]
        for mine_name, mine in (("upperdir", spec.upperdir), ("workdir", spec.workdir)):
            for their_name, their in theirs:
                if mine and their and (is_within(mine, their) or is_within(their, mine)):
                    raise OverlayError(
                        "%s %s overlaps the %s %s of the overlay mounted at %s; overlays sharing layers corrupt "
                        "each other. Choose another %s" % (mine_name, mine, their_name, their, point, mine_name),
                        mine_name,
                    )


def lower_overlap_warnings(spec: OverlaySpec, mounts: list[_mountinfo.MountInfo]) -> list[str]:
    """A lower overlapping another overlay's upper/work sees online changes (undefined behaviour)."""
    warnings = []
    for point, other in _other_overlays(spec, mounts):
        for low in spec.lowerdir:
            for their in (other.upperdir, other.workdir):
                if their and (is_within(low, their) or is_within(their, low)):
                    warnings.append(
                        "lowerdir %s overlaps the upper/work %s of the overlay at %s: changes there are online "
                        "changes to this lower (undefined behaviour)" % (low, their, point)
                    )
    return warnings


def check_mount_point(spec: OverlaySpec, mp: MountPoint) -> None:
    """An unmounted mount point: a real directory, empty unless allow_nonempty_mountpoint."""
    if mp.islink:
        raise OverlayError("path %s is a symlink; systemd refuses non-canonical mount points" % spec.path, "path")
    if mp.exists and not mp.isdir:
        raise OverlayError("path %s exists and is not a directory" % spec.path, "path")
    names = mp.entries
    if names and not spec.allow_nonempty_mountpoint:
        raise OverlayError(
            "path %s is not empty (%s); the overlay would hide its content. Move it into a lower layer, "
            "or set allow_nonempty_mountpoint: true"
            % (spec.path, ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")),
            "path",
        )


#: util-linux releases whose libmount may split an escaped comma in a layer
#: path (new mount API, before 2.41); 2.38 and 2.41 are tested to pass it whole.
COMMA_SPLIT_UTIL_LINUX = ((2, 39), (2, 41))


def check_option_sizes(
    spec: OverlaySpec, util_linux: tuple[int, int] | None, kernel: tuple[int, int] | None = None
) -> list[str]:
    """The option string within the mount syscall's limits for this util-linux (and why lowerdir+= cannot help)."""
    per_value = NEW_API_VALUE_MAX if util_linux is not None and util_linux >= (2, 39) else None
    try:
        check_option_limits(render_options(spec), per_value)
    except OverlayError as exc:
        blocker = lower_add_blocker(spec, util_linux, kernel) if exc.param == "lowerdir" and per_value else None
        if blocker is None:
            raise
        raise OverlayError("%s; %s" % (exc, blocker), exc.param) from None
    if util_linux is not None and COMMA_SPLIT_UTIL_LINUX[0] <= util_linux < COMMA_SPLIT_UTIL_LINUX[1]:
        layers = list(spec.lowerdir) + [x for x in (spec.upperdir, spec.workdir) if x]
        if any("," in x for x in layers):
            return [
                "a layer path contains ','; util-linux %d.%d passes options one by one and may split it "
                "(2.38 and 2.41 pass it whole)" % util_linux
            ]
    return []


def check_purge(spec: OverlaySpec, facts: HostFacts) -> None:
    """purge=true deletes only real directories that hold no lower layer and no mount."""
    for t in facts.purge_targets:
        for low in spec.lowerdir:
            if is_within(low, t) or is_within(t, low):
                raise OverlayError("purge refuses %s: it overlaps lowerdir %s" % (t, low), "purge")
        if mount_at(facts.mounts, t) is not None or submounts(facts.mounts, t):
            raise OverlayError("purge refuses %s: it is or contains a mount point; unmount it first" % t, "purge")
        if t in facts.symlinks:
            raise OverlayError("purge refuses %s: it is a symlink" % t, "purge")
