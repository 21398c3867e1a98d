# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""overlayfs.systemd.readonly_root across real reboots of a qemu VM (overlayroot; Debian 12, or 13 with
OVERLAYFS_VM_SUITE=trixie).

Two machines of the good image each run a chain of tests in file order, each
test starting in the boot state the previous one left (make test runs the
chains as separate jobs: pytest -m kiosk, -m fallback):
- "kiosk": real root -> check mode -> overlay (a trial the role confirms) ->
  idempotent -> overlay again after a reboot with a full upper -> real root;
- "fallback": a maintenance write on the real root -> an unconfirmed trial,
  cut by a power cut, then falling back by itself -> real root -> overlay
  (the maintenance write in its lower) -> a dead persistent disk -> real root.
Most reboots are the role's own (readonly_root_reboot: true, which also
verifies the state it boots into and confirms the trial); the assertions here
check the running machine independently over SSH. A third machine boots the
image whose initramfs lacks busybox and must be refused (the role installing
nothing); a fourth, without overlayroot and busybox, gets them from a local
archive; a fifth is baked before its first boot: the role applied offline to
its loop-mounted root through a chroot connection.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time

import pytest

PERSIST = "/var/lib/kiosk"
# Persistent while enabled; dropped from the list by the disable (its unit goes, its data stays on the disk).
DROPPED = "/var/lib/kiosk-cache"
BASE = {
    "readonly_root_tmpfs_size": "200M",
    "readonly_root_persistent_device": "/dev/disk/by-label/persist",
    "readonly_root_persistent_paths": [PERSIST],
    # A dead disk delays a boot by this much (systemd's default 90 s), see the last test. The timeout runs from
    # early boot: under software emulation udev needs 10-20 s before the disk's by-label link appears.
    "readonly_root_persistent_device_timeout": "60s",
}
ENABLED = {**BASE, "readonly_root_state": "enabled", "readonly_root_persistent_paths": [PERSIST, DROPPED]}
DISABLED = {**BASE, "readonly_root_state": "disabled"}
# What the role may write: the real root's config and units, the persistent disk.
SNAPSHOT = (
    "cd {root}/ && find etc/overlayroot.local.conf etc/systemd/system -printf '%p %l %s %T@\\n' 2>/dev/null | sort"
    " | sha256sum; findmnt -rn -o TARGET,SOURCE,OPTIONS | sort | sha256sum"
)
STATE: dict[str, str] = {}
TRIAL_LINK = "etc/systemd/system/timers.target.wants/overlayfs-readonly-root-trial.timer"
TRIAL_RECORDS = "/var/lib/overlayfs-readonly-root"
# systemd's console line for the guard's timer, "Started overlayfs-readonly-root-trial.timer - Trial boot of the
# read-only root." (colour codes around the name, which systemd shortens to the console's width: matched on the
# timer's Description).
TRIAL_TIMER = re.compile(r"Started [^\n]*Trial boot of the read-only root")
TRIAL_REVERTING = "overlayfs.systemd.readonly_root: trial not confirmed within"
# In the unconfirmed trial: short enough for the suite, long enough for a boot.
SHORT_TRIAL = 75


def snapshot(m, root: str = "") -> str:
    return m.ssh(SNAPSHOT.format(root=root))


def assert_overlay(m) -> None:
    root = m.findmnt("/")
    assert root and root["fstype"] == "overlay", root
    # Writable: systemd-remount-fs made it read-write at boot (the role's drop-in; util-linux >= 2.39).
    assert root["options"].split(",")[0] == "rw", root
    assert "systemd-remount-fs.service" not in m.ssh("systemctl --failed --plain --no-legend")
    assert "lowerdir=/media/root-ro" in root["options"]
    lower = m.findmnt("/media/root-ro")
    assert lower and lower["source"] == "/dev/vda", lower
    mount_log = "journalctl -b --no-pager | grep -i 'mount' | tail -n 40"
    assert lower["options"].split(",")[0] == "ro", (lower, m.ssh(mount_log))
    upper = m.findmnt("/media/root-rw")
    assert upper and upper["fstype"] == "tmpfs", upper
    # 200M, applied by the role's unit at boot (overlayroot itself has no size option).
    assert "size=204800k" in upper["options"], upper


