# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""The phases of converging one overlay on the host.

The mount module is a thin shell around ``converge()``; other modules that
must change an overlay's units (restacking an upper, converging many
overlays in one call, ``_bulk``) use the same phases instead of a second
implementation:

``prepare()`` reads the host and plans (no change), ``refuse_if_busy()``,
``apply_files()`` writes directories and unit files, one ``daemon-reload``,
``activate()`` starts/stops/enables; ``rollback()`` undoes a failed run.
Only module ``main()`` functions call ``exit_json``/``fail_json``: failures
here are raised as ``ModuleFailure`` carrying the partial result.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import (
    _host,
    _mountinfo,
    _names,
    _plan,
    _restarts,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    BusyError,
    ModuleFailure,
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._host import (
    make_dirs_secure,
    read_facts,
    read_mounts,
    remove_created,
    remove_unit,
    write_unit,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import (
    mount_at,
    parse_overlay_options,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._plan import (
    describe_mismatch,
    live_matches,
    plan_run,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._preflight import (
    preflight,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import (
    OverlaySpec,
    build_spec,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._units import (
    render_options,
    render_units,
)


class ActivationError(Exception):
    """Activation failed after something was changed; main() rolls back."""

    def __init__(self, step: str, cause: Exception) -> None:
        super().__init__("%s: %s" % (step, cause))
        self.step = step
        self.cause = cause


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


# ---------------------------------------------------------------------------
# The phases of one converge
# ---------------------------------------------------------------------------


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


def _fail(prep_result: dict[str, Any], exc: OverlayError, was_mounted: bool) -> ModuleFailure:
    result = dict(prep_result, changed=False, mounted=was_mounted, param=exc.param)
    if isinstance(exc, BusyError):
        result["holders"] = exc.holders
    return ModuleFailure(str(exc), result)


def prepare(
    sd: Systemd, params: dict[str, Any], *, diff: bool = False, mounts: list[_mountinfo.MountInfo] | None = None
) -> Prepared:
    """Validate, read the host's facts once, render, check, plan. Changes nothing; raises ModuleFailure on refusal."""
    result: dict[str, Any] = dict(
        changed=False, reboot_required=False, actions=[], created_directories=[], offline=sd.offline is not None
    )
    try:
        spec = build_spec(params)
    except OverlayError as exc:
        raise _fail(result, exc, False) from None
    result.update(
        unit=spec.unit,
        unit_path=os.path.join(_names.ROOTS.unit_dir, spec.unit),
        upperdir=spec.upperdir,
        workdir=spec.workdir,
    )
    was_mounted = False
    try:
        facts = read_facts(sd, spec, mounts)
        spec, was_mounted = facts.spec, facts.live is not None
        desired = render_units(spec) if spec.state != "absent" else {}
        if spec.state != "absent":
            result.update(units=list(desired), options=render_options(spec))
        warnings = preflight(spec, facts)
        pl = plan_run(spec, desired, facts)
        result["layer_drift"] = [d["key"] for d in facts.layer_drift]
    except OverlayError as exc:
        raise _fail(result, exc, was_mounted) from None
    except CommandError as exc:
        raise ModuleFailure(str(exc), dict(result, mounted=was_mounted, **command_keys(exc))) from None
    if spec.state == "absent":
        result["units"] = list(pl.remove)
    for name in pl.keep_unmanaged:
        warnings.append(
            "%s/%s exists but was not written by overlayfs.systemd; left alone" % (_names.ROOTS.unit_dir, name)
        )
    result["created_directories"] += pl.create_dirs
    result.update(
        actions=[a.text for a in pl.actions()],
        reboot_required=pl.reboot_required,
        changed=pl.changed,
        mounted=was_mounted,
    )
    changed_units = list(pl.write) + list(pl.remove)
    if diff and changed_units:
        result["diff"] = [unit_diff(n, facts.current.get(n), pl.write.get(n)) for n in changed_units]
    return Prepared(
        spec, pl, facts.current, facts.mounts, was_mounted, pl.make_dirs, pl.attribute_fixes, result, warnings
    )


def unit_diff(name: str, before: str | None, after: str | None) -> dict[str, str]:
    """One ``diff`` entry of the result for the unit file ``name``."""
    path = os.path.join(_names.ROOTS.unit_dir, name)
    return {"before": before or "", "after": after or "", "before_header": path, "after_header": path}


def command_keys(exc: Exception) -> dict[str, Any]:
    """The failure keys of a failed command (cmd, rc, stdout, stderr); {} for any other error."""
    if isinstance(exc, CommandError):
        return dict(cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr)
    return {}


def refuse_if_busy(prep: Prepared) -> None:
    """Refuse (ModuleFailure, nothing touched) when the run must stop a busy overlay."""
    if prep.plan.stop:
        busy = _host.busy_error(prep.spec, prep.plan.stop, prep.mounts)
        if busy is not None:
            raise _fail(prep.result, busy, prep.was_mounted)


def apply_files(module: AnsibleModule, sd: Systemd, prep: Prepared, *, stopped: bool = False) -> None:
    """Create directories, stop what must stop, write and remove unit files. Raises ActivationError.

    ``stopped``: the caller already stopped ``prep.plan.stop`` (a commit moves the upper in between).
    """
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
        stops = [] if stopped else pl.stop
        for verb, names, run in (("stop", stops, sd.stop), ("disable", pl.disable, sd.disable)):
            for name in names:
                step = "%s %s" % (verb, name)
                run(name)
        changes: list[tuple[str, str | None]] = list(pl.write.items())
        changes += [(name, None) for name in pl.remove]
        for name, text in changes:
            step = "%s %s" % ("remove" if text is None else "write", name)
            prep.touched.append(name)
            if text is None:
                remove_unit(name)
            else:
                write_unit(module, name, text)
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
                live = verify_mount(spec)
                _host.record_layers(spec.unit, live)
    except (CommandError, OverlayError, OSError) as exc:
        raise ActivationError(step, exc) from exc
    for name in pl.enable:
        sd.enable(name)
    for name in pl.reenable:
        sd.reenable(name)
    for target in pl.purge:
        if os.path.lexists(target):
            shutil.rmtree(target)


def live_mounts(sd: Systemd) -> list[_mountinfo.MountInfo]:
    """mountinfo, or nothing offline (a /proc in an image root's chroot shows the build host's mounts)."""
    return [] if sd.offline is not None else read_mounts()


def offline_warning(sd: Systemd) -> str:
    """The one warning of an offline run: the mode, not what this run did (check mode and no-op runs warn too)."""
    return (
        "offline run (%s): unit files and their [Install] links are managed as systemctl enable does offline; "
        "no daemon-reload, nothing is started or stopped. Overlays with state=mounted mount at the next boot"
        % sd.offline
    )


def finish(prep: Prepared, sd: Systemd | None = None) -> dict[str, Any]:
    """The module result after a successful run: the live state read back."""
    final = mount_at(live_mounts(sd) if sd is not None else read_mounts(), prep.spec.path)
    prep.result["mounted"] = final is not None and final.fstype == "overlay"
    return prep.result


def rollback(module: AnsibleModule, sd: Systemd, prep: Prepared) -> list[str]:
    """Undo what this run did (units written, directories created, the overlay stopped); returns the problems met."""
    spec = prep.spec
    problems = []
    for name in prep.touched:
        try:
            old = prep.current.get(name)
            if old is None:
                remove_unit(name)
            else:
                write_unit(module, name, old)
        except OSError as exc:
            problems.append("restore %s: %s" % (name, exc))
    if prep.touched:
        try:
            sd.daemon_reload()
        except CommandError as exc:
            problems.append(str(exc))
    if prep.was_mounted and mount_at(live_mounts(sd), spec.path) is None:
        try:
            sd.start(spec.unit)
        except CommandError as exc:
            problems.append("restart of the previous overlay: %s" % exc)
    workdirs = (spec.workdir,) if spec.workdir else ()
    removal_problems, kept = remove_created(prep.created, live_mounts(sd), workdirs=workdirs)
    problems += removal_problems + ["kept %s: it %s" % (k["path"], k["reason"]) for k in kept]
    return problems


def rollback_failure(module: AnsibleModule, sd: Systemd, prep: Prepared, exc: ActivationError) -> ModuleFailure:
    """Roll back what this run did and describe the failure."""
    spec = prep.spec
    journal = "\n".join(
        t
        for t in (sd.journal_tail(u) for u in [spec.unit, spec.prepare_unit, spec.tmpfs_unit] if u in prep.current)
        if t
    )
    problems = rollback(module, sd, prep)
    final = mount_at(live_mounts(sd), spec.path)
    result = dict(prep.result, mounted=final is not None and final.fstype == "overlay", journal=journal)
    cause = exc.cause
    msg = (
        "%s failed; rolled back the unit files and removed the directories this run created (none a live mount uses)."
        % (exc.step)
    )
    msg += " %s" % cause
    if problems:
        msg += " Rollback problems: %s" % "; ".join(problems)
    result.update(command_keys(cause))
    return ModuleFailure(msg, result)


def failure_after_change(module: AnsibleModule, sd: Systemd, prep: Prepared, exc: ActivationError) -> ModuleFailure:
    """The failure of a run that changed something: rolled back, or (removing) reported as it is."""
    if prep.spec.state == "absent":
        # Removing: nothing to roll back to; report what failed.
        cause = exc.cause
        result = dict(prep.result, mounted=prep.was_mounted)
        result.update(command_keys(cause))
        return ModuleFailure(str(cause), result)
    return rollback_failure(module, sd, prep, exc)


def converge(module: AnsibleModule, sd: Systemd, params: dict[str, Any]) -> dict[str, Any]:
    """Converge one overlay to ``params`` (the mount module's parameters); returns the module result.

    Check mode stops after planning. Raises ModuleFailure (with the result to
    return) when refused, busy, or when activation failed and was rolled back.
    The units the run's stops took down with them are started again in
    every case (``restarted_units``).
    """
    prep = prepare(sd, params, diff=module._diff)
    if sd.offline is not None:
        module.warn(offline_warning(sd))
    for w in prep.warnings:
        module.warn(w)
    if module.check_mode:
        return prep.result
    refuse_if_busy(prep)
    before = dependents_before(sd, [prep])
    failure: ModuleFailure | None = None
    try:
        apply_files(module, sd, prep)
        if prep.plan.daemon_reload:
            try:
                sd.daemon_reload()
            except CommandError as exc:
                raise ActivationError("daemon-reload", exc) from exc
        activate(module, sd, prep)
    except ActivationError as exc:
        failure = failure_after_change(module, sd, prep, exc)
    except CommandError as exc:
        failure = ModuleFailure(str(exc), dict(prep.result, mounted=prep.was_mounted, **command_keys(exc)))
    back = _restarts.bring_back(sd, before, CommandError)
    result = prep.result if failure is not None else finish(prep, sd)
    failure = with_brought_back(back, failure.result if failure else result, failure)
    if failure is not None:
        raise failure
    return result


def dependents_before(
    sd: Systemd, preps: list[Prepared], exclude: tuple[str, ...] = (), removals: bool = False
) -> list[str]:
    """The active units the planned stops take down with them (none when nothing stops).

    A removal's stops count only with ``removals`` (the mounts module, which
    rewrites the aggregate target without the removed overlays); a lone
    removal stops what requires the overlay on purpose.
    """
    stopping = [u for p in preps if removals or p.spec.state != "absent" for u in p.plan.stop]
    removed = {u for p in preps for u in p.plan.remove}
    try:
        found = _restarts.active_dependents(stopping, sd.show)
    except CommandError:  # best effort: the run goes on without bookkeeping rather than failing before changing
        return []
    return [u for u in found if u not in removed and u not in exclude]


def with_brought_back(
    back: _restarts.BroughtBack, result: dict[str, Any], failure: ModuleFailure | None
) -> ModuleFailure | None:
    """Record ``restarted_units`` (and ``failed_units``) in ``result``; returns the run's failure, if any."""
    result["restarted_units"] = back.restarted
    if not back.failed:
        return failure
    result["failed_units"] = back.failed
    msg = back.message() or ""
    if failure is not None:
        failure.msg = "%s; %s" % (failure.msg, msg)
        return failure
    return ModuleFailure(msg, result)
