# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mount_info end to end on the fake host of ``fakehost.py``.

The mount module sets the overlays up on the fake host (unit files, fake
mountinfo lines), then mount_info reports them. Its ``systemctl show`` is
answered here with every property it reads, from the fake host's state plus
what a test makes fail or edit.
"""

from __future__ import annotations

import os

import pytest
import yaml
from ansible.module_utils import basic
from fakehost import AnsibleExitJson, AnsibleFailJson, run_main

from ansible_collections.overlayfs.systemd.plugins.module_utils import _host as hostio
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.modules import mount
from ansible_collections.overlayfs.systemd.plugins.modules import mount_info as mod


class FakeShow:
    """Answers ``systemctl show`` with mount_info's properties; the rest goes to the fake host."""

    def __init__(self, host):
        self.host = host
        self.real = host.run_command
        self.failed: set[str] = set()
        self.need_reload: set[str] = set()
        self.broken = False
        self.calls: list[list[str]] = []

    def __call__(self, args, **kw):
        args = list(args)
        if os.path.basename(args[0]) != "systemctl" or args[1] != "show":
            return self.real(args, **kw)
        self.calls.append(args)
        if self.broken:
            return 1, "", "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
        blocks = []
        for u in args[args.index("--") + 1 :]:
            active = "failed" if u in self.failed else "active" if u in self.host.active else "inactive"
            path = self.host.unit_dir / u
            blocks.append(
                "Id=%s\nLoadState=loaded\nActiveState=%s\nSubState=%s\nUnitFileState=%s\nNeedDaemonReload=%s\n"
                "FragmentPath=%s\n"
                % (
                    u,
                    active,
                    {"failed": "failed", "active": "mounted", "inactive": "dead"}[active],
                    "enabled" if u in self.host.enabled else "disabled",
                    "yes" if u in self.need_reload else "no",
                    path if path.exists() else "",
                )
            )
        return 0, "\n".join(blocks), ""


@pytest.fixture
def show(host, monkeypatch):
    # make_host points _names.ROOTS (unit directory, mountinfo), which mount_info reads too, at the fake host.
    fake = FakeShow(host)
    monkeypatch.setattr(host, "run_command", fake)
    (host.root / "opt" / "app" / "v3" / "x.txt").write_text("v3\n")
    return fake


def setup(host, **overlays):
    """Mount overlays with the mount module: name -> extra parameters (path /srv/<name>)."""
    for name, extra in overlays.items():
        args = {"path": host.path("srv/" + name), "lowerdir": [host.path("opt/app/v2"), host.path("opt/app/base")]}
        args.update(extra)
        res = run_main(mount.main, args)
        assert isinstance(res, AnsibleExitJson), res.result.get("msg")


def info(**args) -> dict:
    res = run_main(mod.main, args)
    assert isinstance(res, AnsibleExitJson), res.result.get("msg")
    assert res.result["changed"] is False
    return res.result


def by_path(result) -> dict[str, dict]:
    return {o["path"]: o for o in result["overlays"]}


def test_three_overlays_reported_exactly(host, show, monkeypatch):
    setup(host, tmp={"upper": "tmpfs", "tmpfs_size": "4M"}, persist={}, ro={"upper": "none"})
    # The fake tmpfs is a directory of the test's file system: give it fixed numbers.
    monkeypatch.setattr(os, "statvfs", lambda p: os.statvfs_result((4096, 4096, 1024, 1000, 1000, 99, 90, 90, 0, 255)))
    host.add_mount("5 1 0:5 / / rw,relatime - overlay overlay rw,lowerdir=/l/a:/l/b,upperdir=/d/up,workdir=/d/wk")
    show.calls.clear()
    mutating_before = len(host.mutating())
    rep = by_path(info())
    lowers = [host.path("opt/app/v2"), host.path("opt/app/base")]
    tmp, persist, ro = (rep[host.path("srv/" + n)] for n in ("tmp", "persist", "ro"))
    assert sorted(rep) == sorted(["/"] + [host.path("srv/" + n) for n in ("tmp", "persist", "ro")])
    for entry in (tmp, persist, ro):
        assert entry["lowerdir"] == lowers and entry["datadir"] == []
        assert entry["managed"] and entry["mounted"] and entry["enabled"] and entry["drift"] == []
        assert (entry["active_state"], entry["sub_state"]) == ("active", "mounted")
        assert entry["unit"] == nm.unit_name(entry["path"])
        assert entry["unit_path"] == str(host.unit_dir / entry["unit"])
        assert entry["options"] == {"nosuid": None, "nodev": None, "relatime": None}
    assert tmp["upper"] == "tmpfs" and tmp["upperdir"].startswith(nm.ROOTS.tmpfs_base + "/")
    assert tmp["tmpfs"]["path"] == os.path.dirname(tmp["upperdir"]) and tmp["tmpfs"]["percent"] == 2.3
    assert persist["upper"] == "persistent" and persist["upperdir"].startswith(nm.ROOTS.persistent_base + "/")
    assert persist["tmpfs"] is None and not persist["readonly"]
    assert ro["upper"] == "none" and ro["readonly"] and ro["upperdir"] is None and ro["workdir"] is None
    root = rep["/"]
    assert not root["managed"] and root["unit"] == "-.mount" and root["upper"] == "persistent"
    assert root["unit_path"] is None and root["enabled"] is False and root["drift"] == []
    # One systemctl show for all units (three overlays, the tmpfs unit, the prepare service, -.mount), nothing else.
    (call,) = show.calls
    assert len(call[call.index("--") + 1 :]) == 6
    assert len(host.mutating()) == mutating_before