def assert_real_root(m) -> None:
    root = m.findmnt("/")
    assert root and root["fstype"] == "ext4" and root["source"] == "/dev/vda", root
    assert m.findmnt("/media/root-rw") is None


def exists(m, path: str) -> bool:
    return m.ssh(f"test -e {path} && echo yes || echo no").strip() == "yes"


def reboot_inside(m) -> None:
    """Reboot from inside the guest (qemu keeps running); returns once the guest has stopped answering."""
    old = m.boot_id()
    m.ssh("systemctl reboot", check=False)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        out = m.ssh("cat /proc/sys/kernel/random/boot_id", check=False).strip()
        if out != old:
            return
        time.sleep(2)
    raise AssertionError("the guest kept answering with its old boot id")


def assert_persistent_path(m, path: str = PERSIST) -> None:
    mnt = m.findmnt(path)
    assert mnt and mnt["source"] == f"/dev/vdb[{path}]", mnt
    assert m.findmnt("/persist")["source"] == "/dev/vdb"


@pytest.mark.only_on(
    "bookworm", "the refusal is the role's reading of lsinitramfs; on Debian 13 the bare machine's initramfs is read"
)
def test_preflight_refuses_busybox_less_initramfs(nobusybox):
    """5. the initramfs lacks busybox/grep: refused, named, nothing changed."""
    before = snapshot(nobusybox)
    res = nobusybox.play(
        {**ENABLED, "readonly_root_reboot": True, "readonly_root_manage_packages": False}, label="refused run"
    )
    assert res.rc != 0
    assert res.changed == 0
    msg = " ".join(res.failures)
    assert "refuses readonly_root_state=enabled" in msg
    assert "initramfs: /boot/initrd.img-" in msg and "busybox" in msg and "grep" in msg
    assert "nothing was changed" in msg
    assert snapshot(nobusybox) == before
    assert nobusybox.ssh("test -e /etc/overlayroot.local.conf && echo yes || echo no").strip() == "no"
    assert_real_root(nobusybox)


# The next boot's kernel (the newest /boot/vmlinuz-*) and what its initramfs lists of overlayroot's needs.
NEXT_INITRAMFS = (
    "k=$(ls /boot | sed -n 's/^vmlinuz-//p' | sort -V | tail -n 1); echo $k;"
    " lsinitramfs /boot/initrd.img-$k | grep -E '(scripts/init-bottom/overlayroot|bin/busybox)$' | sort"
)


def installed(m, package: str) -> bool:
    return m.ssh(f"dpkg-query -W -f '${{db:Status-Status}}' {package} 2>/dev/null || true").strip() == "installed"


@pytest.mark.only_on(
    "trixie", "the newer overlayroot (0.18) and initramfs-tools; the step is the same code on Debian 12"
)
def test_packages_from_a_local_archive_on_a_fresh_image(bare):
    """No overlayroot, no busybox, apt knows no package: check mode reports and writes nothing; the role installs
    them from the box's only archive and the next boot's initramfs gets them; a second run changes nothing."""
    assert not installed(bare, "overlayroot") and not installed(bare, "busybox")
    before = snapshot(bare)
    res = bare.play(ENABLED, check_mode=True, label="check (fresh)")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert res.changed > 0
    assert "Would install: overlayroot busybox" in res.output
    assert snapshot(bare) == before
    assert not installed(bare, "overlayroot") and not installed(bare, "busybox")
    res = bare.play(ENABLED, label="install + config")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert res.changed > 0
    assert installed(bare, "overlayroot") and installed(bare, "busybox") and installed(bare, "e2fsprogs")
    listed = bare.ssh(NEXT_INITRAMFS).split()
    assert any(n.endswith("scripts/init-bottom/overlayroot") for n in listed[1:]), listed
    assert any(n.endswith("bin/busybox") for n in listed[1:]), listed
    assert res.facts["next_boot"]["state"] == "enabled"
    res = bare.play(ENABLED, label="again (idempotent)")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert res.changed == 0, res.output[-3000:]
    assert_real_root(bare)


