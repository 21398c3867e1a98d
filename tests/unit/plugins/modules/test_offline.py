# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mount and mounts in an image root where systemd does not run (the fake host without its booted marker)."""

from __future__ import annotations

import os
from functools import partial

from ansible.module_utils import basic
from fakehost import expect_ok

from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.modules import mount as mount_mod
from ansible_collections.overlayfs.systemd.plugins.modules import mounts as mounts_mod

mount_ok = partial(expect_ok, mount_mod.main)
mounts_ok = partial(expect_ok, mounts_mod.main)


def offline(host):
    os.rmdir(host.roots.booted_marker)
    os.makedirs(host.path("opt/app"), exist_ok=True)


def snapshot(host):
    out = []
    for d, dirs, files in os.walk(host.root):
        for n in dirs + files:
            p = os.path.join(d, n)
            out.append((p, os.readlink(p) if os.path.islink(p) else None))
    return sorted(out)


def test_mount_offline_writes_units_and_links_then_no_change(host, monkeypatch):
    offline(host)
    warned = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: warned.append(msg))
    args = {"path": host.path("srv/app"), "lowerdir": [host.path("opt/app")]}
    before = snapshot(host)
    r = mount_ok(args, check_mode=True, diff=True)
    assert r["offline"] and r["changed"] and r["diff"]
    assert snapshot(host) == before
    r = mount_ok(args)
    unit = nm.unit_name(args["path"])
    assert r["offline"] and r["changed"] and not r["mounted"] and not r["reboot_required"]
    assert r["actions"][-2:] == ["write %s" % unit, "enable %s" % unit]
    assert [w for w in warned if "offline run" in w][-1].startswith("offline run (systemd is not running")
    link = os.path.join(host.roots.unit_dir, "local-fs.target.wants", unit)
    assert os.readlink(link) == os.path.join(host.roots.unit_dir, unit)
    assert os.path.isdir(r["upperdir"]) and os.path.isdir(r["workdir"])
    assert host.systemctl() == []  # no systemctl at all (mount --version: the image's util-linux)
    r = mount_ok(args)
    assert r["offline"] and not r["changed"] and r["actions"] == []
    # Removal offline: the unit and its link go, nothing is stopped.
    r = mount_ok(dict(args, state="absent"))
    assert r["changed"] and not os.path.lexists(link) and host.unit_text(unit) is None
    assert host.mutating() == []


def test_offline_warning_claims_no_write(host, monkeypatch):
    """Check mode, a changing run and a no-op run warn alike: the warning names the mode, not an action."""
    offline(host)
    warned = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: warned.append(msg))
    args = {"path": host.path("srv/app"), "lowerdir": [host.path("opt/app")]}
    runs = [mount_ok(args, check_mode=True), mount_ok(args), mount_ok(args)]
    assert [r["changed"] for r in runs] == [True, True, False]
    offline_warnings = [w for w in warned if w.startswith("offline run (")]
    assert len(offline_warnings) == 3 and len(set(offline_warnings)) == 1
    assert "written" not in offline_warnings[0]
    assert "are managed as systemctl enable does offline" in offline_warnings[0]


def test_mount_offline_ignores_the_build_hosts_mounts(host):
    offline(host)
    path = host.path("srv/app")
    # A /proc in the chroot shows the build host: an overlay at the same path there is not the image's.
    host.add_mount("90 22 0:90 / %s rw - overlay overlay rw,lowerdir=/elsewhere,upperdir=/u,workdir=/w" % path)
    r = mount_ok({"path": path, "lowerdir": [host.path("opt/app")], "apply": "restart"})
    assert r["changed"] and not r["mounted"] and host.mutating() == []


def test_mounts_offline_target_enabled_not_started(host):
    offline(host)
    items = [
        {"path": host.path("srv/a"), "lowerdir": [host.path("opt/app")]},
        {"path": host.path("srv/b"), "lowerdir": [host.path("opt/app")], "upper": "tmpfs", "tmpfs_size": "8M"},
    ]
    r = mounts_ok({"overlays": items, "target": "overlays.target"}, check_mode=True)
    assert (
        r["offline"] and r["changed"] and r["target"]["actions"] == ["write overlays.target", "enable overlays.target"]
    )
    r = mounts_ok({"overlays": items, "target": "overlays.target"})
    assert r["offline"] and r["changed"] and all(x["offline"] for x in r["results"])
    assert r["target"]["requires"] == [nm.unit_name(i["path"]) for i in items]
    wants = os.path.join(host.roots.unit_dir, "multi-user.target.wants", "overlays.target")
    assert os.readlink(wants) == os.path.join(host.roots.unit_dir, "overlays.target")
    assert host.systemctl() == []
    r = mounts_ok({"overlays": items, "target": "overlays.target"})
    assert not r["changed"] and r["offline"]
