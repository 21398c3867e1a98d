"""readonly_root in a container: files written, units live, a reboot keeps the persistent path."""

from __future__ import annotations

import json


def unit_props(host, unit: str) -> dict[str, str]:
    out = host.run("systemctl show -p ActiveState,UnitFileState,ConditionResult %s", unit).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def findmnt(host, path: str) -> dict | None:
    res = host.run("findmnt --json --mountpoint %s", path)
    return json.loads(res.stdout)["filesystems"][0] if res.rc == 0 else None


def test_overlayroot_config_is_disabled_after_side_effect(host):
    conf = host.file("/etc/overlayroot.local.conf")
    assert conf.mode == 0o644
    assert 'overlayroot="disabled"\n' in conf.content_string
    assert conf.content_string.startswith("#\n# Ansible managed")
    # The dpkg conffile is never touched.
    assert not host.file("/etc/overlayroot.conf").exists


def test_persistent_path_is_a_live_bind_mount(host):
    props = unit_props(host, "var-lib-kiosk.mount")
    assert props["ActiveState"] == "active" and props["UnitFileState"] == "enabled", props
    mnt = findmnt(host, "/var/lib/kiosk")
    # The same file system as the persistent base (a Docker volume here), its var/lib/kiosk.
    base = findmnt(host, "/srv/persist")["source"]
    assert mnt is not None and mnt["source"] == base.rstrip("]") + "/var/lib/kiosk]", (mnt, base)
    # The content the path had was copied to the persistent file system once.
    assert host.file("/srv/persist/var/lib/kiosk/seed.txt").content_string == "from the root\n"


def test_tmpfs_size_unit_enabled(host):
    props = unit_props(host, "overlayfs-readonly-root-tmpfs-size.service")
    assert props["UnitFileState"] == "enabled", props
    unit = host.file("/etc/systemd/system/overlayfs-readonly-root-tmpfs-size.service").content_string
    assert "ExecStart=/bin/mount -o remount,size=64M /media/root-rw" in unit


def test_persistent_path_survives_reboot(host, reboot):
    host.run_expect([0], "echo kept > /var/lib/kiosk/after.txt")
    reboot(host)
    assert host.file("/var/lib/kiosk/after.txt").content_string == "kept\n"
    assert host.file("/srv/persist/var/lib/kiosk/after.txt").content_string == "kept\n"
    assert unit_props(host, "var-lib-kiosk.mount")["ActiveState"] == "active"
    # Pulled in at boot and skipped: there is no overlayroot tmpfs to resize in a container.
    out = host.run(
        "systemctl show -p ActiveState,ConditionResult,ConditionTimestampMonotonic %s",
        "overlayfs-readonly-root-tmpfs-size.service",
    ).stdout
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    assert props["ActiveState"] == "inactive" and props["ConditionResult"] == "no", props
    assert props["ConditionTimestampMonotonic"] not in ("", "0"), props


def test_dropped_path_lost_its_unit_and_kept_its_data(host):
    props = unit_props(host, "var-lib-extra.mount")
    assert props["ActiveState"] == "inactive", props
    assert not host.file("/etc/systemd/system/var-lib-extra.mount").exists
    assert not host.file("/etc/systemd/system/local-fs.target.wants/var-lib-extra.mount").exists
    assert findmnt(host, "/var/lib/extra") is None
    # The data stays on the persistent file system, also what was written while it was bound.
    assert host.file("/srv/persist/var/lib/extra/seed.txt").content_string == "from the root\n"
    assert host.file("/srv/persist/var/lib/extra/late.txt").content_string == "persistent\n"
    # The path now shows the root's copy from when it became persistent (reported as stale_copy).
    assert host.file("/var/lib/extra/seed.txt").exists
    assert not host.file("/var/lib/extra/late.txt").exists


def test_remount_fs_dropin(host):
    """systemd-remount-fs remounts the overlay root with mount(2): the new mount API is refused by overlayfs."""
    dropin = host.file("/etc/systemd/system/systemd-remount-fs.service.d/overlayfs-readonly-root.conf")
    assert dropin.is_file and dropin.mode == 0o644
    assert "\nEnvironment=LIBMOUNT_FORCE_MOUNT2=always\n" in dropin.content_string