def test_baked_offline_the_first_boot_is_the_overlay(baked):
    """An appliance image baked offline: the role applied to the machine's loop-mounted root through
    community.general.chroot (no systemd runs there) writes nothing in check mode, then the configuration
    and the persistent disk's mount, reports offline and arms no trial; a second bake changes nothing. The
    image's first boot is the read-only root on a 200M tmpfs with the persistent disk mounted, and the role
    on the booted box finds nothing to write; adding a persistent path there (what the offline refusal
    says to do) binds it after the role's reboot."""
    declared = {
        "readonly_root_state": "enabled",
        "readonly_root_tmpfs_size": "200M",
        "readonly_root_persistent_device": "/dev/disk/by-label/persist",
        "readonly_root_reboot": True,
    }
    with tempfile.TemporaryDirectory(prefix="overlayfs-vm-bake.") as root:
        subprocess.run(["mount", "-o", "loop", baked.disk(), root], check=True)
        try:
            conf = os.path.join(root, "etc/overlayroot.local.conf")
            res = baked.play(declared, check_mode=True, label="bake: check (offline)", chroot=root)
            assert res.rc == 0, res.failures or res.output[-3000:]
            assert res.changed > 0 and res.facts["offline"] is True and not os.path.exists(conf), res.facts
            assert not os.path.exists(os.path.join(root, "etc/systemd/system/persist.mount"))
            res = baked.play(declared, label="bake (offline)", chroot=root)
            assert res.rc == 0, res.failures or res.output[-3000:]
            assert res.changed > 0 and res.facts["offline"] is True, res.facts
            assert res.facts["next_boot"]["state"] == "enabled" and res.facts["trial"]["state"] != "armed"
            assert "the image boots with readonly_root_state=enabled from its first boot on" in res.output
            assert not os.path.lexists(os.path.join(root, TRIAL_LINK))
            wants = os.path.join(root, "etc/systemd/system/local-fs.target.wants")
            assert {"overlayfs-readonly-root-tmpfs-size.service", "persist.mount"} <= set(os.listdir(wants))
            with open(conf, encoding="utf-8") as fh:
                assert 'overlayroot="tmpfs:swap=0,recurse=0"' in fh.read()
            res = baked.play(declared, label="bake again (offline)", chroot=root)
            assert res.rc == 0 and res.changed == 0, res.failures or res.output[-3000:]
            refused = baked.play({**declared, "readonly_root_persistent_paths": [PERSIST]}, chroot=root)
            assert refused.rc != 0 and any("need the persistent file system mounted" in f for f in refused.failures)
        finally:
            subprocess.run(["umount", root], check=True)
    baked.boot()
    assert_overlay(baked)
    persist = baked.findmnt("/persist")
    assert persist and persist["fstype"] == "ext4", persist
    res = baked.play(declared, check_mode=True, label="booted: check")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert res.changed == 0, res.output[-3000:]
    assert res.facts["offline"] is False and res.facts["current"]["state"] == "enabled"
    # What the refusal offline says to do: the persistent paths by a run on the booted box, which seeds them on
    # the mounted disk and reboots for the binds (still the overlay: no trial).
    res = baked.play({**declared, "readonly_root_persistent_paths": [PERSIST]}, label="booted: add a path + reboot")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert res.changed > 0 and res.facts["current"]["state"] == "enabled", res.facts
    assert_overlay(baked)
    assert_persistent_path(baked)
    baked.ssh(f"echo kept > {PERSIST}/keep.txt && sync")
    assert baked.ssh(f"cat /persist{PERSIST}/keep.txt").strip() == "kept"


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
    assert_persistent_path(kiosk, DROPPED)
    kiosk.ssh(f"echo cached > {DROPPED}/cache.txt && sync")
    assert res.facts["current"]["state"] == "enabled"
    assert res.facts["next_boot"]["state"] == "enabled"
    assert res.facts["reboot_required"] is False
    assert kiosk.ssh("cat /media/root-ro/etc/overlayroot.local.conf").count('overlayroot="tmpfs:swap=0,recurse=0"') == 1
    assert_trial_confirmed(kiosk, res.facts)


def assert_trial_confirmed(m, facts) -> None:
    """The trial was confirmed and the record kept in the real root; the guard is disarmed there and now."""
    assert facts["trial"]["state"] == "confirmed", facts["trial"]
    assert not exists(m, f"/media/root-ro/{TRIAL_LINK}")
    assert "reason=confirmed by" in m.ssh(f"cat /media/root-ro{TRIAL_RECORDS}/trial-confirmed")
    assert m.ssh("systemctl show -p ActiveState --value overlayfs-readonly-root-trial.timer").strip() == "inactive"


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


