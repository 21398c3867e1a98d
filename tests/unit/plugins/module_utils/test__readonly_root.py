# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure rules of the readonly_root role: sizes, preflight, facts, trial records, verification."""

from __future__ import annotations

import copy

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _readonly_root as rr

MEM = 1_000_000  # KiB


def real_root_probe(**over):
    """A probe of a box on its real root, ready to enable (every check passes)."""
    p = {
        "kernel": "6.1.0-40-amd64",
        "os_family_ids": ["debian"],
        "files": {},
        "links": {},
        "container": False,
        "pid1": "systemd",
        "root": {"fstype": "ext4", "source": "/dev/vda"},
        "overlay_booted": False,
        "lower": "/",
        "lower_rw": False,
        "upper": None,
        "overlayroot_installed": True,
        "busybox_installed": True,
        "next_boot_overlayroot": "",
        "cmdline_overlayroot": None,
        "initramfs": {
            "path": "/boot/initrd.img-6.1.0-40-amd64",
            "exists": True,
            "overlayroot": True,
            "busybox": True,
            "grep": False,
        },
        "next_kernel": "6.1.0-40-amd64",
        "next_boot_initramfs": {
            "path": "/boot/initrd.img-6.1.0-40-amd64",
            "exists": True,
            "overlayroot": True,
            "busybox": True,
            "grep": False,
        },
        "packages": {"overlayroot": "0.48", "busybox": "1:1.35.0-4", "e2fsprogs": "1.47.0-2"},
        "overlay_module": True,
        "mem_total_kib": MEM,
        "machine_id": "0d5e1f0a7c3b4e6f9a8b7c6d5e4f3a2b",
        "sshd": True,
        "host_keys": ["ssh_host_ed25519_key"],
        "persistent_base_mount": {"fstype": "ext4", "source": "/dev/vdb", "options": "rw", "root": "/"},
        "persistent_device_exists": True,
        "mounts": {"/var/lib/kiosk": {"fstype": "ext4", "source": "/dev/vdb", "options": "rw", "root": "/x"}},
        "trial": {"armed": False, "confirmed": None, "confirmed_mtime": 0, "reverted": None, "reverted_mtime": 0},
    }
    p.update(over)
    return p


def overlay_probe(**over):
    up = {"fstype": "tmpfs", "options": "rw", "size_kib": 204800, "used_kib": 1000, "free_kib": 203800}
    base = {
        "overlay_booted": True,
        "lower": "/media/root-ro",
        "root": {"fstype": "overlay", "source": "overlayroot"},
        "upper": up,
        "next_boot_overlayroot": "tmpfs:swap=0,recurse=0",
    }
    return real_root_probe(**{**base, **over})


DECL = rr.Declaration(
    state="enabled",
    tmpfs_size="200M",
    persistent_device="/dev/disk/by-label/persist",
    persistent_paths=("/var/lib/kiosk",),
    unit_names={"/var/lib/kiosk": "var-lib-kiosk.mount"},
)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("200M", 204800),
        ("64m", 65536),
        ("1G", 1048576),
        ("5000", 8),  # rounded up to 4 KiB pages
        ("4k", 4),
        ("25%", 250000),
        ("50%", 500000),
        (" 10% ", 100000),
        ("", -1),
        ("10 M", -1),
        ("1T", -1),
        ("-1", -1),
    ],
)
def test_size_kib(size, expected):
    assert rr.size_kib(size, MEM) == expected


@pytest.mark.parametrize(
    ("conf", "local", "expected"),
    [
        (None, None, ""),
        ('overlayroot=""\n', None, ""),
        ('overlayroot=""\n', 'overlayroot="tmpfs:swap=0,recurse=0"\n', "tmpfs:swap=0,recurse=0"),
        ('overlayroot="tmpfs"\n', 'overlayroot="disabled"  # maintenance\n', "disabled"),
        ('overlayroot="tmpfs"\n', "# overlayroot=disabled\n", "tmpfs"),
        ("overlayroot=tmpfs:recurse=0\n", None, "tmpfs:recurse=0"),
        ('overlayroot="unterminated\n', None, '"unterminated'),
    ],
)
def test_overlayroot_value_local_conf_wins(conf, local, expected):
    assert rr.overlayroot_value(conf, local) == expected


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [("root=/dev/vda ro", None), ("ro overlayroot=disabled quiet", "disabled"), ("overlayroot=", "")],
)
def test_cmdline_overlayroot(cmdline, expected):
    assert rr.cmdline_overlayroot(cmdline) == expected


