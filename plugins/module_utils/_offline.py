# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Offline runs: an image root where systemd does not run (pure rules, data in, data out).

Whether a run is offline follows systemd's own tests: ``SYSTEMD_OFFLINE``
(a boolean) decides when set; otherwise a process whose ``/`` is not PID 1's
root is in a chroot (systemctl then prints "Running in chroot, ignoring
command"), and a host without the directory ``/run/systemd/system`` was not
booted with systemd (``sd_booted()``). Offline, enabling a unit is what
``systemctl enable`` does without a daemon: symlinks named by its
``[Install]`` section.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ansible_collections.overlayfs.systemd.plugins.module_utils._units import parse_unit

OFFLINE_ENV = "SYSTEMD_OFFLINE"

#: [Install] keys that make links, and the directory suffix each links in (systemctl enable).
INSTALL_KEYS = (("WantedBy", ".wants"), ("RequiredBy", ".requires"), ("UpheldBy", ".upholds"))

_TRUE = ("1", "yes", "y", "true", "t", "on")
_FALSE = ("0", "no", "n", "false", "f", "off")


@dataclass(frozen=True)
class BootObservation:
    """What the host shows about its init system (read by ``_offline_host.observe``)."""

    #: The value of SYSTEMD_OFFLINE (None: unset).
    env_offline: str | None
    #: /run/systemd/system is a directory, not a symlink (sd_booted()).
    booted_marker: bool
    #: / is not PID 1's root (None: /proc/1/root cannot be read, for example no /proc in the chroot).
    in_chroot: bool | None


def offline_reason(obs: BootObservation) -> str | None:
    """Why systemd cannot be asked on this host (None: it runs and answers)."""
    env = (obs.env_offline or "").strip().lower()
    if env in _TRUE:
        return "%s=%s is set" % (OFFLINE_ENV, obs.env_offline)
    if env in _FALSE:
        return None
    if obs.in_chroot:
        return "running in a chroot (/ is not the root of PID 1)"
    if not obs.booted_marker:
        return "systemd is not running (no /run/systemd/system)"
    return None


@dataclass(frozen=True)
class Link:
    """One symlink ``systemctl enable`` makes: ``path`` -> ``target``."""

    path: str
    target: str


def install_links(name: str, text: str | None, unit_dir: str) -> list[Link]:
    """The links enabling the unit ``name`` (text ``text``) in ``unit_dir``, in [Install] order."""
    target = os.path.join(unit_dir, name)
    suffixes = dict(INSTALL_KEYS)
    links: list[Link] = []
    for key, value in parse_unit(text).entries("Install"):
        for word in value.split():
            if key in suffixes:
                link = Link(os.path.join(unit_dir, word + suffixes[key], name), target)
            elif key == "Alias":
                link = Link(os.path.join(unit_dir, word), target)
            else:
                continue
            if link not in links:
                links.append(link)
    return links


def unit_file_state(links: list[Link], readlink: Callable[[str], str | None]) -> str:
    """``enabled`` when every link of ``links`` exists and points at its unit, else ``disabled``.

    ``links`` empty (no [Install] links) reads ``static``, as systemctl says.
    """
    if not links:
        return "static"
    return "enabled" if all(readlink(link.path) == link.target for link in links) else "disabled"


def links_to_remove(name: str, target: str, found: dict[str, str | None]) -> list[str]:
    """The symlinks of ``found`` (path -> its target) that enable ``name``: what ``systemctl disable`` removes."""
    return sorted(
        path
        for path, points in found.items()
        if points is not None and os.path.basename(path) == name and points in (target, name)
    )
