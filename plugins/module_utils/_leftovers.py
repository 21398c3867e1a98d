# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Leftovers of a run that died: found by the next run that touches the same paths.

The ``upper`` module works beside the directories it changes, under hidden
names ``.NAME.overlayfs-TAG-PID`` (``_upper.aside_name``):

- ``partial``: a ``committed`` copy in progress beside ``dest``. A dead
  run's partial copy is incomplete and its source is still in place:
  always removed.
- ``discard`` / ``commit``: an upper or work directory moved aside while an
  empty one takes its place. It may hold the only copy of the upper's data.
  It is removed only once a mounted overlay uses the directory it was moved
  away from (the run got as far as starting the overlay on the new one:
  after a ``commit`` the data is in the new lower, after a ``discard`` it
  was meant to go); otherwise it is kept and reported with the way back.

A leftover is a dead run's when no process with its pid runs. Nothing here
deletes: :func:`classify` plans, the caller removes ``remove`` (also not in
check mode) and reports both lists (``cleaned``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ansible_collections.overlayfs.systemd.plugins.module_utils._liveguard import LiveLayers, live_use

TAGS = ("partial", "discard", "commit")
_NAME_RE = re.compile(r"^\.(?P<base>.+)\.overlayfs-(?P<tag>%s)-(?P<pid>[0-9]+)$" % "|".join(TAGS))


@dataclass(frozen=True)
class Leftover:
    path: str
    beside: str
    tag: str
    pid: int


@dataclass
class LeftoverPlan:
    """``remove``: dead runs' leftovers safe to delete; ``kept``: {path, reason} of the others found."""

    remove: list[Leftover] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)

    def report(self, done: bool) -> list[dict[str, str]]:
        """The ``cleaned`` result: each leftover removed (or, in check mode, to remove)."""
        what = "removed" if done else "would remove"
        return [dict(path=x.path, beside=x.beside, kind=x.tag, pid=str(x.pid), action=what) for x in self.remove]


def parse_name(name: str) -> tuple[str, str, int] | None:
    """(base, tag, pid) of a leftover's file name, None for any other name."""
    m = _NAME_RE.match(name)
    if m is None:
        return None
    return m.group("base"), m.group("tag"), int(m.group("pid"))


def find(paths: Iterable[str], listdir: Callable[[str], list[str] | None]) -> list[Leftover]:
    """The leftovers beside each of ``paths`` (in their parent directory, named after them)."""
    out: list[Leftover] = []
    by_parent: dict[str, set[str]] = {}
    for p in paths:
        parent, base = os.path.split(p.rstrip("/"))
        by_parent.setdefault(parent, set()).add(base)
    for parent in sorted(by_parent):
        for name in sorted(listdir(parent) or []):
            parsed = parse_name(name)
            if parsed is None or parsed[0] not in by_parent[parent]:
                continue
            base, tag, pid = parsed
            out.append(Leftover(os.path.join(parent, name), os.path.join(parent, base), tag, pid))
    return out


def classify(
    leftovers: Sequence[Leftover],
    *,
    pid_alive: Callable[[int], bool],
    overlays: Iterable[LiveLayers],
    mount_points: Iterable[str],
) -> LeftoverPlan:
    overlays = list(overlays)
    mount_points = list(mount_points)
    plan = LeftoverPlan()
    for x in leftovers:
        if pid_alive(x.pid):
            plan.kept.append(dict(path=x.path, reason="pid %d still runs (a run in progress?)" % x.pid))
            continue
        used = live_use(x.path, overlays, mount_points)
        if used is not None:
            plan.kept.append(dict(path=x.path, reason=used))
            continue
        if x.tag != "partial" and not _beside_in_use(x.beside, overlays):
            plan.kept.append(
                dict(
                    path=x.path,
                    reason="the %s run of pid %d died before an overlay ran on %s again; this may be the only "
                    "copy of its data. Check it, then move it back (stop the overlay, mv %s %s) or delete it"
                    % (x.tag, x.pid, x.beside, x.path, x.beside),
                )
            )
            continue
        plan.remove.append(x)
    return plan


def _beside_in_use(path: str, overlays: Sequence[LiveLayers]) -> bool:
    return any(path in (ov.upperdir, ov.workdir) for ov in overlays)


def pid_alive(pid: int, proc_root: str = "/proc") -> bool:
    return os.path.exists("%s/%d" % (proc_root, pid))
