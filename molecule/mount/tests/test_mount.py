"""Runtime facts of the overlays converge.yml set up, before and after reboots."""

from __future__ import annotations

import json

import pytest

TRICKY = "/srv/odd-name with space,comma:colon"


def findmnt(host, path: str) -> dict | None:
    res = host.run("findmnt --json --mountpoint %s", path)
    return json.loads(res.stdout)["filesystems"][0] if res.rc == 0 else None


def unit_props(host, unit: str) -> dict[str, str]:
    out = host.run("systemctl show -p ActiveState,UnitFileState,NeedDaemonReload %s", unit).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def escaped(host, path: str) -> str:
    return host.run("systemd-escape --path --suffix=mount %s", path).stdout.strip()


@pytest.mark.parametrize("path", ["/srv/tmpfs-app", "/srv/persist-app", "/srv/ro-merge", TRICKY])
def test_overlay_units_active_and_enabled(host, path):
    fs = findmnt(host, path)
    assert fs is not None and fs["fstype"] == "overlay"
    props = unit_props(host, escaped(host, path))
    assert props["ActiveState"] == "active"
    assert props["UnitFileState"] == "enabled"
    assert props["NeedDaemonReload"] == "no"


def test_tmpfs_upper_is_its_own_tmpfs(host):
    opts = findmnt(host, "/srv/tmpfs-app")["options"]
    upper = next(o for o in opts.split(",") if o.startswith("upperdir=")).split("=", 1)[1]
    tmpfs = findmnt(host, upper.rsplit("/", 1)[0])
    assert tmpfs is not None and tmpfs["fstype"] == "tmpfs"
    assert "size=8192k" in tmpfs["options"]
    assert "mode=755" in tmpfs["options"]


def test_read_only_overlay_refuses_writes(host):
    res = host.run("touch /srv/ro-merge/new")
    assert res.rc != 0 and "Read-only file system" in res.stderr
    assert host.file("/srv/ro-merge/shared.txt").content_string == "from v2\n"
    assert host.file("/srv/ro-merge/base.txt").content_string == "base\n"


def test_tricky_paths_merge(host):
    assert host.file(f"{TRICKY}/odd.txt").content_string == "odd\n"
    assert host.file(f"{TRICKY}/base.txt").content_string == "base\n"
    host.run_expect([0], "echo x > %s", f"{TRICKY}/new.txt")


def test_lower_layers_never_written(host):
    assert host.file("/opt/t/base/base.txt").content_string == "base\n"
    assert not host.file("/opt/t/base/written.txt").exists


def test_reboot_keeps_persistent_drops_tmpfs_and_applies_next_boot(host, reboot):
    assert host.file("/srv/tmpfs-app/written.txt").exists
    # converge.yml changed /srv/tmpfs-app's layers with apply: next_boot.
    assert "lowerdir=/opt/t/base," in findmnt(host, "/srv/tmpfs-app")["options"]

    reboot(host)

    for path in ("/srv/tmpfs-app", "/srv/persist-app", "/srv/ro-merge", TRICKY):
        fs = findmnt(host, path)
        assert fs is not None and fs["fstype"] == "overlay", f"{path} not mounted after reboot"
    # tmpfs upper: writes gone; the next_boot layers are live now.
    assert not host.file("/srv/tmpfs-app/written.txt").exists
    assert not host.file(f"{TRICKY}/new.txt").exists
    assert "lowerdir=/opt/t/v2:/opt/t/base" in findmnt(host, "/srv/tmpfs-app")["options"]
    assert host.file("/srv/tmpfs-app/shared.txt").content_string == "from v2\n"
    # persistent upper: writes and changes kept.
    assert host.file("/srv/persist-app/written.txt").content_string == "written\n"
    assert host.file("/srv/persist-app/base.txt").content_string == "changed\n"
    assert host.file("/opt/t/base/base.txt").content_string == "base\n"
    assert host.run("systemctl is-system-running").stdout.strip() == "running"
