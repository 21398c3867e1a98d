# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The offline variant of the phase that talks to systemd: unit file states and enabling as symlinks.

``systemd_for(module)`` observes the host (``_offline.offline_reason``) and
returns the ``systemctl`` wrapper, or, when systemd does not run (an image
root baked through a chroot), an ``OfflineSystemd``: ``show`` answers from
the unit directory, ``enable``/``disable``/``reenable`` write and remove
the ``[Install]`` symlinks the way ``systemctl enable`` does offline, and
nothing is started, stopped or reloaded (the plan holds no such step).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ansible_collections.overlayfs.systemd.plugins.module_utils import _names
from ansible_collections.overlayfs.systemd.plugins.module_utils._offline import (
    INSTALL_KEYS,
    OFFLINE_ENV,
    BootObservation,
    install_links,
    links_to_remove,
    offline_reason,
    unit_file_state,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd


def observe(env: dict[str, str] | None = None) -> BootObservation:
    """Read SYSTEMD_OFFLINE, the booted marker directory and whether / is PID 1's root."""
    env = dict(os.environ) if env is None else env
    marker = _names.ROOTS.booted_marker
    in_chroot: bool | None
    try:
        mine, pid1 = os.stat("/"), os.stat(os.path.join(_names.ROOTS.proc, "1", "root") + "/")
        in_chroot = (mine.st_dev, mine.st_ino) != (pid1.st_dev, pid1.st_ino)
    except OSError:
        in_chroot = None
    return BootObservation(
        env_offline=env.get(OFFLINE_ENV),
        booted_marker=os.path.isdir(marker) and not os.path.islink(marker),
        in_chroot=in_chroot,
    )


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except OSError:
        return None


class OfflineSystemd(Systemd):
    """The wrapper's interface without a running systemd: links instead of systemctl."""

    def __init__(self, module: Any, reason: str) -> None:
        self.module = module
        self.offline = reason
        self.systemctl = ""
        self.journalctl = None
        self.mount_bin = module.get_bin_path("mount", required=False)
        self.commands: list[list[str]] = []
        self._prefetched = None

    def _refuse(self, verb: str, unit: str = "") -> None:
        raise CommandError(
            ["systemctl", verb] + ([unit] if unit else []),
            1,
            "",
            "%s: nothing can be started, stopped or reloaded offline" % self.offline,
        )

    def daemon_reload(self) -> None:
        """Nothing to reload: no systemd runs (a rollback restoring units calls it)."""

    def start(self, unit: str) -> None:
        self._refuse("start", unit)

    def stop(self, unit: str) -> None:
        self._refuse("stop", unit)

    def reload(self, unit: str) -> None:
        self._refuse("reload", unit)

    def _links(self, unit: str) -> list[Any]:
        unit_dir = _names.ROOTS.unit_dir
        return install_links(unit, _read(os.path.join(unit_dir, unit)), unit_dir)

    def show(self, units: Sequence[str], props: Sequence[str]) -> dict[str, dict[str, str]]:
        """What systemctl would report of ``units`` on a host that has not booted: their unit file state."""
        out = {}
        for unit in units:
            exists = os.path.lexists(os.path.join(_names.ROOTS.unit_dir, unit))
            state = unit_file_state(self._links(unit), _readlink) if exists else ""
            values = dict(Id=unit, UnitFileState=state, ActiveState="inactive", NeedDaemonReload="no")
            out[unit] = {p: values.get(p, "") for p in ["Id"] + [p for p in props if p != "Id"]}
        return out

    def enable(self, unit: str) -> None:
        """Make the [Install] links of ``unit`` (each replaced atomically when it points elsewhere)."""
        for link in self._links(unit):
            if _readlink(link.path) == link.target:
                continue
            parent = os.path.dirname(link.path)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o755)
            tmp = os.path.join(parent, ".%s.overlayfs-link-%d" % (os.path.basename(link.path)[:100], os.getpid()))
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(link.target, tmp)
            os.replace(tmp, link.path)

    def disable(self, unit: str) -> None:
        """Remove every link in the unit directory's .wants/.requires/.upholds directories enabling ``unit``."""
        unit_dir = _names.ROOTS.unit_dir
        suffixes = tuple(s for dummy, s in INSTALL_KEYS)
        found: dict[str, str | None] = {}
        try:
            names = os.listdir(unit_dir)
        except OSError:
            names = []
        for d in names:
            if d.endswith(suffixes):
                path = os.path.join(unit_dir, d, unit)
                if os.path.islink(path):
                    found[path] = _readlink(path)
        for link in self._links(unit):
            if os.path.islink(link.path):
                found[link.path] = _readlink(link.path)
        for path in links_to_remove(unit, os.path.join(unit_dir, unit), found):
            os.unlink(path)

    def reenable(self, unit: str) -> None:
        self.disable(unit)
        self.enable(unit)

    def journal_tail(self, unit: str, lines: int = 20) -> str:
        return ""


def systemd_for(module: Any) -> Systemd:
    """The systemctl wrapper, or its offline variant when systemd does not run on the host."""
    reason = offline_reason(observe())
    return Systemd(module) if reason is None else OfflineSystemd(module, reason)
