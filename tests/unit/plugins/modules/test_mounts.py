# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The bulk mounts module end to end against the fake host of ``fakehost.py``."""

from __future__ import annotations

import os
from functools import partial

from ansible.module_utils import basic
from ansible.module_utils.common.warnings import get_warning_messages
from fakehost import expect_failed, expect_ok, lock_held, run_main

from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.module_utils import _units as un
from ansible_collections.overlayfs.systemd.plugins.modules import mounts as mod

N = 12


def kiosk(host, n=N):
    """n overlays: persistent, tmpfs and read-only ones in turn."""
    lowers = [host.path("opt/app/v2"), host.path("opt/app/base")]
    out = []
    for i in range(n):
        item = {"path": host.path("srv/o%02d" % i), "lowerdir": lowers[:1]}
        if i % 3 == 1:
            item.update(upper="tmpfs", tmpfs_size="8M")
        elif i % 3 == 2:
            item.update(upper="none", lowerdir=lowers)
        out.append(item)
    return out


# The module under test, run against the fake host.
run = partial(run_main, mod.main)
ok = partial(expect_ok, mod.main)
failed = partial(expect_failed, mod.main)


def live(host, path):
    return minfo.mount_at(minfo.parse_mountinfo(host.mountinfo.read_text()), path)


def test_many_overlays_one_daemon_reload_then_no_change(host):
    items = kiosk(host)
    r = ok({"overlays": items, "target": "overlays.target"})
    assert r["changed"] and not r["reboot_required"] and r["removed"] == []
    assert len(host.systemctl("daemon-reload")) == 1
    assert [x["path"] for x in r["results"]] == [i["path"] for i in items]
    for item, res in zip(items, r["results"], strict=True):
        assert res["changed"] and res["mounted"], res
        assert live(host, item["path"]).fstype == "overlay"
        assert res["unit"] in host.enabled
    # The aggregate target requires and orders after every overlay, then is enabled and started.
    text = host.unit_text("overlays.target")
    units = [nm.unit_name(i["path"]) for i in items]
    assert r["target"]["requires"] == units
    for u in units:
        assert "Requires=%s" % u in text.splitlines() and "After=%s" % u in text.splitlines()
    assert "WantedBy=multi-user.target" in text and text.startswith(un.HEADER)
    assert "overlays.target" in host.enabled and "overlays.target" in host.active

    host.commands.clear()
    r2 = ok({"overlays": items, "target": "overlays.target"})
    assert not r2["changed"] and not any(x["changed"] for x in r2["results"])
    assert r2["target"]["actions"] == []
    assert host.mutating() == []


def test_check_mode_changes_nothing(host):
    r = ok({"overlays": kiosk(host), "target": "overlays.target"}, check_mode=True, diff=True)
    assert r["changed"] and all(x["changed"] and not x["mounted"] for x in r["results"])
    assert os.listdir(host.unit_dir) == []
    assert not os.path.exists(nm.ROOTS.persistent_base)
    assert host.mutating() == []
    headers = [d["after_header"] for d in r["diff"]]
    assert str(host.unit_dir / "overlays.target") in headers
    assert len(headers) == len(set(headers)) == 4 * 1 + 4 * 3 + 4 * 1 + 1


def test_check_mode_after_apply_reports_no_change(host):
    ok({"overlays": kiosk(host, 3), "target": "overlays.target"})
    host.commands.clear()
    r = ok({"overlays": kiosk(host, 3), "target": "overlays.target"}, check_mode=True)
    assert not r["changed"]
    assert host.mutating() == []


def test_defaults_merge_under_items(host):
    items = kiosk(host, 2)
    items[1]["flags"] = ["nosuid"]
    r = ok({"overlays": items, "defaults": {"flags": ["nosuid", "nodev", "noexec"]}})
    assert "noexec" in r["results"][0]["options"]
    assert "noexec" not in r["results"][1]["options"]


def test_every_refusal_reported_and_nothing_changed(host):
    items = kiosk(host, 3)
    os.makedirs(host.path("srv/full"))
    with open(host.path("srv/full/x"), "w") as fh:
        fh.write("x")
    items += [
        {"path": host.path("srv/missing"), "lowerdir": [host.path("opt/nope")]},
        {"path": host.path("srv/full"), "lowerdir": [host.path("opt/app/base")]},
        {"path": host.path("srv/bad"), "upper": "sideways", "lowerdir": [host.path("opt/app/base")]},
        {"path": host.path("srv/o00/"), "lowerdir": [host.path("opt/app/base")]},
        {"lowerdir": [host.path("opt/app/base")]},
    ]
    r = failed({"overlays": items, "target": "overlays.target"})
    assert r["msg"].startswith("5 overlay problem(s), nothing was changed")
    for fragment in ("srv/missing", "opt/nope", "srv/full", "not empty", "srv/bad", "sideways", "declared twice"):
        assert fragment in r["msg"], fragment
    assert "overlays[7]" in r["msg"] and "missing required arguments: path" in r["msg"]
    assert not r["changed"]
    refused = [x for x in r["results"] if x.get("failed")]
    assert [x["path"] for x in refused][:3] == [host.path("srv/missing"), host.path("srv/full"), host.path("srv/bad")]
    assert all(x["msg"].startswith(x["path"]) for x in refused)
    assert os.listdir(host.unit_dir) == []
    assert host.mutating() == []


