# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The mount module end to end against the fake host of ``fakehost.py``."""

from __future__ import annotations

import os
import stat
from functools import partial

import pytest
from fakehost import expect_failed, expect_ok, run_main

from ansible_collections.overlayfs.systemd.plugins.module_utils import _host as hostio
from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.module_utils import _units as un
from ansible_collections.overlayfs.systemd.plugins.modules import mount as mod


def params(host, **kw):
    p = {"path": host.path("srv/app"), "lowerdir": [host.path("opt/app/v2"), host.path("opt/app/base")]}
    p.update(kw)
    return p


# The module under test, run against the fake host.
run = partial(run_main, mod.main)
ok = partial(expect_ok, mod.main)
failed = partial(expect_failed, mod.main)


def test_first_run_then_idempotent(host):
    r = ok(params(host))
    unit = nm.unit_name(host.path("srv/app"))
    assert r["changed"] and r["mounted"] and not r["reboot_required"]
    assert r["unit"] == unit and r["units"] == [unit]
    assert r["unit_path"] == str(host.unit_dir / unit)
    assert host.systemctl("daemon-reload") == [["daemon-reload"]]
    assert ["start", unit] in host.systemctl() and ["enable", unit] in host.systemctl()
    text = host.unit_text(unit)
    assert text.startswith(un.HEADER)
    assert stat.S_IMODE(os.stat(host.unit_dir / unit).st_mode) == 0o644
    # upper copies the top lower's mode; work is private
    assert stat.S_IMODE(os.stat(r["upperdir"]).st_mode) == 0o751
    assert stat.S_IMODE(os.stat(r["workdir"]).st_mode) == 0o700
    oid = nm.overlay_id(host.path("srv/app"))
    assert r["upperdir"] == "%s/%s/upper" % (nm.ROOTS.persistent_base, oid)
    assert stat.S_IMODE(os.stat(os.path.dirname(r["upperdir"])).st_mode) == 0o700
    assert r["options"][0] == "lowerdir=%s:%s" % (host.path("opt/app/v2"), host.path("opt/app/base"))
    assert not [f for f in os.listdir(host.unit_dir) if f.endswith(".tmp")]

    host.commands.clear()
    r2 = ok(params(host))
    assert not r2["changed"] and r2["mounted"] and r2["actions"] == []
    assert host.mutating() == []


def test_check_mode_touches_nothing(host):
    r = ok(params(host), check_mode=True, diff=True)
    assert r["changed"] and not r["mounted"]
    assert any(a.startswith("write ") for a in r["actions"])
    assert os.listdir(host.unit_dir) == []
    assert not os.path.exists(nm.ROOTS.persistent_base)
    assert host.mutating() == []
    (d,) = r["diff"]
    assert d["before"] == "" and d["after"].startswith(un.HEADER)
    assert d["after_header"].endswith(r["unit"])


def test_check_mode_after_apply_reports_no_change(host):
    ok(params(host))
    host.commands.clear()
    r = ok(params(host), check_mode=True)
    assert not r["changed"] and r["mounted"]
    assert host.mutating() == []


def test_diff_mode_shows_change(host):
    ok(params(host))
    r = ok(params(host, lowerdir=[host.path("opt/app/v3"), host.path("opt/app/base")]), diff=True)
    (d,) = r["diff"]
    assert "v2" in d["before"] and "v3" in d["after"]


def test_changed_lowers_restart(host):
    ok(params(host))
    host.commands.clear()
    r = ok(params(host, lowerdir=[host.path("opt/app/v3"), host.path("opt/app/base")]))
    unit = r["unit"]
    assert r["changed"] and r["mounted"]
    verbs = [c[0] for c in host.mutating()]
    assert verbs == ["stop", "daemon-reload", "start"]
    assert ["reload", unit] not in host.systemctl()
    live = minfo.mount_at(minfo.parse_mountinfo(host.mountinfo.read_text()), host.path("srv/app"))
    assert minfo.parse_overlay_options(live.super_options).lowerdir[0] == host.path("opt/app/v3")


