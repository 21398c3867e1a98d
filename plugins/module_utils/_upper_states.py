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
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _converge as conv
from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _host, _names, _oci
from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy as lc
from ansible_collections.overlayfs.systemd.plugins.module_utils import _upper as up
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    ModuleFailure,
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._host import (
    make_dirs_secure,
)
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


def commit(module: AnsibleModule, sd: Systemd, ov: Overlay, result: dict[str, Any]) -> None:
    p = module.params
    dest = dest_param(p["dest"], result)
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
    check_dest(ov, dest, result)
    if ov.live is None:
        raise er.ModuleFailure(
            "the overlay at %s is not mounted; committed copies the merged view. Mount it first "
            "(overlayfs.systemd.mount state: mounted)" % ov.path,
            dict(result, param="path"),
        )
    refuse_redirects(ov, "commit", result)
    require_confirm(
        module,
        ov,
        "replaces the lower layers of %s and empties its upper (%d entries)" % (ov.path, insp.entries),
        result,
    )
    root = os.lstat(ov.path)
    new_lowers = [dest] if p["squash"] else [dest] + unit_lowers
    new_params = dict(
        ov.params,
        lowerdir=new_lowers,
        apply="restart",
        owner=str(root.st_uid),
        group=str(root.st_gid),
        mode="%04o" % stat.S_IMODE(root.st_mode),
    )
    actions: list[str] = result["actions"]
    result.update(changed=True, lowerdir=new_lowers)
    diffs = [upper_diff(ov, insp)] if module._diff else []
    if module.check_mode:
        try:
            prep = conv.prepare(sd, dict(new_params, state="present"), diff=module._diff)
        except er.ModuleFailure as exc:
            raise er.ModuleFailure(exc.msg, {**result, **exc.result}) from None
        planned = [Action("stop", ov.unit)] + [a for a in prep.plan.actions() if a.kind in ("write", "remove")]
        planned += [Action("daemon_reload"), Action("start", ov.unit)]
        actions += [Action("copy", dest, ov.path).text] + with_emptying(planned, ov)
        if module._diff:
            result["diff"] = diffs + prep.result.get("diff", [])
        result["lowerdir"] = ov.lowers
        return
    refuse_if_in_use(ov, result)
    parent = os.path.dirname(dest)
    created: list[str] = []
    partial = lc.aside_name(dest, "partial")
    try:
        make_dirs_secure(parent, 0o755, 0, 0, created, 0o755)
        result["copied"] = lc.copy_tree(ov.path, partial)
        # Stacked on the old lowers, the copy must hide what the merged view no longer shows.
        result["masked"] = [] if p["squash"] else lc.mask_lowers(partial, unit_lowers)
        os.rename(partial, dest)
    except (OSError, OverlayError) as exc:
        lc.remove_tree(partial)
        for d in reversed(created):
            lc.remove_tree(d)
        raise er.ModuleFailure(
            "copying %s to %s failed (%s); removed the partial copy, nothing else was changed" % (ov.path, dest, exc),
            dict(result, changed=False, lowerdir=ov.lowers),
        ) from None
    actions.append(Action("copy", dest, ov.path).text)
    try:
        unit_diffs = restack(module, sd, ov, new_params, dest, result)
    except er.ModuleFailure:
        lc.remove_tree(dest)
        for d in reversed(created):
            lc.remove_tree(d)
        raise
    if module._diff:
        result["diff"] = diffs + unit_diffs


def restack(
    module: AnsibleModule, sd: Systemd, ov: Overlay, new_params: dict[str, Any], dest: str, result: dict[str, Any]
) -> list[dict[str, str]]:
    """Stop, write the units with the new lowers, swap in empty upper/work, start: the mount module's phases.

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
    try:
        conv.apply_files(module, sd, prep)
        try:
            ensure_unmounted(ov)
        except OverlayError as exc:
            raise conv.ActivationError("stop %s" % ov.unit, exc) from exc
        asides.append((ov.upperdir, lc.swap_empty(ov.upperdir, "commit", template=dest)))
        asides.append((ov.workdir, lc.swap_empty(ov.workdir, "commit")))
        if prep.plan.daemon_reload:
            try:
                sd.daemon_reload()
            except CommandError as exc:
                raise conv.ActivationError("daemon-reload", exc) from exc
        conv.activate(module, sd, prep)
    except (conv.ActivationError, OSError, CommandError) as exc:
        problems = restore(asides)
        act = exc if isinstance(exc, conv.ActivationError) else conv.ActivationError("empty the upper", exc)
        err = conv.rollback_failure(module, sd, prep, act)
        raise er.ModuleFailure(
            "%s The old upper and work directories were put back; removed %s.%s"
            % (err.msg, dest, (" Problems: %s" % "; ".join(problems)) if problems else ""),
            {**result, **err.result, "lowerdir": ov.lowers},
        ) from None
    for pair in asides:
        lc.remove_tree(pair[1])
    res = conv.finish(prep)
    actions += with_emptying([a for a in prep.plan.actions() if a.kind != "create_directory"], ov)
    result["mounted"] = res["mounted"]
    return list(res.get("diff", []))


def with_emptying(actions: list[Action], ov: Overlay) -> list[str]:
    """The converge actions (as text) with the emptying of upper and work where it happens: before the reload/start."""
    at = next((i for i, a in enumerate(actions) if a.kind in ("daemon_reload", "reload", "start")), len(actions))
    steps = actions[:at] + [Action("empty", ov.upperdir), Action("empty", ov.workdir)] + actions[at:]
    return [a.text for a in steps]


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

    def write(fd: int) -> tuple[HashingWriter, Any]:
        sink = HashingWriter(fd)
        return sink, _oci.write_oci_layer(ov.upperdir, sink, p["compression"])

    try:
        sink, stats = _host.write_file(module=module, path=dest, mode=ARCHIVE_MODE, write=write)
    except (OSError, up.UpperError) as exc:
        raise er.ModuleFailure("writing %s failed: %s" % (dest, exc), dict(result, changed=False)) from None
    result["archive"] = {
        "entries": stats.entries,
        "whiteouts": stats.whiteouts,
        "opaque": stats.opaque,
        "bytes": stats.bytes,
        "size": sink.size,
        "digest": "sha256:" + sink.sha.hexdigest(),
        "skipped": stats.skipped,
    }


def run_state(
    handler: Callable[[AnsibleModule, Systemd, Overlay, dict[str, Any]], None],
    module: AnsibleModule,
    sd: Systemd,
    ov: Overlay,
    result: dict[str, Any],
) -> None:
    """Run one state's handler on the loaded overlay; every refusal becomes a ModuleFailure."""
    try:
        handler(module, sd, ov, result)
    except up.UpperError as exc:
        raise ModuleFailure(str(exc), dict(result, param=exc.param)) from None
    except (OverlayError, CommandError) as exc:
        raise ModuleFailure(str(exc), result) from None


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
