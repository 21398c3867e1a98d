# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure rules of offline runs: systemd's own detection, the links of systemctl enable."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils._offline import (
    BootObservation,
    Link,
    install_links,
    links_to_remove,
    offline_reason,
    unit_file_state,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._plan import Plan, offline_steps


@pytest.mark.parametrize(
    "env, marker, chroot, offline",
    [
        (None, True, False, None),  # a booted host
        (None, True, None, None),  # no /proc: the marker decides
        (None, False, None, "systemd is not running (no /run/systemd/system)"),
        (None, True, True, "running in a chroot (/ is not the root of PID 1)"),
        ("1", True, False, "SYSTEMD_OFFLINE=1 is set"),
        ("yes", True, False, "SYSTEMD_OFFLINE=yes is set"),
        ("0", False, True, None),  # an explicit false wins, as in systemctl
        ("", False, None, "systemd is not running (no /run/systemd/system)"),
    ],
)
def test_offline_reason(env, marker, chroot, offline):
    assert offline_reason(BootObservation(env, marker, chroot)) == offline


UNIT = "[Unit]\nDescription=x\n\n[Install]\nWantedBy=local-fs.target multi-user.target\nRequiredBy=a.target\n"


def test_install_links_one_per_install_word():
    links = install_links("srv-app.mount", UNIT + "WantedBy=local-fs.target\nAlias=b.mount\n", "/etc/systemd/system")
    target = "/etc/systemd/system/srv-app.mount"
    assert links == [
        Link("/etc/systemd/system/local-fs.target.wants/srv-app.mount", target),
        Link("/etc/systemd/system/multi-user.target.wants/srv-app.mount", target),
        Link("/etc/systemd/system/a.target.requires/srv-app.mount", target),
        Link("/etc/systemd/system/b.mount", target),
    ]
    assert install_links("x.mount", "[Unit]\nDescription=x\n", "/u") == []
    assert install_links("x.mount", None, "/u") == []


def test_unit_file_state_needs_every_link():
    links = install_links("srv-app.mount", UNIT, "/u")
    have = {link.path: link.target for link in links}
    assert unit_file_state(links, have.get) == "enabled"
    del have[links[1].path]
    assert unit_file_state(links, have.get) == "disabled"
    have[links[1].path] = "/elsewhere/srv-app.mount"
    assert unit_file_state(links, have.get) == "disabled"
    assert unit_file_state([], have.get) == "static"


def test_links_to_remove_only_those_enabling_the_unit():
    found = {
        "/u/local-fs.target.wants/a.mount": "/u/a.mount",
        "/u/x.target.requires/a.mount": "a.mount",
        "/u/local-fs.target.wants/b.mount": "/u/b.mount",
        "/u/y.target.wants/a.mount": "/lib/systemd/system/a.mount",
        "/u/z.target.wants/a.mount": None,
    }
    assert links_to_remove("a.mount", "/u/a.mount", found) == [
        "/u/local-fs.target.wants/a.mount",
        "/u/x.target.requires/a.mount",
    ]


def test_offline_steps_keep_files_and_links_only():
    pl = Plan(
        write={"a.mount": "x"},
        stop=["a.mount"],
        start=["a.mount"],
        reload_units=["t.mount"],
        daemon_reload=True,
        restart=True,
        reboot_required=True,
        enable=["a.mount"],
        remove=["p.service"],
    )
    offline_steps(pl)
    assert [a.text for a in pl.actions()] == ["write a.mount", "remove p.service", "enable a.mount"]
    assert pl.changed and not pl.reboot_required


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="needs systemctl (the systemd package)")
def test_install_links_are_those_of_systemctl_root_enable(tmp_path):
    """The real ``systemctl --root=DIR enable`` makes exactly the links install_links() computes."""
    unit_dir = tmp_path / "etc" / "systemd" / "system"
    unit_dir.mkdir(parents=True)
    (unit_dir / "srv-app.mount").write_text(UNIT)
    subprocess.run(["systemctl", "--root=%s" % tmp_path, "enable", "srv-app.mount"], check=True, capture_output=True)
    made = sorted(
        ("/" + os.path.relpath(os.path.join(d, n), tmp_path), os.readlink(os.path.join(d, n)))
        for d, dirs, files in os.walk(tmp_path)
        for n in dirs + files
        if os.path.islink(os.path.join(d, n))
    )
    assert made == sorted((x.path, x.target) for x in install_links("srv-app.mount", UNIT, "/etc/systemd/system"))
