# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""readonly_root_files on a real temporary root: content idempotence, check and diff mode, links, removals,
seeds copied once (never a half copy taken for done), the remount around the writes, bad input refused."""

from __future__ import annotations

import os
import subprocess

import pytest
from ansible.module_utils import basic
from fakehost import AnsibleExitJson, AnsibleFailJson, run_main

from ansible_collections.overlayfs.systemd.plugins.module_utils import _rootfiles as rf
from ansible_collections.overlayfs.systemd.plugins.modules import readonly_root_files as mod

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="writes root-owned files (chown 0)")

UNIT = "[Mount]\nWhat=/persist/var/lib/kiosk\nWhere=/var/lib/kiosk\n"


@pytest.fixture
def env(monkeypatch):
    """The module's exits, and run_command: mount is recorded (and may fail), everything else runs for real."""
    calls: list[list[str]] = []
    failing: dict[str, int] = {}

    def exit_json(self, **kw):
        raise AnsibleExitJson(kw)

    def fail_json(self, msg, **kw):
        raise AnsibleFailJson(dict(kw, failed=True, msg=msg))

    def run_command(self, args, **kw):
        calls.append(list(args))
        if args[0] == "mount":
            if failing.get(args[2], 0) > 0:
                failing[args[2]] -= 1
                return 32, "", "mount point is busy"
            return 0, "", ""
        res = subprocess.run(args, capture_output=True, text=True, check=False)
        return res.returncode, res.stdout, res.stderr

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(rf.time, "sleep", lambda s: None)
    return calls, failing


def args(root, **kw):
    base = {
        "root": str(root),
        "files": [{"dest": "etc/systemd/system/var-lib-kiosk.mount", "content": UNIT}],
        "links": [
            {
                "dest": "etc/systemd/system/local-fs.target.wants/var-lib-kiosk.mount",
                "src": "/etc/systemd/system/var-lib-kiosk.mount",
            }
        ],
    }
    return {**base, **kw}


def ok(res):
    assert isinstance(res, AnsibleExitJson), res.result
    return res.result


def test_writes_then_changes_nothing(tmp_path, env):
    r = ok(run_main(mod.main, args(tmp_path)))
    assert r["changed"] is True
    assert [c["kind"] for c in r["changes"]] == ["file", "link"]
    unit = tmp_path / "etc/systemd/system/var-lib-kiosk.mount"
    assert unit.read_text() == UNIT and oct(unit.stat().st_mode & 0o7777) == "0o644"
    link = tmp_path / "etc/systemd/system/local-fs.target.wants/var-lib-kiosk.mount"
    assert os.readlink(link) == "/etc/systemd/system/var-lib-kiosk.mount"
    assert not [p for p in os.listdir(unit.parent) if p.startswith(".")], "no temporary file left"
    again = ok(run_main(mod.main, args(tmp_path)))
    assert again["changed"] is False and again["changes"] == []


def test_content_mode_and_link_target_are_compared(tmp_path, env):
    ok(run_main(mod.main, args(tmp_path)))
    unit = tmp_path / "etc/systemd/system/var-lib-kiosk.mount"
    unit.write_text(UNIT + "# edited\n")
    r = ok(run_main(mod.main, args(tmp_path)))
    assert r["changes"] == [{"kind": "file", "dest": "etc/systemd/system/var-lib-kiosk.mount"}]
    assert unit.read_text() == UNIT
    os.chmod(unit, 0o600)
    assert ok(run_main(mod.main, args(tmp_path)))["changes"][0]["kind"] == "file"
    assert unit.stat().st_mode & 0o777 == 0o644
    link = tmp_path / "etc/systemd/system/local-fs.target.wants/var-lib-kiosk.mount"
    os.unlink(link)
    os.symlink("/elsewhere", link)
    assert ok(run_main(mod.main, args(tmp_path)))["changes"] == [
        {"kind": "link", "dest": str(link.relative_to(tmp_path))}
    ]
    assert os.readlink(link) == "/etc/systemd/system/var-lib-kiosk.mount"


def test_check_mode_and_diff_write_nothing(tmp_path, env):
    r = ok(run_main(mod.main, args(tmp_path, absent=["etc/old.conf"]), check_mode=True, diff=True))
    assert r["changed"] is True
    assert not (tmp_path / "etc").exists()
    assert [d["after"] for d in r["diff"]] == [UNIT, "link to /etc/systemd/system/var-lib-kiosk.mount\n"]
    assert r["diff"][0]["before"] == "" and r["diff"][0]["after_header"].endswith("var-lib-kiosk.mount")


def test_absent_removes_files_and_links_and_refuses_a_directory(tmp_path, env):
    ok(run_main(mod.main, args(tmp_path)))
    (tmp_path / "etc/old.conf").write_text("x")
    r = ok(run_main(mod.main, args(tmp_path, files=[], links=[], absent=["etc/old.conf", "etc/never.conf"])))
    assert r["changes"] == [{"kind": "absent", "dest": "etc/old.conf"}]
    assert not (tmp_path / "etc/old.conf").exists()
    bad = run_main(mod.main, args(tmp_path, files=[], links=[], absent=["etc/systemd"]))
    assert isinstance(bad, AnsibleFailJson)
    assert "absent: etc/systemd is a directory" in bad.result["msg"] and "nothing was changed" in bad.result["msg"]


