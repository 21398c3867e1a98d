# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""readonly_root_probe end to end: argument handling, the result contract, warnings; on this host and canned probes."""

from __future__ import annotations

import os
import sys

import pytest
from ansible.module_utils import basic
from fakehost import AnsibleExitJson, AnsibleFailJson, run_main

from ansible_collections.overlayfs.systemd.plugins.modules import readonly_root_probe as mod

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "module_utils"))
from test__readonly_root import fresh_probe, overlay_probe, real_root_probe  # noqa: E402


@pytest.fixture
def module_env(monkeypatch):
    calls = []
    warnings = []

    def exit_json(self, **kw):
        kw["warnings"] = list(warnings)
        raise AnsibleExitJson(kw)

    def fail_json(self, msg, **kw):
        raise AnsibleFailJson(dict(kw, failed=True, msg=msg))

    def run_command(self, args, **kw):
        calls.append(list(args))
        return (1, "", "") if args[0].endswith("systemd-detect-virt") else (0, "", "")

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, msg: warnings.append(msg))
    return calls


ARGS = {
    "state": "enabled",
    "tmpfs_size": "200M",
    "persistent_device": "/dev/disk/by-label/persist",
    "persistent_paths": ["/var/lib/kiosk"],
    "overlayroot": "tmpfs:swap=0,recurse=0",
}


def test_on_this_host_reads_only_and_returns_the_contract(module_env, monkeypatch):
    monkeypatch.setenv("SYSTEMD_OFFLINE", "0")  # a booted host, whatever runs the tests
    res = run_main(mod.main, dict(ARGS, files=["etc/hostname"], links=["etc/none"], verify=True), check_mode=True)
    assert isinstance(res, AnsibleExitJson), res.result
    r = res.result
    assert r["changed"] is False
    assert set(r) >= {"probe", "checks", "unmet", "waived", "facts", "facts_after_write", "size_kib", "problems"}
    assert [c["name"] for c in r["checks"]][:3] == ["os_family", "persistent_paths", "tmpfs_size"]
    assert r["size_kib"] == 204800
    assert r["facts_after_write"]["next_boot"]["overlayroot"] == "tmpfs:swap=0,recurse=0"
    assert r["probe"]["links"] == {"etc/none": None}
    assert any(c[0].endswith("systemd-detect-virt") for c in module_env)
    # The role's check mode, also when only the task is in check mode (no ansible_check_mode).
    assert r["check_mode"] is True


def test_reports_a_run_outside_check_mode(module_env):
    res = run_main(mod.main, dict(ARGS))
    assert isinstance(res, AnsibleExitJson), res.result
    assert res.result["check_mode"] is False


def test_unknown_waive_is_refused_naming_it(module_env):
    res = run_main(mod.main, dict(ARGS, preflight_waive=["everything"]))
    assert isinstance(res, AnsibleFailJson)
    assert "preflight_waive" in res.result["msg"]


def test_unmet_waived_and_facts_after_write_from_a_canned_probe(module_env, monkeypatch):
    p = real_root_probe(machine_id="", overlayroot_installed=False)
    monkeypatch.setattr(mod, "probe", lambda **kw: p)
    res = run_main(mod.main, dict(ARGS, preflight_waive=["overlayroot_package"]))
    r = res.result
    assert [c["name"] for c in r["unmet"]] == ["machine_id"]
    assert [c["name"] for c in r["waived"]] == ["overlayroot_package"]
    assert r["facts"]["next_boot"]["state"] == "disabled" and r["facts_after_write"]["next_boot"]["state"] == "enabled"
    assert "problems" not in r


def test_manage_packages_defers_what_the_package_step_fixes(module_env, monkeypatch):
    monkeypatch.setattr(mod, "probe", lambda **kw: fresh_probe())
    r = run_main(mod.main, dict(ARGS, manage_packages=True)).result
    assert r["unmet"] == [] and [c["name"] for c in r["deferred"]] == ["overlayroot_package", "initramfs"]
    assert r["packages"]["install"] == ["overlayroot", "busybox"] and r["packages"]["rebuild"] == "6.1.0-41-amd64"
    # Without it (the role's probe after the package step) the preflight judges the host as it is.
    r = run_main(mod.main, dict(ARGS)).result
    assert [c["name"] for c in r["unmet"]] == ["overlayroot_package", "initramfs"] and r["deferred"] == []


