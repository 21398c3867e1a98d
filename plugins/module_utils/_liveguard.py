# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""What live mounts forbid: removing a layer in use, and calling a replaced layer "no drift".

Pure rules over :class:`LiveLayers` (one mounted overlay's layer paths, made
from parsed mountinfo by the caller) and directory listings passed in:

- :func:`removal_plan`: which directories a failed run created may its
  rollback remove. A directory that is a mount point, holds one, or is (or
  holds) the upper, work or a lower of any mounted overlay is kept, and so
  is every directory that holds something this run did not create. The
  plan only ever removes empty directories (``rmdir``, never a recursive
  delete), deepest first, so a race after planning cannot delete data.
- :func:`layer_drift`: an overlay whose upper or work directory is gone,
  replaced by another directory (another inode than the one recorded when
  it was mounted, or a workdir without the ``work`` directory the kernel
  made at mount) or not the directory its unit names.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# What the kernel creates inside a workdir at mount (removed with it, if empty).
KERNEL_WORKDIR_ENTRIES = ("work", "index")


def _within(child: str, parent: str) -> bool:
    return child == parent or parent == "/" or child.startswith(parent.rstrip("/") + "/")


@dataclass(frozen=True)
class LiveLayers:
    """The layer paths of one mounted overlay, as mountinfo shows them."""

    mount_point: str
    upperdir: str | None = None
    workdir: str | None = None
    lowerdir: tuple[str, ...] = ()

    def layers(self) -> list[tuple[str, str]]:
        out = [("upperdir", self.upperdir), ("workdir", self.workdir)] + [("lowerdir", x) for x in self.lowerdir]
        return [(role, path) for role, path in out if path]


@dataclass
class RemovalPlan:
    """``remove``: directories to ``rmdir``, deepest first; ``kept``: {path, reason} of the others."""

    remove: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)


def live_use(path: str, overlays: Iterable[LiveLayers], mount_points: Iterable[str]) -> str | None:
    """Why ``path`` must not be removed because of a live mount, None if no live mount uses it."""
    for ov in overlays:
        for role, layer in ov.layers():
            if _within(layer, path):
                what = "is" if layer == path else "holds"
                return "%s the %s %s of the overlay mounted at %s" % (what, role, layer, ov.mount_point)
    for mp in mount_points:
        if _within(mp, path):
            return "is a mount point" if mp == path else "holds the mount point %s" % mp
    return None


def removal_plan(
    created: Sequence[str],
    *,
    overlays: Iterable[LiveLayers],
    mount_points: Iterable[str],
    listdir: Callable[[str], list[str] | None],
    workdirs: Iterable[str] = (),
) -> RemovalPlan:
    """Which of the directories this run ``created`` its rollback may remove.

    ``listdir(path)`` returns the names in a directory (None when it is gone
    or not a directory). A directory is removed only when it is not used by
    a live mount and holds nothing but directories this plan removes (and,
    in one of ``workdirs``, what the kernel makes there at mount).
    """
    overlays = list(overlays)
    mount_points = list(mount_points)
    workdir_set = set(workdirs)
    plan = RemovalPlan()
    removable: set[str] = set()
    for d in sorted(set(created), key=lambda p: (-p.count("/"), p)):
        names = listdir(d)
        if names is None:
            continue
        reason = live_use(d, overlays, mount_points)
        if reason is None:
            foreign = []
            for name in sorted(names):
                child = os.path.join(d, name)
                if child in removable:
                    continue
                if d in workdir_set and name in KERNEL_WORKDIR_ENTRIES and not listdir(child):
                    removable.add(child)
                    plan.remove.append(child)
                    continue
                foreign.append(name)
            if foreign:
                reason = "holds data this run did not write (%s)" % ", ".join(foreign[:5])
        if reason is None:
            removable.add(d)
            plan.remove.append(d)
        else:
            plan.kept.append(dict(path=d, reason=reason))
    plan.kept.sort(key=lambda k: k["path"])
    return plan


