# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd, parse_show


class FakeModule:
    def __init__(self, responses=None, bins=("systemctl", "journalctl", "mount")):
        self.calls = []
        self.responses = responses or {}
        self.bins = bins

    def get_bin_path(self, name, required=False):
        if name in self.bins:
            return "/usr/bin/" + name
        if required:
            raise AssertionError("required binary %s missing" % name)
        return None

    def run_command(self, args, check_rc=False, environ_update=None):
        self.calls.append((list(args), environ_update))
        key = " ".join(args[1:])
        return self.responses.get(key, (0, "", ""))


SHOW_TWO = "Id=a.mount\nActiveState=active\nUnitFileState=enabled\n\nId=b.service\nActiveState=inactive\n"


@pytest.mark.parametrize(
    "output, units, expected",
    [
        (
            SHOW_TWO,
            ["a.mount", "b.service"],
            {
                "a.mount": {"Id": "a.mount", "ActiveState": "active", "UnitFileState": "enabled"},
                "b.service": {"Id": "b.service", "ActiveState": "inactive"},
            },
        ),
        (
            "ActiveState=failed\n\nActiveState=active\n",
            ["x.mount", "y.mount"],
            {
                "x.mount": {"ActiveState": "failed"},
                "y.mount": {"ActiveState": "active"},
            },
        ),
        ("", ["x.mount"], {}),
        ("Options=a=b,c=d\n", ["x.mount"], {"x.mount": {"Options": "a=b,c=d"}}),
    ],
)
def test_parse_show(output, units, expected):
    assert parse_show(output, units) == expected


def test_show_builds_argv_and_uses_lc_all():
    mod = FakeModule({"show -p Id,ActiveState -- a.mount b.service": (0, SHOW_TWO, "")})
    sd = Systemd(mod)
    props = sd.show(["a.mount", "b.service"], ["ActiveState"])
    assert props["b.service"]["ActiveState"] == "inactive"
    argv, env = mod.calls[0]
    assert argv == ["/usr/bin/systemctl", "show", "-p", "Id,ActiveState", "--", "a.mount", "b.service"]
    assert env == {"LC_ALL": "C"}
    assert sd.show([], ["ActiveState"]) == {}


@pytest.mark.parametrize(
    "method, argv",
    [
        ("daemon_reload", ["daemon-reload"]),
        ("start", ["start", "u.mount"]),
        ("stop", ["stop", "u.mount"]),
        ("reload", ["reload", "u.mount"]),
        ("enable", ["enable", "u.mount"]),
        ("disable", ["disable", "u.mount"]),
        ("reenable", ["reenable", "u.mount"]),
    ],
)
def test_commands(method, argv):
    mod = FakeModule()
    sd = Systemd(mod)
    args = [] if method == "daemon_reload" else ["u.mount"]
    getattr(sd, method)(*args)
    assert mod.calls[0][0] == ["/usr/bin/systemctl"] + argv


def test_failure_raises_with_details():
    mod = FakeModule({"start u.mount": (1, "", "Job for u.mount failed.\n")})
    sd = Systemd(mod)
    with pytest.raises(CommandError) as err:
        sd.start("u.mount")
    assert err.value.rc == 1
    assert err.value.cmd == ["/usr/bin/systemctl", "start", "u.mount"]
    assert err.value.stderr == "Job for u.mount failed.\n"
    assert "Job for u.mount failed." in str(err.value)


def test_journal_tail_is_best_effort():
    mod = FakeModule({"-u u.mount -n 20 --no-pager -o short-iso": (0, "line1\nline2\n", "")})
    assert Systemd(mod).journal_tail("u.mount") == "line1\nline2\n"
    mod = FakeModule({"-u u.mount -n 20 --no-pager -o short-iso": (1, "", "No journal files were found.")})
    assert Systemd(mod).journal_tail("u.mount") == ""
    assert Systemd(FakeModule(bins=("systemctl",))).journal_tail("u.mount") == ""


@pytest.mark.parametrize(
    "output, rc, version",
    [
        ("mount from util-linux 2.38.1 (libmount 2.38.1: selinux, smack, btrfs)\n", 0, (2, 38)),
        ("mount from util-linux 2.39.3 (libmount 2.39.3: selinux)\n", 0, (2, 39)),
        ("mount from util-linux 2.40 (libmount 2.40.0)\n", 0, (2, 40)),
        ("BusyBox v1.36.1 multi-call binary.\n", 0, None),
        ("", 1, None),
    ],
)
def test_util_linux_version(output, rc, version):
    mod = FakeModule({"--version": (rc, output, "")})
    assert Systemd(mod).util_linux_version() == version


def test_util_linux_version_without_mount():
    assert Systemd(FakeModule(bins=("systemctl",))).util_linux_version() is None
