"""After the rolling change: the busy host untouched, the others restacked, nothing lost anywhere."""

from __future__ import annotations

import json

BUSY = "overlayfs-fleet-4"


def lowers(host, path: str) -> list[str]:
    fs = json.loads(host.check_output("findmnt --json --mountpoint %s", path))["filesystems"][0]
    opts = dict(o.partition("=")[::2] for o in fs["options"].split(","))
    return opts["lowerdir"].split(":")


def upperdir(host, path: str) -> str:
    fs = json.loads(host.check_output("findmnt --json --mountpoint %s", path))["filesystems"][0]
    return dict(o.partition("=")[::2] for o in fs["options"].split(","))["upperdir"]


def test_data_kept_everywhere(host):
    name = host.backend.host
    assert host.file("/srv/fleet-config/local.conf").content_string == "host=%s\n" % name
    assert host.file(upperdir(host, "/srv/fleet-config") + "/local.conf").exists
    assert host.file("/srv/fleet-cache/README").content_string == "cache\n"
    assert host.service("overlays.target").is_running


def test_busy_host_untouched_others_restacked(host):
    unit = host.check_output("systemd-escape --path --suffix=mount /srv/fleet-config")
    text = host.file("/etc/systemd/system/" + unit).content_string
    if host.backend.host == BUSY:
        assert lowers(host, "/srv/fleet-config") == ["/opt/fleet/config"]
        assert "/opt/fleet/hotfix" not in text
        assert host.file("/srv/fleet-config/app.conf").content_string == "release=1\n"
        assert host.service("fleet-holder").is_running
    else:
        assert lowers(host, "/srv/fleet-config") == ["/opt/fleet/hotfix", "/opt/fleet/config"]
        assert "/opt/fleet/hotfix" in text
        assert host.file("/srv/fleet-config/app.conf").content_string == "release=1-hotfix\n"
