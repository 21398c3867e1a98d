# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""The states of the upper module: inspect, discard, commit (restack) and export an overlay's upper.

``run_state()`` reads the managed overlay once (``load_overlay``) and runs
the handler of the requested state; failures are raised as
``ModuleFailure`` carrying the partial result, never exited from here.
Changing the overlay's units goes through the phases of ``_converge``.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _commit_resume as resume
from ansible_collections.overlayfs.systemd.plugins.module_utils import _converge as conv
from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _host, _layer, _names, _oci, _restarts, _stack
from ansible_collections.overlayfs.systemd.plugins.module_utils import _image as img
from ansible_collections.overlayfs.systemd.plugins.module_utils import _journal as jn
from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy as lc
from ansible_collections.overlayfs.systemd.plugins.module_utils import _leftovers as leftovers
from ansible_collections.overlayfs.systemd.plugins.module_utils import _upper as up
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    ModuleFailure,
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._host import (
    make_dirs_secure,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._liveguard import list_dir
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import (
    MountInfo,
    mount_at,
    parse_overlay_options,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    normalize_path,
    overlay_id,
    prepare_unit_name,
    tmpfs_dir_for,
    unit_name,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._plan import Action
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import API_PATHS, build_spec
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._units import parse_unit, read_declaration

#: The archive holds whatever the upper holds (secrets included): owner only.
ARCHIVE_MODE = 0o600


@dataclass
class Overlay:
    """The managed overlay at ``path`` as its units and mountinfo show it."""

    path: str
    unit: str
    params: dict[str, Any]
    upper: str
    upperdir: str
    workdir: str
    lowers: list[str]
    live: MountInfo | None
    live_options: dict[str, str | None]
    #: The active units a stop of this overlay takes down (run_state fills it for discard and commit).
    dependents: list[str] = field(default_factory=list)

    @property
    def tmpfs_dir(self) -> str | None:
        return tmpfs_dir_for(overlay_id(self.path)) if self.upper == "tmpfs" else None


def load_overlay(sd: Systemd, raw_path: str, result: dict[str, Any]) -> Overlay:
    """Read the managed units and the live mount; refuse overlays this collection does not manage."""
    try:
        path = normalize_path(raw_path, "path")
        unit = unit_name(path)
    except OverlayError as exc:
        raise er.ModuleFailure(str(exc), dict(result, param=exc.param)) from None
    result["unit"] = unit
    text = _host.read_text(os.path.join(_names.ROOTS.unit_dir, unit))
    keys = parse_unit(text).managed
    if text is None or not keys:
        raise er.ModuleFailure(
            "%s/%s %s; overlayfs.systemd.upper only works on overlays managed by overlayfs.systemd.mount"
            % (
                _names.ROOTS.unit_dir,
                unit,
                "does not exist" if text is None else "was not written by overlayfs.systemd",
            ),
            dict(result, param="path"),
        )
    oid = keys.get("Id", "")
    tmpfs_text = _host.read_text(os.path.join(_names.ROOTS.unit_dir, unit_name(tmpfs_dir_for(oid))))
    prepare_text = _host.read_text(os.path.join(_names.ROOTS.unit_dir, prepare_unit_name(oid)))
    enabled = sd.show([unit], ["UnitFileState"]).get(unit, {}).get("UnitFileState") == "enabled"
    try:
        params = read_declaration(text, tmpfs_text, prepare_text, enabled)
    except OverlayError as exc:
        raise er.ModuleFailure(str(exc), dict(result, param=exc.param)) from None
    kind = params["upper"]
    result.update(upper=kind, upperdir=keys.get("Upperdir"), workdir=keys.get("Workdir"))
    if kind == "none" or not keys.get("Upperdir") or not keys.get("Workdir"):
        raise er.ModuleFailure("the overlay at %s has no upper layer (upper: none)" % path, dict(result, param="path"))
    live = mount_at(_host.read_mounts(), path)
    if live is not None and live.fstype != "overlay":
        live = None
    lowers = list(params["lowerdir"])
    live_options: dict[str, str | None] = {}
    if live is not None:
        opts = parse_overlay_options(live.super_options, live.mount_options)
        live_options = opts.options
        if opts.upperdir != keys["Upperdir"]:
            raise er.ModuleFailure(
                "the overlay mounted at %s uses upperdir %s, but its unit records %s; apply the unit with "
                "overlayfs.systemd.mount first" % (path, opts.upperdir, keys["Upperdir"]),
                dict(result, param="path", mounted=True),
            )
        lowers = list(opts.lowerdir)
    result.update(lowerdir=lowers, mounted=live is not None)
    return Overlay(path, unit, params, kind, keys["Upperdir"], keys["Workdir"], lowers, live, live_options)


def inspect(ov: Overlay) -> up.Inspection:
    if not os.path.isdir(ov.upperdir):
        return up.Inspection()
    return up.inspect_upper(ov.upperdir, ov.lowers)


def require_confirm(module: AnsibleModule, ov: Overlay, what: str, result: dict[str, Any]) -> None:
    if module.check_mode or module.params["confirm"] == ov.unit:
        return
    given = module.params["confirm"]
    raise er.ModuleFailure(
        "state=%s %s; set confirm: %s to proceed%s"
        % (
            module.params["state"],
            what,
            ov.unit,
            "" if given is None else " (confirm %r does not name this overlay's unit)" % given,
        ),
        dict(result, param="confirm"),
    )


#: The way out of a busy overlay here (the mount module's apply: next_boot does not apply).
BUSY_HINT = "Stop these processes or unmount these"


def refuse_if_in_use(ov: Overlay, result: dict[str, Any]) -> None:
    """Refuse (nothing changed) when processes or mounts use the overlay."""
    busy = _host.busy_error(build_spec(ov.params), [ov.unit], _host.read_mounts(), hint=BUSY_HINT)
    if busy is not None:
        raise er.ModuleFailure(str(busy), dict(result, holders=busy.holders, param="path"))


def stop_overlay(sd: Systemd, ov: Overlay, actions: list[str]) -> None:
    """Stop the overlay unit."""
    sd.stop(ov.unit)
    actions.append(Action("stop", ov.unit).text)


def ensure_unmounted(ov: Overlay) -> None:
    """Refuse to empty an upper that any overlay still mounts (never delete in a live upper)."""
    for m in _host.read_mounts():
        if m.fstype == "overlay" and (
            m.mount_point == ov.path or parse_overlay_options(m.super_options).upperdir == ov.upperdir
        ):
            raise OverlayError(
                "the upper %s is still mounted at %s; nothing was deleted" % (ov.upperdir, m.mount_point),
                "path",
            )


def upper_diff(ov: Overlay, insp: up.Inspection) -> dict[str, str]:
    return {"before": insp.summary(), "after": "", "before_header": ov.upperdir, "after_header": ov.upperdir}


def discard(module: AnsibleModule, sd: Systemd, ov: Overlay, result: dict[str, Any]) -> None:
    insp = inspect(ov)
    result.update(insp.as_result())
    if insp.empty:
        return
    require_confirm(module, ov, "deletes the upper layer of %s (%d entries)" % (ov.path, insp.entries), result)
    actions: list[str] = result["actions"]
    was_mounted = ov.live is not None
    result["changed"] = True
    if module._diff:
        result["diff"] = [upper_diff(ov, insp)]
    if module.check_mode:
        actions += [Action("stop", ov.unit).text] if was_mounted else []
        actions += [Action("empty", ov.upperdir).text, Action("empty", ov.workdir).text]
        actions += [Action("start", ov.unit).text] if was_mounted else []
        return
    if was_mounted:
        refuse_if_in_use(ov, result)
    asides: list[tuple[str, str]] = []
    try:
        if was_mounted:
            stop_overlay(sd, ov, actions)
        ensure_unmounted(ov)
        for d in (ov.upperdir, ov.workdir):
            asides.append((d, lc.swap_empty(d, "discard")))
            actions.append(Action("empty", d).text)
        if was_mounted:
            # It was mounted a moment ago: what lies under the mount point was accepted then.
            conv.converge(module, sd, dict(ov.params, allow_nonempty_mountpoint=True))
            actions.append(Action("start", ov.unit).text)
    except (OSError, OverlayError, CommandError, er.ModuleFailure) as exc:
        msg = getattr(exc, "msg", None) or str(exc)
        problems = restore(asides)
        if was_mounted and mount_at(_host.read_mounts(), ov.path) is None:
            try:
                sd.start(ov.unit)
            except CommandError as err:
                problems.append(str(err))
        raise er.ModuleFailure(
            "discarding the upper of %s failed; the old upper and work directories were put back. %s%s"
            % (ov.path, msg, (" Problems: %s" % "; ".join(problems)) if problems else ""),
            dict(result, mounted=mount_at(_host.read_mounts(), ov.path) is not None),
        ) from None
    for pair in asides:
        lc.remove_tree(pair[1])


def restore(asides: list[tuple[str, str]]) -> list[str]:
    problems = []
    for path, aside in reversed(asides):
        try:
            lc.restore_swap(path, aside)
        except OSError as exc:
            problems.append("restore %s from %s: %s" % (path, aside, exc))
    return problems


def dest_param(raw: str, result: dict[str, Any]) -> str:
    """O(dest) normalised (and recorded in the result)."""
    try:
        result["dest"] = normalize_path(raw, "dest")
    except OverlayError as exc:
        raise er.ModuleFailure(str(exc), dict(result, param="dest")) from None
    return result["dest"]


def check_dest(ov: Overlay, dest: str, result: dict[str, Any]) -> None:
    layers = [("the mount point", ov.path), ("upperdir", ov.upperdir), ("workdir", ov.workdir)]
    layers += [("lowerdir", x) for x in ov.lowers]
    if ov.tmpfs_dir:
        layers.append(("the tmpfs of the upper", ov.tmpfs_dir))
    layers += [("the API file system", x) for x in API_PATHS]
    problems = lc.dest_problems(dest, layers)
    if dest == "/" or problems:
        raise er.ModuleFailure(
            "%s; choose a path outside the overlay and its layers (for example under /var/lib/overlayfs/layers)"
            % "; ".join(problems or ["dest cannot be /"]),
            dict(result, param="dest"),
        )


def effective_feature(live_options: dict[str, str | None], name: str) -> str:
    """A feature's live value: mountinfo shows it only when it differs from the overlay module's default."""
    if name in live_options:
        return live_options[name] or ""
    try:
        with open(os.path.join(_names.ROOTS.overlay_params, name), encoding="ascii") as fh:
            return "on" if fh.read().strip() in ("Y", "y", "1") else "off"
    except OSError:
        return "off"


def refuse_redirects(ov: Overlay, verb: str, result: dict[str, Any]) -> None:
    on = [k for k in ("redirect_dir", "metacopy") if effective_feature(ov.live_options, k) == "on"]
    if on:
        raise er.ModuleFailure(
            "the overlay at %s is mounted with %s: its upper entries point at data in the lower layers, so the "
            "module refuses to %s it. Mount it without %s (overlayfs.systemd.mount) first"
            % (ov.path, ", ".join("%s=on" % k for k in on), verb, " and ".join(on)),
            dict(result, param="state"),
        )


def pending_journal(ov: Overlay, result: dict[str, Any]) -> jn.Journal | None:
    """The journal of an interrupted commit of ``ov``, or None; an unreadable one is refused."""
    try:
        return resume.read_journal(ov.upperdir)
    except (jn.JournalError, OSError) as exc:
        raise er.ModuleFailure(
            "%s: %s; nothing was changed. Check the upper %s and remove the journal"
            % (jn.journal_path(ov.upperdir), exc, ov.upperdir),
            dict(result, param="path"),
        ) from None


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


class HashingWriter:
    """A binary sink that hashes and counts what it forwards to a file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        _host.write_all(self.fd, data)
        return len(data)

    def flush(self) -> None:
        pass


def export(module: AnsibleModule, ov: Overlay, result: dict[str, Any]) -> None:
    p = module.params
    dest = dest_param(p["dest"], result)
    check_dest(ov, dest, result)
    if os.path.isdir(dest) or (os.path.lexists(dest) and not p["force"]):
        raise er.ModuleFailure(
            "dest %s already exists; give a new file name or force: true to overwrite it" % dest,
            dict(result, param="dest"),
        )
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise er.ModuleFailure("the directory of dest %s does not exist; create %s first" % (dest, parent), result)
    refuse_redirects(ov, "export", result)
    tag = None
    if p["format"] == "image":
        default_tag = "overlayfs-systemd/%s:latest" % (re.sub(r"[^a-z0-9]+", "-", ov.path.lower()).strip("-") or "root")
        tag = img.check_repo_tag(p["image_tag"] or default_tag, "image_tag")
    insp = inspect(ov)
    result.update(insp.as_result())
    result["changed"] = True
    result["actions"].append(Action("write", dest).text)
    if module._diff:
        result["diff"] = [{"before": "", "after": insp.summary(), "before_header": dest, "after_header": dest}]
    if module.check_mode:
        return
    if not os.path.isdir(ov.upperdir):
        raise er.ModuleFailure("the upper directory %s does not exist (is the tmpfs mounted?)" % ov.upperdir, result)
    epoch = p["source_date_epoch"]

    def write(fd: int) -> tuple[HashingWriter, Any]:
        sink = HashingWriter(fd)
        if tag is None:
            return sink, _oci.write_oci_layer(ov.upperdir, sink, p["compression"], epoch)
        scratch = lc.aside_name(dest, "image")
        os.mkdir(scratch, 0o700)
        try:
            layers = list(reversed(ov.lowers)) + [ov.upperdir]
            return sink, _layer.write_stack_image(
                layers, sink, scratch, repo_tag=tag, compression=p["compression"], epoch=epoch
            )
        finally:
            lc.remove_tree(scratch)

    try:
        sink, stats = _host.write_file(module=module, path=dest, mode=ARCHIVE_MODE, write=write)
    except (OSError, up.UpperError, img.LayerError) as exc:
        raise er.ModuleFailure("writing %s failed: %s" % (dest, exc), dict(result, changed=False)) from None
    digest = "sha256:" + sink.sha.hexdigest()
    if tag is not None:
        result["image"] = dict(stats, archive_digest=digest, size=sink.size)
        return
    result["archive"] = {
        "entries": stats.entries,
        "whiteouts": stats.whiteouts,
        "opaque": stats.opaque,
        "bytes": stats.bytes,
        "size": sink.size,
        "digest": digest,
        "diff_id": stats.diff_id,
        "skipped": stats.skipped,
    }


def run_state(
    handler: Callable[[AnsibleModule, Systemd, Overlay, dict[str, Any]], None],
    module: AnsibleModule,
    sd: Systemd,
    ov: Overlay,
    result: dict[str, Any],
) -> None:
    """Run one state's handler on the loaded overlay; every refusal becomes a ModuleFailure.

    A changing state first cleans the leftovers of dead runs beside its paths.
    A state that restarts the overlay starts again what the stop took down
    (``restarted_units``), also when it failed.
    """
    failure: ModuleFailure | None = None
    restarts = False
    before: list[str] = []
    try:
        pending = pending_journal(ov, result)
        if pending is not None:
            refuse_pending(handler, ov, pending, result)
        live = ov.live is not None
        restarts = handler in (discard, commit) and not module.check_mode and (live or pending is not None)
        before = _restarts.active_dependents([ov.unit], sd.show) if restarts and ov.live is not None else []
        before += [u for u in (pending.dependents if pending else ()) if u not in before]
        ov.dependents = before
        if handler is not inspect_state:
            clean_leftovers(module, ov, result, pending)
        handler(module, sd, ov, result)
    except (up.UpperError, img.LayerError) as exc:
        failure = ModuleFailure(str(exc), dict(result, param=exc.param))
    except (OverlayError, CommandError) as exc:
        failure = ModuleFailure(str(exc), result)
    except ModuleFailure as exc:
        failure = exc
    if restarts:
        back = _restarts.bring_back(sd, before, CommandError)
        failure = conv.with_brought_back(back, failure.result if failure else result, failure)
    if failure is not None:
        raise failure


def refuse_pending(handler: Callable[..., None], ov: Overlay, j: jn.Journal, result: dict[str, Any]) -> None:
    """Only ``committed`` acts on an overlay with an interrupted commit; ``inspected`` reports it."""
    result["interrupted_commit"] = j.as_result()
    if handler in (commit, inspect_state):
        return
    raise er.ModuleFailure(
        "the commit of %s to %s (pid %d) was interrupted in phase %s; finish or undo it first: state=committed with "
        "dest: %s and squash: %s (%s)"
        % (ov.path, j.dest, j.pid, j.phase, j.dest, j.squash, jn.journal_path(ov.upperdir)),
        dict(result, param="state"),
    )


def clean_leftovers(
    module: AnsibleModule, ov: Overlay, result: dict[str, Any], pending: jn.Journal | None = None
) -> None:
    """Find the leftovers of dead runs beside dest, the upper and the work directory; remove the safe ones.

    The layers an interrupted commit (``pending``) moved aside are its
    resume's to handle. Check mode only reports them (``cleaned`` says
    "would remove").
    """
    paths = [x for x in (ov.upperdir, ov.workdir) if x]
    dest = module.params.get("dest")
    if dest and os.path.isabs(dest):
        paths.append(os.path.normpath(dest))
    mounts = _host.read_mounts()
    found = leftovers.find(paths, list_dir)
    if pending is not None:
        found = [x for x in found if not (x.pid == pending.pid and x.tag == "commit")]
    plan = leftovers.classify(
        found,
        pid_alive=lambda pid: leftovers.pid_alive(pid, _names.ROOTS.proc),
        overlays=_host.live_layers(mounts),
        mount_points=[m.mount_point for m in mounts],
    )
    if not module.check_mode:
        for x in plan.remove:
            lc.remove_tree(x.path)
    result["cleaned"] = plan.report(done=not module.check_mode)
    result["leftovers_kept"] = plan.kept
    for k in plan.kept:
        module.warn("left %s in place: %s" % (k["path"], k["reason"]))
    if plan.remove:
        result["changed"] = True
        result["actions"].extend("remove leftover %s" % x.path for x in plan.remove)


def inspect_state(module: AnsibleModule, sd: Systemd, ov: Overlay, result: dict[str, Any]) -> None:
    result.update(inspect(ov).as_result())


def export_state(module: AnsibleModule, sd: Systemd, ov: Overlay, result: dict[str, Any]) -> None:
    export(module, ov, result)


#: The module's states and their handlers (the argument spec takes its choices from here).
STATES: dict[str, Callable[[AnsibleModule, Systemd, Overlay, dict[str, Any]], None]] = {
    "inspected": inspect_state,
    "discarded": discard,
    "committed": commit,
    "exported": export_state,
}
