"""After converge.yml committed both overlays: what a reboot keeps.

The committed changes now live in a lower layer, so they survive a reboot
for the tmpfs upper too; the merged views are compared with the manifests
converge.yml saved before the commit (content, type, mode, owner, mtime,
xattrs, hard links), the lowers with theirs, and a few entries with stat(1)
and getfattr(1) directly.
"""

from __future__ import annotations

import json

import pytest

OVERLAYS = {"persist": "/srv/up-persist", "tmpfs": "/srv/up-tmpfs"}


def manifest(host, path: str, no_root_times: bool = False) -> str:
    if no_root_times:
        return host.check_output("tree-manifest %s --no-root-times", path)
    return host.check_output("tree-manifest %s", path)


def saved(host, name: str) -> str:
    return host.file("/srv/persist/manifests/%s" % name).content_string.rstrip("\n")


def findmnt(host, path: str) -> dict:
    return json.loads(host.check_output("findmnt --json --mountpoint %s", path))["filesystems"][0]


def spot_checks(host, path: str) -> dict[str, str]:
    out = {}
    for rel in ("new.txt", "meta.txt", "etc/app.conf", "suid-tool", "olddir", "sym"):
        out[rel] = host.check_output("stat -c '%%f %%U:%%G %%y' %s/%s", path, rel)
    out["xattrs"] = host.check_output("cd %s && getfattr -d new.txt etc/app.conf", path)
    return out


@pytest.mark.parametrize("name", sorted(OVERLAYS))
def test_committed_overlay_before_reboot(host, name):
    path = OVERLAYS[name]
    fs = findmnt(host, path)
    assert fs["fstype"] == "overlay"
    assert "lowerdir=/srv/persist/layers/%s-1:/opt/u/%s" % (name, name) in fs["options"]
    assert manifest(host, path) == saved(host, "%s-merged.txt" % name)
    assert host.check_output("cat %s/new.txt", path) == "new"
    assert not host.file("%s/delete.txt" % path).exists
    assert not host.file("%s/olddir/a" % path).exists


def test_reboot_keeps_the_committed_merged_views(host, reboot):
    before = {name: spot_checks(host, path) for name, path in OVERLAYS.items()}
    reboot(host)
    for name, path in OVERLAYS.items():
        fs = findmnt(host, path)
        assert fs["fstype"] == "overlay", name
        assert "lowerdir=/srv/persist/layers/%s-1:/opt/u/%s" % (name, name) in fs["options"]
        # A tmpfs upper root is recreated at boot: the merged root's times are new, nothing else is.
        if name == "tmpfs":
            assert manifest(host, path, True) == saved(host, "tmpfs-merged-noroot.txt")
        else:
            assert manifest(host, path) == saved(host, "persist-merged.txt")
        assert spot_checks(host, path) == before[name], name
        assert manifest(host, "/opt/u/%s" % name) == saved(host, "%s-lower.txt" % name)
        unit = host.check_output("systemd-escape --path --suffix=mount %s", path)
        state = host.check_output("systemctl show -p ActiveState,UnitFileState %s", unit)
        assert "ActiveState=active" in state and "UnitFileState=enabled" in state
    xattrs = host.check_output("getfattr -d /srv/up-persist/etc/app.conf")
    assert 'user.origin="changed"' in xattrs


def test_new_layers_are_the_uppers_without_bookkeeping(host):
    """The committed layer is the upper as it was: its whiteout and opaque marker, no overlay bookkeeping xattr."""
    for name in OVERLAYS:
        layer = "/srv/persist/layers/%s-1" % name
        devices = host.check_output("cd %s && find . -type c -printf '%%P %%m\\n' | sort", layer)
        assert devices.splitlines() == ["delete.txt 0"]
        assert host.check_output("getfattr --only-values -n trusted.overlay.opaque %s/olddir", layer) == "y"
        kept = host.run("getfattr -R -h -d -m '^trusted\\.overlay\\.' --absolute-names %s", layer).stdout
        assert "trusted.overlay.opaque" in kept
        for dropped in ("origin", "impure", "nlink", "upper", "uuid"):
            assert "trusted.overlay.%s=" % dropped not in kept