def unmet(p, d=DECL):
    return {c["name"]: c["msg"] for c in rr.preflight(p, d) if not c["ok"]}


def test_preflight_all_good_and_names_match_the_table():
    checks = rr.preflight(real_root_probe(), DECL)
    assert [c["name"] for c in checks] == list(rr.CHECK_NAMES)
    assert all(c["ok"] for c in checks), checks


def test_preflight_names_every_unmet_need():
    p = real_root_probe(
        os_family_ids=["fedora"],
        overlayroot_installed=False,
        next_boot_initramfs={
            "path": "/boot/initrd.img-k",
            "exists": True,
            "overlayroot": True,
            "busybox": False,
            "grep": False,
        },
        overlay_module=False,
        machine_id="",
        host_keys=[],
        cmdline_overlayroot="disabled",
        persistent_device_exists=False,
    )
    d = rr.Declaration(
        tmpfs_size="100000G",
        persistent_device="/dev/disk/by-label/persist",
        persistent_paths=("/proc/x", "/var/lib/ok", "/persist/a", "/a/../b"),
    )
    got = unmet(p, d)
    assert set(got) == set(rr.CHECK_NAMES) - {"tmpfs_size"}
    assert got["persistent_paths"].startswith(
        "persistent_paths: readonly_root_persistent_paths /proc/x, /persist/a, /a/../b"
    )
    assert got["ram"].startswith("ram: readonly_root_tmpfs_size 100000G")
    assert "busybox (no bin/busybox, no bin/grep" in got["initramfs"]
    assert got["machine_id"].startswith("machine_id: /etc/machine-id is empty")
    assert got["persistent_base"] == (
        "persistent_base: readonly_root_persistent_device /dev/disk/by-label/persist does not exist"
    )
    assert "overlayroot=disabled" in got["kernel_cmdline"]


def test_disabled_is_never_refused_for_a_dead_disk_or_the_lockout_checks():
    """The way back: a dead persistent disk, no overlayroot, no machine-id: disabled is still accepted."""
    p = overlay_probe(
        persistent_device_exists=False, persistent_base_mount=None, overlayroot_installed=False, machine_id=""
    )
    d = rr.Declaration(**{**DECL.__dict__, "state": "disabled"})
    assert unmet(p, d) == {}


def test_enabling_in_the_overlay_with_the_disk_gone_is_refused_naming_the_way_back():
    p = overlay_probe(persistent_base_mount=None)
    assert "set readonly_root_state=disabled" in unmet(p)["persistent_base"]


def test_initramfs_messages():
    p = real_root_probe(next_boot_initramfs={"path": "/boot/initrd.img-k", "exists": False})
    assert "does not exist for the kernel 6.1.0-40-amd64 the next boot runs" in unmet(p)["initramfs"]
    assert "update-initramfs -u -k 6.1.0-40-amd64" in unmet(p)["initramfs"]
    assert "readonly_root_manage_packages" in unmet(p)["initramfs"]
    p = real_root_probe(next_kernel=None, next_boot_initramfs={"path": "", "exists": False})
    assert unmet(p)["initramfs"].startswith("initramfs: no /boot/vmlinuz-*")
    p = real_root_probe(
        next_boot_initramfs={
            "path": "/boot/i",
            "exists": True,
            "error": "lsinitramfs failed",
            "overlayroot": False,
            "busybox": False,
            "grep": True,
        }
    )
    assert "could not be listed: lsinitramfs failed" in unmet(p)["initramfs"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-28-amd64", "config-6.1.0-40-amd64"], "6.1.0-28-amd64"),
        (["vmlinuz-6.1.0-40-amd64", "vmlinuz-6.12.38+deb13-amd64", "initrd.img-6.13.0-1-amd64"], "6.12.38+deb13-amd64"),
        (["vmlinuz-5.10.0-30-amd64", "vmlinuz-6.1.0-10-amd64", "vmlinuz-"], "6.1.0-10-amd64"),
        (["initrd.img-6.1.0-40-amd64", "grub"], None),
    ],
)
def test_next_boot_kernel_is_the_newest_vmlinuz_by_version(names, expected):
    assert rr.next_boot_kernel(names) == expected