def test_exclusive_removes_undeclared_and_keeps_data(host):
    items = kiosk(host, 4)
    r = ok({"overlays": items, "target": "overlays.target"})
    upper = r["results"][0]["upperdir"]
    with open(os.path.join(upper, "data.txt"), "w") as fh:  # what a write through the overlay leaves
        fh.write("keep me\n")
    # An overlay unit this collection did not write is never removed.
    foreign = nm.unit_name(host.path("srv/foreign"))
    (host.unit_dir / foreign).write_text("[Mount]\nWhat=/dev/sdb1\nWhere=%s\n" % host.path("srv/foreign"))

    host.commands.clear()
    check = ok({"overlays": items[1:3], "exclusive": True, "target": "overlays.target"}, check_mode=True)
    assert sorted(check["removed"]) == sorted([items[0]["path"], items[3]["path"]])
    assert host.mutating() == []

    r = ok({"overlays": items[1:3], "exclusive": True, "target": "overlays.target"})
    assert r["changed"] and sorted(r["removed"]) == sorted([items[0]["path"], items[3]["path"]])
    assert len(host.systemctl("daemon-reload")) == 1
    assert live(host, items[0]["path"]) is None and live(host, items[1]["path"]) is not None
    assert host.unit_text(nm.unit_name(items[0]["path"])) is None
    assert os.path.exists(os.path.join(upper, "data.txt"))
    assert host.unit_text(foreign) is not None
    assert r["target"]["requires"] == [nm.unit_name(i["path"]) for i in items[1:3]]
    # Stopping a required overlay stopped the target; the module started it again.
    assert "overlays.target" in host.active

    host.commands.clear()
    r = ok({"overlays": items[1:3], "exclusive": True, "target": "overlays.target"})
    assert not r["changed"] and r["removed"] == []
    assert host.mutating() == []


def test_exclusive_purge_deletes_data(host):
    items = kiosk(host, 1)
    r = ok({"overlays": items})
    upper = r["results"][0]["upperdir"]
    assert os.path.isdir(upper)
    r = ok({"overlays": [], "exclusive": True, "purge": True})
    assert r["removed"] == [items[0]["path"]]
    assert not os.path.exists(upper)


def test_exclusive_removes_stale_target(host):
    ok({"overlays": kiosk(host, 1), "target": "old.target"})
    r = ok({"overlays": kiosk(host, 1), "target": "new.target", "exclusive": True})
    assert host.unit_text("old.target") is None and host.unit_text("new.target") is not None
    assert "disable old.target" in r["target"]["actions"]


def test_busy_item_reported_others_converged(host):
    items = kiosk(host, 3)
    ok({"overlays": items, "target": "overlays.target"})
    before = host.unit_text(nm.unit_name(items[0]["path"]))
    d = host.proc / "4242"
    (d / "fd").mkdir(parents=True)
    (d / "comm").write_text("kiosk\n")
    os.symlink(os.path.join(items[0]["path"], "sub"), d / "cwd")
    new = [dict(i, lowerdir=[host.path("opt/app/v3")] + i["lowerdir"]) for i in items]
    host.commands.clear()
    r = failed({"overlays": new, "target": "overlays.target"})
    assert "1 of 3 overlays failed" in r["msg"] and "busy, left untouched: %s" % items[0]["path"] in r["msg"]
    assert "4242" in r["msg"]
    busy, *others = r["results"]
    assert busy["failed"] and busy["holders"] == [{"pid": 4242, "comm": "kiosk", "reason": "cwd"}]
    assert not busy["changed"] and busy["mounted"]
    assert host.unit_text(nm.unit_name(items[0]["path"])) == before
    assert ["stop", nm.unit_name(items[0]["path"])] not in host.systemctl()
    for item, res in zip(items[1:], others, strict=True):
        assert res["changed"] and res["mounted"] and not res.get("failed")
        opts = minfo.parse_overlay_options(live(host, item["path"]).super_options)
        assert opts.lowerdir[0] == host.path("opt/app/v3")
    assert r["changed"]
    assert len(host.systemctl("daemon-reload")) == 1


