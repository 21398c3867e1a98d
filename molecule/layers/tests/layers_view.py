"""Reading a layers box: the kiosk overlay's merged view, its lower layers, the saved manifests."""

import json

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
