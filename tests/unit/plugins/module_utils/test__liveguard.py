# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Rollback never removes a live layer; drift of replaced upper/work directories."""

from __future__ import annotations

import os

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils._liveguard import (
    LiveLayers,
    apply_removal,
    layer_drift,
    list_dir,
    live_use,
    parse_record,
    removal_plan,
    render_record,
    stat_dir,
)

BASE = "/var/lib/overlayfs"
# The race of issue 11: run B's overlay srv-race-06 is live on layers under the base run A created.
LIVE_B = LiveLayers("/srv/race/06", BASE + "/srv-race-06/upper", BASE + "/srv-race-06/work", ("/opt/b",))


def listing(tree):
    def listdir(path):
        return tree.get(path)

    return listdir


@pytest.mark.parametrize(
    "path,want",
    [
        (BASE, "holds the upperdir %s/srv-race-06/upper of the overlay mounted at /srv/race/06" % BASE),
        (BASE + "/srv-race-06/upper", "is the upperdir %s/srv-race-06/upper" % BASE),
        (BASE + "/srv-race-06/work", "is the workdir"),
        ("/opt/b", "is the lowerdir /opt/b"),
        ("/opt", "holds the lowerdir /opt/b"),
        (BASE + "/srv-race-01", None),
        ("/srv/race/06", "is a mount point"),
        ("/srv/race", "holds the mount point /srv/race/06"),
        ("/srv/racetrack", None),
    ],
)
def test_live_use(path, want):
    got = live_use(path, [LIVE_B], ["/srv/race/06"])
    if want is None:
        assert got is None
    else:
        assert got is not None and got.startswith(want)


def test_rollback_keeps_the_base_another_runs_live_overlay_uses():
    """Run A created the base and its own layers; B's live overlay sits under the same base."""
    created = [BASE, BASE + "/srv-race-01", BASE + "/srv-race-01/upper", BASE + "/srv-race-01/work"]
    tree = {
        BASE: ["srv-race-01", "srv-race-06"],
        BASE + "/srv-race-01": ["upper", "work"],
        BASE + "/srv-race-01/upper": [],
        BASE + "/srv-race-01/work": ["work"],
        BASE + "/srv-race-01/work/work": [],
    }
    plan = removal_plan(
        created,
        overlays=[LIVE_B],
        mount_points=["/srv/race/06"],
        listdir=listing(tree),
        workdirs=[BASE + "/srv-race-01/work"],
    )
    assert plan.remove == [
        BASE + "/srv-race-01/upper",
        BASE + "/srv-race-01/work/work",
        BASE + "/srv-race-01/work",
        BASE + "/srv-race-01",
    ]
    assert plan.kept == [
        dict(path=BASE, reason="holds the upperdir %s/srv-race-06/upper of the overlay mounted at /srv/race/06" % BASE)
    ]


def test_rollback_keeps_an_empty_upper_a_live_overlay_uses():
    """An empty upper is still a live layer (B mounted it a moment ago): never rmdir it."""
    up = BASE + "/srv-race-06/upper"
    plan = removal_plan([up], overlays=[LIVE_B], mount_points=[], listdir=listing({up: []}))
    assert plan.remove == [] and plan.kept[0]["path"] == up and "is the upperdir" in plan.kept[0]["reason"]


def test_rollback_keeps_directories_holding_data_it_did_not_write():
    created = ["/data", "/data/up"]
    tree = {"/data": ["up", "notes.txt"], "/data/up": ["user-file"]}
    plan = removal_plan(created, overlays=[], mount_points=[], listdir=listing(tree))
    assert plan.remove == []
    assert [k["path"] for k in plan.kept] == ["/data", "/data/up"]
    assert "user-file" in plan.kept[1]["reason"] and "notes.txt" in plan.kept[0]["reason"]


def test_kernel_entries_only_count_in_a_workdir():
    tree = {"/x": ["work"], "/x/work": []}
    assert removal_plan(["/x"], overlays=[], mount_points=[], listdir=listing(tree)).remove == []
    assert removal_plan(["/x"], overlays=[], mount_points=[], listdir=listing(tree), workdirs=["/x"]).remove == [
        "/x/work",
        "/x",
    ]