@pytest.mark.parametrize(
    "override, words",
    [
        ({"files": [{"dest": "../etc/x", "content": ""}]}, "files: '../etc/x' is not a path inside root"),
        ({"files": [{"dest": "etc/x", "content": "", "mode": "rw"}]}, "files: mode 'rw' of etc/x is not an octal"),
        ({"links": [{"dest": "etc/systemd/system/var-lib-kiosk.mount", "src": "/x"}]}, "also in files"),
        ({"seeds": [{"dest": "persist/x", "source": "/x"}]}, "seeds: dest 'persist/x' is not an absolute path"),
        ({"directories": ["var/lib/x"]}, "directories: 'var/lib/x' is not an absolute path"),
    ],
)
def test_bad_input_is_refused_naming_the_parameter_and_changes_nothing(tmp_path, env, override, words):
    res = run_main(mod.main, args(tmp_path, **override))
    assert isinstance(res, AnsibleFailJson), res.result
    assert words in res.result["msg"] and res.result["changed"] is False
    assert not (tmp_path / "etc").exists()


def test_root_must_exist(tmp_path, env):
    res = run_main(mod.main, args(tmp_path / "missing"))
    assert (
        isinstance(res, AnsibleFailJson) and "root: " in res.result["msg"] and "is not a directory" in res.result["msg"]
    )


def test_seeds_copy_once_into_place_and_directories(tmp_path, env):
    src = tmp_path / "var/lib/kiosk"
    (src / "sub").mkdir(parents=True)
    (src / "sub/data").write_text("kept")
    os.chmod(src, 0o750)
    seeds = [
        {"dest": str(tmp_path / "persist/var/lib/kiosk"), "source": str(src)},
        {"dest": str(tmp_path / "persist/var/lib/new"), "source": str(tmp_path / "var/lib/new")},
    ]
    dirs = [str(tmp_path / "var/lib/new")]
    r = ok(run_main(mod.main, {"root": "/", "seeds": seeds, "directories": dirs}))
    assert [c["kind"] for c in r["changes"]] == ["seed", "seed", "directory"]
    assert (tmp_path / "persist/var/lib/kiosk/sub/data").read_text() == "kept"
    assert (tmp_path / "persist/var/lib/kiosk").stat().st_mode & 0o777 == 0o750, "cp -a keeps the mode"
    assert (tmp_path / "persist/var/lib/new").is_dir() and not os.listdir(tmp_path / "persist/var/lib/new")
    assert (tmp_path / "var/lib/new").is_dir()
    assert sorted(os.listdir(tmp_path / "persist/var/lib")) == ["kiosk", "new"], "no partial copy left"
    # Done once: the persistent copy is the data now; a changed source is not copied again.
    (src / "sub/data").write_text("changed on the root")
    again = ok(run_main(mod.main, {"root": "/", "seeds": seeds, "directories": dirs}))
    assert again["changed"] is False
    assert (tmp_path / "persist/var/lib/kiosk/sub/data").read_text() == "kept"


def test_a_partial_copy_of_a_killed_run_is_redone_not_taken_for_done(tmp_path, env):
    src = tmp_path / "var/lib/kiosk"
    src.mkdir(parents=True)
    (src / "data").write_text("whole")
    partial = tmp_path / "persist/var/lib/.kiosk.partial"
    partial.mkdir(parents=True)
    (partial / "half").write_text("")
    seeds = [{"dest": str(tmp_path / "persist/var/lib/kiosk"), "source": str(src)}]
    ok(run_main(mod.main, {"root": "/", "seeds": seeds}))
    assert sorted(os.listdir(tmp_path / "persist/var/lib/kiosk")) == ["data"]
    assert not partial.exists()


def test_remount_read_write_around_the_writes_only_when_something_changes(tmp_path, env):
    calls, failing = env
    r = ok(run_main(mod.main, args(tmp_path, remount="/media/root-ro")))
    mounts = [c for c in calls if c[0] == "mount"]
    assert mounts == [["mount", "-o", "remount,rw", "/media/root-ro"], ["mount", "-o", "remount,ro", "/media/root-ro"]]
    assert r["changed"] is True
    calls.clear()
    ok(run_main(mod.main, args(tmp_path, remount="/media/root-ro")))
    ok(run_main(mod.main, args(tmp_path, files=[], links=[], absent=["etc/x"], remount="/m"), check_mode=True))
    assert [c for c in calls if c[0] == "mount"] == []


def test_remount_read_only_is_retried_then_fails_naming_the_error(tmp_path, env):
    calls, failing = env
    failing["remount,ro"] = 2
    ok(run_main(mod.main, args(tmp_path, remount="/media/root-ro")))
    assert [c[2] for c in calls if c[0] == "mount"] == ["remount,rw", "remount,ro", "remount,ro", "remount,ro"]
    (tmp_path / "etc/systemd/system/var-lib-kiosk.mount").write_text("edited")
    failing["remount,ro"] = 10
    res = run_main(mod.main, args(tmp_path, remount="/media/root-ro"))
    assert isinstance(res, AnsibleFailJson)
    assert "mount -o remount,ro /media/root-ro failed: mount point is busy" in res.result["msg"]
    assert (tmp_path / "etc/systemd/system/var-lib-kiosk.mount").read_text() == UNIT, "the write itself was done"


def test_remount_read_write_failure_writes_nothing(tmp_path, env):
    calls, failing = env
    failing["remount,rw"] = 1
    res = run_main(mod.main, args(tmp_path, remount="/media/root-ro"))
    assert isinstance(res, AnsibleFailJson) and "remount,rw /media/root-ro failed" in res.result["msg"]
    assert not (tmp_path / "etc").exists()
