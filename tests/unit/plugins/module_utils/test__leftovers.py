# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Leftovers of dead runs: partial copies removed, moved-aside layers only once they are safe to drop."""

from __future__ import annotations

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _leftovers as lo
from ansible_collections.overlayfs.systemd.plugins.module_utils._liveguard import LiveLayers

UP = "/var/lib/overlayfs/k/upper"
WORK = "/var/lib/overlayfs/k/work"
LIVE = LiveLayers("/srv/k", UP, WORK, ("/srv/layers/v2", "/opt/k"))


@pytest.mark.parametrize(
    "name,want",
    [
        (".v2.overlayfs-partial-4242", ("v2", "partial", 4242)),
        (".upper.overlayfs-commit-7", ("upper", "commit", 7)),
        (".a.b.overlayfs-discard-1", ("a.b", "discard", 1)),
        (".v2.overlayfs-partial-x", None),
        ("v2.overlayfs-partial-1", None),
        (".v2.overlayfs-export-1", None),
    ],
)
def test_parse_name(name, want):
    assert lo.parse_name(name) == want


def test_find_only_names_after_the_given_paths():
    tree = {
        "/srv/layers": [".v2.overlayfs-partial-11", ".v3.overlayfs-partial-12", "v1", ".v2.other"],
        "/var/lib/overlayfs/k": ["upper", "work", ".upper.overlayfs-commit-13", ".work.overlayfs-commit-13"],
    }
    found = lo.find(["/srv/layers/v2", UP, WORK], tree.get)
    assert [(x.path, x.tag, x.pid) for x in found] == [
        ("/srv/layers/.v2.overlayfs-partial-11", "partial", 11),
        ("/var/lib/overlayfs/k/.upper.overlayfs-commit-13", "commit", 13),
        ("/var/lib/overlayfs/k/.work.overlayfs-commit-13", "commit", 13),
    ]


def plan_for(names_alive, overlays):
    found = lo.find(
        ["/srv/layers/v2", UP, WORK],
        {
            "/srv/layers": [".v2.overlayfs-partial-11"],
            "/var/lib/overlayfs/k": [".upper.overlayfs-commit-13", ".work.overlayfs-commit-13"],
        }.get,
    )
    return lo.classify(found, pid_alive=lambda pid: pid in names_alive, overlays=overlays, mount_points=["/srv/k"])


def test_sigkilled_commit_partial_copy_is_removed_and_reported():
    plan = plan_for(set(), [LIVE])
    assert [x.path for x in plan.remove] == [
        "/srv/layers/.v2.overlayfs-partial-11",
        "/var/lib/overlayfs/k/.upper.overlayfs-commit-13",
        "/var/lib/overlayfs/k/.work.overlayfs-commit-13",
    ]
    rep = plan.report(done=True)
    assert rep[0] == dict(
        path="/srv/layers/.v2.overlayfs-partial-11",
        beside="/srv/layers/v2",
        kind="partial",
        pid="11",
        action="removed",
    )
    assert plan.report(done=False)[0]["action"] == "would remove"


def test_a_running_pid_keeps_its_leftovers():
    plan = plan_for({11, 13}, [LIVE])
    assert plan.remove == [] and all("still runs" in k["reason"] for k in plan.kept)


def test_moved_aside_upper_is_kept_while_no_overlay_runs_on_its_place():
    """Killed between moving the upper aside and starting the overlay: the aside may be the only copy."""
    plan = plan_for(set(), [])
    assert [x.tag for x in plan.remove] == ["partial"]
    kept = {k["path"]: k["reason"] for k in plan.kept}
    reason = kept["/var/lib/overlayfs/k/.upper.overlayfs-commit-13"]
    assert "only copy of its data" in reason and "mv /var/lib/overlayfs/k/.upper.overlayfs-commit-13 %s" % UP in reason


def test_a_leftover_a_live_mount_uses_is_kept():
    odd = LiveLayers("/srv/other", "/elsewhere/up", "/elsewhere/w", ("/srv/layers/.v2.overlayfs-partial-11",))
    plan = plan_for(set(), [LIVE, odd])
    kept = {k["path"]: k["reason"] for k in plan.kept}
    assert "lowerdir" in kept["/srv/layers/.v2.overlayfs-partial-11"]


def test_pid_alive(tmp_path):
    (tmp_path / "5").mkdir()
    assert lo.pid_alive(5, str(tmp_path)) and not lo.pid_alive(6, str(tmp_path))
