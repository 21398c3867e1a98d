# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The commit journal and the decision on an interrupted commit, for every phase a run can die in."""

from __future__ import annotations

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _journal as jn
from ansible_collections.overlayfs.systemd.plugins.module_utils._journal import DATA, EMPTY, MISSING, Found, decide

OLD = ("/opt/base",)
NEW = ("/srv/layers/v2", "/opt/base")


def journal(phase, method="", squash=False):
    return jn.Journal(
        pid=4242,
        path="/srv/kiosk",
        unit="srv-kiosk.mount",
        upperdir="/var/lib/overlayfs/k/upper",
        workdir="/var/lib/overlayfs/k/work",
        dest="/srv/layers/v2",
        squash=squash,
        old_lowers=OLD,
        new_lowers=("/srv/layers/v2",) if squash else NEW,
        owner="0",
        group="0",
        mode="0755",
        dependents=("app.service",),
        phase=phase,
        method=method,
    )


def found(upper, dest, aside=False, mounted=None):
    return Found(upper=upper, dest=dest, upper_aside=aside, mounted_lowers=mounted)


# (phase, method, squash, found, action, dest removal, upper step): a kill at every step of the protocol.
CASES = [
    # killed before or while stopping: nothing moved; dest is the empty placeholder (or missing)
    ("stop", "", False, found(DATA, EMPTY, mounted=OLD), "back", "rmdir", ""),
    ("stop", "", False, found(DATA, MISSING, mounted=OLD), "back", "", ""),
    ("stop", "", False, found(DATA, EMPTY), "back", "rmdir", ""),
    # squash: dest is a full copy of the merged view, the upper and lowers are in place
    ("stop", "", True, found(DATA, DATA, mounted=OLD), "back", "rmtree", ""),
    ("stop", "", True, found(EMPTY, DATA), "back", "rmtree", ""),
    # stacked copy killed mid-copy (the partial is a leftover) or after renaming it into place
    ("move", "copy", False, found(DATA, EMPTY), "back", "rmdir", ""),
    ("move", "copy", False, found(DATA, DATA), "back", "rmtree", ""),
    # stacked rename: rename(2) happened or not
    ("move", "rename", False, found(DATA, EMPTY), "back", "rmdir", ""),
    ("move", "rename", False, found(MISSING, DATA), "forward", "", "make"),
    ("move", "rename", False, found(MISSING, EMPTY), "forward", "", "make"),  # an empty upper renamed
    # dest complete; a fresh upper, work and the units in progress
    ("swap", "rename", False, found(MISSING, DATA), "forward", "", "make"),
    ("swap", "rename", False, found(EMPTY, DATA), "forward", "", "keep"),
    ("swap", "copy", False, found(DATA, DATA), "forward", "", "swap"),
    ("swap", "copy", False, found(MISSING, DATA, aside=True), "forward", "", "make"),
    ("swap", "copy", False, found(EMPTY, DATA, aside=True), "forward", "", "keep"),
    ("swap", "squash", True, found(DATA, DATA), "forward", "", "swap"),
    ("swap", "squash", True, found(EMPTY, DATA, aside=True), "forward", "", "keep"),
    # a failed run's rollback killed after the upper came back from dest / from aside
    ("swap", "rename", False, found(DATA, MISSING), "back", "", ""),
    ("swap", "copy", False, found(DATA, MISSING), "back", "", ""),
    # the start happened: only the cleanup was left
    ("swap", "copy", False, found(EMPTY, DATA, aside=True, mounted=NEW), "done", "", ""),
    ("swap", "rename", False, found(EMPTY, DATA, mounted=NEW), "done", "", ""),
]


@pytest.mark.parametrize("phase, method, squash, f, action, dest, upper", CASES)
def test_decide(phase, method, squash, f, action, dest, upper):
    d = decide(journal(phase, method, squash), f)
    assert (d.action, d.dest, d.upper) == (action, dest, upper), d.reason


# States the protocol never leaves: nothing is deleted, the journal stays.
REFUSED = [
    ("move", "copy", False, found(EMPTY, DATA)),  # dest may be the only copy
    ("move", "copy", False, found(MISSING, DATA)),
    ("move", "rename", False, found(DATA, DATA)),  # both hold data
    ("move", "rename", False, found(MISSING, MISSING)),
    ("swap", "rename", False, found(DATA, DATA)),  # renamed, yet the upper holds data again
    ("swap", "copy", False, found(DATA, DATA, aside=True)),
    ("swap", "copy", False, found(MISSING, DATA)),  # the upper gone, not aside
    ("swap", "copy", False, found(DATA, DATA, aside=True, mounted=OLD)),  # started again on the old lowers
    ("move", "rename", False, found(MISSING, DATA, mounted=OLD)),
    ("stop", "", False, found(MISSING, EMPTY, mounted=OLD)),
]


@pytest.mark.parametrize("phase, method, squash, f", REFUSED)
def test_decide_refuses_what_it_cannot_prove_safe(phase, method, squash, f):
    d = decide(journal(phase, method, squash), f)
    assert d.action == "refuse"
    assert "nothing was changed or deleted" in d.reason and "/var/lib/overlayfs/k/.upper.overlayfs-journal" in d.reason


@pytest.mark.parametrize("phase, method, squash, f, action, dest, upper", CASES)
def test_back_removes_dest_only_when_it_is_empty_or_a_copy_of_data_in_place(
    phase, method, squash, f, action, dest, upper
):
    if dest == "rmtree":
        assert squash or (f.upper == DATA and method != "rename")


def test_round_trip_and_names():
    j = journal("move", "copy")
    assert jn.from_text(j.to_text()) == j
    assert j.at("swap").method == "copy" and j.at("swap", "rename").method == "rename"
    assert jn.journal_path("/var/lib/overlayfs/k/upper/") == "/var/lib/overlayfs/k/.upper.overlayfs-journal"
    assert jn.aside_path("/x/upper", "commit", 7) == "/x/.upper.overlayfs-commit-7"
    assert j.as_result()["new_lowers"] == list(NEW)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"version": 2}',
        journal("stop").to_text().replace('"phase": "stop"', '"phase": "later"'),
        journal("stop").to_text().replace('"/srv/layers/v2",\n  "/opt/base"', '"/opt/base"'),
    ],
)
def test_unreadable_journal_is_refused(text):
    with pytest.raises(jn.JournalError):
        jn.from_text(text)
