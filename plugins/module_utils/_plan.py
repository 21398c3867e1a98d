# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The plan: what a run must do to bring the host to a spec (data in, a Plan out)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import OverlayError
from ansible_collections.overlayfs.systemd.plugins.module_utils._facts import HostFacts
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import (
    MountInfo,
    OverlayOptions,
    parse_overlay_options,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import PRIVATE_DIR_MODE, tmpfs_dir_for
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import VERIFIED_FLAGS, OverlaySpec
from ansible_collections.overlayfs.systemd.plugins.module_utils._units import is_managed, parse_unit, strip_header


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


#: How each kind of action reads in a result's ``actions`` (the only place an action becomes text).
ACTION_TEXT = {
    "create_directory": "create directory {target}",
    "set_attributes": "set {detail} of {target}",
    "stop": "stop {target}",
    "write": "write {target}",
    "remove": "remove {target}",
    "daemon_reload": "daemon-reload",
    "reload": "reload {target}",
    "start": "start {target}",
    "enable": "enable {target}",
    "reenable": "reenable {target}",
    "disable": "disable {target}",
    "purge": "purge {target}",
    "empty": "empty {target}",
    "copy": "copy {detail} to {target}",
}


@dataclass(frozen=True)
class Action:
    """One step of a run: a kind from ACTION_TEXT, what it acts on, and a detail some kinds show."""

    kind: str
    target: str = ""
    detail: str = ""

    @property
    def text(self) -> str:
        return ACTION_TEXT[self.kind].format(target=self.target, detail=self.detail)


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
    #: Directories the run creates (filled from the host after planning the units).
    create_dirs: list[str] = field(default_factory=list)
    #: Explicit owner/group/mode that differ on the existing upper root at ``attribute_path``.
    attribute_fixes: list[str] = field(default_factory=list)
    attribute_path: str | None = None
    #: (path, mode, uid, gid, parent_mode) of the directories the overlay needs on disk.
    make_dirs: list[tuple[str, int, int, int, int]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """The run changes the host: the one source of a converge's ``changed``."""
        return bool(
            self.create_dirs
            or self.attribute_fixes
            or self.write
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

    def actions(self) -> list[Action]:
        """Every step of the run in the order the phases take them."""
        out = [Action("create_directory", d) for d in self.create_dirs]
        if self.attribute_fixes:
            out.append(Action("set_attributes", self.attribute_path or "", "/".join(self.attribute_fixes)))
        out += [Action("stop", u) for u in self.stop]
        out += [Action("write", u) for u in self.write] + [Action("remove", u) for u in self.remove]
        if self.daemon_reload:
            out.append(Action("daemon_reload"))
        out += [Action("reload", u) for u in self.reload_units] + [Action("start", u) for u in self.start]
        out += [Action("enable", u) for u in self.enable] + [Action("reenable", u) for u in self.reenable]
        return out + [Action("disable", u) for u in self.disable] + [Action("purge", p) for p in self.purge]


def plan_run(spec: OverlaySpec, desired: Mapping[str, str], facts: HostFacts) -> Plan:
    """The whole plan of one run from the host's facts: units, refusals of data loss, directories."""
    pl = plan(
        spec,
        desired,
        facts.current,
        facts.live,
        facts.live_tmpfs,
        facts.enabled_now,
        facts.pending_reload,
        facts.purge_targets,
        layers_drifted=bool(facts.layer_drift),
    )
    if facts.offline:
        offline_steps(pl)
    refuse_tmpfs_loss(spec, pl, facts.tmpfs_upper_entries)
    if spec.state != "absent":
        _plan_directories(spec, pl, facts)
    return pl


def offline_steps(pl: Plan) -> Plan:
    """The plan of an offline run (no systemd runs): files and [Install] links only.

    No daemon-reload, start, stop or reload: what ``state=mounted`` asks for
    happens at the next boot of the image, from the enabled units.
    """
    pl.stop, pl.start, pl.reload_units = [], [], []
    pl.daemon_reload = pl.restart = pl.reboot_required = False
    return pl


def refuse_tmpfs_loss(spec: OverlaySpec, pl: Plan, upper_entries: Sequence[str]) -> None:
    """Refuse to stop a tmpfs whose upper holds changes, unless purge=true asks for exactly that.

    Stopping the tmpfs unit (state=absent, or switching away from upper=tmpfs)
    discards everything written through the overlay since boot.
    """
    if spec.tmpfs_unit not in pl.stop or spec.purge or not upper_entries:
        return
    upper = tmpfs_dir_for(spec.id) + "/upper"
    names = sorted(upper_entries)
    raise OverlayError(
        "the tmpfs upper %s of %s holds changes (%s); removing its tmpfs would discard them. Save them first "
        "(overlayfs.systemd.upper state=committed or exported), or set purge: true to discard them"
        % (upper, spec.path, ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")),
        "purge",
    )


def directories_to_create(spec: OverlaySpec) -> list[tuple[str, int, int, int, int]]:
    """(path, mode, uid, gid, parent_mode) of the directories a persistent overlay needs on disk."""
    if spec.state == "absent" or spec.upper != "persistent" or spec.upperdir is None or spec.workdir is None:
        return []
    if spec.upper_uid is None or spec.upper_gid is None or spec.upper_mode is None:
        raise OverlayError("the upper root's owner and mode must be resolved first", "mode")
    parent_mode = PRIVATE_DIR_MODE if spec.default_layout else 0o755
    return [
        (spec.upperdir, spec.upper_mode, spec.upper_uid, spec.upper_gid, parent_mode),
        (spec.workdir, PRIVATE_DIR_MODE, 0, 0, parent_mode),
    ]


def _plan_directories(spec: OverlaySpec, pl: Plan, facts: HostFacts) -> None:
    """The directories to create and the upper root attributes to fix."""
    for path, mode, uid, gid, parent_mode in directories_to_create(spec):
        for d in facts.missing.get(path, []):
            if d not in pl.create_dirs:
                pl.create_dirs.append(d)
        pl.make_dirs.append((path, mode, uid, gid, parent_mode))
    if spec.state == "mounted" and facts.missing.get(spec.path):
        pl.create_dirs += facts.missing[spec.path]
        pl.make_dirs.append((spec.path, 0o755, 0, 0, 0o755))
    if spec.upper == "persistent" and facts.upper_root is not None:
        uid, gid, mode = facts.upper_root
        wanted = (
            ("owner", spec.owner is not None and uid != spec.upper_uid),
            ("group", spec.group is not None and gid != spec.upper_gid),
            ("mode", spec.mode is not None and mode != spec.upper_mode),
        )
        pl.attribute_fixes = [name for name, differs in wanted if differs]
    pl.attribute_path = spec.upperdir


def plan(
    spec: OverlaySpec,
    desired: Mapping[str, str],
    current: Mapping[str, str | None],
    live_overlay: MountInfo | None,
    live_tmpfs: MountInfo | None,
    enabled_now: bool,
    pending_reload: bool = False,
    purge_paths: Sequence[str] = (),
    layers_drifted: bool = False,
) -> Plan:
    """Compute the actions that bring the host to ``spec``.

    ``desired``: rendered units; ``current``: text on disk (None if missing)
    for every candidate unit; ``live_overlay``/``live_tmpfs``: mountinfo
    entries at the mount point and the tmpfs root (None if not mounted);
    ``enabled_now``: UnitFileState of the overlay unit is 'enabled';
    ``pending_reload``: systemd reports NeedDaemonReload=yes for a unit;
    ``layers_drifted``: the live overlay's upper or work directory is gone or
    replaced (``_liveguard.layer_drift``): repaired like changed layers.
    """
    mounted = live_overlay is not None and live_overlay.fstype == "overlay"
    if spec.state == "absent":
        return _plan_removal(spec, current, mounted, live_tmpfs, enabled_now, purge_paths)
    pl = Plan()
    overlay = spec.unit
    for name, text in desired.items():
        if strip_header(current.get(name)) != strip_header(text):
            pl.write[name] = text
    _sort_other_units(pl, current, keep=desired)
    mount_changed = overlay in pl.write and parse_unit(current.get(overlay)).body("Mount") != parse_unit(
        desired[overlay]
    ).body("Mount")
    live_ok = False
    if mounted and live_overlay is not None:
        live_ok = live_matches(spec, parse_overlay_options(live_overlay.super_options), live_overlay.mount_options)
    _plan_mount_state(spec, pl, mounted, stale=mounted and (not live_ok or mount_changed or layers_drifted))
    _plan_obsolete_units(spec, pl, mounted, live_tmpfs)
    pl.daemon_reload = bool(pl.write or pl.remove or pending_reload)
    # A tmpfs whose options changed while it stays mounted is resized by remount.
    if (
        spec.upper == "tmpfs"
        and live_tmpfs is not None
        and spec.tmpfs_unit in pl.write
        and parse_unit(current.get(spec.tmpfs_unit)).body("Mount") != parse_unit(desired[spec.tmpfs_unit]).body("Mount")
    ):
        pl.reload_units.append(spec.tmpfs_unit)
    install_changed = overlay in pl.write and parse_unit(current.get(overlay)).body("Install") != parse_unit(
        desired[overlay]
    ).body("Install")
    if spec.enabled:
        if not enabled_now:
            pl.enable.append(overlay)
        elif install_changed:
            pl.reenable.append(overlay)
    elif enabled_now:
        pl.disable.append(overlay)
    return pl


def _sort_other_units(pl: Plan, current: Mapping[str, str | None], keep: Mapping[str, str]) -> None:
    """Existing candidate units not in ``keep``: ours are removed, others' left alone (and reported)."""
    for name, cur in current.items():
        if name in keep or cur is None:
            continue
        if is_managed(cur):
            pl.remove.append(name)
        else:
            pl.keep_unmanaged.append(name)


def _plan_removal(
    spec: OverlaySpec,
    current: Mapping[str, str | None],
    mounted: bool,
    live_tmpfs: MountInfo | None,
    enabled_now: bool,
    purge_paths: Sequence[str],
) -> Plan:
    """state=absent: stop what runs, remove our units, disable, purge what was asked."""
    pl = Plan()
    overlay = spec.unit
    if mounted:
        pl.stop.append(overlay)
    for name in (spec.prepare_unit, spec.tmpfs_unit):
        cur = current.get(name)
        if name == spec.tmpfs_unit and live_tmpfs is not None and is_managed(cur):
            pl.stop.append(name)
        elif name == spec.prepare_unit and cur is not None and is_managed(cur):
            pl.stop.append(name)
    _sort_other_units(pl, current, keep={})
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


def _plan_mount_state(spec: OverlaySpec, pl: Plan, mounted: bool, stale: bool) -> None:
    """Start, restart (apply=restart), stop or leave for the next boot, by state."""
    overlay = spec.unit
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


def _plan_obsolete_units(spec: OverlaySpec, pl: Plan, mounted: bool, live_tmpfs: MountInfo | None) -> None:
    """Obsolete tmpfs/prepare units (the upper kind changed).

    The live overlay Requires= them, so stopping them would stop it: only
    when it goes down; otherwise they stay until the next boot.
    """
    overlay_down = not mounted or spec.unit in pl.stop
    for name in list(pl.remove):
        if name not in (spec.tmpfs_unit, spec.prepare_unit):
            continue
        if not overlay_down:
            pl.remove.remove(name)
            pl.reboot_required = True
            continue
        if name == spec.prepare_unit or live_tmpfs is not None:
            pl.stop.append(name)
