# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fake host the module tests run against behaves like the systemd it stands for."""

from __future__ import annotations

import os

from ansible_collections.overlayfs.systemd.plugins.module_utils import _host as hostio
from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm

OVERLAY_UNIT = """[Unit]
Requires=srv-a.mount
[Mount]
What=overlay
Where={where}
Type=overlay
Options=lowerdir={low}:/opt/b\\,c,upperdir=/u,workdir=/w,nosuid,nodev,ro
"""


def test_the_fixture_points_every_root_at_its_tree(host):
    roots = nm.ROOTS
    for path in (roots.unit_dir, roots.mountinfo, roots.proc, roots.fstab, roots.overlay_params):
        assert path.startswith(str(host.root) + os.sep)
    assert roots.persistent_base.startswith(str(host.root)) and roots.tmpfs_base.startswith(str(host.root))
    assert [m.mount_point for m in hostio.read_mounts()] == ["/", "/run"]


def test_start_mounts_what_the_unit_says_and_stop_unmounts(host):
    where = host.path("srv/my app")
    (host.unit_dir / "x.mount").write_text(OVERLAY_UNIT.format(where=where, low="/opt/100%%"))
    (host.unit_dir / "srv-a.mount").write_text("[Mount]\nWhat=tmpfs\nWhere=/srv/a\nType=tmpfs\nOptions=mode=0755\n")
    assert host.run_command(["/usr/bin/systemctl", "start", "x.mount"], environ_update={"LC_ALL": "C"})[0] == 0
    live = minfo.mount_at(hostio.read_mounts(), where)
    opts = minfo.parse_overlay_options(live.super_options, live.mount_options)
    assert (opts.lowerdir, opts.upperdir, opts.workdir) == (["/opt/100%", "/opt/b,c"], "/u", "/w")
    assert opts.readonly and live.mount_options == "ro,nosuid,nodev,relatime"
    assert minfo.mount_at(hostio.read_mounts(), "/srv/a").fstype == "tmpfs"  # Requires= started first
    host.run_command(["/usr/bin/systemctl", "stop", "srv-a.mount"], environ_update={"LC_ALL": "C"})
    assert minfo.mount_at(hostio.read_mounts(), where) is None  # stopping a required unit stops x.mount
    assert host.active == set()


def test_failures_and_unknown_units(host):
    host.fail_once["y.mount"] = "boom\n"
    run = host.run_command
    assert run(["/usr/bin/systemctl", "start", "y.mount"], environ_update={"LC_ALL": "C"}) == (1, "", "boom\n")
    rc, out, err = run(["/usr/bin/systemctl", "start", "y.mount"], environ_update={"LC_ALL": "C"})
    assert rc == 5 and "not found" in err
    assert host.mutating() == [["start", "y.mount"], ["start", "y.mount"]]


def test_show_reports_enabled_and_active(host):
    host.enabled.add("x.mount")
    rc, out, dummy = host.run_command(
        ["/usr/bin/systemctl", "show", "-p", "Id", "--", "x.mount", "z.mount"], environ_update={"LC_ALL": "C"}
    )
    assert "UnitFileState=enabled\nNeedDaemonReload=no\nActiveState=inactive" in out
    assert out.count("UnitFileState=disabled") == 1