def apply_removal(plan: RemovalPlan, rmdir: Callable[[str], None] = os.rmdir) -> list[dict[str, str]]:
    """``rmdir`` every directory of the plan in order; returns {path, reason} of those that stayed."""
    stayed = []
    for d in plan.remove:
        try:
            rmdir(d)
        except FileNotFoundError:
            continue
        except OSError as exc:
            stayed.append(dict(path=d, reason="not removed: %s" % exc.strerror))
    return stayed


# ---------------------------------------------------------------------------
# Drift of the upper and work directories of a mounted overlay
# ---------------------------------------------------------------------------

Identity = tuple[int, int]

# Drift keys and their sentence; the keys are what mount_info returns.
DRIFT_KEYS: Mapping[str, str] = {
    "upper_missing": "the upper directory %s is gone (the overlay still writes into the deleted one)",
    "work_missing": "the work directory %s is gone",
    "upper_replaced": "the upper directory %s is another directory than the one mounted (replaced)",
    "work_replaced": "the work directory %s is another directory than the one mounted (replaced)",
    "upper_not_unit": "the overlay is mounted with upper %s, not the upperdir its unit names",
    "work_not_unit": "the overlay is mounted with work %s, not the workdir its unit names",
}


def identity(st: os.stat_result) -> Identity:
    return (st.st_dev, st.st_ino)


def layer_drift(
    *,
    live: LiveLayers,
    unit_upperdir: str | None,
    unit_workdir: str | None,
    stat_dir: Callable[[str], Identity | None],
    recorded: Mapping[str, Identity] | None = None,
    listdir: Callable[[str], list[str] | None] | None = None,
) -> list[dict[str, Any]]:
    """Drift of a mounted overlay's upper and work directories: [{key, path, message}].

    ``stat_dir(path)`` gives the (dev, ino) of a directory, None when it is
    missing or not a directory. ``recorded`` maps a layer path to the
    identity it had when this collection mounted the overlay. Without a
    record, a workdir without the kernel's ``work`` directory is replaced.
    """
    out: list[dict[str, Any]] = []

    def add(key: str, path: str) -> None:
        out.append(dict(key=key, path=path, message=DRIFT_KEYS[key] % path))

    for kind, path, unit_path in (("upper", live.upperdir, unit_upperdir), ("work", live.workdir, unit_workdir)):
        if path is None:
            continue
        if unit_path is not None and unit_path != path:
            add("%s_not_unit" % kind, path)
        now = stat_dir(path)
        if now is None:
            add("%s_missing" % kind, path)
            continue
        before = (recorded or {}).get(path)
        if before is not None and tuple(before) != tuple(now):
            add("%s_replaced" % kind, path)
        elif before is None and kind == "work" and listdir is not None:
            names = listdir(path)
            if names is not None and "work" not in names:
                add("work_replaced", path)
    return out


# Identities of the layers an overlay was mounted with, one file per mount unit,
# under /run (a mount does not outlive the boot, nor does its record).
RECORD_DIR = "/run/overlayfs-systemd/layers"


def render_record(layers: Mapping[str, Identity]) -> str:
    """The record text: one ``dev ino path`` line per layer path."""
    return "".join("%d %d %s\n" % (dev, ino, path) for path, (dev, ino) in sorted(layers.items()))


def parse_record(text: str | None) -> dict[str, Identity]:
    out: dict[str, Identity] = {}
    for line in (text or "").splitlines():
        dev, sep, rest = line.partition(" ")
        ino, sep2, path = rest.partition(" ")
        if sep and sep2 and dev.isdigit() and ino.isdigit() and path.startswith("/"):
            out[path] = (int(dev), int(ino))
    return out


def stat_dir(path: str) -> Identity | None:
    """(dev, ino) of a directory (symlinks not followed), None if missing or not a directory."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode):
        return None
    return identity(st)


def list_dir(path: str) -> list[str] | None:
    try:
        if os.path.islink(path):
            return None
        return os.listdir(path)
    except OSError:
        return None
