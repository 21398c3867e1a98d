# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""The overlay the ``upper`` module's states act on, and the helpers they share.

``load_overlay()`` reads the managed units and the live mount once into an
``Overlay``; the checks and steps that more than one state needs (the
confirmation, the busy refusal, the checks of ``dest``, the journal of an
interrupted commit, putting moved-aside directories back) live here, so
that ``_commit`` and ``_upper_states`` share them without importing each
other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _commit_resume as resume
from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _host, _names
from ansible_collections.overlayfs.systemd.plugins.module_utils import _journal as jn
from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy as lc
from ansible_collections.overlayfs.systemd.plugins.module_utils import _upper as up
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import OverlayError
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
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import API_PATHS, build_spec
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._units import parse_unit, read_declaration


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
