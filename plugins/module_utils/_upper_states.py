# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""The states of the upper module: inspect, discard, commit (restack) and export an overlay's upper.

``run_state()`` runs the handler of the requested state on the managed
overlay ``load_overlay`` (``_upper_overlay``) read once; failures are
raised as ``ModuleFailure`` carrying the partial result, never exited from
here. The ``committed`` state lives in ``_commit``. Changing the overlay's
units goes through the phases of ``_converge``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _converge as conv
from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _host, _layer, _names, _oci, _restarts
from ansible_collections.overlayfs.systemd.plugins.module_utils import _image as img
from ansible_collections.overlayfs.systemd.plugins.module_utils import _journal as jn
from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy as lc
from ansible_collections.overlayfs.systemd.plugins.module_utils import _leftovers as leftovers
from ansible_collections.overlayfs.systemd.plugins.module_utils import _upper as up
from ansible_collections.overlayfs.systemd.plugins.module_utils import _upper_overlay as ovl
from ansible_collections.overlayfs.systemd.plugins.module_utils._commit import commit
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    ModuleFailure,
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._liveguard import list_dir
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import mount_at
from ansible_collections.overlayfs.systemd.plugins.module_utils._plan import Action
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper_overlay import Overlay

#: The archive holds whatever the upper holds (secrets included): owner only.
ARCHIVE_MODE = 0o600


def stop_overlay(sd: Systemd, ov: Overlay, actions: list[str]) -> None:
    """Stop the overlay unit."""
    sd.stop(ov.unit)
    actions.append(Action("stop", ov.unit).text)


def discard(module: AnsibleModule, sd: Systemd, ov: Overlay, result: dict[str, Any]) -> None:
    insp = ovl.inspect(ov)
    result.update(insp.as_result())
    if insp.empty:
        return
    ovl.require_confirm(module, ov, "deletes the upper layer of %s (%d entries)" % (ov.path, insp.entries), result)
    actions: list[str] = result["actions"]
    was_mounted = ov.live is not None
    result["changed"] = True
    if module._diff:
        result["diff"] = [ovl.upper_diff(ov, insp)]
    if module.check_mode:
        actions += [Action("stop", ov.unit).text] if was_mounted else []
        actions += [Action("empty", ov.upperdir).text, Action("empty", ov.workdir).text]
        actions += [Action("start", ov.unit).text] if was_mounted else []
        return
    if was_mounted:
        ovl.refuse_if_in_use(ov, result)
    asides: list[tuple[str, str]] = []
    try:
        if was_mounted:
            stop_overlay(sd, ov, actions)
        ovl.ensure_unmounted(ov)
        for d in (ov.upperdir, ov.workdir):
            asides.append((d, lc.swap_empty(d, "discard")))
            actions.append(Action("empty", d).text)
        if was_mounted:
            # It was mounted a moment ago: what lies under the mount point was accepted then.
            conv.converge(module, sd, dict(ov.params, allow_nonempty_mountpoint=True))
            actions.append(Action("start", ov.unit).text)
    except (OSError, OverlayError, CommandError, er.ModuleFailure) as exc:
        msg = getattr(exc, "msg", None) or str(exc)
        problems = ovl.restore(asides)
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
    dest = ovl.dest_param(p["dest"], result)
    ovl.check_dest(ov, dest, result)
    if os.path.isdir(dest) or (os.path.lexists(dest) and not p["force"]):
        raise er.ModuleFailure(
            "dest %s already exists; give a new file name or force: true to overwrite it" % dest,
            dict(result, param="dest"),
        )
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise er.ModuleFailure("the directory of dest %s does not exist; create %s first" % (dest, parent), result)
    ovl.refuse_redirects(ov, "export", result)
    tag = None
    if p["format"] == "image":
        default_tag = "overlayfs-systemd/%s:latest" % (re.sub(r"[^a-z0-9]+", "-", ov.path.lower()).strip("-") or "root")
        tag = img.check_repo_tag(p["image_tag"] or default_tag, "image_tag")
    insp = ovl.inspect(ov)
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
        pending = ovl.pending_journal(ov, result)
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
    result.update(ovl.inspect(ov).as_result())


def export_state(module: AnsibleModule, sd: Systemd, ov: Overlay, result: dict[str, Any]) -> None:
    export(module, ov, result)


#: The module's states and their handlers (the argument spec takes its choices from here).
STATES: dict[str, Callable[[AnsibleModule, Systemd, Overlay, dict[str, Any]], None]] = {
    "inspected": inspect_state,
    "discarded": discard,
    "committed": commit,
    "exported": export_state,
}
