# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The journal of a ``committed`` run, and what the next run does with an interrupted one.

A commit writes its journal (``.UPPER.overlayfs-journal`` beside the upper
directory, so it lives exactly as long as the upper: a tmpfs upper's journal
goes with its tmpfs) atomically before each step that changes the host:

- ``stop``: about to stop the overlay. Nothing moved; the units are the old
  ones (squash: ``dest`` is already a full copy of the merged view).
- ``move`` (stacked only): the overlay is stopped; about to rename the upper
  to ``dest`` (``method: rename``) or to copy it into a hidden sibling of
  ``dest`` renamed when complete (``method: copy``; the upper is not
  touched). The units are still the old ones.
- ``swap``: ``dest`` is complete; a fresh upper and work directory take the
  old ones' places (a copied upper is moved aside, never deleted before the
  overlay runs on ``dest``), the units get the new lowers, the overlay starts.

The journal is removed when the overlay runs on the new lowers, or when a
failed run put everything back. A run killed in between leaves it: the next
run reads it, looks at the directories (:class:`Found`) and :func:`decide`
says what to do: ``back`` (``dest`` is empty or a copy whose source is still
in place: remove it, start the overlay on the old units), ``forward`` (the
upper's data is in the complete ``dest``: finish the swap, write the units,
start), ``done`` (the overlay already runs on the new lowers: only clean up)
or ``refuse`` (the directories are not in a state this protocol leaves:
nothing is deleted, the journal stays). Nothing here touches the host.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace

PHASES = ("stop", "move", "swap")
METHODS = ("", "rename", "copy", "squash")
#: What :class:`Found` says about a directory.
MISSING, EMPTY, DATA = "missing", "empty", "data"


class JournalError(ValueError):
    """A journal file that cannot be read (never acted on)."""


@dataclass(frozen=True)
class Journal:
    """What a commit run is doing: enough for the next run to finish or undo it."""

    pid: int
    path: str
    unit: str
    upperdir: str
    workdir: str
    dest: str
    squash: bool
    old_lowers: tuple[str, ...]
    new_lowers: tuple[str, ...]
    owner: str
    group: str
    mode: str
    dependents: tuple[str, ...] = ()
    phase: str = "stop"
    method: str = ""

    def at(self, phase: str, method: str | None = None) -> Journal:
        """This journal at ``phase`` (and ``method``)."""
        return replace(self, phase=phase, method=self.method if method is None else method)

    def to_text(self) -> str:
        return json.dumps(dict(asdict(self), version=1), sort_keys=True, indent=1) + "\n"

    def as_result(self) -> dict[str, object]:
        """The journal as a module result value (lists, not tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def from_text(text: str) -> Journal:
    """Parse a journal file; raises JournalError on anything not written by :meth:`Journal.to_text`."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.pop("version", None) != 1:
            raise ValueError("unknown version")
        for key in ("old_lowers", "new_lowers", "dependents"):
            raw[key] = tuple(raw.get(key, ()))
        j = Journal(**raw)
    except (ValueError, TypeError) as exc:
        raise JournalError("unreadable commit journal: %s" % exc) from None
    if j.phase not in PHASES or j.method not in METHODS or not j.new_lowers or j.new_lowers[0] != j.dest:
        raise JournalError("unreadable commit journal: phase %r, method %r" % (j.phase, j.method))
    return j


def journal_path(upperdir: str) -> str:
    """Where the commit journal of the overlay with ``upperdir`` lives (beside it, same file system)."""
    parent, base = os.path.split(upperdir.rstrip("/"))
    return os.path.join(parent, ".%s.overlayfs-journal" % base)


def aside_path(path: str, tag: str, pid: int) -> str:
    """The hidden sibling run ``pid`` moves ``path`` to (``_layercopy.aside_name`` of that run)."""
    parent, base = os.path.split(path)
    return os.path.join(parent, ".%s.overlayfs-%s-%d" % (base, tag, pid))