def test_busy_overlay_fails_and_changes_nothing(host):
    ok(params(host))
    unit_path = host.unit_dir / nm.unit_name(host.path("srv/app"))
    before = unit_path.read_bytes()
    d = host.proc / "4242"
    (d / "fd").mkdir(parents=True)
    (d / "comm").write_text("bash\n")
    os.symlink(host.path("srv/app/sub"), d / "cwd")
    host.commands.clear()
    r = failed(params(host, lowerdir=[host.path("opt/app/v3"), host.path("opt/app/base")]))
    assert "4242" in r["msg"] and "bash" in r["msg"] and "nothing was changed" in r["msg"]
    assert r["holders"] == [{"pid": 4242, "comm": "bash", "reason": "cwd"}]
    assert r["msg"] == (
        "overlay %s is busy, refusing to stop it; nothing was changed. In use by: pid 4242 (bash): cwd. "
        "Stop these processes or unmount these, or use apply: next_boot" % host.path("srv/app")
    )
    assert r["param"] == "apply"
    assert unit_path.read_bytes() == before
    assert host.mutating() == []
    assert r["mounted"]
    assert r["changed"] is False


def test_busy_by_submount(host):
    ok(params(host))
    host.add_mount("300 200 0:99 / %s rw - tmpfs tmpfs rw" % host.path("srv/app/cache"))
    r = failed(params(host, state="unmounted"))
    assert "srv/app/cache" in r["msg"]


def test_failed_start_rolls_back_new_unit(host):
    unit = nm.unit_name(host.path("srv/app"))
    host.fail_start[unit] = "Job for %s failed because the control process exited with error code.\n" % unit
    r = failed(params(host))
    assert "Job for" in r["msg"] and r["stderr"].startswith("Job for")
    assert "wrong fs type" in r["journal"]
    assert host.unit_text(unit) is None
    assert not os.path.exists(nm.ROOTS.persistent_base)
    assert len(host.systemctl("daemon-reload")) == 2
    assert not r["mounted"]


def test_failed_restart_restores_previous_unit_and_mount(host):
    ok(params(host))
    unit = nm.unit_name(host.path("srv/app"))
    before = host.unit_text(unit)
    real_start = host._start
    calls = []

    def flaky(name):
        calls.append(name)
        if len(calls) == 1:
            return 1, "", "mount: wrong fs type\n"
        return real_start(name)

    host._start = flaky
    r = failed(params(host, lowerdir=[host.path("opt/app/v3"), host.path("opt/app/base")]))
    assert "rolled back" in r["msg"]
    assert host.unit_text(unit) == before
    assert r["mounted"]
    live = minfo.mount_at(minfo.parse_mountinfo(host.mountinfo.read_text()), host.path("srv/app"))
    assert minfo.parse_overlay_options(live.super_options).lowerdir[0] == host.path("opt/app/v2")


def test_verification_failure_rolls_back(host):
    unit = nm.unit_name(host.path("srv/app"))
    real_mount = host._mount

    def readonly_mount(name):
        real_mount(name)
        text = host.mountinfo.read_text().replace(
            " rw,nosuid,nodev,relatime - overlay", " ro,nosuid,nodev,relatime - overlay"
        )
        host.mountinfo.write_text(text)

    host._mount = readonly_mount
    r = failed(params(host))
    assert "read-only" in r["msg"]
    assert host.unit_text(unit) is None


def test_next_boot_leaves_live_mount(host):
    ok(params(host))
    host.commands.clear()
    r = ok(params(host, lowerdir=[host.path("opt/app/v3"), host.path("opt/app/base")], apply="next_boot"))
    assert r["changed"] and r["reboot_required"] and r["mounted"]
    assert [c[0] for c in host.mutating()] == ["daemon-reload"]
    assert host.path("opt/app/v3") in host.unit_text(r["unit"])
    r2 = ok(params(host, lowerdir=[host.path("opt/app/v3"), host.path("opt/app/base")], apply="next_boot"))
    assert not r2["changed"] and r2["reboot_required"]


def test_absent_keeps_data_then_purge(host):
    r = ok(params(host))
    upper = r["upperdir"]
    with open(os.path.join(upper, "data.txt"), "w") as fh:
        fh.write("keep me\n")
    host.commands.clear()
    r = ok({"path": host.path("srv/app"), "state": "absent"})
    assert r["changed"] and not r["mounted"] and r["units"] == [r["unit"]]
    assert host.unit_text(r["unit"]) is None
    assert os.path.exists(os.path.join(upper, "data.txt"))
    assert [c[0] for c in host.mutating()] == ["stop", "disable", "daemon-reload"]
    assert r["unit"] not in host.enabled

    r = ok({"path": host.path("srv/app"), "state": "absent"})
    assert not r["changed"]

    ok(params(host))
    r = ok({"path": host.path("srv/app"), "state": "absent", "purge": True})
    assert not os.path.exists(upper)
    assert not os.path.exists(os.path.dirname(upper))
    assert os.path.exists(host.path("opt/app/base/file.txt"))


