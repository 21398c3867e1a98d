# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""The commit journal on the host, and finishing or undoing a commit a killed run left (``_journal``).

:func:`write_journal` records a phase atomically (temp file, fsync, rename,
directory fsync) before the step; :func:`resume` reads the directories,
asks ``_journal.decide`` and acts: ``back`` removes ``dest`` (empty, or a
copy of data still in place) and starts the overlay on its old units;
``forward`` puts a fresh upper and work directory in place (the old upper
moved aside, never deleted before the overlay runs on ``dest``), writes the
units with the new lowers and starts it; ``done`` only cleans up.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _converge as conv
from ansible_collections.overlayfs.systemd.plugins.module_utils import _host, _stack
from ansible_collections.overlayfs.systemd.plugins.module_utils import _journal as jn
from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy as lc
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import ModuleFailure
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import mount_at, parse_overlay_options
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper import read_xattrs

#: The journal holds paths only, but like the unit files it is root's.
JOURNAL_MODE = 0o600


def read_journal(upperdir: str) -> jn.Journal | None:
    """The commit journal beside ``upperdir``, None when there is none; raises JournalError if unreadable."""
    text = _host.read_text(jn.journal_path(upperdir))
    return None if text is None else jn.from_text(text)


def write_journal(module: AnsibleModule, j: jn.Journal) -> jn.Journal:
    """Record ``j`` (durably, atomically) before the step it names; returns it."""
    data = j.to_text().encode("utf-8", "surrogateescape")
    _host.write_file(
        module=module, path=jn.journal_path(j.upperdir), mode=JOURNAL_MODE, write=lambda fd: _host.write_all(fd, data)
    )
    return j


def remove_journal(upperdir: str) -> None:
    path = jn.journal_path(upperdir)
    if os.path.lexists(path):
        os.unlink(path)
        fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _state(path: str) -> str:
    if not os.path.lexists(path):
        return jn.MISSING
    if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
        return jn.EMPTY
    return jn.DATA  # anything else counts as data: never removed as "empty"


def observe(j: jn.Journal) -> jn.Found:
    """The directories and the mount of ``j``'s overlay as they are now."""
    live = mount_at(_host.read_mounts(), j.path)
    lowers = None
    if live is not None and live.fstype == "overlay":
        lowers = tuple(parse_overlay_options(live.super_options, live.mount_options).lowerdir)
    aside = os.path.lexists(jn.aside_path(j.upperdir, "commit", j.pid))
    return jn.Found(_state(j.upperdir), _state(j.dest), aside, lowers)


def interrupted(j: jn.Journal, d: jn.Decision) -> dict[str, Any]:
    """The ``interrupted_commit`` result: the journal and what this run does (or would do) with it."""
    return dict(j.as_result(), path_journal=jn.journal_path(j.upperdir), action=d.action, reason=d.reason)


def resume(module: AnsibleModule, sd: Any, params: dict[str, Any], j: jn.Journal, result: dict[str, Any]) -> str:
    """Finish or undo the interrupted commit ``j`` (see ``_journal.decide``); returns the action taken.

    ``params``: the overlay's declaration as its units record it now.
    Raises ModuleFailure (the journal stays) when refused or when starting fails.
    """
    d = jn.decide(j, observe(j))
    result["interrupted_commit"] = interrupted(j, d)
    what = "an interrupted commit of %s to %s (pid %d, phase %s%s)" % (
        j.path,
        j.dest,
        j.pid,
        j.phase,
        ", " + j.method if j.method else "",
    )
    if d.action == "refuse":
        raise ModuleFailure("%s: %s" % (what, d.reason), dict(result, param="dest"))
    actions: list[str] = result["actions"]
    result["changed"] = True
    verb = {"back": "undo", "forward": "finish", "done": "clean up"}[d.action]
    actions.append("%s %s: %s" % (verb, what, d.reason))
    if module.check_mode:
        return d.action
    try:
        if d.action == "back":
            _back(module, sd, params, j, d, result)
            remove_journal(j.upperdir)
            return d.action
        if d.action == "forward":
            _forward(module, sd, params, j, d, result)
        else:
            result.update(method=j.method, lowerdir=list(j.new_lowers), masked=[], mounted=True)
        remove_journal(j.upperdir)
    except OSError as exc:
        raise ModuleFailure(
            "%s: %s failed: %s; the journal %s stays for the next run" % (what, verb, exc, jn.journal_path(j.upperdir)),
            dict(result, param="dest"),
        ) from None
    # The overlay runs on dest now: what the dead run moved aside is there.
    for beside in (j.upperdir, j.workdir):
        aside = jn.aside_path(beside, "commit", j.pid)
        if os.path.lexists(aside):
            lc.remove_tree(aside)
            result["cleaned"].append(dict(path=aside, beside=beside, kind="commit", pid=str(j.pid), action="removed"))
    return d.action


def _back(
    module: AnsibleModule, sd: Any, params: dict[str, Any], j: jn.Journal, d: jn.Decision, result: dict[str, Any]
) -> None:
    if d.dest == "rmdir":
        os.rmdir(j.dest)  # empty by the decision: rmdir fails rather than delete anything
    elif d.dest == "rmtree":
        lc.remove_tree(j.dest)  # a copy whose source is in place (the decision)
    if d.dest:
        result["actions"].append("remove %s" % j.dest)
    old = dict(params, lowerdir=list(j.old_lowers), allow_nonempty_mountpoint=True)
    try:
        res = conv.converge(module, sd, old)
    except ModuleFailure as exc:
        raise ModuleFailure(
            "undoing the interrupted commit of %s removed %s, but starting the overlay on its old lowers failed: %s"
            % (j.path, j.dest, exc.msg),
            {**result, **exc.result},
        ) from None
    result["actions"].extend(res["actions"])


def _forward(
    module: AnsibleModule, sd: Any, params: dict[str, Any], j: jn.Journal, d: jn.Decision, result: dict[str, Any]
) -> None:
    asides: list[tuple[str, str]] = []
    try:
        if j.method == "rename":
            _stack.strip_bookkeeping(j.dest)  # again: the run may have died before or while it did
        if d.upper == "make":
            os.mkdir(j.upperdir, 0o700)
            lc.copy_metadata(os.lstat(j.dest), read_xattrs(j.dest), j.upperdir)
        elif d.upper == "swap":
            asides.append((j.upperdir, lc.swap_empty(j.upperdir, "commit", template=j.dest)))
        if os.path.lexists(j.workdir):
            asides.append((j.workdir, lc.swap_empty(j.workdir, "commit")))
        else:
            os.mkdir(j.workdir, 0o700)
        new = dict(
            params,
            lowerdir=list(j.new_lowers),
            owner=j.owner,
            group=j.group,
            mode=j.mode,
            apply="restart",
            allow_nonempty_mountpoint=True,
        )
        res = conv.converge(module, sd, new)
    except (OSError, ModuleFailure) as exc:
        for path, aside in reversed(asides):
            lc.restore_swap(path, aside)
        raise ModuleFailure(
            "finishing the interrupted commit of %s to %s failed; the journal %s stays for the next run: %s"
            % (j.path, j.dest, jn.journal_path(j.upperdir), getattr(exc, "msg", None) or exc),
            {**result, **getattr(exc, "result", {})},
        ) from None
    result["actions"].extend(res["actions"])
    result.update(method=j.method, lowerdir=list(j.new_lowers), masked=[], mounted=res["mounted"])
    remove_journal(j.upperdir)
    for _path, aside in asides:  # this run's: the overlay runs on dest
        lc.remove_tree(aside)