def test_failed_activation_rolls_back_that_item_only(host):
    items = kiosk(host, 3)
    bad = nm.unit_name(items[2]["path"])
    host.fail_start[bad] = "Job for %s failed.\n" % bad
    r = failed({"overlays": items, "target": "overlays.target"})
    assert "1 of 3 overlays failed" in r["msg"] and "rolled back" in r["msg"]
    assert host.unit_text(bad) is None
    assert live(host, items[0]["path"]) is not None and live(host, items[1]["path"]) is not None
    assert r["results"][2]["failed"] and not r["results"][0].get("failed")
    assert "overlays.target" not in host.active


def warnings_of(monkeypatch) -> list[str]:
    """Every module.warn() of the test (warn() goes to the controller's display once ansible's CLI is imported)."""
    seen: list[str] = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: seen.append(msg))
    return seen


def test_next_boot_reports_reboot_required(host, monkeypatch):
    warned = warnings_of(monkeypatch)
    items = kiosk(host, 2)
    ok({"overlays": items})
    new = [dict(i, lowerdir=[host.path("opt/app/v3")] + i["lowerdir"]) for i in items]
    host.commands.clear()
    r = ok({"overlays": new, "defaults": {"apply": "next_boot"}})
    assert r["changed"] and r["reboot_required"]
    assert [c[0] for c in host.mutating()] == ["daemon-reload"]
    # The reboot notice (the overlays role's only one): a warning naming every waiting overlay, also when unchanged.
    paths = ", ".join(r["path"] for r in r["results"])
    notice = "%s: the live overlays differ from their units; reboot (reboot_required) to apply." % paths
    assert warned == [notice]
    again = ok({"overlays": new, "defaults": {"apply": "next_boot"}})
    assert not again["changed"] and again["reboot_required"] and warned == [notice, notice]


def test_no_reboot_notice_when_nothing_waits(host, monkeypatch):
    warned = warnings_of(monkeypatch)
    r = ok({"overlays": kiosk(host, 2)})
    assert not r["reboot_required"] and warned == []


def test_foreign_target_is_refused(host):
    (host.unit_dir / "overlays.target").write_text("[Unit]\nDescription=mine\n")
    r = failed({"overlays": kiosk(host, 1), "target": "overlays.target"})
    assert "was not written by overlayfs.systemd" in r["msg"]
    assert host.mutating() == []


def test_bad_target_name_is_refused(host):
    r = failed({"overlays": kiosk(host, 1), "target": "overlays.service"})
    assert "target 'overlays.service' is not a target unit name" in r["msg"]


def test_target_start_failure_is_reported(host):
    host.fail_start["overlays.target"] = "Job for overlays.target failed.\n"
    r = failed({"overlays": kiosk(host, 2), "target": "overlays.target"})
    assert r["msg"].startswith("every overlay converged, but overlays.target failed")
    assert r["stderr"] == "Job for overlays.target failed.\n"
    assert all(x["mounted"] for x in r["results"])


# ---------------------------------------------------------------------------
# Fleet safety (issue 11): the host lock, units brought back, rollback keeping live layers
# ---------------------------------------------------------------------------


def make_busy(host, path, pid=4242):
    d = host.proc / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "comm").write_text("kiosk\n")
    os.symlink(os.path.join(path, "sub"), d / "cwd")


def test_busy_partial_converge_brings_back_the_target_and_its_service(host):
    """Restarting the others stops overlays.target and the app that Requires= it: both come back."""
    items = kiosk(host, 3)
    ok({"overlays": items, "target": "overlays.target"})
    host.add_service("kiosk.service", "overlays.target")
    assert "overlays.target" in host.active
    make_busy(host, items[0]["path"])
    new = [dict(i, lowerdir=[host.path("opt/app/v3")] + i["lowerdir"]) for i in items]
    r = failed({"overlays": new, "target": "overlays.target"})
    assert "busy, left untouched: %s" % items[0]["path"] in r["msg"]
    assert "(overlays.target started again)" in r["msg"] and "kiosk.service" in r["msg"]
    assert r["restarted_units"] == ["overlays.target", "kiosk.service"]
    assert {"overlays.target", "kiosk.service"} <= host.active
    assert ["start", "kiosk.service"] in host.systemctl()
    for item in items[1:]:
        assert minfo.parse_overlay_options(live(host, item["path"]).super_options).lowerdir[0] == host.path(
            "opt/app/v3"
        )


def test_a_unit_that_does_not_come_back_fails_the_run_with_its_journal(host):
    items = kiosk(host, 2)
    ok({"overlays": items, "target": "overlays.target"})
    host.add_service("kiosk.service", "overlays.target")
    host.fail_start["kiosk.service"] = "Job for kiosk.service failed.\n"
    new = [dict(i, lowerdir=[host.path("opt/app/v3")] + i["lowerdir"]) for i in items]
    r = failed({"overlays": new, "target": "overlays.target"})
    assert "did not come back: kiosk.service" in r["msg"]
    assert r["failed_units"][0]["unit"] == "kiosk.service"
    assert "kiosk.service[77]: cannot open the kiosk state" in r["failed_units"][0]["journal"]
    assert r["restarted_units"] == ["overlays.target"]
    assert all(res["changed"] and not res.get("failed") for res in r["results"])