def test_absent_purge_explicit_dirs(host):
    up, work = host.path("data/up"), host.path("data/work")
    ok(params(host, upperdir=up, workdir=work))
    assert os.path.isdir(up) and os.path.isdir(work)
    ok({"path": host.path("srv/app"), "state": "absent", "purge": True})
    assert not os.path.exists(up) and not os.path.exists(work)
    assert os.path.isdir(host.path("data"))


def test_absent_leaves_unmanaged_unit(host):
    unit = nm.unit_name(host.path("srv/app"))
    (host.unit_dir / unit).write_text("[Mount]\nWhat=/dev/sdb1\nWhere=%s\n" % host.path("srv/app"))
    r = ok({"path": host.path("srv/app"), "state": "absent"})
    assert not r["changed"]
    assert host.unit_text(unit) is not None


def test_tmpfs_upper(host):
    r = ok(params(host, upper="tmpfs", tmpfs_size="50%"))
    oid = nm.overlay_id(host.path("srv/app"))
    tmpfs_unit = nm.unit_name(os.path.join(nm.ROOTS.tmpfs_base, oid))
    prep = "overlayfs-prepare-%s.service" % oid
    assert r["units"] == [r["unit"], tmpfs_unit, prep]
    assert "size=50%%" in host.unit_text(tmpfs_unit)
    assert "ExecStart=/usr/bin/install -d -m 0751" in host.unit_text(prep)
    assert r["mounted"] and r["upperdir"] == os.path.join(nm.ROOTS.tmpfs_base, oid, "upper")
    assert not os.path.exists(nm.ROOTS.persistent_base)
    host.commands.clear()
    r2 = ok(params(host, upper="tmpfs", tmpfs_size="50%"))
    assert not r2["changed"] and host.mutating() == []
    # resize: remount the tmpfs, leave the overlay alone
    r3 = ok(params(host, upper="tmpfs", tmpfs_size="60%"))
    assert r3["changed"] and ["reload", tmpfs_unit] in host.systemctl() and ["stop", r["unit"]] not in host.systemctl()
    # back to persistent: the tmpfs units go away
    host.commands.clear()
    r4 = ok(params(host))
    assert host.unit_text(tmpfs_unit) is None and host.unit_text(prep) is None
    assert ["stop", tmpfs_unit] in host.systemctl() and r4["mounted"]


@pytest.mark.parametrize("change", [{"state": "absent"}, {"upper": "persistent"}])
def test_tmpfs_upper_with_changes_is_not_discarded_without_purge(host, change):
    tmpfs = params(host, upper="tmpfs", tmpfs_size="50%")
    r = ok(tmpfs)
    os.makedirs(r["upperdir"], exist_ok=True)
    with open(os.path.join(r["upperdir"], "session.log"), "w") as fh:
        fh.write("work of the day\n")
    unit_before = host.unit_text(r["unit"])
    host.commands.clear()
    args = dict(tmpfs, **change)
    if change.get("upper") == "persistent":
        del args["tmpfs_size"]
    refused = failed(args)
    assert refused["param"] == "purge" and "session.log" in refused["msg"] and not refused["changed"]
    assert host.mutating() == [] and host.unit_text(r["unit"]) == unit_before
    assert os.path.exists(os.path.join(r["upperdir"], "session.log"))
    # Asked for exactly that: discarded.
    done = ok(dict(args, purge=True))
    assert done["changed"]


def test_present_and_unmounted(host):
    r = ok(params(host, state="present"))
    assert r["changed"] and not r["mounted"] and host.systemctl("start") == []
    assert r["unit"] in host.enabled
    r = ok(params(host))
    assert r["mounted"]
    r = ok(params(host, state="unmounted", enabled=False))
    assert r["changed"] and not r["mounted"] and r["unit"] not in host.enabled
    assert host.unit_text(r["unit"]) is not None