@dataclass(frozen=True)
class Found:
    """The directories of an interrupted commit as the next run finds them."""

    upper: str  # MISSING, EMPTY or DATA
    dest: str  # MISSING, EMPTY or DATA
    upper_aside: bool  # the dead run moved the old upper aside (copy or squash)
    mounted_lowers: tuple[str, ...] | None  # None: not mounted


@dataclass(frozen=True)
class Decision:
    """``action``: done, back, forward or refuse.

    ``dest``: for back, how to remove dest (``rmdir``, ``rmtree`` or ``""``
    when it is missing). ``upper``: for forward, how the fresh upper comes:
    ``make`` (none there: create it), ``swap`` (the old upper is still there:
    move it aside) or ``keep`` (the fresh empty one is there).
    """

    action: str
    reason: str
    dest: str = ""
    upper: str = ""


def _back(j: Journal, f: Found, why: str) -> Decision:
    if f.dest == DATA and not (j.squash or f.upper == DATA):
        what = "dest %s holds data and the upper %s is %s: dest may be the only copy" % (j.dest, j.upperdir, f.upper)
        return _refuse(j, what)
    how = {MISSING: "", EMPTY: "rmdir", DATA: "rmtree"}[f.dest]
    return Decision("back", why, dest=how)


def _refuse(j: Journal, what: str) -> Decision:
    return Decision(
        "refuse",
        "%s; nothing was changed or deleted. Check %s, the upper %s and dest %s by hand, then remove the journal"
        % (what, journal_path(j.upperdir), j.upperdir, j.dest),
    )


def _forward(j: Journal, f: Found, why: str) -> Decision:
    if j.method == "rename":
        if f.upper == DATA:
            return _refuse(j, "the upper was renamed to dest, but %s holds data again" % j.upperdir)
        return Decision("forward", why, upper="make" if f.upper == MISSING else "keep")
    if f.upper_aside:
        if f.upper == DATA:
            return _refuse(j, "the old upper was moved aside, but %s holds data again" % j.upperdir)
        return Decision("forward", why, upper="make" if f.upper == MISSING else "keep")
    if f.upper == MISSING:
        return _refuse(j, "the upper %s is missing and was not moved aside" % j.upperdir)
    return Decision("forward", why, upper="swap")


def decide(j: Journal, f: Found) -> Decision:
    """What the next run does with the interrupted commit ``j`` that left ``f``.

    ``back`` only removes a ``dest`` that is empty or a copy of data still in
    place; ``forward`` only when ``dest`` holds the upper's data, complete.
    """
    if f.mounted_lowers is not None and tuple(f.mounted_lowers) == tuple(j.new_lowers):
        return Decision("done", "the overlay runs on the new lowers")
    moved = j.method == "rename" and j.phase in ("move", "swap") and f.upper != DATA and f.dest != MISSING
    if f.mounted_lowers is not None:
        if moved or j.phase == "swap" and f.upper_aside:
            return _refuse(j, "the overlay was started again on its old lowers after the commit was interrupted")
        if f.upper == MISSING:
            return _refuse(j, "the overlay is mounted but its upper %s is missing" % j.upperdir)
        return _back(j, f, "the overlay still runs on its old lowers and upper; dest is a copy or empty")
    if moved:
        return _forward(j, f, "the upper was renamed to dest")
    if j.phase == "swap" and f.dest != MISSING:
        return _forward(j, f, "dest was complete")
    if f.upper == MISSING:
        return _refuse(j, "the upper %s is missing and dest %s %s" % (j.upperdir, j.dest, f.dest))
    if j.method == "rename" and f.dest == DATA:
        return _refuse(j, "the upper is in place, but dest holds data too")
    if f.upper_aside:
        return _refuse(j, "the old upper was moved aside, but dest %s is %s" % (j.dest, f.dest))
    return _back(j, f, "the %s step did not complete; the upper is in place" % j.phase)
