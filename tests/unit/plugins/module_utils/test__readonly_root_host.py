# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host reads of the readonly_root probe, on directory trees and this host."""

from __future__ import annotations

import os
from types import SimpleNamespace

from ansible_collections.overlayfs.systemd.plugins.module_utils import _readonly_root_host as host

OVERLAYROOT = (
    "26 1 0:25 / / rw,relatime - overlay overlayroot rw,lowerdir=/media/root-ro,upperdir=/media/root-rw/overlay,"
    "workdir=/media/root-rw/overlay-workdir/_\n"
    "24 1 0:23 / /media/root-rw rw,relatime - tmpfs tmpfs-root rw,size=204800k\n"
    "23 1 254:0 / /media/root-ro ro,relatime - ext4 /dev/vda ro\n"
    "30 26 254:16 /var/lib/kiosk /var/lib/kiosk rw,relatime - ext4 /dev/vdb rw\n"
    "31 26 0:40 / /srv/a\\040b rw - tmpfs tmpfs rw\n"
)


def test_mounts_by_point_decodes_and_keeps_the_top_mount():
    mounts = host.mounts_by_point(OVERLAYROOT + "32 26 0:41 / /srv/a\\040b rw - tmpfs top rw\n")
    assert mounts["/"]["fstype"] == "overlay"
    assert mounts["/media/root-ro"]["options"].startswith("ro,")
    assert mounts["/var/lib/kiosk"] == {
        "fstype": "ext4",
        "source": "/dev/vdb",
        "options": "rw,relatime,rw",
        "root": "/var/lib/kiosk",
    }
    assert mounts["/srv/a b"]["source"] == "top"


def test_upper_info_from_statvfs():
    st = SimpleNamespace(f_blocks=51200, f_bfree=1200, f_bavail=1200, f_frsize=4096)
    info = host.upper_info({"fstype": "tmpfs", "options": "rw"}, statvfs=lambda _: st)
    assert info == {"fstype": "tmpfs", "options": "rw", "size_kib": 204800, "used_kib": 200000, "free_kib": 4800}
    assert host.upper_info(None) is None


def test_initramfs_listing(tmp_path):
    (tmp_path / "initrd.img-k").write_text("x")
    listing = "usr/share/x\nscripts/init-bottom/overlayroot\nusr/bin/busybox\n"
    info = host.initramfs("k", True, lambda argv: (0, listing, ""), boot=str(tmp_path))
    assert info["exists"] and info["overlayroot"] and info["busybox"] and not info["grep"]
    info = host.initramfs("k", True, lambda argv: (1, "", "cpio: broken\n"), boot=str(tmp_path))
    assert info["error"] == "lsinitramfs /boot/initrd.img-k failed (rc 1): cpio: broken"
    assert host.initramfs("k", False, None, boot=str(tmp_path))["overlayroot"] is False
    assert host.initramfs("other", True, None, boot=str(tmp_path))["exists"] is False


def test_next_boot_lists_the_newest_kernels_initramfs(tmp_path):
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-28-amd64", "initrd.img-6.1.0-9-amd64"):
        (tmp_path / name).write_text("x")
    (tmp_path / "initrd.img-6.1.0-28-amd64").write_text("x")
    listed = []

    def run(argv):
        listed.append(argv[1])
        new = argv[1].endswith("-28-amd64")
        return 0, "scripts/init-bottom/overlayroot\nbin/busybox\n" if new else "bin/sh\n", ""

    got = host.next_boot("6.1.0-9-amd64", True, run, boot=str(tmp_path))
    assert got["next_kernel"] == "6.1.0-28-amd64"
    assert got["next_boot_initramfs"]["path"] == "/boot/initrd.img-6.1.0-28-amd64"
    assert got["next_boot_initramfs"]["overlayroot"] and got["next_boot_initramfs"]["busybox"]
    assert got["initramfs"]["path"] == "/boot/initrd.img-6.1.0-9-amd64" and not got["initramfs"]["overlayroot"]
    assert listed == [str(tmp_path / "initrd.img-6.1.0-9-amd64"), str(tmp_path / "initrd.img-6.1.0-28-amd64")]
    # The same kernel: listed once.
    listed.clear()
    got = host.next_boot("6.1.0-28-amd64", True, run, boot=str(tmp_path))
    assert got["next_boot_initramfs"] is got["initramfs"] and len(listed) == 1
    # No vmlinuz at all: the running kernel.
    got = host.next_boot("k", True, run, boot=str(tmp_path / "missing"))
    assert got["next_kernel"] == "k" and got["next_boot_initramfs"]["path"] == "/boot/initrd.img-k"
    assert got["next_boot_initramfs"]["exists"] is False


