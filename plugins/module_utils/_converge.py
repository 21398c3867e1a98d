# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Private to overlayfs.systemd: converge one overlay on the host.

Not a public API; it may change without notice. The mount module is a thin
shell around ``converge()``; other modules that must change an overlay's
units (restacking an upper, converging many overlays in one call) use the
same phases instead of a second implementation:

``prepare()`` reads the host and plans (no change), ``busy_check()``,
``apply_files()`` writes directories and unit files, one ``daemon-reload``,
``activate()`` starts/stops/enables; ``rollback()`` undoes a failed run.
Only module ``main()`` functions call ``exit_json``/``fail_json``: failures
here are raised as ``ConvergeError`` carrying the partial result.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.overlayfs.systemd.plugins.module_utils import _host, _mountinfo, _names, _plan, _spec, _units
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._host import (
    dir_entries,
    find_holders,
    make_dirs_secure,
    workdir_is_fresh,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import (
    mount_at,
    mount_containing,
    parse_mountinfo,
    parse_overlay_options,
    submounts,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    candidate_units,
    is_within,
    overlay_id,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._plan import (
    describe_mismatch,
    live_matches,
    plan,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import (
    NEW_API_VALUE_MAX,
    OverlaySpec,
    build_spec,
    check_option_limits,
    resolve_ownership,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._units import (
    check_target_name,
    managed_keys,
    render_options,
    render_units,
)

# File-system roots; overridden only by unit tests.
UNIT_DIR = "/etc/systemd/system"
MOUNTINFO = "/proc/self/mountinfo"
PROC_ROOT = "/proc"
FSTAB = "/etc/fstab"

UNIT_FILE_MODE = 0o644
PRIVATE_DIR_MODE = 0o700
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

ARGUMENT_SPEC: dict[str, Any] = dict(
    path=dict(type="str", required=True),
    lowerdir=dict(type="list", elements="str"),
    upper=dict(type="str", choices=list(_spec.UPPER_KINDS), default="persistent"),
    upperdir=dict(type="str"),
    workdir=dict(type="str"),
    tmpfs_size=dict(type="str", default="25%"),
    tmpfs_nr_inodes=dict(type="str"),
    tmpfs_mode=dict(type="raw", default="0755"),
    state=dict(type="str", choices=list(_spec.STATES), default="mounted"),
    enabled=dict(type="bool", default=True),
    owner=dict(type="str"),
    group=dict(type="str"),
    mode=dict(type="raw"),
    redirect_dir=dict(type="str", choices=["on", "follow", "nofollow", "off"]),
    index=dict(type="bool"),
    metacopy=dict(type="bool"),
    xino=dict(type="str", choices=["on", "off", "auto"]),
    nfs_export=dict(type="bool"),
    uuid=dict(type="str", choices=["on", "off", "auto", "null"]),
    userxattr=dict(type="bool"),
    volatile=dict(type="bool"),
    flags=dict(type="list", elements="str", choices=list(_spec.ALLOWED_FLAGS), default=["nosuid", "nodev"]),
    description=dict(type="str"),
    before=dict(type="list", elements="str", default=[]),
    after=dict(type="list", elements="str", default=[]),
    requires=dict(type="list", elements="str", default=[]),
    wanted_by=dict(type="list", elements="str", default=[]),
    timeout=dict(type="str"),
    apply=dict(type="str", choices=list(_spec.APPLY_POLICIES), default="restart"),
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


class ActivationError(Exception):
    """Activation failed after something was changed; main() rolls back."""

    def __init__(self, step: str, cause: Exception) -> None:
        super().__init__("%s: %s" % (step, cause))
        self.step = step
        self.cause = cause


class BusyError(OverlayError):
    def __init__(self, message: str, holders: list[dict[str, Any]]) -> None:
        super().__init__(message, "apply")
        self.holders = holders


# ---------------------------------------------------------------------------
# Reading the host
# ---------------------------------------------------------------------------


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def read_mounts() -> list[_mountinfo.MountInfo]:
    return parse_mountinfo(read_text(MOUNTINFO) or "")


def resolve_ids(spec: OverlaySpec) -> OverlaySpec:
    """Fill in the upper root's uid/gid/mode from the parameters or the top lower."""
    lower_st: os.stat_result | None = None
    if spec.owner is None or spec.group is None or spec.mode is None:
        top = spec.lowerdir[0]
        try:
            lower_st = os.stat(top)
        except OSError as exc:
            raise OverlayError(
                "lowerdir %s does not exist or cannot be read (%s); the upper root copies its owner and mode "
                "by default. Create it, or give owner, group and mode" % (top, exc.strerror),
                "lowerdir",
            ) from exc
    if spec.owner is not None:
        uid = _lookup_id(spec.owner, "owner")
    elif lower_st is not None:
        uid = lower_st.st_uid
    if spec.group is not None:
        gid = _lookup_id(spec.group, "group")
    elif lower_st is not None:
        gid = lower_st.st_gid
    if spec.mode is not None:
        mode = spec.mode
    elif lower_st is not None:
        mode = stat.S_IMODE(lower_st.st_mode)
    return resolve_ownership(spec, uid, gid, mode)


def _lookup_id(name: str, param: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        if param == "owner":
            return pwd.getpwnam(name).pw_uid
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise OverlayError(
            "%s %r does not exist on the host; create it or give a numeric id" % (param, name), param
        ) from None


def fstab_has(path: str) -> bool:
    text = read_text(FSTAB) or ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            if _mountinfo.decode_mountinfo_octal(fields[1]).rstrip("/") == path:
                return True
    return False


def preflight(
    spec: OverlaySpec,
    mounts: list[_mountinfo.MountInfo],
    current: dict[str, str | None],
    live: _mountinfo.MountInfo | None,
    util_linux: tuple[int, int] | None,
) -> list[str]:
    """Host checks mirroring the kernel's rules; raises OverlayError, returns warnings."""
    warnings: list[str] = []
    if spec.state == "absent":
        return warnings
    for low in spec.lowerdir:
        if not os.path.isdir(low):
            what = "does not exist" if not os.path.lexists(low) else "is not a directory"
            if spec.state == "mounted":
                raise OverlayError("lowerdir %s %s; create it or remove it from lowerdir" % (low, what), "lowerdir")
            warnings.append("lowerdir %s %s; the overlay will fail to mount until it does" % (low, what))

    recorded = managed_keys(current.get(spec.unit))
    live_opts = parse_overlay_options(live.super_options) if live is not None else None

    if spec.upper == "persistent" and spec.upperdir is not None and spec.workdir is not None:
        m_up = mount_containing(mounts, spec.upperdir)
        m_work = mount_containing(mounts, spec.workdir)
        if m_up is not None and m_work is not None and m_up.mount_id != m_work.mount_id:
            raise OverlayError(
                "upperdir %s (on the mount at %s) and workdir %s (on the mount at %s) must be on the same mount; "
                "put both under one directory of one file system"
                % (spec.upperdir, m_up.mount_point, spec.workdir, m_work.mount_point),
                "workdir",
            )
        try:
            dev_up = os.stat(_host.nearest_existing(spec.upperdir)).st_dev
            dev_work = os.stat(_host.nearest_existing(spec.workdir)).st_dev
        except OSError:
            dev_up = dev_work = None
        if dev_up is not None and dev_up != dev_work:
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
        used_here = recorded.get("Workdir") == spec.workdir or (
            live_opts is not None and live_opts.workdir == spec.workdir
        )
        if not used_here and not workdir_is_fresh(spec.workdir):
            raise OverlayError(
                "workdir %s is not empty and this overlay's managed unit does not use it; the kernel deletes what "
                "is in %s/work at mount. Give an empty or new directory" % (spec.workdir, spec.workdir),
                "workdir",
            )
    if spec.upperdir is not None and spec.workdir is not None:
        for m in mounts:
            if m.fstype != "overlay" or m.mount_point == spec.path:
                continue
            other = parse_overlay_options(m.super_options, m.mount_options)
            theirs = [("upperdir", other.upperdir), ("workdir", other.workdir)] + [
                ("lowerdir", x) for x in other.lowerdir
            ]
            for mine_name, mine in (("upperdir", spec.upperdir), ("workdir", spec.workdir)):
                for their_name, their in theirs:
                    if their and (is_within(mine, their) or is_within(their, mine)):
                        raise OverlayError(
                            "%s %s overlaps the %s %s of the overlay mounted at %s; overlays sharing layers corrupt "
                            "each other. Choose another %s"
                            % (mine_name, mine, their_name, their, m.mount_point, mine_name),
                            mine_name,
                        )
    for m in mounts:
        if m.fstype != "overlay" or m.mount_point == spec.path:
            continue
        other = parse_overlay_options(m.super_options, m.mount_options)
        for low in spec.lowerdir:
            for their in (other.upperdir, other.workdir):
                if their and (is_within(low, their) or is_within(their, low)):
                    warnings.append(
                        "lowerdir %s overlaps the upper/work %s of the overlay at %s: changes there are online "
                        "changes to this lower (undefined behaviour)" % (low, their, m.mount_point)
                    )

    if live is None and spec.state in ("mounted", "present"):
        if os.path.islink(spec.path):
            raise OverlayError("path %s is a symlink; systemd refuses non-canonical mount points" % spec.path, "path")
        if os.path.lexists(spec.path) and not os.path.isdir(spec.path):
            raise OverlayError("path %s exists and is not a directory" % spec.path, "path")
        names = dir_entries(spec.path)
        if names and not spec.allow_nonempty_mountpoint:
            raise OverlayError(
                "path %s is not empty (%s); the overlay would hide its content. Move it into a lower layer, "
                "or set allow_nonempty_mountpoint: true"
                % (spec.path, ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")),
                "path",
            )

    per_value = NEW_API_VALUE_MAX if util_linux is not None and util_linux >= (2, 39) else None
    check_option_limits(render_options(spec), per_value)
    if per_value is not None:
        layers = list(spec.lowerdir) + [x for x in (spec.upperdir, spec.workdir) if x]
        if any("," in x for x in layers):
            warnings.append("a layer path contains ','; util-linux >= 2.39 passes options one by one and may split it")
    if fstab_has(spec.path):
        warnings.append(
            "%s also appears in %s; a unit in /etc/systemd/system takes precedence, remove the fstab line"
            % (spec.path, FSTAB)
        )
    return warnings


def purge_targets(spec: OverlaySpec, current: dict[str, str | None]) -> list[str]:
    """Directories purge=true deletes: those the managed unit recorded, or the spec's."""
    keys = managed_keys(current.get(spec.unit))
    if keys:
        up, work = keys.get("Upperdir"), keys.get("Workdir")
        kind = keys.get("Upper")
    else:
        up, work, kind = spec.upperdir, spec.workdir, spec.upper
    if kind != "persistent" or not up or not work:
        return []
    targets = [x for x in (up, work) if os.path.lexists(x)]
    base = "%s/%s" % (_names.PERSISTENT_BASE, overlay_id(spec.path))
    if up == base + "/upper" and work == base + "/work" and os.path.lexists(base):
        targets.append(base)
    return targets


def check_purge(spec: OverlaySpec, targets: list[str], mounts: list[_mountinfo.MountInfo]) -> None:
    for t in targets:
        for low in spec.lowerdir:
            if is_within(low, t) or is_within(t, low):
                raise OverlayError("purge refuses %s: it overlaps lowerdir %s" % (t, low), "purge")
        if mount_at(mounts, t) is not None or submounts(mounts, t):
            raise OverlayError("purge refuses %s: it is or contains a mount point; unmount it first" % t, "purge")
        if os.path.islink(t):
            raise OverlayError("purge refuses %s: it is a symlink" % t, "purge")


def tmpfs_loss_check(spec: OverlaySpec, pl: _plan.Plan) -> None:
    """Refuse to stop a tmpfs whose upper holds changes, unless purge=true asks for exactly that.

    Stopping the tmpfs unit (state=absent, or switching away from upper=tmpfs)
    discards everything written through the overlay since boot.
    """
    if spec.tmpfs_unit not in pl.stop or spec.purge:
        return
    upper = _names.tmpfs_dir_for(spec.id) + "/upper"
    names = dir_entries(upper) or []
    if names:
        raise OverlayError(
            "the tmpfs upper %s of %s holds changes (%s); removing its tmpfs would discard them. Save them first "
            "(overlayfs.systemd.upper state=committed or exported), or set purge: true to discard them"
            % (upper, spec.path, ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")),
            "purge",
        )


def busy_check(spec: OverlaySpec, stop_units: list[str], mounts: list[_mountinfo.MountInfo]) -> None:
    checks = []
    if spec.unit in stop_units:
        checks.append(spec.path)
    tmpfs_dir = _names.tmpfs_dir_for(spec.id)
    if spec.tmpfs_unit in stop_units:
        checks.append(tmpfs_dir)
    holders: list[dict[str, Any]] = []
    subs: list[str] = []
    for mp in checks:
        holders += find_holders(mp, PROC_ROOT)
        subs += [s for s in submounts(mounts, mp) if s != spec.path]
    if holders or subs:
        parts = ["pid %d (%s): %s" % (h["pid"], h["comm"], h["reason"]) for h in holders]
        parts += ["mount %s" % s for s in subs]
        raise BusyError(
            "overlay %s is busy, refusing to stop it; nothing was changed. In use by: %s. Stop these processes "
            "or unmount these, or use apply: next_boot" % (spec.path, "; ".join(parts)),
            holders,
        )


# ---------------------------------------------------------------------------
# Changing the host
# ---------------------------------------------------------------------------


def write_unit(module: AnsibleModule, name: str, text: str) -> None:
    """Write a unit file atomically: temp file in the same directory, fsync, move, 0644."""
    dest = os.path.join(UNIT_DIR, name)
    fd, tmp = tempfile.mkstemp(dir=UNIT_DIR, prefix=".%s." % name[:100], suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, UNIT_FILE_MODE)
        module.atomic_move(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    os.chmod(dest, UNIT_FILE_MODE)
    dfd = os.open(UNIT_DIR, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def remove_unit(name: str) -> None:
    try:
        os.unlink(os.path.join(UNIT_DIR, name))
    except FileNotFoundError:
        pass


def directories_to_create(spec: OverlaySpec) -> list[tuple[str, int, int, int, int]]:
    """(path, mode, uid, gid, parent_mode) of the directories the overlay needs on disk."""
    if spec.state == "absent" or spec.upper != "persistent" or spec.upperdir is None or spec.workdir is None:
        return []
    if spec.upper_uid is None or spec.upper_gid is None or spec.upper_mode is None:
        raise OverlayError("the upper root's owner and mode must be resolved first", "mode")
    parent_mode = PRIVATE_DIR_MODE if spec.default_layout else 0o755
    return [
        (spec.upperdir, spec.upper_mode, spec.upper_uid, spec.upper_gid, parent_mode),
        (spec.workdir, PRIVATE_DIR_MODE, 0, 0, parent_mode),
    ]


def missing_dirs(path: str) -> list[str]:
    out = []
    cur = path
    while cur != "/" and not os.path.lexists(cur):
        out.append(cur)
        cur = os.path.dirname(cur)
    return list(reversed(out))


def upper_root_fixes(spec: OverlaySpec) -> list[str]:
    """Explicit owner/group/mode that differ on an existing persistent upper root."""
    if spec.upper != "persistent" or spec.upperdir is None or not os.path.isdir(spec.upperdir):
        return []
    st = os.lstat(spec.upperdir)
    fixes = []
    if spec.owner is not None and st.st_uid != spec.upper_uid:
        fixes.append("owner")
    if spec.group is not None and st.st_gid != spec.upper_gid:
        fixes.append("group")
    if spec.mode is not None and stat.S_IMODE(st.st_mode) != spec.upper_mode:
        fixes.append("mode")
    return fixes


def remove_created(created: list[str], mounts: list[_mountinfo.MountInfo]) -> list[str]:
    errors = []
    for d in reversed(created):
        if mount_at(mounts, d) is not None:
            continue
        try:
            if os.path.isdir(d) and not os.path.islink(d):
                shutil.rmtree(d)
        except OSError as exc:
            errors.append("%s: %s" % (d, exc))
    return errors


def verify_mount(spec: OverlaySpec) -> _mountinfo.MountInfo:
    live = mount_at(read_mounts(), spec.path)
    if live is None or live.fstype != "overlay":
        raise OverlayError("systemd reported success but no overlay is mounted at %s" % spec.path, "path")
    opts = parse_overlay_options(live.super_options)
    if not live_matches(spec, opts, live.mount_options):
        raise OverlayError(
            "the overlay at %s is mounted with other layers or flags than wanted (the kernel may have fallen "
            "back to read-only): %s" % (spec.path, describe_mismatch(spec, opts, live.mount_options)),
            "path",
        )
    return live


def rollback(
    module: AnsibleModule,
    sd: Systemd,
    spec: OverlaySpec,
    current: dict[str, str | None],
    touched: list[str],
    created: list[str],
    was_mounted: bool,
) -> list[str]:
    """Undo what this run did; returns the problems met (best effort)."""
    problems = []
    for name in touched:
        try:
            old = current.get(name)
            if old is None:
                remove_unit(name)
            else:
                write_unit(module, name, old)
        except OSError as exc:
            problems.append("restore %s: %s" % (name, exc))
    if touched:
        try:
            sd.daemon_reload()
        except CommandError as exc:
            problems.append(str(exc))
    if was_mounted and mount_at(read_mounts(), spec.path) is None:
        try:
            sd.start(spec.unit)
        except CommandError as exc:
            problems.append("restart of the previous overlay: %s" % exc)
    problems += remove_created(created, read_mounts())
    return problems


def unit_diff(name: str, before: str | None, after: str | None) -> dict[str, str]:
    path = os.path.join(UNIT_DIR, name)
    return {"before": before or "", "after": after or "", "before_header": path, "after_header": path}


# ---------------------------------------------------------------------------
# The phases of one converge
# ---------------------------------------------------------------------------


class ConvergeError(Exception):
    """A refused or failed converge; ``result`` is what the module returns with the failure."""

    def __init__(self, msg: str, result: dict[str, Any]) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


@dataclass
class Prepared:
    """What ``prepare()`` read and planned for one overlay; nothing changed yet."""

    spec: OverlaySpec
    plan: _plan.Plan
    current: dict[str, str | None]
    mounts: list[_mountinfo.MountInfo]
    was_mounted: bool
    dirs: list[tuple[str, int, int, int, int]]
    fixes: list[str]
    result: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    touched: list[str] = field(default_factory=list)


def _fail(prep_result: dict[str, Any], exc: OverlayError, was_mounted: bool) -> ConvergeError:
    result = dict(prep_result, changed=False, mounted=was_mounted, param=exc.param)
    if isinstance(exc, BusyError):
        result["holders"] = exc.holders
    return ConvergeError(str(exc), result)


def prepare(
    sd: Systemd, params: dict[str, Any], diff: bool = False, mounts: list[_mountinfo.MountInfo] | None = None
) -> Prepared:
    """Validate, read the host, plan. Changes nothing; raises ConvergeError on refusal."""
    result: dict[str, Any] = dict(changed=False, reboot_required=False, actions=[], created_directories=[])
    try:
        spec = build_spec(params)
    except OverlayError as exc:
        raise _fail(result, exc, False) from None
    result.update(
        unit=spec.unit,
        unit_path=os.path.join(UNIT_DIR, spec.unit),
        upperdir=spec.upperdir,
        workdir=spec.workdir,
    )
    actions: list[str] = result["actions"]
    created: list[str] = result["created_directories"]
    warnings: list[str] = []
    was_mounted = False
    try:
        mounts = read_mounts() if mounts is None else mounts
        live = mount_at(mounts, spec.path)
        if live is not None and live.fstype != "overlay":
            if spec.state in ("mounted", "present"):
                raise OverlayError(
                    "path %s is already the mount point of a %s file system (%s); unmount it first"
                    % (spec.path, live.fstype, live.source),
                    "path",
                )
            live = None
        was_mounted = live is not None
        tmpfs_dir = _names.tmpfs_dir_for(spec.id)
        live_tmpfs = mount_at(mounts, tmpfs_dir)
        if live_tmpfs is not None and live_tmpfs.fstype != "tmpfs":
            live_tmpfs = None
        names = candidate_units(spec.path)
        current = {n: read_text(os.path.join(UNIT_DIR, n)) for n in names}
        props = sd.show(names, ["Id", "UnitFileState", "NeedDaemonReload", "ActiveState"])
        enabled_now = props.get(spec.unit, {}).get("UnitFileState") == "enabled"
        pending_reload = any(
            props.get(n, {}).get("NeedDaemonReload") == "yes" for n in names if current.get(n) is not None
        )

        if spec.state != "absent":
            spec = resolve_ids(spec)
            desired = render_units(spec)
            result["units"] = list(desired)
            result["options"] = render_options(spec)
            util_linux = sd.util_linux_version()
            warnings += preflight(spec, mounts, current, live, util_linux)
            purge = []
        else:
            desired = {}
            purge = purge_targets(spec, current) if spec.purge else []
            check_purge(spec, purge, mounts)
        pl = plan(spec, desired, current, live, live_tmpfs, enabled_now, pending_reload, purge)
        tmpfs_loss_check(spec, pl)
    except OverlayError as exc:
        raise _fail(result, exc, was_mounted) from None
    except CommandError as exc:
        raise ConvergeError(
            str(exc),
            dict(result, mounted=was_mounted, cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr),
        ) from None
    if spec.state == "absent":
        result["units"] = list(pl.remove)
    for name in pl.keep_unmanaged:
        warnings.append("%s/%s exists but was not written by overlayfs.systemd; left alone" % (UNIT_DIR, name))

    dirs = []
    if spec.state != "absent":
        for path, mode, uid, gid, parent_mode in directories_to_create(spec):
            for d in missing_dirs(path):
                if d not in created:
                    created.append(d)
                    actions.append("create directory %s" % d)
            dirs.append((path, mode, uid, gid, parent_mode))
        if spec.state == "mounted" and not os.path.lexists(spec.path):
            for d in missing_dirs(spec.path):
                created.append(d)
                actions.append("create directory %s" % d)
            dirs.append((spec.path, 0o755, 0, 0, 0o755))
    fixes = upper_root_fixes(spec) if spec.state != "absent" else []
    if fixes:
        actions.append("set %s of %s" % ("/".join(fixes), spec.upperdir))
    actions += ["stop %s" % u for u in pl.stop]
    actions += ["write %s" % u for u in pl.write] + ["remove %s" % u for u in pl.remove]
    if pl.daemon_reload:
        actions.append("daemon-reload")
    actions += ["reload %s" % u for u in pl.reload_units] + ["start %s" % u for u in pl.start]
    actions += ["enable %s" % u for u in pl.enable] + ["reenable %s" % u for u in pl.reenable]
    actions += ["disable %s" % u for u in pl.disable] + ["purge %s" % p for p in pl.purge]
    result["reboot_required"] = pl.reboot_required
    result["changed"] = bool(actions)
    result["mounted"] = was_mounted
    changed_units = list(pl.write) + list(pl.remove)
    if diff and changed_units:
        result["diff"] = [unit_diff(n, current.get(n), pl.write.get(n)) for n in changed_units]
    return Prepared(spec, pl, current, mounts, was_mounted, dirs, fixes, result, warnings)


def check_busy(prep: Prepared) -> None:
    """Refuse (ConvergeError, nothing touched) when the run must stop a busy overlay."""
    if prep.plan.stop:
        try:
            busy_check(prep.spec, prep.plan.stop, prep.mounts)
        except BusyError as exc:
            raise _fail(prep.result, exc, prep.was_mounted) from None


def apply_files(module: AnsibleModule, sd: Systemd, prep: Prepared) -> None:
    """Create directories, stop what must stop, write and remove unit files. Raises ActivationError."""
    spec, pl = prep.spec, prep.plan
    prep.created.clear()
    step = "create directories"
    try:
        for path, mode, uid, gid, parent_mode in prep.dirs:
            make_dirs_secure(path, mode, uid, gid, prep.created, parent_mode)
        if prep.fixes and spec.upperdir is not None:
            fd = os.open(spec.upperdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                os.fchown(
                    fd,
                    -1 if spec.upper_uid is None else spec.upper_uid,
                    -1 if spec.upper_gid is None else spec.upper_gid,
                )
                if spec.upper_mode is not None:
                    os.fchmod(fd, spec.upper_mode)
            finally:
                os.close(fd)
        for unit in pl.stop:
            step = "stop %s" % unit
            sd.stop(unit)
        for name in pl.disable:
            step = "disable %s" % name
            sd.disable(name)
        for name, text in pl.write.items():
            step = "write %s" % name
            prep.touched.append(name)
            write_unit(module, name, text)
        for name in pl.remove:
            step = "remove %s" % name
            prep.touched.append(name)
            remove_unit(name)
    except (CommandError, OverlayError, OSError) as exc:
        raise ActivationError(step, exc) from exc


def activate(module: AnsibleModule, sd: Systemd, prep: Prepared) -> None:
    """After the daemon-reload: reload/start units, verify the mount, enable, purge. Raises ActivationError."""
    spec, pl = prep.spec, prep.plan
    step = "start"
    try:
        for name in pl.reload_units:
            step = "reload %s" % name
            sd.reload(name)
        for name in pl.start:
            step = "start %s" % name
            sd.start(name)
            if name == spec.unit:
                step = "verify %s" % name
                verify_mount(spec)
    except (CommandError, OverlayError, OSError) as exc:
        raise ActivationError(step, exc) from exc
    for name in pl.enable:
        sd.enable(name)
    for name in pl.reenable:
        sd.reenable(name)
    for target in pl.purge:
        if os.path.lexists(target):
            shutil.rmtree(target)


def finish(prep: Prepared) -> dict[str, Any]:
    """The module result after a successful run: the live state read back."""
    final = mount_at(read_mounts(), prep.spec.path)
    prep.result["mounted"] = final is not None and final.fstype == "overlay"
    return prep.result


def failed_activation(module: AnsibleModule, sd: Systemd, prep: Prepared, exc: ActivationError) -> ConvergeError:
    """Roll back what this run did and describe the failure."""
    spec = prep.spec
    journal = "\n".join(
        t
        for t in (sd.journal_tail(u) for u in [spec.unit, spec.prepare_unit, spec.tmpfs_unit] if u in prep.current)
        if t
    )
    problems = rollback(module, sd, spec, prep.current, prep.touched, prep.created, prep.was_mounted)
    final = mount_at(read_mounts(), spec.path)
    result = dict(prep.result, mounted=final is not None and final.fstype == "overlay", journal=journal)
    cause = exc.cause
    msg = "%s failed; rolled back the unit files and removed the directories this run created. %s" % (exc.step, cause)
    if problems:
        msg += " Rollback problems: %s" % "; ".join(problems)
    if isinstance(cause, CommandError):
        result.update(cmd=cause.cmd, rc=cause.rc, stdout=cause.stdout, stderr=cause.stderr)
    return ConvergeError(msg, result)


def activation_failure(module: AnsibleModule, sd: Systemd, prep: Prepared, exc: ActivationError) -> ConvergeError:
    """The failure of a run that changed something: rolled back, or (removing) reported as it is."""
    if prep.spec.state == "absent":
        # Removing: nothing to roll back to; report what failed.
        cause = exc.cause
        result = dict(prep.result, mounted=prep.was_mounted)
        if isinstance(cause, CommandError):
            result.update(cmd=cause.cmd, rc=cause.rc, stdout=cause.stdout, stderr=cause.stderr)
        return ConvergeError(str(cause), result)
    return failed_activation(module, sd, prep, exc)


def converge(module: AnsibleModule, sd: Systemd, params: dict[str, Any]) -> dict[str, Any]:
    """Converge one overlay to ``params`` (the mount module's parameters); returns the module result.

    Check mode stops after planning. Raises ConvergeError (with the result to
    return) when refused, busy, or when activation failed and was rolled back.
    """
    prep = prepare(sd, params, diff=module._diff)
    for w in prep.warnings:
        module.warn(w)
    if module.check_mode:
        return prep.result
    check_busy(prep)
    try:
        apply_files(module, sd, prep)
        if prep.plan.daemon_reload:
            try:
                sd.daemon_reload()
            except CommandError as exc:
                raise ActivationError("daemon-reload", exc) from exc
        activate(module, sd, prep)
    except ActivationError as exc:
        raise activation_failure(module, sd, prep, exc) from None
    except CommandError as exc:
        raise ConvergeError(
            str(exc),
            dict(prep.result, mounted=prep.was_mounted, cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr),
        ) from None
    return finish(prep)


# ---------------------------------------------------------------------------
# Many overlays in one call (the mounts module and the overlays role)
# ---------------------------------------------------------------------------


def validate_params(params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check one overlay's parameters against ARGUMENT_SPEC as AnsibleModule would; (completed, errors)."""
    validator = ArgumentSpecValidator(ARGUMENT_SPEC, required_together=REQUIRED_TOGETHER, required_if=REQUIRED_IF)
    res = validator.validate(params)
    return res.validated_parameters, list(res.error_messages)


def managed_units() -> dict[str, dict[str, str]]:
    """Unit name -> ``X-OverlayfsSystemd-*`` keys of every unit file this collection wrote in UNIT_DIR."""
    try:
        names = sorted(os.listdir(UNIT_DIR))
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        if name.endswith((".mount", ".target")):
            keys = managed_keys(read_text(os.path.join(UNIT_DIR, name)))
            if keys:
                out[name] = keys
    return out


def managed_overlays() -> dict[str, str]:
    """Mount point -> overlay unit of every overlay this collection manages on the host."""
    return {
        keys["Path"]: name
        for name, keys in managed_units().items()
        if keys.get("Role") == "overlay" and keys.get("Path")
    }


@dataclass
class BulkItem:
    """One overlay of a bulk run: declared, or (exclusive) an undeclared one to remove."""

    path: str
    params: dict[str, Any]
    removal: bool = False
    prep: Prepared | None = None
    error: ConvergeError | None = None
    busy: bool = False

    def report(self) -> dict[str, Any]:
        if self.error is not None:
            res = dict(self.error.result, failed=True, msg="%s: %s" % (self.path, self.error.msg))
        elif self.prep is not None:
            res = dict(self.prep.result)
        else:  # pragma: no cover - every item is prepared or failed
            res = dict(changed=False)
        res.pop("diff", None)
        res["path"] = self.path
        res["state"] = self.params.get("state")
        return res


@dataclass
class TargetPlan:
    """The aggregate target: what it should say and what the run does to it."""

    name: str
    text: str
    current: str | None
    requires: list[str]
    enable: bool
    start: bool
    stale: list[str]

    @property
    def write(self) -> bool:
        return _units.strip_header(self.current) != _units.strip_header(self.text)

    def actions(self) -> list[str]:
        out = ["write %s" % self.name] if self.write else []
        out += ["disable %s" % s for s in self.stale] + ["remove %s" % s for s in self.stale]
        out += ["enable %s" % self.name] if self.enable else []
        return out + (["start %s" % self.name] if self.start else [])


def _declare(overlays: list[dict[str, Any]], defaults: dict[str, Any]) -> tuple[list[BulkItem], list[str]]:
    items: list[BulkItem] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(overlays):
        merged = dict(defaults)
        merged.update(raw)
        label = str(merged.get("path") or "overlays[%d]" % i)
        params, errors = validate_params(merged)
        try:
            key = _names.normalize_path(params.get("path"), "path")
        except OverlayError:
            key = label
        item = BulkItem(key, params)
        if errors:
            item.error = ConvergeError("; ".join(errors), dict(changed=False))
        elif key in seen:
            item.error = ConvergeError(
                "declared twice (overlays[%d] and overlays[%d]); declare each mount point once" % (seen[key], i),
                dict(changed=False, param="path"),
            )
        seen.setdefault(key, i)
        if item.error is not None:
            problems.append("overlays[%d] %s: %s" % (i, label, item.error.msg))
        items.append(item)
    return items, problems


def _plan_target(sd: Systemd, name: str, items: list[BulkItem], exclusive: bool) -> TargetPlan:
    check_target_name(name)
    requires = [
        it.prep.spec.unit for it in items if not it.removal and it.prep is not None and it.prep.spec.state == "mounted"
    ]
    current = read_text(os.path.join(UNIT_DIR, name))
    if current is not None and not _units.is_managed(current):
        raise OverlayError(
            "target %s/%s exists and was not written by overlayfs.systemd; remove it or choose another target name"
            % (UNIT_DIR, name),
            "target",
        )
    stale = []
    if exclusive:
        stale = [n for n, k in managed_units().items() if k.get("Role") == "target" and n != name]
    props = sd.show([name], ["UnitFileState", "ActiveState"]).get(name, {})
    return TargetPlan(
        name=name,
        text=_units.render_target(name, requires),
        current=current,
        requires=requires,
        enable=props.get("UnitFileState") != "enabled",
        start=props.get("ActiveState") != "active",
        stale=stale,
    )


def converge_many(
    module: AnsibleModule,
    sd: Systemd,
    overlays: list[dict[str, Any]],
    defaults: dict[str, Any] | None = None,
    exclusive: bool = False,
    purge: bool = False,
    target: str | None = None,
) -> dict[str, Any]:
    """Converge many overlays with the phases of ``converge()``; returns the mounts module result.

    Reads mountinfo once and prepares every overlay (and, with ``exclusive``,
    the removal of every managed overlay not declared). Any refusal fails the
    whole call before anything changes, naming every refused overlay. Check
    mode stops there. Busy overlays are left untouched and reported; the
    others are converged with one daemon-reload at most; an overlay whose
    activation fails is rolled back alone. Raises ConvergeError (with the
    full result) when any overlay was refused, busy or failed.
    """
    items, problems = _declare(overlays, defaults or {})
    mounts = read_mounts()
    if exclusive:
        declared = {it.path for it in items}
        for path, unit in sorted(managed_overlays().items()):
            if path not in declared:
                params, errors = validate_params({"path": path, "state": "absent", "purge": purge})
                item = BulkItem(path, params, removal=True)
                if errors:  # pragma: no cover - a recorded path that no longer validates
                    item.error = ConvergeError("; ".join(errors), dict(changed=False, unit=unit))
                    problems.append("%s (undeclared, %s): %s" % (path, unit, item.error.msg))
                items.append(item)
    for it in items:
        if it.error is not None:
            continue
        try:
            it.prep = prepare(sd, it.params, diff=module._diff, mounts=mounts)
        except ConvergeError as exc:
            it.error = exc
            problems.append("%s: %s" % (it.path, exc.msg))
            continue
        for w in it.prep.warnings:
            module.warn(w)

    tplan: TargetPlan | None = None
    if target:
        try:
            tplan = _plan_target(sd, target, items, exclusive)
        except OverlayError as exc:
            problems.append(str(exc))
    result = _bulk_result(module, items, tplan)
    if problems:
        result["changed"] = False
        raise ConvergeError(
            "%d overlay problem(s), nothing was changed: %s" % (len(problems), " | ".join(problems)), result
        )
    if module.check_mode:
        return result

    work: list[tuple[BulkItem, Prepared]] = []
    for it in items:
        if it.prep is None:  # pragma: no cover - refused items stopped the run above
            continue
        try:
            check_busy(it.prep)
        except ConvergeError as exc:
            it.error, it.busy = exc, True
            continue
        work.append((it, it.prep))
    for it, prep in list(work):
        try:
            apply_files(module, sd, prep)
        except ActivationError as exc:
            it.error = activation_failure(module, sd, prep, exc)
            work.remove((it, prep))
    if tplan is not None:
        try:
            for name in tplan.stale:
                sd.disable(name)
                remove_unit(name)
            if tplan.write:
                write_unit(module, tplan.name, tplan.text)
        except (CommandError, OSError) as exc:
            # Before the daemon-reload: nothing is active yet; report what is written so far.
            for it, prep in work:
                it.error = activation_failure(module, sd, prep, ActivationError("write %s" % tplan.name, exc))
            raise ConvergeError(
                "writing %s failed: %s" % (tplan.name, exc),
                dict(_bulk_result(module, items, tplan), **_command_keys(exc)),
            ) from None
    reload_needed = any(prep.plan.daemon_reload for dummy, prep in work)
    if reload_needed or (tplan is not None and (tplan.write or tplan.stale)):
        try:
            sd.daemon_reload()
        except CommandError as exc:
            for it, prep in work:
                it.error = activation_failure(module, sd, prep, ActivationError("daemon-reload", exc))
            work = []
    for it, prep in work:
        try:
            activate(module, sd, prep)
            finish(prep)
        except ActivationError as exc:
            it.error = activation_failure(module, sd, prep, exc)
        except CommandError as exc:  # enable/reenable after a successful start: nothing to roll back
            it.error = ConvergeError(str(exc), dict(prep.result, **_command_keys(exc)))
    failed = [it for it in items if it.error is not None]
    target_error = None
    if tplan is not None and not failed:
        try:
            if tplan.enable:
                sd.enable(tplan.name)
            # Stopping a required overlay (restart, removal) stops the target too: read it again.
            if sd.show([tplan.name], ["ActiveState"]).get(tplan.name, {}).get("ActiveState") != "active":
                tplan.start = True
                sd.start(tplan.name)
        except CommandError as exc:
            target_error = exc
    result = _bulk_result(module, items, tplan)
    if target_error is not None:
        raise ConvergeError(
            "every overlay converged, but %s failed: %s" % (tplan.name if tplan else "the target", target_error),
            dict(result, **_command_keys(target_error)),
        )
    if failed:
        busy = [it.path for it in failed if it.busy]
        msg = "%d of %d overlays failed" % (len(failed), len(items))
        if busy:
            msg += " (busy, left untouched: %s)" % ", ".join(busy)
        msg += "; the others were converged%s: %s" % (
            "" if tplan is None else " (%s not started)" % tplan.name,
            " | ".join(it.report()["msg"] for it in failed),
        )
        raise ConvergeError(msg, result)
    return result


def _command_keys(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, CommandError):
        return dict(cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr)
    return {}


def _bulk_result(module: AnsibleModule, items: list[BulkItem], tplan: TargetPlan | None) -> dict[str, Any]:
    declared = [it.report() for it in items if not it.removal]
    removals = [it.report() for it in items if it.removal]
    result: dict[str, Any] = dict(
        results=declared,
        removed=[it.path for it in items if it.removal and it.error is None],
        removed_results=removals,
        reboot_required=any(r.get("reboot_required") for r in declared + removals),
    )
    changed = any(r.get("changed") for r in declared + removals)
    if tplan is not None:
        actions = tplan.actions()
        changed = changed or bool(actions)
        result["target"] = dict(
            name=tplan.name,
            unit_path=os.path.join(UNIT_DIR, tplan.name),
            requires=tplan.requires,
            actions=actions,
            changed=bool(actions),
        )
    result["changed"] = changed
    if module._diff:
        diffs: list[dict[str, str]] = []
        for it in items:
            if it.prep is not None:
                diffs += it.prep.result.get("diff", [])
        if tplan is not None and tplan.write:
            diffs.append(unit_diff(tplan.name, tplan.current, tplan.text))
        if diffs:
            result["diff"] = diffs
    return result