@pytest.mark.parametrize(
    "overrides, param, fragment",
    [
        ({"lowerdir": ["relative/dir"]}, "lowerdir", "relative"),
        ({"metacopy": True, "redirect_dir": "off"}, "metacopy", "redirect_dir"),
        ({"volatile": True}, "volatile", "incompat"),
        ({"upper": "none", "lowerdir": ["/opt/x"]}, "lowerdir", "at least 2"),
        ({"tmpfs_size": "lots", "upper": "tmpfs"}, "tmpfs_size", "tmpfs_size"),
    ],
)
def test_validation_errors_name_the_parameter(host, overrides, param, fragment):
    r = failed(params(host, **overrides))
    assert r["param"] == param and fragment in r["msg"]
    assert host.mutating() == [] and os.listdir(host.unit_dir) == []


def test_missing_lower_is_refused(host):
    r = failed(params(host, lowerdir=[host.path("opt/nope"), host.path("opt/app/base")]))
    assert r["param"] == "lowerdir" and "does not exist" in r["msg"]


def test_nonempty_mountpoint(host):
    os.makedirs(host.path("srv/app"))
    (host.root / "srv" / "app" / "old.txt").write_text("x")
    r = failed(params(host))
    assert r["param"] == "path" and "old.txt" in r["msg"]
    assert ok(params(host, allow_nonempty_mountpoint=True))["mounted"]


def test_nonempty_foreign_workdir(host):
    work = host.path("data/work")
    os.makedirs(os.path.join(work, "work", "precious"))
    r = failed(params(host, upperdir=host.path("data/up"), workdir=work))
    assert r["param"] == "workdir" and "deletes" in r["msg"]


def test_upper_on_overlay_is_refused(host):
    host.add_mount("90 22 0:50 / %s rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w" % host.path("var"))
    r = failed(params(host))
    assert r["param"] == "upperdir" and "overlayfs" in r["msg"] and "tmpfs" in r["msg"]


def test_upper_and_work_on_different_mounts(host):
    host.add_mount("91 22 0:51 / %s rw - ext4 /dev/vdb rw" % host.path("data/a"))
    r = failed(params(host, upperdir=host.path("data/a/up"), workdir=host.path("data/work")))
    assert r["param"] == "workdir" and "same mount" in r["msg"]


def test_upper_shared_with_another_overlay(host):
    up = host.path("data/up")
    host.add_mount(
        "92 22 0:52 / /srv/other rw - overlay overlay rw,lowerdir=/l,upperdir=%s,workdir=%s"
        % (up, host.path("data/w2"))
    )
    r = failed(params(host, upperdir=up, workdir=host.path("data/work")))
    assert r["param"] == "upperdir" and "/srv/other" in r["msg"]


def test_foreign_mount_at_path(host):
    host.add_mount("93 22 0:53 / %s rw - ext4 /dev/vdc rw" % host.path("srv/app"))
    r = failed(params(host))
    assert "ext4" in r["msg"] and r["param"] == "path"


def test_per_value_limit_with_new_util_linux(host):
    deep = host.path("opt/" + "/".join(["d" * 40] * 6))
    os.makedirs(deep)
    host.util_linux = "2.39.3"
    r = failed(params(host, lowerdir=[deep, host.path("opt/app/base")]))
    assert r["param"] == "lowerdir" and "fsconfig" in r["msg"]
    host.util_linux = "2.38.1"
    assert ok(params(host, lowerdir=[deep, host.path("opt/app/base")]))["mounted"]


def long_stack(host) -> list[str]:
    """Five lowers of about 100 bytes: each fits fsconfig's 255 bytes, the lowerdir= list does not."""
    lowers = [host.path("opt/%s%d" % ("L" * 75, i)) for i in range(5)]
    for low in lowers:
        os.makedirs(low)
    return lowers


@pytest.mark.parametrize("kernel, util_linux", [((6, 8), "2.41.1"), ((6, 18), "2.39.3")])
def test_long_stack_one_lowerdir_add_a_layer(host, monkeypatch, kernel, util_linux):
    monkeypatch.setattr(hostio, "kernel_version", lambda release: kernel)
    host.util_linux = util_linux
    lowers = long_stack(host)
    r = ok(params(host, lowerdir=lowers))
    assert r["changed"] and r["mounted"]
    assert r["options"][: len(lowers)] == ["lowerdir+=" + x for x in lowers]
    mounts = minfo.parse_mountinfo(host.mountinfo.read_text())
    live = minfo.parse_overlay_options(minfo.mount_at(mounts, host.path("srv/app")).super_options)
    assert live.lowerdir == lowers
    assert not ok(params(host, lowerdir=lowers))["changed"]