def test_verify_warns_for_a_dead_disk_when_disabling(module_env, monkeypatch):
    p = real_root_probe(persistent_device_exists=False, persistent_base_mount=None, mounts={})
    monkeypatch.setattr(mod, "probe", lambda **kw: p)
    monkeypatch.setattr(mod, "writable", lambda paths: {})
    r = run_main(mod.main, dict(ARGS, state="disabled", overlayroot="disabled", verify=True)).result
    assert r["unmet"] == [] and r["problems"] == []
    assert r["warnings"] == r["warnings_found"] and "/dev/disk/by-label/persist does not exist" in r["warnings"][0]


def test_verify_reports_a_full_upper(module_env, monkeypatch):
    up = {"fstype": "tmpfs", "options": "rw", "size_kib": 204800, "used_kib": 204800, "free_kib": 0}
    monkeypatch.setattr(mod, "probe", lambda **kw: overlay_probe(upper=up))
    monkeypatch.setattr(mod, "writable", dict.fromkeys)
    r = run_main(mod.main, dict(ARGS, verify=True)).result
    assert r["problems"] == []
    assert r["facts"]["current"]["upper"]["free_kib"] == 0
    assert any("100.0% full" in w for w in r["warnings"])


@pytest.mark.parametrize("env, offline", [("1", "SYSTEMD_OFFLINE=1 is set"), ("0", None)])
def test_offline_reason_reported(module_env, monkeypatch, env, offline):
    monkeypatch.setenv("SYSTEMD_OFFLINE", env)
    res = run_main(mod.main, dict(ARGS), check_mode=True)
    assert isinstance(res, AnsibleExitJson), res.result
    assert res.result["offline"] == offline


def test_offline_asks_nothing_of_the_running_system_and_defers_nothing(module_env, monkeypatch):
    """An image root: no detect-virt, RAM not judged (a size no RAM has passes, saying so), facts.offline true,
    and with manage_packages nothing is left to a package step (the role runs none offline)."""
    monkeypatch.setenv("SYSTEMD_OFFLINE", "1")
    r = run_main(mod.main, dict(ARGS, tmpfs_size="64G", persistent_paths=[], manage_packages=True)).result
    assert r["offline"] == "SYSTEMD_OFFLINE=1 is set" and r["facts"]["offline"] is True
    assert not any(c[0].endswith("systemd-detect-virt") for c in module_env)
    ram = next(c for c in r["checks"] if c["name"] == "ram")
    assert ram["ok"] is True and "not judged offline" in ram["msg"]
    assert r["deferred"] == []
    assert r["probe"]["pid1"] == "" and r["probe"]["overlay_booted"] is False
    # The same declaration on a booted host: the RAM is judged.
    monkeypatch.setenv("SYSTEMD_OFFLINE", "0")
    r = run_main(mod.main, dict(ARGS, tmpfs_size="64G", persistent_paths=[])).result
    assert r["facts"]["offline"] is False
    assert "ram" in [c["name"] for c in r["unmet"]]


def test_offline_package_checks_name_the_image_build_as_the_fix(module_env, monkeypatch):
    monkeypatch.setattr(mod, "probe", lambda **kw: fresh_probe(offline="running in a chroot"))
    r = run_main(mod.main, dict(ARGS, manage_packages=True)).result
    assert [c["name"] for c in r["unmet"]] == ["overlayroot_package", "initramfs"] and r["deferred"] == []
    for check in r["unmet"]:
        assert "install overlayroot busybox e2fsprogs into the image root" in check["msg"], check
        assert "update-initramfs -u -k 6.1.0-41-amd64 in it" in check["msg"], check