def test_dpkg_installed_reads_only_installed_packages():
    status = (
        "Package: busybox\nStatus: install ok installed\nVersion: 1:1.35.0-4\n\n"
        "Package: overlayroot\nStatus: deinstall ok config-files\nVersion: 0.48\n\n"
        "Package: e2fsprogs\nStatus: install ok installed\nPriority: required\nVersion: 1.47.0-2\n"
    )
    got = rr.dpkg_installed(status, rr.PACKAGES)
    assert got == {"overlayroot": None, "busybox": "1:1.35.0-4", "e2fsprogs": "1.47.0-2"}
    assert rr.dpkg_installed("", ("x",)) == {"x": None}


FRESH_INITRAMFS = {"path": "/boot/initrd.img-6.1.0-41-amd64", "exists": True, "overlayroot": False, "busybox": False}


def fresh_probe(**over):
    """A box without overlayroot and busybox whose next boot runs a newer kernel than the running one."""
    base = {
        "overlayroot_installed": False,
        "busybox_installed": False,
        "packages": {"overlayroot": None, "busybox": None, "e2fsprogs": "1.47.0-2"},
        "next_kernel": "6.1.0-41-amd64",
        "next_boot_initramfs": {**FRESH_INITRAMFS, "grep": False},
    }
    return real_root_probe(**{**base, **over})


def test_package_plan_installs_what_is_missing_and_rebuilds_the_next_boot_kernel():
    plan = rr.package_plan(fresh_probe())
    assert plan == {
        "install": ["overlayroot", "busybox"],
        "rebuild": "6.1.0-41-amd64",
        "create": False,
        "initramfs": "/boot/initrd.img-6.1.0-41-amd64",
        "fixes": ["overlayroot_package", "initramfs"],
    }
    gone = rr.package_plan(
        fresh_probe(next_boot_initramfs={"path": "/boot/initrd.img-6.1.0-41-amd64", "exists": False})
    )
    assert gone["rebuild"] == "6.1.0-41-amd64" and gone["create"] is True


def test_package_plan_judges_the_next_boot_initramfs_not_the_running_one():
    # The running kernel's initramfs is fine (real_root_probe), the next boot's lacks overlayroot.
    p = real_root_probe(next_kernel="6.1.0-41-amd64", next_boot_initramfs={**FRESH_INITRAMFS, "grep": True})
    assert rr.package_plan(p)["rebuild"] == "6.1.0-41-amd64"
    assert "initramfs" in unmet(p) and "/boot/initrd.img-6.1.0-41-amd64" in unmet(p)["initramfs"]
    # And the other way round: the running one lacks it, the next boot's has it.
    p = real_root_probe(initramfs={**FRESH_INITRAMFS, "grep": False})
    assert rr.package_plan(p)["rebuild"] is None and "initramfs" not in unmet(p)


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"overlay_booted": True},
        {"next_kernel": None},
        {"next_boot_initramfs": {**FRESH_INITRAMFS, "grep": False, "error": "lsinitramfs failed"}},
    ],
)
def test_package_plan_does_nothing_when_right_on_the_overlay_or_when_it_cannot_fix(over):
    p = real_root_probe(**over) if not over else fresh_probe(**over)
    plan = rr.package_plan(p)
    assert plan["rebuild"] is None and "initramfs" not in plan["fixes"]
    if not over or over.get("overlay_booted"):
        assert plan["install"] == [] and plan["fixes"] == []