@pytest.mark.parametrize(
    "kernel, odd, reason",
    [((6, 5), "", "needs kernel 6.8 (this host: 6.5)"), ((6, 8), ",", "cannot carry the ',' or")],
)
def test_long_stack_refused_with_the_reason(host, monkeypatch, kernel, odd, reason):
    monkeypatch.setattr(hostio, "kernel_version", lambda release: kernel)
    host.util_linux = "2.41.1"
    lowers = long_stack(host)
    if odd:
        os.rename(lowers[0], lowers[0] + odd + "x")
        lowers[0] += odd + "x"
    r = failed(params(host, lowerdir=lowers))
    assert r["param"] == "lowerdir" and "fsconfig" in r["msg"] and reason in r["msg"], r["msg"]


def test_unit_of_debian_12_repaired_after_the_upgrade(host, monkeypatch):
    """A long stack written with util-linux 2.38 (one lowerdir= list) cannot mount on 2.41: rewritten and started."""
    monkeypatch.setattr(hostio, "kernel_version", lambda release: (6, 12))
    lowers = long_stack(host)
    first = ok(params(host, lowerdir=lowers))
    assert first["options"][0].startswith("lowerdir=")
    # The upgrade's reboot: the unit with the lowerdir= list failed at boot.
    host._unmount(first["unit"])
    host.active.discard(first["unit"])
    host.util_linux = "2.41.1"
    r = ok(params(host, lowerdir=lowers))
    assert r["changed"] and r["mounted"]
    assert "lowerdir+=%s," % lowers[0] in host.unit_text(first["unit"])
    assert not ok(params(host, lowerdir=lowers))["changed"]


def test_explicit_owner_mode_enforced_on_existing_upper(host):
    up, work = host.path("data/up"), host.path("data/work")
    ok(params(host, upperdir=up, workdir=work))
    r = ok(params(host, upperdir=up, workdir=work, mode="0700"))
    assert r["changed"] and stat.S_IMODE(os.stat(up).st_mode) == 0o700
    assert not ok(params(host, upperdir=up, workdir=work, mode="0700"))["changed"]


def test_escaped_paths_round_trip(host):
    lower = host.path("opt/my app,v:1")
    os.makedirs(lower)
    r = ok(params(host, path=host.path("srv/my-app"), lowerdir=[lower, host.path("opt/app/base")]))
    assert "\\x2d" in r["unit"] and r["mounted"]
    assert "lowerdir=%s" % lower.replace(",", "\\,").replace(":", "\\:") in r["options"][0]
    host.commands.clear()
    assert not ok(params(host, path=host.path("srv/my-app"), lowerdir=[lower, host.path("opt/app/base")]))["changed"]


def test_owner_and_group_by_name(host):
    r = ok(params(host, owner="root", group="0", mode="0750", upperdir=host.path("d/up"), workdir=host.path("d/wk")))
    st = os.stat(r["upperdir"])
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o750)


def test_unknown_owner_is_refused(host):
    r = failed(params(host, owner="no-such-user-here"))
    assert r["param"] == "owner" and "no-such-user-here" in r["msg"]
    assert os.listdir(host.unit_dir) == []


def test_absent_in_check_mode_changes_nothing(host):
    ok(params(host))
    host.commands.clear()
    r = ok({"path": host.path("srv/app"), "state": "absent", "purge": True}, check_mode=True)
    assert r["changed"] and r["mounted"]
    assert any(a.startswith("purge ") for a in r["actions"])
    assert host.mutating() == []
    assert host.unit_text(r["unit"]) is not None and os.path.isdir(r["upperdir"])


def as_written_by_main(host, name):
    """Turn a unit into what 0.1.0 wrote: the same text without the declaration line."""
    path = host.unit_dir / name
    text = path.read_text()
    path.write_text("".join(x for x in text.splitlines(True) if not x.startswith(un.X_PREFIX + "Declaration=")))
    return text