def test_no_op_asks_systemd_nothing_more(host):
    """The bookkeeping costs nothing when nothing stops: no reverse-dependency query."""
    items = kiosk(host, 3)
    ok({"overlays": items, "target": "overlays.target"})
    host.add_service("kiosk.service", "overlays.target")
    host.commands.clear()
    r = ok({"overlays": items, "target": "overlays.target"})
    assert not r["changed"] and r["restarted_units"] == []
    assert not [c for c in host.systemctl("show") if "RequiredBy" in ",".join(c)]
    # one systemctl show for the 3 overlays' units and the target; mount(8) asked once; nothing else
    assert len(host.systemctl("show")) == 1 and host.systemctl() == host.systemctl("show")
    assert len([c for c in host.commands if c[0].endswith("/mount")]) == 1
    assert r["lock"]["taken"] and r["lock"]["waited"] < 1


def test_waits_for_the_host_lock_and_says_so(host, capfd):
    items = kiosk(host, 1)
    with lock_held(1.0) as holder:
        r = ok({"overlays": items, "lock_timeout": 20})
    assert r["changed"] and r["lock"]["taken"]
    assert r["lock"]["waited"] >= 0.5 and r["lock"]["waited_for"]["pid"] == holder.pid
    warned = capfd.readouterr().err + " ".join(get_warning_messages())
    assert "waited %.1f s for the host lock" % r["lock"]["waited"] in warned and "held by pid %d" % holder.pid in warned


def test_lock_timeout_names_the_holder_and_changes_nothing(host):
    items = kiosk(host, 2)
    with lock_held() as holder:
        r = failed({"overlays": items, "lock_timeout": 0.3})
    assert "holds the host lock" in r["msg"] and "pid %d (" % holder.pid in r["msg"]
    assert "nothing was changed" in r["msg"] and r["param"] == "lock_timeout" and not r["changed"]
    assert host.commands == [] and os.listdir(host.unit_dir) == []
    assert r["lock"]["waited_for"]["pid"] == holder.pid and not r["lock"]["taken"]


def test_check_mode_never_waits_for_the_lock(host):
    with lock_held():
        r = ok({"overlays": kiosk(host, 2), "lock_timeout": 0}, check_mode=True)
    assert r["changed"] and not r["lock"]["taken"] and r["lock"]["waited"] == 0


def test_rollback_keeps_the_layers_another_runs_live_overlay_uses(host, monkeypatch):
    """Issue 11's race: while A's start fails, B mounted an overlay on layers under the base A created."""
    base = nm.ROOTS.persistent_base
    assert not os.path.exists(base)
    items = kiosk(host, 1)
    unit = nm.unit_name(items[0]["path"])
    b_upper, b_work = os.path.join(base, "srv-b", "upper"), os.path.join(base, "srv-b", "work")
    real_start = host._start

    def start(name):
        if name == unit:  # the other run, at this very moment
            os.makedirs(b_upper)
            os.makedirs(os.path.join(b_work, "work"))
            with open(os.path.join(b_upper, "data.txt"), "w") as fh:
                fh.write("B's data\n")
            host.add_mount(
                "300 22 0:300 / %s rw,relatime - overlay overlay rw,lowerdir=%s,upperdir=%s,workdir=%s"
                % (host.path("srv/b"), host.path("opt/app/v2"), b_upper, b_work)
            )
            return 1, "", "mount failed\n"
        return real_start(name)

    monkeypatch.setattr(host, "_start", start)
    r = failed({"overlays": items})
    assert "kept %s: it holds the upperdir %s" % (base, b_upper) in r["msg"]
    assert open(os.path.join(b_upper, "data.txt")).read() == "B's data\n"
    assert os.path.isdir(b_work + "/work")
    # A's own directories are gone, B's stay
    assert sorted(os.listdir(base)) == ["srv-b"]


def test_exclusive_removal_brings_back_the_service_of_the_target(host):
    """Removing an undeclared overlay stops the target (it required it) and its app; both come back."""
    items = kiosk(host, 3)
    ok({"overlays": items, "target": "overlays.target"})
    host.add_service("kiosk.service", "overlays.target")
    r = ok({"overlays": items[:2], "target": "overlays.target", "exclusive": True})
    assert r["removed"] == [items[2]["path"]]
    assert r["restarted_units"] == ["overlays.target", "kiosk.service"]
    assert {"overlays.target", "kiosk.service"} <= host.active