@pytest.mark.only_on("bookworm", "a full tmpfs upper is the kernel's and the role's behaviour, not the release's")
def test_full_upper_then_the_confirmed_trial_stays_across_a_reboot(kiosk):
    """A full tmpfs upper: the role still runs and reports it; a reboot clears it and needs no new trial."""
    kiosk.ssh("dd if=/dev/zero of=/var/tmp/fill bs=1M 2>/dev/null; sync", check=False)
    assert kiosk.ssh("df --output=avail -k /media/root-rw | tail -n 1").strip() == "0"
    res = kiosk.play(ENABLED, label="full upper")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert res.changed == 0, res.output[-3000:]
    upper = res.facts["current"]["upper"]
    assert upper["free_kib"] == 0 and upper["use_percent"] >= 99 and upper["over_warn"] is True, upper
    assert upper["warn_percent"] == 90
    start = time.monotonic()
    reboot_inside(kiosk)
    kiosk.wait(300)
    kiosk.timings["reboot (confirmed, no trial)"] = time.monotonic() - start
    assert_overlay(kiosk)
    assert_persistent_path(kiosk)
    assert not exists(kiosk, "/var/tmp/fill") and not exists(kiosk, "/etc/scratch-marker")
    assert kiosk.ssh(f"cat {PERSIST}/keep.txt").strip() == "kept"
    # No trial on this boot: the guard was disarmed in the real root by the confirmation.
    res = kiosk.play(ENABLED, label="after reboot (overlay)")
    assert res.rc == 0 and res.changed == 0, res.failures or res.output[-3000:]
    assert res.facts["current"]["upper"]["use_percent"] < 50
    assert_trial_confirmed(kiosk, res.facts)


def test_disable_from_inside_overlay(kiosk):
    """3. disabled applied from inside the overlay -> reboot -> real root; tmpfs writes gone, persistent kept.
    The disable also drops a persistent path: its unit and link leave the real root, its data stays on the disk."""
    kiosk.ssh("echo scratch > /etc/scratch-marker")
    res = kiosk.play({**DISABLED, "readonly_root_reboot": True}, label="disable from overlay + reboot")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert_real_root(kiosk)
    assert res.facts["current"]["state"] == "disabled"
    assert kiosk.ssh("test -e /etc/scratch-marker && echo yes || echo no").strip() == "no"
    assert kiosk.ssh(f"cat {PERSIST}/keep.txt").strip() == "kept"
    assert_persistent_path(kiosk)
    unit = "var-lib-kiosk\\x2dcache.mount"
    assert kiosk.findmnt(DROPPED) is None
    assert not exists(kiosk, f"'/etc/systemd/system/{unit}'")
    assert not exists(kiosk, f"'/etc/systemd/system/local-fs.target.wants/{unit}'")
    assert exists(kiosk, "'/etc/systemd/system/var-lib-kiosk.mount'")
    assert kiosk.ssh(f"cat /persist{DROPPED}/cache.txt").strip() == "cached"
    assert f"readonly_root_persistent_paths no longer has {DROPPED}" in res.output, res.output[-3000:]
    res = kiosk.play(DISABLED, label="idempotent (real root)")
    assert res.rc == 0, res.failures
    assert res.changed == 0, res.output[-3000:]