def test_drift_reported(host, show):
    setup(host, app={}, tmp={"upper": "tmpfs"}, ro={"upper": "none"})
    app, tmp, ro = (host.path("srv/" + n) for n in ("app", "tmp", "ro"))
    # Other lowers mounted by hand over app; ro stopped; tmp's unit edited and its prepare service failed.
    lines = host.mountinfo.read_text().splitlines(keepends=True)
    hand = [
        x.replace("lowerdir=" + host.path("opt/app/v2"), "lowerdir=/hand/made") if " %s " % app in x else x
        for x in lines
    ]
    host.mountinfo.write_text("".join(hand))
    host._stop(nm.unit_name(ro))
    tmp_units = nm.candidate_units(tmp)
    show.need_reload.add(tmp_units[0])
    show.failed.add(tmp_units[2])
    rep = by_path(info(managed_only=True))
    assert rep[app]["lowerdir"][0] == "/hand/made"
    assert rep[app]["drift"] == [
        "lowerdir differs: live [/hand/made, %s], unit [%s, %s]"
        % (host.path("opt/app/base"), host.path("opt/app/v2"), host.path("opt/app/base"))
    ]
    assert not rep[ro]["mounted"] and rep[ro]["lowerdir"] == [host.path("opt/app/v2"), host.path("opt/app/base")]
    assert rep[ro]["drift"] == ["not mounted, but %s is enabled (mounted at boot)" % nm.unit_name(ro)]
    assert rep[tmp]["drift"] == [
        "unit %s changed on disk but not reloaded (NeedDaemonReload=yes); run systemctl daemon-reload" % tmp_units[0],
        "unit %s failed (SubState=failed); see journalctl -u %s" % (tmp_units[2], tmp_units[2]),
    ]


def test_filters_and_unmanaged_overlays(host, show):
    setup(host, app={})
    app = host.path("srv/app")
    host.add_mount("300 22 0:99 / /srv/by\\040hand rw,relatime - overlay overlay ro,lowerdir=/a\\134\\072b:/c")
    assert list(by_path(info(path=[app + "/", "/nothing/here"]))) == [app]
    assert list(by_path(info(path=["/srv/by hand"]))) == ["/srv/by hand"]
    assert list(by_path(info(managed_only=True))) == [app]
    hand = by_path(info())["/srv/by hand"]
    assert hand["lowerdir"] == ["/a:b", "/c"] and hand["upper"] == "none" and hand["readonly"]
    assert not hand["managed"] and hand["unit"] == "srv-by\\x20hand.mount"


def test_check_mode_reports_the_same(host, show):
    setup(host, app={})
    before = info()
    res = run_main(mod.main, {}, check_mode=True)
    assert isinstance(res, AnsibleExitJson) and res.result["overlays"] == before["overlays"]


def test_no_units_no_systemctl(host, show):
    assert info() == {"changed": False, "overlays": []}
    assert show.calls == []


def test_without_running_systemd_states_are_null(host, show, monkeypatch):
    setup(host, app={})
    show.broken = True
    warned = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: warned.append(msg))
    res = run_main(mod.main, {})
    assert isinstance(res, AnsibleExitJson)
    (entry,) = res.result["overlays"]
    assert entry["mounted"] and entry["managed"] and entry["drift"] == []
    assert entry["active_state"] is None and entry["enabled"] is None
    assert len(warned) == 1 and warned[0].startswith("unit states unknown, reported as null: ")
    assert "System has not been booted with systemd" in warned[0]


@pytest.mark.parametrize("path", ["relative/path", "/srv/../etc", "/srv/a\nb"])
def test_bad_path_fails_naming_it(host, show, path):
    res = run_main(mod.main, {"path": [path]})
    assert isinstance(res, AnsibleFailJson)
    assert res.result["param"] == "path" and repr(path) in res.result["msg"]
    assert show.calls == []


def test_unit_dir_masks_and_foreign_files_are_skipped(host, show):
    setup(host, app={})
    os.symlink("/dev/null", host.unit_dir / "masked.mount")
    (host.unit_dir / "local-fs.target.wants").mkdir()
    (host.unit_dir / "foreign.mount").write_text("[Mount]\nWhat=overlay\nWhere=/srv/foreign\nType=overlay\n")
    assert list(by_path(info(managed_only=True))) == [host.path("srv/app")]
    assert hostio.unit_files(str(host.root / "missing")) == {}


def test_return_documents_every_key(host, show):
    setup(host, tmp={"upper": "tmpfs"})
    (entry,) = info()["overlays"]
    doc = yaml.safe_load(mod.RETURN)["overlays"]["contains"]
    assert set(doc) == set(entry)
    assert entry["tmpfs"] is not None and set(doc["tmpfs"]["contains"]) == set(entry["tmpfs"])
