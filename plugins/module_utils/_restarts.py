# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Bring back what a restart stopped on its way.

Stopping an overlay's mount unit makes systemd stop every unit that
``Requires=`` or ``BindsTo=`` it (and what is ``PartOf=`` it): the aggregate
target, a kiosk service that requires the target, a service with
``RequiresMountsFor=`` on the overlay. Before the run stops anything,
:func:`active_dependents` finds those that are active (a breadth-first walk
over ``RequiredBy=``, ``BoundBy=`` and ``ConsistsOf=``, one ``systemctl
show`` per level, and none at all when nothing is stopped). After the run,
also when it failed for another overlay, :func:`bring_back` starts again
each of them that is no longer active and says which (``restarted_units``)
and which did not come back, with their journal lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

# Properties naming the units that a stop of this unit stops too.
REVERSE_DEPS = ("RequiredBy", "BoundBy", "ConsistsOf")
ACTIVE = ("active", "activating", "reloading")
MAX_DEPTH = 8


class UnitControl(Protocol):
    """What this file needs of the systemctl wrapper (``_systemd.Systemd``)."""

    def show(self, units: Sequence[str], props: Sequence[str]) -> dict[str, dict[str, str]]:
        """The properties ``props`` of each unit."""

    def start(self, unit: str) -> None:
        """Start one unit."""

    def journal_tail(self, unit: str, lines: int = 20) -> str:
        """The last journal lines of one unit."""


def reverse_dependencies(props: Mapping[str, str]) -> list[str]:
    """The units named by a unit's RequiredBy=, BoundBy= and ConsistsOf= (space separated)."""
    out: list[str] = []
    for key in REVERSE_DEPS:
        for name in (props.get(key) or "").split():
            if name not in out:
                out.append(name)
    return out


def next_level(level: Mapping[str, Mapping[str, str]], seen: Iterable[str]) -> list[str]:
    """The units a stop of ``level``'s units stops next, not yet ``seen``, in a stable order."""
    seen_set = set(seen)
    out: list[str] = []
    for name in sorted(level):
        for dep in reverse_dependencies(level[name]):
            if dep not in seen_set and dep not in out:
                out.append(dep)
    return out


ShowFn = Callable[[list[str], list[str]], dict[str, dict[str, str]]]


def active_dependents(stopping: Sequence[str], show: ShowFn) -> list[str]:
    """The active units that stopping ``stopping`` would stop too (not ``stopping`` themselves).

    ``show(units, props)`` is ``Systemd.show``. Returns [] without a call
    when nothing is stopped.
    """
    if not stopping:
        return []
    seen = list(stopping)
    level = show(list(stopping), list(REVERSE_DEPS))
    found: list[str] = []
    for _depth in range(MAX_DEPTH):
        names = next_level(level, seen)
        if not names:
            break
        seen += names
        level = show(names, ["ActiveState"] + list(REVERSE_DEPS))
        found += [n for n in names if level.get(n, {}).get("ActiveState") in ACTIVE]
    return found


def to_bring_back(before: Sequence[str], now: Mapping[str, Mapping[str, str]]) -> list[str]:
    """Which of the units active ``before`` the run are not active now."""
    return [u for u in before if now.get(u, {}).get("ActiveState") not in ACTIVE]


@dataclass
class BroughtBack:
    """``restarted``: started again; ``failed``: [{unit, error, journal}] of those that did not come back."""

    restarted: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def message(self) -> str | None:
        if not self.failed:
            return None
        return "units stopped by this run did not come back: %s (see failed_units for their journal)" % ", ".join(
            "%s (%s)" % (f["unit"], f["error"]) for f in self.failed
        )


def bring_back(sd: UnitControl, before: Sequence[str], start_error: type[Exception] = Exception) -> BroughtBack:
    """Start again each unit of ``before`` that is no longer active; never raises ``start_error``."""
    out = BroughtBack()
    if not before:
        return out
    now = sd.show(list(before), ["ActiveState"])
    for unit in to_bring_back(before, now):
        try:
            sd.start(unit)
        except start_error as exc:
            out.failed.append(dict(unit=unit, error=str(exc), journal=sd.journal_tail(unit).splitlines()))
            continue
        out.restarted.append(unit)
    if out.restarted:
        after = sd.show(out.restarted, ["ActiveState"])
        for unit in to_bring_back(list(out.restarted), after):
            out.restarted.remove(unit)
            out.failed.append(
                dict(unit=unit, error="not active after start", journal=sd.journal_tail(unit).splitlines())
            )
    return out