def test_unconfirmed_trial_falls_back_by_itself_also_after_a_power_cut(fallback):
    """Enable with sshd off in overlay boots: cut the power in the trial; the next boot is a trial again and falls
    back to the real root by itself within the timeout; the facts say reverted, with the reason and the journal.
    What a maintenance window writes to the real root before the trial stays there."""
    assert_real_root(fallback)
    # The real root is writable and keeps what is written now (checked after the fallback and the next enable).
    fallback.ssh("echo maintenance > /etc/maintenance-marker && sync")
    fallback.ssh(
        "mkdir -p /etc/systemd/system/ssh.service.d && printf '[Unit]\\nConditionPathIsMountPoint=!/media/root-ro\\n'"
        " > /etc/systemd/system/ssh.service.d/test-unreachable-in-overlay.conf && sync"
    )
    res = fallback.play({**ENABLED, "readonly_root_trial_timeout": SHORT_TRIAL}, label="arm short trial")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert res.facts["trial"]["state"] == "armed" and exists(fallback, f"/{TRIAL_LINK}")
    # The persistent paths are bound on the real root too: what is written there now is on the disk.
    assert_persistent_path(fallback)
    fallback.ssh(f"echo kept > {PERSIST}/keep.txt && sync")
    # The cut comes once the trial boot's guard is pending: systemd's console line for its timer. Not at the
    # login prompt: under load a boot can take longer than the trial timeout, and the guard would fire first.
    seen = len(TRIAL_TIMER.findall(fallback.console()))
    reboot_inside(fallback)
    start = time.monotonic()
    while len(TRIAL_TIMER.findall(console := fallback.console())) <= seen:
        assert time.monotonic() - start < 240, "the trial boot did not start its guard's timer"
        time.sleep(1)
    fallback.power_cut()
    assert TRIAL_REVERTING not in console, "the guard fired before the power cut:\n" + console[-3000:]
    start = time.monotonic()
    fallback.boot()  # returns once SSH answers: only the real root runs sshd
    back = time.monotonic() - start
    fallback.timings["power cut -> fallback -> SSH"] = back
    console = fallback.console()
    assert TRIAL_REVERTING in console, console[-3000:]
    assert back < SHORT_TRIAL + 200, back
    assert_real_root(fallback)
    fallback.ssh("rm -f /etc/systemd/system/ssh.service.d/test-unreachable-in-overlay.conf && sync")
    res = fallback.play(ENABLED, check_mode=True, label="facts after the fallback")
    assert res.rc == 0, res.failures
    trial = res.facts["trial"]
    assert trial["state"] == "reverted", trial
    assert trial["reason"].startswith(f"not confirmed within {SHORT_TRIAL}s of the boot"), trial
    assert len(trial["journal"]) > 10 and trial["boot_id"], trial
    assert res.facts["next_boot"]["state"] == "disabled" and res.facts["current"]["state"] == "disabled"
    assert not exists(fallback, f"/{TRIAL_LINK}")
    # What the maintenance window wrote is still on the real root.
    assert fallback.ssh("cat /etc/maintenance-marker").strip() == "maintenance"


def test_enable_again(fallback):
    """3. enable again -> overlay again; what the maintenance window wrote is in the real root."""
    res = fallback.play({**ENABLED, "readonly_root_reboot": True}, label="enable again + reboot")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert_overlay(fallback)
    assert_persistent_path(fallback)
    assert fallback.ssh("cat /media/root-ro/etc/maintenance-marker").strip() == "maintenance"
    assert fallback.ssh(f"cat {PERSIST}/keep.txt").strip() == "kept"
    assert_trial_confirmed(fallback, res.facts)


def test_dead_persistent_disk_then_disabled_is_the_way_back(fallback):
    """The persistent disk dies: the overlay boots without the binds; disabled is accepted all the same, the
    box comes back on its real root and the warning names the missing disk."""
    fallback.stop()
    fallback.detach_persist_disk()
    start = time.monotonic()
    fallback.boot()  # the persistent base's device job times out (readonly_root_persistent_device_timeout), then on
    fallback.timings["boot without the persistent disk"] = time.monotonic() - start
    # The boot waited the role's 60 s for the device (systemd's default: 90 s), then went on without it.
    device = "dev-disk-by\\x2dlabel-persist.device"
    assert fallback.ssh(f"systemctl show -p JobRunningTimeoutUSec --value '{device}'").strip() == "1min"
    assert_overlay(fallback)
    assert fallback.findmnt("/persist") is None and fallback.findmnt(PERSIST) is None
    res = fallback.play({**DISABLED, "readonly_root_reboot": True}, label="dead disk: disable + reboot")
    assert res.rc == 0, res.failures or res.output[-3000:]
    assert_real_root(fallback)
    assert res.facts["current"]["state"] == "disabled" and res.facts["next_boot"]["state"] == "disabled"
    missing = "readonly_root_persistent_device /dev/disk/by-label/persist does not exist"
    assert any(missing in w for w in res.warnings), res.warnings
    assert fallback.findmnt(PERSIST) is None