def test_split_failing_defers_only_what_the_package_step_fixes():
    p = fresh_probe(machine_id="")
    checks = rr.preflight(p, DECL)
    plan = rr.package_plan(p)
    managed = rr.Declaration(**{**DECL.__dict__, "manage_packages": True})
    got = rr.split_failing(checks, managed, plan)
    assert [c["name"] for c in got["deferred"]] == ["overlayroot_package", "initramfs"]
    assert [c["name"] for c in got["unmet"]] == ["machine_id"] and got["waived"] == []
    # Without the package step (or when disabling) nothing is deferred.
    got = rr.split_failing(checks, DECL, plan)
    assert [c["name"] for c in got["unmet"]] == ["overlayroot_package", "initramfs", "machine_id"]
    assert got["deferred"] == []
    waived = rr.Declaration(**{**managed.__dict__, "preflight_waive": ("initramfs",)})
    got = rr.split_failing(checks, waived, plan)
    assert [c["name"] for c in got["waived"]] == ["initramfs"]
    assert [c["name"] for c in got["deferred"]] == ["overlayroot_package"]
    assert "readonly_root_manage_packages" in got["deferred"][0]["msg"]


def test_facts_on_the_real_root_after_enabling():
    f = rr.facts(real_root_probe(), DECL, configured="tmpfs:swap=0,recurse=0")
    assert f["current"] == {
        "state": "disabled",
        "root_fstype": "ext4",
        "real_root": "/",
        "upper_size_kib": None,
        "upper": None,
    }
    assert f["next_boot"]["state"] == "enabled"
    assert f["reboot_required"] is True
    assert f["persistent"] == [{"path": "/var/lib/kiosk", "bound": True, "source": "/dev/vdb"}]
    assert f["trial"]["state"] is None


def test_facts_kernel_cmdline_wins():
    f = rr.facts(overlay_probe(cmdline_overlayroot="disabled"), DECL)
    assert f["next_boot"]["state"] == "disabled" and f["reboot_required"] is True


@pytest.mark.parametrize(
    ("used", "over"),
    [(1000, False), (184320, True), (204800, True)],
)
def test_upper_use_and_warn_percent(used, over):
    p = overlay_probe(
        upper={"fstype": "tmpfs", "options": "rw", "size_kib": 204800, "used_kib": used, "free_kib": 204800 - used}
    )
    up = rr.facts(p, DECL)["current"]["upper"]
    assert up["used_kib"] == used and up["free_kib"] == 204800 - used and up["over_warn"] is over
    problems, warnings = rr.verify(p, DECL, {})
    assert problems == []
    assert any("full" in w and "readonly_root_upper_warn_percent 90" in w for w in warnings) is over


REVERTED = (
    "reason=not confirmed within 90s of the boot; failed units: \nboot_id=abc\ndate=2026-12-01T22:00:00Z\n\nl1\nl2\n"
)
CONFIRMED = "reason=confirmed by root on vm\nboot_id=def\ndate=2026-12-01T22:10:00Z\n"


@pytest.mark.parametrize(
    ("trial", "booted", "state", "reason"),
    [
        ({}, False, None, None),
        ({"armed": True}, False, "armed", None),
        ({"armed": True, "reverted": REVERTED, "reverted_mtime": 5}, True, "running", None),
        ({"reverted": REVERTED, "reverted_mtime": 5}, False, "reverted", "not confirmed within 90s"),
        ({"confirmed": CONFIRMED, "confirmed_mtime": 9}, True, "confirmed", "confirmed by root on vm"),
        (
            {"confirmed": CONFIRMED, "confirmed_mtime": 9, "reverted": REVERTED, "reverted_mtime": 10},
            False,
            "reverted",
            "not confirmed",
        ),
        (
            {"confirmed": CONFIRMED, "confirmed_mtime": 11, "reverted": REVERTED, "reverted_mtime": 10},
            True,
            "confirmed",
            "confirmed",
        ),
    ],
)
def test_trial_facts(trial, booted, state, reason):
    full = {"armed": False, "confirmed": None, "confirmed_mtime": 0, "reverted": None, "reverted_mtime": 0, **trial}
    got = rr.trial_facts({"trial": full, "overlay_booted": booted})
    assert got["state"] == state
    assert (got["reason"] or "").startswith(reason or "")
    if state == "reverted":
        assert got["journal"] == ["l1", "l2"] and got["boot_id"] == "abc"


