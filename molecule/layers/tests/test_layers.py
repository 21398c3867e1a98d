"""What the layers scenario leaves, read on each box after converge.

The fleet is back on the base layer (the imported k2 layer removed, its
overlay mounted on the base only, the merged view the one before the
change); the golden box runs its committed layer and shows the golden view.
"""

import json

import pytest

LAYERS = "/var/lib/overlayfs/layers"


def manifest(host) -> str:
    return host.check_output("tree-manifest /srv/kiosk --no-root-times")


def saved(host, name: str) -> str:
    return host.file("/srv/persist/manifests/%s" % name).content_string.rstrip("\n")


def lowerdirs(host) -> list[str]:
    fs = json.loads(host.check_output("findmnt --json -o FSTYPE,OPTIONS /srv/kiosk"))["filesystems"][0]
    assert fs["fstype"] == "overlay"
    opts = dict(o.partition("=")[::2] for o in fs["options"].split(","))
    return opts["lowerdir"].split(":")


def test_kiosk_unit_active(host):
    out = host.check_output("systemctl show -p ActiveState srv-kiosk.mount")
    assert out == "ActiveState=active"


def test_fleet_rolled_back_and_layer_collected(host):
    if "golden" in host.backend.get_hostname():
        pytest.skip("fleet only")
    assert lowerdirs(host) == [LAYERS + "/base"]
    assert not host.file(LAYERS + "/k2").exists
    assert manifest(host) == saved(host, "base-view.txt")
    record = host.check_output(
        "python3 -c 'import os, sys; sys.stdout.write(os.getxattr(sys.argv[1], sys.argv[2]).decode())' %s %s",
        LAYERS + "/base",
        "trusted.overlayfs-systemd.layer",
    )
    assert json.loads(record)["digest"].startswith("sha256:")


def test_golden_runs_its_committed_layer(host):
    if "golden" not in host.backend.get_hostname():
        pytest.skip("golden only")
    assert lowerdirs(host)[0] == LAYERS + "/golden-k2"
    assert manifest(host) == saved(host, "golden-k2.txt")
    assert not host.file("/srv/kiosk/etc/old.conf").exists
    assert host.file("/srv/kiosk/cache/fresh").content_string == "fresh\n"
