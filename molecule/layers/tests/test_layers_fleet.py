"""The fleet after the roll back: on the base layer again, the imported layer collected."""

import json

from layers_view import LAYERS, lowerdirs, manifest, saved

testinfra_hosts = ["ansible://fleet"]


def test_fleet_rolled_back_and_layer_collected(host):
    assert lowerdirs(host) == [LAYERS + "/base"]
    assert not host.file(LAYERS + "/k2").exists
    assert manifest(host) == saved(host, "base-view.txt")
    record = host.check_output(
        "python3 -c 'import os, sys; sys.stdout.write(os.getxattr(sys.argv[1], sys.argv[2]).decode())' %s %s",
        LAYERS + "/base",
        "trusted.overlayfs-systemd.layer",
    )
    assert json.loads(record)["digest"].startswith("sha256:")