@pytest.mark.parametrize("upper", ["persistent", "tmpfs"])
def test_unit_of_main_is_upgraded_in_place(host, upper):
    """A live overlay whose unit main wrote: one write and a daemon-reload, no restart, then idempotent."""
    ok(params(host, upper=upper))
    unit = nm.unit_name(host.path("srv/app"))
    new_text = as_written_by_main(host, unit)
    host.commands.clear()
    checked = ok(params(host, upper=upper), check_mode=True)
    assert checked["changed"] and checked["actions"] == ["write %s" % unit, "daemon-reload"]
    assert host.mutating() == []
    r = ok(params(host, upper=upper))
    assert r["changed"] and r["actions"] == ["write %s" % unit, "daemon-reload"] and r["mounted"]
    assert host.mutating() == [["daemon-reload"]]
    assert host.unit_text(unit) == new_text
    assert ok(params(host, upper=upper))["changed"] is False


# ---------------------------------------------------------------------------
# Fleet safety (issue 11)
# ---------------------------------------------------------------------------


def test_restart_brings_back_the_service_that_requires_the_overlay(host):
    r0 = ok(params(host))
    host.add_service("app.service", r0["unit"])
    r = ok(params(host, lowerdir=[host.path("opt/app/v3"), host.path("opt/app/base")]))
    assert ["stop", r0["unit"]] in host.systemctl() and ["start", "app.service"] in host.systemctl()
    assert r["restarted_units"] == ["app.service"] and "app.service" in host.active


def test_an_inactive_dependent_is_not_started(host):
    r0 = ok(params(host))
    host.add_service("app.service", r0["unit"], active=False)
    r = ok(params(host, lowerdir=[host.path("opt/app/v3")]))
    assert r["restarted_units"] == [] and ["start", "app.service"] not in host.systemctl()


def test_a_dependent_that_fails_to_come_back_is_an_error_with_its_journal(host):
    r0 = ok(params(host))
    host.add_service("app.service", r0["unit"])
    host.fail_start["app.service"] = "Job for app.service failed.\n"
    r = failed(params(host, lowerdir=[host.path("opt/app/v3")]))
    assert r["msg"].startswith("units stopped by this run did not come back: app.service")
    assert r["failed_units"][0]["journal"][0] == "app.service[77]: cannot open the kiosk state"
    assert r["mounted"]  # the overlay itself converged


def test_lock_result_and_check_mode_without_lock(host):
    r = ok(params(host))
    assert r["lock"]["taken"] and r["lock"]["path"].endswith("/run/lock/overlayfs-systemd.lock")
    r = ok(params(host), check_mode=True)
    assert not r["lock"]["taken"]


def replace_dir(path):
    """rm -rf path; mkdir path, the way an operator or a cleanup script does: same path, another directory."""
    tmp = path + ".new"
    os.mkdir(tmp)
    os.rename(path, path + ".old")
    os.rename(tmp, path)
    return path + ".old"


@pytest.mark.parametrize("layer,key", [("upperdir", "upper_replaced"), ("workdir", "work_replaced")])
def test_replaced_layer_is_a_change_repaired_by_a_restart(host, layer, key):
    r0 = ok(params(host))
    unit = r0["unit"]
    assert ok(params(host))["layer_drift"] == []
    replace_dir(r0[layer])
    host.commands.clear()
    r = ok(params(host), check_mode=True)
    assert r["changed"] and key in r["layer_drift"] and host.mutating() == []
    r = ok(params(host))
    assert r["changed"] and key in r["layer_drift"]
    assert [c for c in host.mutating() if c[1] == unit] == [["stop", unit], ["start", unit]]
    r = ok(params(host))
    assert not r["changed"] and r["layer_drift"] == []


def test_missing_upper_is_created_again_and_the_overlay_restarted(host):
    r0 = ok(params(host))
    os.rename(r0["upperdir"], r0["upperdir"] + ".gone")
    r = ok(params(host))
    assert r["changed"] and r["layer_drift"] == ["upper_missing"] and os.path.isdir(r0["upperdir"])
    assert "create directory %s" % r0["upperdir"] in r["actions"]
    assert not ok(params(host))["changed"]


def test_replaced_layer_with_next_boot_waits_for_the_reboot(host):
    r0 = ok(params(host))
    replace_dir(r0["upperdir"])
    host.commands.clear()
    r = ok(params(host, apply="next_boot"))
    assert r["reboot_required"] and r["layer_drift"] == ["upper_replaced"]
    assert not [c for c in host.mutating() if c[0] in ("stop", "start")]
