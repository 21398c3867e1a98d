# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""overlayfs.systemd.readonly_root across real reboots of a qemu VM (Debian 12, overlayroot).

The tests run in file order on one machine ("kiosk"), each starting in the
boot state the previous one left: real root -> overlay -> real root ->
overlay. Reboots are the role's own (readonly_root_reboot: true, which also
verifies the state it boots into); the assertions here check the running
machine independently over SSH. A second machine boots the image whose
initramfs lacks busybox and must be refused.
"""

from __future__ import annotations

PERSIST = "/var/lib/kiosk"
BASE = {
    "readonly_root_tmpfs_size": "200M",
    "readonly_root_persistent_device": "/dev/disk/by-label/persist",
    "readonly_root_persistent_paths": [PERSIST],
}
ENABLED = {**BASE, "readonly_root_state": "enabled"}
DISABLED = {**BASE, "readonly_root_state": "disabled"}
# What the role may write: the real root's config and units, the persistent disk.
SNAPSHOT = (
    "cd {root}/ && find etc/overlayroot.local.conf etc/systemd/system -printf '%p %l %s %T@\\n' 2>/dev/null | sort"
    " | sha256sum; findmnt -rn -o TARGET,SOURCE,OPTIONS | sort | sha256sum"
)
STATE: dict[str, str] = {}


def snapshot(m, root: str = "") -> str:
    return m.ssh(SNAPSHOT.format(root=root))


def assert_overlay(m) -> None:
    root = m.findmnt("/")
    assert root and root["fstype"] == "overlay", root
    assert "lowerdir=/media/root-ro" in root["options"]
    lower = m.findmnt("/media/root-ro")
    assert lower and lower["source"] == "/dev/vda" and lower["options"].split(",")[0] == "ro", lower
    upper = m.findmnt("/media/root-rw")
    assert upper and upper["fstype"] == "tmpfs", upper
    # 200M, applied by the role's unit at boot (overlayroot itself has no size option).
    assert "size=204800k" in upper["options"], upper


def assert_real_root(m) -> None:
    root = m.findmnt("/")
    assert root and root["fstype"] == "ext4" and root["source"] == "/dev/vda", root
    assert m.findmnt("/media/root-rw") is None


def assert_persistent_path(m) -> None:
    mnt = m.findmnt(PERSIST)
    assert mnt and mnt["source"] == f"/dev/vdb[{PERSIST}]", mnt
    assert m.findmnt("/persist")["source"] == "/dev/vdb"


def test_preflight_refuses_busybox_less_initramfs(nobusybox):
    """5. the initramfs lacks busybox/grep: refused, named, nothing changed."""
    before = snapshot(nobusybox)
    res = nobusybox.play({**ENABLED, "readonly_root_reboot": True}, label="refused run")
    assert res.rc != 0
    assert res.changed == 0
    msg = " ".join(res.failures)
    assert "refuses readonly_root_state=enabled" in msg
    assert "initramfs: /boot/initrd.img-" in msg and "busybox" in msg and "grep" in msg
    assert "nothing was changed" in msg
    assert snapshot(nobusybox) == before
    assert nobusybox.ssh("test -e /etc/overlayroot.local.conf && echo yes || echo no").strip() == "no"
    assert_real_root(nobusybox)


def test_check_mode_on_real_root_changes_nothing(kiosk):
    """4. check mode on the real root: reports the changes, writes nothing."""
    assert_real_root(kiosk)
    before = snapshot(kiosk)
    res = kiosk.play(ENABLED, check_mode=True, label="check (real root)")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert res.changed > 0
    assert snapshot(kiosk) == before
    assert kiosk.findmnt("/persist") is None


def test_enable_reboots_into_overlay(kiosk):
    """1./2. enable -> reboot -> / is overlay on a 200M tmpfs, persistent path bound and writable."""
    STATE["boot0"] = kiosk.boot_id()
    res = kiosk.play({**ENABLED, "readonly_root_reboot": True}, label="enable + reboot")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert kiosk.boot_id() != STATE["boot0"]
    assert_overlay(kiosk)
    assert_persistent_path(kiosk)
    assert res.facts["current"]["state"] == "enabled"
    assert res.facts["next_boot"]["state"] == "enabled"
    assert res.facts["reboot_required"] is False
    assert kiosk.ssh("cat /media/root-ro/etc/overlayroot.local.conf").count('overlayroot="tmpfs:swap=0,recurse=0"') == 1


def test_idempotent_and_check_mode_inside_overlay(kiosk):
    """4. inside the overlay: a second run changes nothing; check mode of disabled writes nothing to the real root."""
    before = snapshot(kiosk, "/media/root-ro")
    res = kiosk.play(ENABLED, label="idempotent (overlay)")
    assert res.rc == 0, res.failures
    assert res.changed == 0, res.output[-3000:]
    res = kiosk.play(DISABLED, check_mode=True, label="check disabled (overlay)")
    assert res.rc == 0, res.failures
    assert res.changed > 0
    assert snapshot(kiosk, "/media/root-ro") == before
    assert 'overlayroot="tmpfs' in kiosk.ssh("cat /media/root-ro/etc/overlayroot.local.conf")
    assert kiosk.findmnt("/media/root-ro")["options"].split(",")[0] == "ro"
    # Written now, outside and inside the persistent path: the next boot keeps only the latter.
    kiosk.ssh(f"echo scratch > /etc/scratch-marker && echo kept > {PERSIST}/keep.txt")


def test_disable_from_inside_overlay(kiosk):
    """3. disabled applied from inside the overlay -> reboot -> real root; tmpfs writes gone, persistent kept."""
    res = kiosk.play({**DISABLED, "readonly_root_reboot": True}, label="disable from overlay + reboot")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert_real_root(kiosk)
    assert res.facts["current"]["state"] == "disabled"
    assert kiosk.ssh("test -e /etc/scratch-marker && echo yes || echo no").strip() == "no"
    assert kiosk.ssh(f"cat {PERSIST}/keep.txt").strip() == "kept"
    assert_persistent_path(kiosk)
    # The real root is writable and keeps what is written now (checked after the next boot).
    kiosk.ssh("echo maintenance > /etc/maintenance-marker && sync")
    res = kiosk.play(DISABLED, label="idempotent (real root)")
    assert res.rc == 0, res.failures
    assert res.changed == 0, res.output[-3000:]


def test_enable_again(kiosk):
    """3. enable again -> overlay again; what the maintenance window wrote is in the real root."""
    res = kiosk.play({**ENABLED, "readonly_root_reboot": True}, label="enable again + reboot")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert_overlay(kiosk)
    assert_persistent_path(kiosk)
    assert kiosk.ssh("cat /media/root-ro/etc/maintenance-marker").strip() == "maintenance"
    assert kiosk.ssh(f"cat {PERSIST}/keep.txt").strip() == "kept"
