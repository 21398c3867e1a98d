# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The host facts about one overlay: a record, filled once by ``_host.read_facts``.

The preflight and the plan read these facts and never the host, so one
declaration travels one way: validate, read the facts, render, check,
plan, apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import MountInfo
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import OverlaySpec


@dataclass(frozen=True)
class MountPoint:
    """The mount point directory as found (state mounted/present, nothing mounted there)."""

    islink: bool
    exists: bool
    isdir: bool
    entries: list[str] | None


@dataclass
class HostFacts:
    """What the host says about one overlay, read before anything is rendered or planned."""

    #: The spec with the upper root's numeric owner and mode resolved (not for state=absent).
    spec: OverlaySpec
    mounts: list[MountInfo]
    live: MountInfo | None
    live_tmpfs: MountInfo | None
    #: Unit name -> text on disk (None: no file) for every unit the overlay may have.
    current: dict[str, str | None]
    enabled_now: bool
    pending_reload: bool
    util_linux: tuple[int, int] | None = None
    kernel: tuple[int, int] | None = None
    #: Lower layer -> "" (a directory), "does not exist" or "is not a directory".
    lowers: dict[str, str] = field(default_factory=dict)
    #: st_dev of the nearest existing ancestors of a persistent upperdir and workdir (None: unreadable).
    layer_devs: tuple[int, int] | None = None
    workdir_fresh: bool = True
    mount_point: MountPoint | None = None
    #: The fstab that also lists the mount point (None: it does not).
    fstab: str | None = None
    tmpfs_upper_entries: list[str] = field(default_factory=list)
    #: Existing directories purge=true would delete (state=absent), and those of them that are symlinks.
    purge_targets: list[str] = field(default_factory=list)
    symlinks: set[str] = field(default_factory=set)
    #: Path -> its missing directories, top-down (upperdir, workdir, the mount point).
    missing: dict[str, list[str]] = field(default_factory=dict)
    #: (uid, gid, mode) of an existing persistent upper root.
    upper_root: tuple[int, int, int] | None = None
    #: Systemd does not run here (an image root): nothing is live, nothing is started or stopped.
    offline: bool = False
    #: The live overlay's upper/work directories gone or replaced: [{key, path, message}] (_liveguard.layer_drift).
    layer_drift: list[dict[str, Any]] = field(default_factory=list)
