# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""Bulk mode: converge many overlays (the mounts module) with the phases of ``_converge``.

Declarations are validated against the mount module's argument spec,
prepared together against one mountinfo read, refused all at once, then
applied with one daemon-reload at most; the aggregate target comes last.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.overlayfs.systemd.plugins.module_utils import _names, _restarts, _units
from ansible_collections.overlayfs.systemd.plugins.module_utils._converge import (
    ActivationError,
    Prepared,
    activate,
    apply_files,
    command_keys,
    dependents_before,
    failure_after_change,
    finish,
    live_mounts,
    offline_warning,
    prepare,
    refuse_if_busy,
    unit_diff,
    with_brought_back,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    ModuleFailure,
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._host import (
    FACT_PROPS,
    managed_overlays,
    managed_units,
    read_text,
    remove_unit,
    write_unit,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._plan import Action
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import (
    ARGUMENT_SPEC,
    REQUIRED_IF,
    REQUIRED_TOGETHER,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._units import (
    check_target_name,
)


def validate_params(params: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Check one overlay's parameters against ARGUMENT_SPEC as AnsibleModule would; (completed, errors)."""
    validator = ArgumentSpecValidator(ARGUMENT_SPEC, required_together=REQUIRED_TOGETHER, required_if=REQUIRED_IF)
    res = validator.validate(params)
    return res.validated_parameters, list(res.error_messages)


@dataclass
class BulkItem:
    """One overlay of a bulk run: declared, or (exclusive) an undeclared one to remove."""

    path: str
    params: dict[str, Any]
    removal: bool = False
    prep: Prepared | None = None
    error: ModuleFailure | None = None
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

    def actions(self) -> list[Action]:
        out = [Action("write", self.name)] if self.write else []
        out += [Action("disable", s) for s in self.stale] + [Action("remove", s) for s in self.stale]
        out += [Action("enable", self.name)] if self.enable else []
        return out + ([Action("start", self.name)] if self.start else [])


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
            item.error = ModuleFailure("; ".join(errors), dict(changed=False))
        elif key in seen:
            item.error = ModuleFailure(
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
    current = read_text(os.path.join(_names.ROOTS.unit_dir, name))
    if current is not None and not _units.is_managed(current):
        raise OverlayError(
            "target %s/%s exists and was not written by overlayfs.systemd; remove it or choose another target name"
            % (_names.ROOTS.unit_dir, name),
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
        # Offline nothing starts: the target is reached at the next boot.
        start=sd.offline is None and props.get("ActiveState") != "active",
        stale=stale,
    )


def converge_many(
    module: AnsibleModule,
    sd: Systemd,
    *,
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
    activation fails is rolled back alone. Raises ModuleFailure (with the
    full result) when any overlay was refused, busy or failed.
    """
    if sd.offline is not None:
        module.warn(offline_warning(sd))
    items, problems = _declare(overlays, defaults or {})
    if exclusive:
        problems += _declare_removals(items, purge)
    # Reading the host: one systemctl show for every overlay's units and the target, not one per overlay.
    names = [n for it in items if it.error is None for n in _candidate_units(it.path)] + ([target] if target else [])
    tplan: TargetPlan | None = None
    with sd.prefetched(names, FACT_PROPS):
        problems += _prepare_all(module, sd, items)
        if target:
            try:
                tplan = _plan_target(sd, target, items, exclusive)
            except OverlayError as exc:
                problems.append(str(exc))
    result = _bulk_result(module, sd, items, tplan)
    if problems:
        result["changed"] = False
        raise ModuleFailure(
            "%d overlay problem(s), nothing was changed: %s" % (len(problems), " | ".join(problems)), result
        )
    if module.check_mode:
        return _warn_reboot(module, result)
    work = _refuse_busy(items)
    before = dependents_before(
        sd, [prep for dummy, prep in work], exclude=tuple(tplan.stale) if tplan else (), removals=tplan is not None
    )
    work = _apply_files_all(module, sd, work)
    if tplan is not None:
        _write_target(module, sd, tplan, items, work)
    reload_needed = any(prep.plan.daemon_reload for dummy, prep in work)
    if sd.offline is None and (reload_needed or (tplan is not None and (tplan.write or tplan.stale))):
        try:
            sd.daemon_reload()
        except CommandError as exc:
            for it, prep in work:
                it.error = failure_after_change(module, sd, prep, ActivationError("daemon-reload", exc))
            work = []
    _activate_all(module, sd, work)
    # Also when an overlay failed (a busy one): what the restarts took down comes back.
    back = _restarts.bring_back(sd, before, CommandError)
    failed = [it for it in items if it.error is not None]
    stopped = sd.offline is None and (any(prep.plan.stop for dummy, prep in work) or bool(tplan and tplan.stale))
    target_error = _start_target(sd, tplan, stopped) if tplan is not None and not failed else None
    result = _bulk_result(module, sd, items, tplan)
    failure = None
    if target_error is not None:
        failure = ModuleFailure(
            "every overlay converged, but %s failed: %s" % (tplan.name if tplan else "the target", target_error),
            dict(result, **command_keys(target_error)),
        )
    elif failed:
        failure = ModuleFailure("", result)
    failure = with_brought_back(back, failure.result if failure else result, failure)
    if failed and target_error is None and failure is not None:
        failure.msg = _failed_message(items, failed, tplan, result["restarted_units"]) + failure.msg
    if failure is not None:
        raise failure
    return _warn_reboot(module, result)


def _warn_reboot(module: AnsibleModule, result: dict[str, Any]) -> dict[str, Any]:
    notice = reboot_notice(result["results"])
    if notice:
        module.warn(notice)
    return result


def _declare_removals(items: list[BulkItem], purge: bool) -> list[str]:
    """Append a removal item for every managed overlay not declared (exclusive); returns the problems."""
    problems = []
    declared = {it.path for it in items}
    for path, unit in sorted(managed_overlays().items()):
        if path not in declared:
            params, errors = validate_params({"path": path, "state": "absent", "purge": purge})
            item = BulkItem(path, params, removal=True)
            if errors:  # pragma: no cover - a recorded path that no longer validates
                item.error = ModuleFailure("; ".join(errors), dict(changed=False, unit=unit))
                problems.append("%s (undeclared, %s): %s" % (path, unit, item.error.msg))
            items.append(item)
    return problems


def _candidate_units(path: str) -> list[str]:
    """The units an overlay at ``path`` may have; [] for a path prepare() will refuse anyway."""
    try:
        return _names.candidate_units(path)
    except OverlayError:
        return []


def _prepare_all(module: AnsibleModule, sd: Systemd, items: list[BulkItem]) -> list[str]:
    """Prepare every item against one mountinfo read; returns the refusals."""
    problems = []
    mounts = live_mounts(sd)
    for it in items:
        if it.error is not None:
            continue
        try:
            it.prep = prepare(sd, it.params, diff=module._diff, mounts=mounts)
        except ModuleFailure as exc:
            it.error = exc
            problems.append("%s: %s" % (it.path, exc.msg))
            continue
        for w in it.prep.warnings:
            module.warn(w)
    return problems


def _refuse_busy(items: list[BulkItem]) -> list[tuple[BulkItem, Prepared]]:
    """Leave busy overlays alone (reported); returns the others."""
    work: list[tuple[BulkItem, Prepared]] = []
    for it in items:
        if it.prep is None:  # pragma: no cover - refused items stopped the run above
            continue
        try:
            refuse_if_busy(it.prep)
        except ModuleFailure as exc:
            it.error, it.busy = exc, True
            continue
        work.append((it, it.prep))
    return work


def _apply_files_all(
    module: AnsibleModule, sd: Systemd, work: list[tuple[BulkItem, Prepared]]
) -> list[tuple[BulkItem, Prepared]]:
    """Write the files of each overlay of ``work``; returns those still to activate."""
    work = list(work)
    for it, prep in list(work):
        try:
            apply_files(module, sd, prep)
        except ActivationError as exc:
            it.error = failure_after_change(module, sd, prep, exc)
            work.remove((it, prep))
    return work


def _write_target(
    module: AnsibleModule, sd: Systemd, tplan: TargetPlan, items: list[BulkItem], work: list[tuple[BulkItem, Prepared]]
) -> None:
    """Remove stale targets and write the target, before the daemon-reload; a failure rolls every item back."""
    try:
        for name in tplan.stale:
            sd.disable(name)
            remove_unit(name)
        if tplan.write:
            write_unit(module, tplan.name, tplan.text)
    except (CommandError, OSError) as exc:
        # Before the daemon-reload: nothing is active yet; report what is written so far.
        for it, prep in work:
            it.error = failure_after_change(module, sd, prep, ActivationError("write %s" % tplan.name, exc))
        raise ModuleFailure(
            "writing %s failed: %s" % (tplan.name, exc),
            dict(_bulk_result(module, sd, items, tplan), **command_keys(exc)),
        ) from None


def _activate_all(module: AnsibleModule, sd: Systemd, work: list[tuple[BulkItem, Prepared]]) -> None:
    for it, prep in work:
        try:
            activate(module, sd, prep)
            finish(prep, sd)
        except ActivationError as exc:
            it.error = failure_after_change(module, sd, prep, exc)
        except CommandError as exc:  # enable/reenable after a successful start: nothing to roll back
            it.error = ModuleFailure(str(exc), dict(prep.result, **command_keys(exc)))


def _start_target(sd: Systemd, tplan: TargetPlan, stopped: bool) -> CommandError | None:
    """Enable and start the target once every overlay converged; returns the command that failed."""
    try:
        if tplan.enable:
            sd.enable(tplan.name)
        # Stopping a required overlay (restart, removal) stops the target too: then read it again.
        if not stopped:
            if tplan.start:
                sd.start(tplan.name)
        elif sd.show([tplan.name], ["ActiveState"]).get(tplan.name, {}).get("ActiveState") != "active":
            tplan.start = True
            sd.start(tplan.name)
    except CommandError as exc:
        return exc
    return None


def _failed_message(
    items: list[BulkItem], failed: list[BulkItem], tplan: TargetPlan | None, restarted: list[str]
) -> str:
    busy = [it.path for it in failed if it.busy]
    msg = "%d of %d overlays failed" % (len(failed), len(items))
    if busy:
        msg += " (busy, left untouched: %s)" % ", ".join(busy)
    if tplan is None:
        target = ""
    elif tplan.name in restarted:
        target = " (%s started again)" % tplan.name
    else:
        target = " (%s not started)" % tplan.name
    back = "; started again what the restarts stopped: %s" % ", ".join(restarted) if restarted else ""
    return msg + "; the others were converged%s: %s%s" % (
        target,
        " | ".join(it.report()["msg"] for it in failed),
        back,
    )


def reboot_notice(reports: list[dict[str, Any]]) -> str | None:
    """The warning of a run whose live overlays wait for a reboot (their units changed), None if none do."""
    paths = [r["path"] for r in reports if r.get("reboot_required")]
    if not paths:
        return None
    return "%s: the live overlays differ from their units; reboot (reboot_required) to apply." % ", ".join(paths)


def _bulk_result(module: AnsibleModule, sd: Systemd, items: list[BulkItem], tplan: TargetPlan | None) -> dict[str, Any]:
    declared = [it.report() for it in items if not it.removal]
    removals = [it.report() for it in items if it.removal]
    result: dict[str, Any] = dict(
        results=declared,
        removed=[it.path for it in items if it.removal and it.error is None],
        removed_results=removals,
        reboot_required=any(r.get("reboot_required") for r in declared + removals),
        offline=sd.offline is not None,
    )
    changed = any(r.get("changed") for r in declared + removals)
    if tplan is not None:
        actions = [a.text for a in tplan.actions()]
        changed = changed or bool(actions)
        result["target"] = dict(
            name=tplan.name,
            unit_path=os.path.join(_names.ROOTS.unit_dir, tplan.name),
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
