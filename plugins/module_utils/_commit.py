# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""The ``committed`` state of the upper module: the upper becomes a new lower layer and the overlay is restacked.

``commit()`` finishes or undoes an interrupted commit first
(``_commit_resume``), then ``commit_fresh()`` refuses what it must, copies
(squash) or moves (stacked, ``_stack``) the upper to ``dest`` and restacks
the overlay through the phases of ``_converge`` (``restack``), recording
each step in the commit journal (``_journal``) before it.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _commit_resume as resume
from ansible_collections.overlayfs.systemd.plugins.module_utils import _converge as conv
from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _host, _stack
from ansible_collections.overlayfs.systemd.plugins.module_utils import _journal as jn
from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy as lc
from ansible_collections.overlayfs.systemd.plugins.module_utils import _upper as up
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import OverlayError
from ansible_collections.overlayfs.systemd.plugins.module_utils._host import (
    make_dirs_secure,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._plan import Action
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper_overlay import (
    Overlay,
    check_dest,
    dest_param,
    ensure_unmounted,
    inspect,
    load_overlay,
    pending_journal,
    refuse_if_in_use,
    refuse_redirects,
    require_confirm,
    restore,
    upper_diff,
)


def commit(module: AnsibleModule, sd: Systemd, ov: Overlay, result: dict[str, Any]) -> None:
    """``committed``: the upper becomes the new top lower (stacked), or the merged view one layer (squash).

    An interrupted commit (its journal) is finished or undone first; undone,
    the commit runs again from the start.
    """
    p = module.params
    dest = dest_param(p["dest"], result)
    j = pending_journal(ov, result)
    if j is not None:
        if (j.dest, j.squash) != (dest, p["squash"]):
            raise er.ModuleFailure(
                "an interrupted commit of %s to %s (squash: %s, pid %d, phase %s) must be finished first; run "
                "state=committed with dest: %s and squash: %s"
                % (ov.path, j.dest, j.squash, j.pid, j.phase, j.dest, j.squash),
                dict(result, param="dest", interrupted_commit=j.as_result()),
            )
        # This run holds the host lock, so the journal's run is dead (its pid may be reused by now).
        if resume.resume(module, sd, ov.params, j, result) != "back" or module.check_mode:
            return
        ov = load_overlay(sd, ov.path, result)
        ov.dependents = list(j.dependents)
    commit_fresh(module, sd, ov, dest, result)


def _refuse_commit(ov: Overlay, dest: str, squash: bool, result: dict[str, Any]) -> None:
    """The refusals of a commit that depend on dest and the live mount (nothing changed yet)."""
    check_dest(ov, dest, result)
    if not squash:
        problem = _stack.dest_problem(dest, _host.read_mounts())
        if problem is not None:
            raise er.ModuleFailure(problem, dict(result, param="dest"))
    if ov.live is None:
        raise er.ModuleFailure(
            "the overlay at %s is not mounted; committed reads the live upper and merged view. Mount it first "
            "(overlayfs.systemd.mount state: mounted)" % ov.path,
            dict(result, param="path"),
        )
    refuse_redirects(ov, "commit", result)


def _commit_preview(
    module: AnsibleModule,
    sd: Systemd,
    ov: Overlay,
    dest: str,
    new_params: dict[str, Any],
    diffs: list[Any],
    result: dict[str, Any],
) -> None:
    """What a commit would do, in check mode: the actions and the unit diffs, nothing touched."""
    squash = module.params["squash"]
    actions: list[str] = result["actions"]
    try:
        prep = conv.prepare(sd, dict(new_params, state="present"), diff=module._diff)
    except er.ModuleFailure as exc:
        raise er.ModuleFailure(exc.msg, {**result, **exc.result}) from None
    planned = [Action("stop", ov.unit)] + [a for a in prep.plan.actions() if a.kind in ("write", "remove")]
    planned += [Action("daemon_reload"), Action("start", ov.unit)]
    first = [Action("copy", dest, ov.path).text] if squash else []
    moved = [] if squash else ["move %s to %s (rename, or copy of the upper only)" % (ov.upperdir, dest)]
    actions += first + with_emptying(planned, ov, moved)
    if module._diff:
        result["diff"] = diffs + prep.result.get("diff", [])
    result["lowerdir"] = ov.lowers


def commit_fresh(module: AnsibleModule, sd: Systemd, ov: Overlay, dest: str, result: dict[str, Any]) -> None:
    """A commit with no interrupted one pending."""
    p = module.params
    squash = p["squash"]
    insp = inspect(ov)
    result.update(insp.as_result())
    unit_lowers = list(ov.params["lowerdir"])
    if os.path.lexists(dest):
        if unit_lowers[0] == dest and ov.lowers[0] == dest and insp.empty:
            return
        raise er.ModuleFailure(
            "dest %s already exists; committed creates a new directory. Give a new path" % dest,
            dict(result, param="dest"),
        )
    _refuse_commit(ov, dest, squash, result)
    require_confirm(
        module,
        ov,
        "replaces the lower layers of %s and empties its upper (%d entries)" % (ov.path, insp.entries),
        result,
    )
    root = os.lstat(ov.path)
    new_lowers = [dest] if squash else [dest] + unit_lowers
    new_params = dict(
        ov.params,
        lowerdir=new_lowers,
        apply="restart",
        owner=str(root.st_uid),
        group=str(root.st_gid),
        mode="%04o" % stat.S_IMODE(root.st_mode),
    )
    result.update(changed=True, lowerdir=new_lowers, masked=[])
    diffs = [upper_diff(ov, insp)] if module._diff else []
    if module.check_mode:
        _commit_preview(module, sd, ov, dest, new_params, diffs, result)
        return
    refuse_if_in_use(ov, result)
    if not squash:
        try:
            _stack.check_upper(ov.upperdir)  # redirects and metacopy refused before anything stops
        except up.UpperError as exc:
            raise er.ModuleFailure(str(exc), dict(result, changed=False, lowerdir=ov.lowers, param=exc.param)) from None
    created: list[str] = []
    journal = jn.Journal(
        pid=os.getpid(),
        path=ov.path,
        unit=ov.unit,
        upperdir=ov.upperdir,
        workdir=ov.workdir,
        dest=dest,
        squash=squash,
        old_lowers=tuple(unit_lowers),
        new_lowers=tuple(new_lowers),
        owner=new_params["owner"],
        group=new_params["group"],
        mode=new_params["mode"],
        dependents=tuple(ov.dependents),
    )
    try:
        make_dirs_secure(os.path.dirname(dest), 0o755, 0, 0, created, 0o755)
        resume.write_journal(module, journal)  # before dest exists: a dead run's placeholder is undone
        if squash:
            squash_copy(ov, dest, result)
        else:
            os.mkdir(dest, 0o755)  # an empty placeholder the upper replaces after the stop (rename(2))
    except (OSError, OverlayError) as exc:
        _host.remove_created(created, _host.read_mounts())
        resume.remove_journal(ov.upperdir)
        raise er.ModuleFailure(
            "copying %s to %s failed (%s); removed the partial copy, nothing else was changed" % (ov.path, dest, exc),
            dict(result, changed=False, lowerdir=ov.lowers),
        ) from None
    try:
        unit_diffs = restack(module, sd, ov, new_params, dest, result, stacked=not squash, journal=journal)
    except er.ModuleFailure as exc:
        if result.get("method") != "rename":
            lc.remove_tree(dest)  # the placeholder or a copy; the upper itself is in its place
        if not os.path.lexists(dest):
            _host.remove_created(created, _host.read_mounts())
        if not getattr(exc, "keep_journal", False):
            resume.remove_journal(ov.upperdir)  # everything was put back
        raise
    if module._diff:
        result["diff"] = diffs + unit_diffs


def squash_copy(ov: Overlay, dest: str, result: dict[str, Any]) -> None:
    """``squash: true``: the whole merged view copied to a hidden sibling of dest, renamed when complete."""
    partial = lc.aside_name(dest, "partial")
    try:
        result["copied"] = lc.copy_tree(ov.path, partial)
        os.rename(partial, dest)
    except BaseException:
        lc.remove_tree(partial)
        raise
    result["actions"].append(Action("copy", dest, ov.path).text)


def stack_upper(
    module: AnsibleModule, ov: Overlay, dest: str, result: dict[str, Any], journal: jn.Journal
) -> tuple[jn.Journal, list[tuple[str, str]]]:
    """The stopped overlay's upper becomes ``dest``; an empty upper like the old one's root takes its place.

    The journal records each step before it happens (``move`` with the
    method, ``swap`` once ``dest`` is complete). Returns the journal and
    what ``restore`` needs to undo it: for a rename, the upper's way back
    from ``dest``; for a copy, the old upper moved aside.
    """
    asides: list[tuple[str, str]] = []
    method = "rename" if _stack.same_filesystem(ov.upperdir, dest) else "copy"
    j = resume.write_journal(module, journal.at("move", method))

    def before_copy() -> None:
        resume.write_journal(module, j.at("move", "copy"))

    how, counts = _stack.stack_upper(ov.upperdir, dest, check=False, before_copy=before_copy)
    result.update(method=how, copied=counts)
    j = resume.write_journal(module, j.at("swap", how))
    if how == "copy":
        asides.append((ov.upperdir, lc.swap_empty(ov.upperdir, "commit", template=dest)))
        return j, asides
    asides.append((ov.upperdir, dest))
    os.mkdir(ov.upperdir, 0o700)
    lc.copy_metadata(os.lstat(dest), up.read_xattrs(dest), ov.upperdir)
    return j, asides


def restack(
    module: AnsibleModule,
    sd: Systemd,
    ov: Overlay,
    new_params: dict[str, Any],
    dest: str,
    result: dict[str, Any],
    *,
    stacked: bool,
    journal: jn.Journal,
) -> list[dict[str, str]]:
    """Stop, move the upper to ``dest``, swap in empty upper/work, write the units with the new lowers, start.

    The mount module's phases, in the order that keeps the units on the old
    lowers until ``dest`` is complete; ``journal`` records each step before
    it (``_journal``), so a run killed anywhere is finished or undone by the
    next. ``stacked``: the stopped upper itself becomes ``dest``
    (``stack_upper``); otherwise ``dest`` is already the squashed copy.

    Returns the unit diffs. On failure the old upper and work come back and
    ``rollback_failure`` restores the old units and mount.
    """
    actions: list[str] = result["actions"]
    try:
        prep = conv.prepare(sd, new_params, diff=module._diff)
        conv.refuse_if_busy(prep)
    except er.ModuleFailure as exc:
        raise er.ModuleFailure(
            "%s; removed %s again, nothing else was changed" % (exc.msg, dest), {**result, **exc.result}
        ) from None
    for w in prep.warnings:
        module.warn(w)
    if ov.unit not in prep.plan.stop:
        raise er.ModuleFailure(
            "the restack plan of %s does not stop the overlay (%s); nothing was changed"
            % (ov.path, ", ".join(prep.result["actions"])),
            dict(result, lowerdir=ov.lowers),
        )
    asides: list[tuple[str, str]] = []
    step = "stop %s" % ov.unit
    try:
        for name in prep.plan.stop:
            step = "stop %s" % name
            sd.stop(name)
        ensure_unmounted(ov)
        step = "move %s to %s" % (ov.upperdir, dest)
        if stacked:
            journal, asides = stack_upper(module, ov, dest, result, journal)
        else:  # squash: dest is a copy of the merged view
            journal = resume.write_journal(module, journal.at("swap", "squash"))
            asides.append((ov.upperdir, lc.swap_empty(ov.upperdir, "commit", template=dest)))
        step = "empty %s" % ov.workdir
        asides.append((ov.workdir, lc.swap_empty(ov.workdir, "commit")))
        conv.apply_files(module, sd, prep, stopped=True)  # the units with the new lowers
        if prep.plan.daemon_reload:
            try:
                sd.daemon_reload()
            except CommandError as exc:
                raise conv.ActivationError("daemon-reload", exc) from exc
        conv.activate(module, sd, prep)
    except (conv.ActivationError, OSError, CommandError, OverlayError, up.UpperError) as exc:
        problems = restore(asides)
        act = exc if isinstance(exc, conv.ActivationError) else conv.ActivationError(step, exc)
        err = conv.rollback_failure(module, sd, prep, act)
        failure = er.ModuleFailure(
            "%s The old upper and work directories were put back%s.%s"
            % (
                err.msg,
                "" if result.get("method") == "rename" else "; removed %s" % dest,
                (
                    " Problems: %s; the commit journal %s stays for the next run"
                    % ("; ".join(problems), jn.journal_path(ov.upperdir))
                )
                if problems
                else "",
            ),
            {**result, **err.result, "lowerdir": ov.lowers},
        )
        failure.keep_journal = bool(problems)  # type: ignore[attr-defined]
        raise failure from None
    resume.remove_journal(ov.upperdir)  # the overlay runs on dest: what is moved aside is in dest
    for _path, aside in asides:
        if aside != dest:  # a renamed upper is the new layer now
            lc.remove_tree(aside)
    res = conv.finish(prep)
    moved = ["%s %s to %s" % (result["method"], ov.upperdir, dest)] if stacked else []
    actions += with_emptying([a for a in prep.plan.actions() if a.kind != "create_directory"], ov, moved)
    result["mounted"] = res["mounted"]
    return list(res.get("diff", []))


def with_emptying(actions: list[Action], ov: Overlay, before: list[str]) -> list[str]:
    """The converge actions (as text) with ``before`` and the emptying of upper and work where they happen.

    That is after the stop and the unit files, before the reload/start.
    """
    at = next((i for i, a in enumerate(actions) if a.kind in ("daemon_reload", "reload", "start")), len(actions))
    empty = [Action("empty", ov.upperdir).text, Action("empty", ov.workdir).text]
    return [a.text for a in actions[:at]] + before + empty + [a.text for a in actions[at:]]