def test_gone_directories_are_skipped():
    plan = removal_plan(["/gone"], overlays=[], mount_points=[], listdir=listing({}))
    assert plan.remove == [] and plan.kept == []


def test_apply_removal_only_rmdirs(tmp_path):
    """A file appearing after the plan (a race) makes rmdir fail: reported, nothing deleted."""
    a = tmp_path / "a"
    b = a / "b"
    b.mkdir(parents=True)
    created = [str(a), str(b)]
    plan = removal_plan(created, overlays=[], mount_points=[], listdir=list_dir)
    assert plan.remove == [str(b), str(a)]
    (b / "late").write_text("data")
    stayed = apply_removal(plan)
    assert (b / "late").read_text() == "data"
    assert [s["path"] for s in stayed] == [str(b), str(a)]
    (b / "late").unlink()
    assert apply_removal(plan) == [] and not a.exists()


# ---------------------------------------------------------------------------
# drift
# ---------------------------------------------------------------------------

UP, WORK = "/var/lib/overlayfs/k/upper", "/var/lib/overlayfs/k/work"
LIVE = LiveLayers("/srv/k", UP, WORK, ("/opt/k",))


def drift_keys(*, stat_dir, live=LIVE, unit_upperdir=UP, unit_workdir=WORK, **kw):
    return [
        d["key"]
        for d in layer_drift(live=live, unit_upperdir=unit_upperdir, unit_workdir=unit_workdir, stat_dir=stat_dir, **kw)
    ]


def test_no_drift_when_both_are_the_recorded_directories():
    ids = {UP: (1, 10), WORK: (1, 11)}
    assert drift_keys(stat_dir=ids.get, recorded=ids) == []


def test_missing_upper_and_work():
    assert drift_keys(stat_dir=lambda p: None) == ["upper_missing", "work_missing"]


def test_replaced_upper_has_another_inode():
    now = {UP: (1, 99), WORK: (1, 11)}
    out = layer_drift(
        live=LIVE, unit_upperdir=UP, unit_workdir=WORK, stat_dir=now.get, recorded={UP: (1, 10), WORK: (1, 11)}
    )
    assert [d["key"] for d in out] == ["upper_replaced"]
    assert UP in out[0]["message"] and "replaced" in out[0]["message"]


def test_without_record_a_workdir_lacking_the_kernel_work_dir_is_replaced():
    ids = {UP: (1, 10), WORK: (1, 12)}
    assert drift_keys(stat_dir=ids.get, listdir={WORK: []}.get) == ["work_replaced"]
    assert drift_keys(stat_dir=ids.get, listdir={WORK: ["work"]}.get) == []


def test_mounted_with_other_dirs_than_the_unit_names():
    ids = {UP: (1, 10), WORK: (1, 11)}
    assert drift_keys(stat_dir=ids.get, recorded=ids, unit_upperdir="/elsewhere/up", unit_workdir="/elsewhere/w") == [
        "upper_not_unit",
        "work_not_unit",
    ]


def test_real_directories(tmp_path):
    up, work = tmp_path / "upper", tmp_path / "work"
    up.mkdir()
    (work / "work").mkdir(parents=True)
    live = LiveLayers(str(tmp_path / "m"), str(up), str(work), ())
    rec = {str(up): stat_dir(str(up)), str(work): stat_dir(str(work))}
    text = render_record(rec)
    assert parse_record(text) == rec
    kw = dict(live=live, unit_upperdir=str(up), unit_workdir=str(work), stat_dir=stat_dir, listdir=list_dir)
    assert layer_drift(recorded=parse_record(text), **kw) == []
    (tmp_path / "new").mkdir()  # made while the old one exists: another inode
    os.rmdir(up)
    os.rename(tmp_path / "new", up)  # the upper replaced: same path, another directory
    assert [d["key"] for d in layer_drift(recorded=parse_record(text), **kw)] == ["upper_replaced"]
    os.rmdir(up)
    up.write_text("not a dir")
    assert [d["key"] for d in layer_drift(recorded=parse_record(text), **kw)] == ["upper_missing"]


def test_parse_record_skips_garbage():
    assert parse_record("1 2 /a\nbad line\n3 x /b\n4 5 relative\n") == {"/a": (1, 2)}
    assert parse_record(None) == {}
