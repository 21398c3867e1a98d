"""What `make demo` claims, proven: three overlays, and what survives a reboot."""

from __future__ import annotations

import json


def findmnt(host, path: str) -> dict | None:
    res = host.run("findmnt --json --mountpoint %s", path)
    return json.loads(res.stdout)["filesystems"][0] if res.rc == 0 else None


def test_three_overlays_mounted(host):
    for path in ("/srv/kiosk", "/etc/kiosk", "/usr/share/kiosk-assets"):
        fs = findmnt(host, path)
        assert fs is not None and fs["fstype"] == "overlay", path


def test_top_lower_wins_and_assets_are_read_only(host):
    assert host.file("/usr/share/kiosk-assets/logo.txt").content_string == "themed logo\n"
    assert host.file("/usr/share/kiosk-assets/font.txt").content_string == "stock font\n"
    res = host.run("touch /usr/share/kiosk-assets/x")
    assert res.rc != 0 and "Read-only file system" in res.stderr


def test_reboot_keeps_config_and_drops_session(host, reboot):
    host.run_expect([0], "echo tapped >> /srv/kiosk/session.log")
    host.run_expect([0], "sed -i s/volume=40/volume=70/ /etc/kiosk/kiosk.conf")
    reboot(host)
    for path in ("/srv/kiosk", "/etc/kiosk", "/usr/share/kiosk-assets"):
        assert findmnt(host, path) is not None, f"{path} not mounted after reboot"
    assert not host.file("/srv/kiosk/session.log").exists
    assert "volume=70" in host.file("/etc/kiosk/kiosk.conf").content_string
    assert "volume=40" in host.file("/opt/kiosk/config-defaults/kiosk.conf").content_string
    assert host.file("/srv/kiosk/app.conf").content_string == "release=2\n"