def test_verify_overlay_as_declared():
    assert rr.verify(overlay_probe(), DECL, {"/var/lib/kiosk": None}) == ([], [])


def test_verify_enabled_but_real_root_diagnosis():
    p = real_root_probe(next_boot_overlayroot="tmpfs:swap=0,recurse=0")
    (problem,) = rr.verify(p, DECL, {})[0]
    assert problem.startswith(
        '/ is ext4 (/dev/vda), not the overlayroot overlay. The real root says overlayroot="tmpfs'
    )
    assert "has overlayroot's script and has busybox/grep" in problem


def test_verify_wrong_tmpfs_size_names_the_unit():
    p = overlay_probe(upper={"fstype": "tmpfs", "options": "rw", "size_kib": 500000, "used_kib": 0, "free_kib": 500000})
    (problem,) = rr.verify(p, DECL, {})[0]
    assert "not the declared readonly_root_tmpfs_size 200M (204800 KiB)" in problem and rr.SIZE_UNIT in problem


def test_verify_unbound_or_unwritable_path_is_a_problem_when_enabled():
    p = overlay_probe(mounts={})
    (problem,) = rr.verify(p, DECL, {})[0]
    assert problem == (
        "persistent path /var/lib/kiosk is not bind-mounted from /persist (not a mount point); "
        "systemctl status var-lib-kiosk.mount"
    )
    problems = rr.verify(overlay_probe(), DECL, {"/var/lib/kiosk": "Read-only file system"})[0]
    assert problems == ["persistent path /var/lib/kiosk is not writable: Read-only file system"]


def test_verify_disabled_with_the_disk_gone_is_accepted_with_a_warning_naming_the_disk():
    p = real_root_probe(persistent_device_exists=False, persistent_base_mount=None, mounts={})
    d = rr.Declaration(**{**DECL.__dict__, "state": "disabled"})
    problems, warnings = rr.verify(p, d, {})
    assert problems == []
    assert warnings[0].startswith("readonly_root_persistent_device /dev/disk/by-label/persist does not exist")
    assert "/var/lib/kiosk" in warnings[1]


def test_verify_disabled_but_still_overlay():
    d = rr.Declaration(**{**DECL.__dict__, "state": "disabled"})
    p = overlay_probe(next_boot_overlayroot="disabled")
    (problem,) = rr.verify(p, d, {})[0]
    assert problem == (
        '/ is still the overlay although overlayroot="disabled" in the real root; '
        "the kernel command line has no overlayroot="
    )


def test_probe_dict_is_not_modified():
    p = overlay_probe()
    before = copy.deepcopy(p)
    rr.facts(p, DECL)
    rr.verify(p, DECL, {})
    rr.preflight(p, DECL)
    assert p == before


def test_dropped_paths_are_the_bind_units_no_longer_declared():
    units = {
        "var-lib-kiosk.mount": {"where": "/var/lib/kiosk", "what": "/persist/var/lib/kiosk"},
        "var-lib-old.mount": {"where": "/var/lib/old", "what": "/persist/var/lib/old"},
    }
    p = overlay_probe(bind_units=units)
    assert rr.dropped_paths(p, DECL) == [
        {
            "path": "/var/lib/old",
            "unit": "var-lib-old.mount",
            "data": "/persist/var/lib/old",
            "bound": False,
            "link": "etc/systemd/system/local-fs.target.wants/var-lib-old.mount",
        }
    ]
    assert rr.facts(p, DECL)["dropped_paths"][0]["path"] == "/var/lib/old"
    assert rr.dropped_paths(real_root_probe(), DECL) == []
