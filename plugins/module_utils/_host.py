# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Host reads and writes: /proc, directories, unit files (roots overridable for tests).

The only module_utils file besides the phases that touches the file
system; the rule files take data and return data.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import stat
import tempfile
from collections.abc import Callable
from typing import Any, TypeVar

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _liveguard, _mountinfo, _names
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    BusyError,
    OverlayError,
    UnsafePathError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._facts import HostFacts, MountPoint
from ansible_collections.overlayfs.systemd.plugins.module_utils._liveguard import (
    LiveLayers,
    apply_removal,
    list_dir,
    parse_record,
    removal_plan,
    render_record,
    stat_dir,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import (
    mount_at,
    parse_mountinfo,
    submounts,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    candidate_units,
    is_within,
    overlay_id,
    tmpfs_dir_for,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import (
    OverlaySpec,
    choose_lower_form,
    resolve_ownership,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._units import (
    parse_unit,
)

T = TypeVar("T")


UNIT_FILE_MODE = 0o644


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


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def read_mounts() -> list[_mountinfo.MountInfo]:
    return parse_mountinfo(read_text(_names.ROOTS.mountinfo) or "")


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
    text = read_text(_names.ROOTS.fstab) or ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            if _mountinfo.decode_mountinfo_octal(fields[1]).rstrip("/") == path:
                return True
    return False


def write_file(*, module: AnsibleModule, path: str, mode: int, write: Callable[[int], T]) -> T:
    """Write ``path`` atomically and return what ``write`` returned.

    ``write(fd)`` fills a temp file in the target directory; the file is
    fsynced, gets ``mode``, replaces ``path`` with ``module.atomic_move`` and
    the directory is fsynced. On any error the temp file is removed and
    ``path`` is left as it was.
    """
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path)[:100], suffix=".tmp")
    try:
        value = write(fd)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(tmp, mode)
        module.atomic_move(tmp, path)
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
    os.chmod(path, mode)
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return value


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_unit(module: AnsibleModule, name: str, text: str) -> None:
    """Write a unit file atomically (0644) into the unit directory."""
    data = text.encode("utf-8", "surrogateescape")
    write_file(
        module=module,
        path=os.path.join(_names.ROOTS.unit_dir, name),
        mode=UNIT_FILE_MODE,
        write=lambda fd: write_all(fd, data),
    )


def remove_unit(name: str) -> None:
    try:
        os.unlink(os.path.join(_names.ROOTS.unit_dir, name))
    except FileNotFoundError:
        pass


def missing_dirs(path: str) -> list[str]:
    out = []
    cur = path
    while cur != "/" and not os.path.lexists(cur):
        out.append(cur)
        cur = os.path.dirname(cur)
    return list(reversed(out))


def live_layers(mounts: list[_mountinfo.MountInfo]) -> list[LiveLayers]:
    """The layer paths of every mounted overlay."""
    out = []
    for m in mounts:
        if m.fstype == "overlay":
            o = _mountinfo.parse_overlay_options(m.super_options, m.mount_options)
            out.append(LiveLayers(m.mount_point, o.upperdir, o.workdir, tuple(o.lowerdir)))
    return out


def read_layer_record(unit: str) -> dict[str, tuple[int, int]]:
    """The identities the layers of ``unit`` had when this collection last mounted it in this boot."""
    return parse_record(read_text(os.path.join(_liveguard.RECORD_DIR, unit)))


def layer_drift_of(
    *, path: str, unit: str, unit_upperdir: str | None, unit_workdir: str | None, live: _mountinfo.OverlayOptions
) -> list[dict[str, Any]]:
    """Drift of a mounted overlay's upper and work directories on this host (``_liveguard.layer_drift``)."""
    return _liveguard.layer_drift(
        live=LiveLayers(path, live.upperdir, live.workdir, tuple(live.lowerdir)),
        unit_upperdir=unit_upperdir,
        unit_workdir=unit_workdir,
        stat_dir=stat_dir,
        recorded=read_layer_record(unit),
        listdir=list_dir,
    )


def record_layers(unit: str, live: _mountinfo.MountInfo) -> None:
    """Record the identities of a just-mounted overlay's upper and work directories (best effort)."""
    opts = _mountinfo.parse_overlay_options(live.super_options, live.mount_options)
    ids = {p: stat_dir(p) for p in (opts.upperdir, opts.workdir) if p}
    layers = {p: i for p, i in ids.items() if i is not None}
    try:
        os.makedirs(_liveguard.RECORD_DIR, 0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=_liveguard.RECORD_DIR, prefix=".%s." % unit[:100])
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(render_record(layers))
        os.rename(tmp, os.path.join(_liveguard.RECORD_DIR, unit))
    except OSError:
        pass


def remove_created(
    created: list[str], mounts: list[_mountinfo.MountInfo], workdirs: tuple[str, ...] = ()
) -> tuple[list[str], list[dict[str, str]]]:
    """Remove the directories a failed run created, except what a live mount uses or holds foreign data.

    Only empty directories are removed (``rmdir``). Returns (problems, kept):
    the removals that failed, and {path, reason} of each directory kept.
    """
    plan = removal_plan(
        created,
        overlays=live_layers(mounts),
        mount_points=[m.mount_point for m in mounts],
        listdir=list_dir,
        workdirs=workdirs,
    )
    stayed = apply_removal(plan)
    return ["%s: %s" % (s["path"], s["reason"]) for s in stayed], plan.kept


def managed_units() -> dict[str, dict[str, str]]:
    """Unit name -> ``X-OverlayfsSystemd-*`` keys of every unit file this collection wrote in the unit directory."""
    try:
        names = sorted(os.listdir(_names.ROOTS.unit_dir))
    except FileNotFoundError:
        return {}
    out = {}
    for name in names:
        if name.endswith((".mount", ".target")):
            keys = parse_unit(read_text(os.path.join(_names.ROOTS.unit_dir, name))).managed
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


def unit_files(unit_dir: str) -> dict[str, str]:
    """Text of the regular .mount and .service files in ``unit_dir`` (symlinks such as masks skipped)."""
    files: dict[str, str] = {}
    try:
        names = sorted(os.listdir(unit_dir))
    except FileNotFoundError:
        return files
    for name in names:
        full = os.path.join(unit_dir, name)
        if not name.endswith((".mount", ".service")) or os.path.islink(full) or not os.path.isfile(full):
            continue
        text = read_text(full)
        if text is not None:
            files[name] = text
    return files


#: The systemd properties ``read_facts`` asks for each candidate unit (the mounts module prefetches them).
FACT_PROPS = ("Id", "UnitFileState", "NeedDaemonReload", "ActiveState")


def read_facts(sd: Systemd, spec: OverlaySpec, mounts: list[_mountinfo.MountInfo] | None = None) -> HostFacts:
    """Read every host fact the preflight and the plan of ``spec`` need (raises OverlayError, CommandError).

    ``mounts``: mountinfo already read (bulk mode), or None to read it here.
    """
    offline = sd.offline is not None
    # Offline (an image root) nothing is live; a /proc in the chroot shows the build host's mounts.
    mounts = [] if offline else read_mounts() if mounts is None else mounts
    live = mount_at(mounts, spec.path)
    if live is not None and live.fstype != "overlay":
        if spec.state in ("mounted", "present"):
            raise OverlayError(
                "path %s is already the mount point of a %s file system (%s); unmount it first"
                % (spec.path, live.fstype, live.source),
                "path",
            )
        live = None
    live_tmpfs = mount_at(mounts, tmpfs_dir_for(spec.id))
    if live_tmpfs is not None and live_tmpfs.fstype != "tmpfs":
        live_tmpfs = None
    names = candidate_units(spec.path)
    current = {n: read_text(os.path.join(_names.ROOTS.unit_dir, n)) for n in names}
    props = sd.show(names, FACT_PROPS)
    facts = HostFacts(
        spec=spec,
        mounts=mounts,
        live=live,
        live_tmpfs=live_tmpfs,
        current=current,
        enabled_now=props.get(spec.unit, {}).get("UnitFileState") == "enabled",
        pending_reload=any(
            props.get(n, {}).get("NeedDaemonReload") == "yes" for n in names if current.get(n) is not None
        ),
        tmpfs_upper_entries=[] if offline else dir_entries(tmpfs_dir_for(spec.id) + "/upper") or [],
        offline=offline,
    )
    if spec.state == "absent":
        if spec.purge:
            facts.purge_targets = purge_targets(spec, current)
            facts.symlinks = {t for t in facts.purge_targets if os.path.islink(t)}
        return facts
    facts.spec = resolve_ids(spec)
    facts.util_linux = sd.util_linux_version()
    # Offline, the running kernel is the build host's, not the one the image boots.
    facts.kernel = None if offline else kernel_version(os.uname().release)
    facts.spec = choose_lower_form(facts.spec, facts.util_linux, facts.kernel)
    _observe_layers(facts.spec, facts)
    if live is not None:
        facts.layer_drift = layer_drift_of(
            path=spec.path,
            unit=spec.unit,
            unit_upperdir=facts.spec.upperdir,
            unit_workdir=facts.spec.workdir,
            live=_mountinfo.parse_overlay_options(live.super_options, live.mount_options),
        )
    return facts


def kernel_version(release: str) -> tuple[int, int] | None:
    """(major, minor) of a kernel release string such as ``6.18.44-fc``; None if it has none."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _observe_layers(spec: OverlaySpec, facts: HostFacts) -> None:
    """The directories of the layers and the mount point as they are now."""
    for low in spec.lowerdir:
        facts.lowers[low] = (
            "" if os.path.isdir(low) else "does not exist" if not os.path.lexists(low) else "is not a directory"
        )
    if spec.upper == "persistent" and spec.upperdir is not None and spec.workdir is not None:
        try:
            facts.layer_devs = (
                os.stat(nearest_existing(spec.upperdir)).st_dev,
                os.stat(nearest_existing(spec.workdir)).st_dev,
            )
        except OSError:
            facts.layer_devs = None
        facts.workdir_fresh = workdir_is_fresh(spec.workdir)
        if os.path.isdir(spec.upperdir):
            st = os.lstat(spec.upperdir)
            facts.upper_root = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        for path in (spec.upperdir, spec.workdir):
            facts.missing[path] = missing_dirs(path)
    facts.missing[spec.path] = missing_dirs(spec.path)
    if facts.live is None and spec.state in ("mounted", "present"):
        facts.mount_point = MountPoint(
            islink=os.path.islink(spec.path),
            exists=os.path.lexists(spec.path),
            isdir=os.path.isdir(spec.path),
            entries=dir_entries(spec.path),
        )
    facts.fstab = _names.ROOTS.fstab if fstab_has(spec.path) else None


def purge_targets(spec: OverlaySpec, current: dict[str, str | None]) -> list[str]:
    """Existing directories purge=true deletes: those the managed unit recorded, or the spec's."""
    keys = parse_unit(current.get(spec.unit)).managed
    if keys:
        up, work = keys.get("Upperdir"), keys.get("Workdir")
        kind = keys.get("Upper")
    else:
        up, work, kind = spec.upperdir, spec.workdir, spec.upper
    if kind != "persistent" or not up or not work:
        return []
    targets = [x for x in (up, work) if os.path.lexists(x)]
    base = "%s/%s" % (_names.ROOTS.persistent_base, overlay_id(spec.path))
    if up == base + "/upper" and work == base + "/work" and os.path.lexists(base):
        targets.append(base)
    return targets


#: The way out of a busy overlay that the mount module offers.
BUSY_HINT = "Stop these processes or unmount these, or use apply: next_boot"


def busy_error(
    spec: OverlaySpec, stop_units: list[str], mounts: list[_mountinfo.MountInfo], hint: str = BUSY_HINT
) -> BusyError | None:
    """The refusal to stop ``stop_units`` while processes or other mounts use them (None when free)."""
    checks = []
    if spec.unit in stop_units:
        checks.append(spec.path)
    tmpfs_dir = _names.tmpfs_dir_for(spec.id)
    if spec.tmpfs_unit in stop_units:
        checks.append(tmpfs_dir)
    holders: list[dict[str, Any]] = []
    subs: list[str] = []
    for mp in checks:
        holders += find_holders(mp, _names.ROOTS.proc)
        subs += [s for s in submounts(mounts, mp) if s != spec.path]
    if holders or subs:
        parts = ["pid %d (%s): %s" % (h["pid"], h["comm"], h["reason"]) for h in holders]
        parts += ["mount %s" % s for s in subs]
        return BusyError(
            "overlay %s is busy, refusing to stop it; nothing was changed. In use by: %s."
            % (spec.path, "; ".join(parts)),
            holders,
            hint,
        )
    return None
