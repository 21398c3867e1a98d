"""The kiosk's overlays from the overlays role, on a real systemd: what runs, and after a reboot."""

from __future__ import annotations

import json
import shlex

OVERLAYS = ("/srv/kiosk-state", "/etc/kiosk", "/usr/share/kiosk-assets", "/srv/kiosk-legacy")


def findmnt(host, path: str) -> dict | None:
    res = host.run("findmnt --json --mountpoint %s", path)
    return json.loads(res.stdout)["filesystems"][0] if res.rc == 0 else None


def unit_of(host, path: str) -> str:
    return host.check_output("systemd-escape --path --suffix=mount %s", path)


def show(host, unit: str, *props: str) -> dict[str, str]:
    out = host.check_output("systemctl show -p %s -- %s", ",".join(props), unit)
    return dict(line.split("=", 1) for line in out.splitlines())


def assert_overlays_then_app(host):
    """Every overlay is mounted, the target is active, and the app entered active after all of them.

    The order comes from systemd's own ActiveEnterTimestampMonotonic of each unit. The journal cannot
    witness it here: the overlays mount in early boot, before journald listens, and a container has no
    kernel log to keep PID 1's early lines (they go to the console).
    """
    app = show(host, "kiosk-app.service", "ActiveState", "ActiveEnterTimestampMonotonic")
    target = show(host, "overlays.target", "ActiveState", "ActiveEnterTimestampMonotonic", "Requires")
    assert app["ActiveState"] == "active" and target["ActiveState"] == "active"
    for path in OVERLAYS:
        fs = findmnt(host, path)
        assert fs is not None and fs["fstype"] == "overlay", path
        unit = unit_of(host, path)
        assert unit in shlex.split(target["Requires"])  # systemctl quotes names with a backslash
        mount = show(host, unit, "ActiveState", "ActiveEnterTimestampMonotonic")
        assert mount["ActiveState"] == "active", unit
        assert 0 < int(mount["ActiveEnterTimestampMonotonic"]) <= int(target["ActiveEnterTimestampMonotonic"])
        assert int(mount["ActiveEnterTimestampMonotonic"]) < int(app["ActiveEnterTimestampMonotonic"]), unit
    # What the app saw when it started: the overlays' merged views.
    assert host.file("/run/kiosk-app.seen").content_string == "volume=40\nthemed logo\n"


def test_overlays_and_target(host):
    assert_overlays_then_app(host)
    assert host.service("overlays.target").is_enabled
    assets = findmnt(host, "/usr/share/kiosk-assets")
    assert assets["options"].split(",")[0] == "ro"
    assert "Read-only file system" in host.run_expect([1], "touch /usr/share/kiosk-assets/x").stderr


def test_reboot_keeps_config_drops_state_and_orders_the_app(host, reboot):
    # The app's state written through the tmpfs overlay, an operator's change through the persistent one.
    host.run_expect([0], "echo session > /srv/kiosk-state/session.log && sed -i s/=40/=70/ /etc/kiosk/kiosk.conf")
    reboot(host)
    assert not host.file("/srv/kiosk-state/session.log").exists
    assert host.file("/srv/kiosk-state/README").content_string == "state\n"
    assert host.file("/etc/kiosk/kiosk.conf").content_string == "volume=70\n"
    assert host.file("/opt/kiosk/config-defaults/kiosk.conf").content_string == "volume=40\n"
    host.run_expect([0], "sed -i s/volume=70/volume=40/ /etc/kiosk/kiosk.conf && systemctl restart kiosk-app")
    reboot(host)
    assert_overlays_then_app(host)