def test_trial_records(tmp_path):
    assert host.trial_records(str(tmp_path))["armed"] is False
    wants = tmp_path / "etc/systemd/system/timers.target.wants"
    wants.mkdir(parents=True)
    os.symlink("/etc/systemd/system/overlayfs-readonly-root-trial.timer", wants / "overlayfs-readonly-root-trial.timer")
    state = tmp_path / "var/lib/overlayfs-readonly-root"
    state.mkdir(parents=True)
    (state / "trial-reverted").write_text("reason=x\n\nj\n")
    rec = host.trial_records(str(tmp_path))
    assert rec["armed"] is True and rec["reverted"] == "reason=x\n\nj\n" and rec["reverted_mtime"] > 0
    assert rec["confirmed"] is None and rec["confirmed_mtime"] == 0


def test_writable(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    got = host.writable([str(tmp_path), str(tmp_path / "missing")])
    assert got[str(tmp_path)] is None and "No such file" in got[str(tmp_path / "missing")]
    assert os.listdir(tmp_path) == ["ro"]


def test_probe_this_host():
    def run(argv):
        return (1, "", "") if argv[0] == "systemd-detect-virt" else (0, "", "")

    args = {
        "persistent_device": "",
        "persistent_base": "/",
        "persistent_paths": ["/"],
        "files": ["etc/hostname"],
        "links": ["etc/nothing"],
        "list_initramfs": False,
    }
    p = host.probe(args=args, run=run)
    assert p["lower"] in ("/", "/media/root-ro") and p["mem_total_kib"] > 0
    assert p["links"] == {"etc/nothing": None} and "etc/hostname" in p["files"]
    assert p["container"] is False and p["persistent_base_mount"] is not None


def test_probe_offline_reads_the_image_not_the_running_system(tmp_path, monkeypatch):
    """An image root (offline): the kernel is the image's newest vmlinuz, nothing is mounted or booted, no
    command asks the running system (detect-virt), no /proc file is read."""
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in ("vmlinuz-6.12.9-amd64", "vmlinuz-6.12.10-amd64", "initrd.img-6.12.10-amd64"):
        (boot / name).write_text("x")
    calls = []
    reads = []
    real_read = host.read
    monkeypatch.setattr(host, "read", lambda path: reads.append(path) or real_read(path))

    def run(argv):
        calls.append(argv)
        return 0, "", ""

    args = {
        "persistent_device": "/dev/null",
        "persistent_base": "/",
        "persistent_paths": [],
        "files": [],
        "links": [],
        "list_initramfs": False,
    }
    p = host.probe(args=args, run=run, offline="running in a chroot", boot=str(boot))
    assert p["offline"] == "running in a chroot" and p["kernel"] == "6.12.10-amd64"
    assert p["next_kernel"] == "6.12.10-amd64" and p["next_boot_initramfs"]["exists"] is True
    assert p["overlay_booted"] is False and p["lower"] == "/" and p["root"] == {"fstype": "", "source": ""}
    assert p["persistent_base_mount"] is None and p["persistent_device_exists"] is False
    assert p["container"] is False and p["pid1"] == "" and p["cmdline_overlayroot"] is None
    assert calls == []
    assert [r for r in reads if r.startswith("/proc/") and r != "/proc/meminfo"] == []
    # Online the same host is asked: detect-virt runs, the mounts are read.
    online = host.probe(args=args, run=run, boot=str(boot))
    assert online["offline"] is None and calls and "/proc/self/mountinfo" in reads


BIND = """# Ansible managed
[Unit]
Description=Persistent /var/lib/old (from /persist)
Documentation=https://github.com/overlayfs-systemd/overlayfs.systemd/blob/main/docs/kiosk.md
RequiresMountsFor=/persist

[Mount]
What=/persist/var/lib/old
Where=/var/lib/old
Type=none
Options=bind
"""


def test_bind_units_finds_only_the_roles_bind_units(tmp_path):
    units = tmp_path / "etc/systemd/system"
    (units / "local-fs.target.wants").mkdir(parents=True)
    (units / "var-lib-old.mount").write_text(BIND)
    (units / "srv-other.mount").write_text(BIND.replace("Description=Persistent", "Description=Mine"))
    (units / "persist.mount").write_text(
        "[Unit]\nDescription=Persistent storage\n[Mount]\nWhat=/dev/vdb\nWhere=/persist\n"
    )
    os.symlink("/etc/systemd/system/var-lib-old.mount", units / "local-fs.target.wants/var-lib-old.mount")
    assert host.bind_units(str(tmp_path)) == {
        "var-lib-old.mount": {"where": "/var/lib/old", "what": "/persist/var/lib/old"}
    }
    assert host.bind_units(str(tmp_path / "nothing")) == {}
