"""The bench boots systemd, mounts a tmpfs-upper overlay, and survives reboots."""

from __future__ import annotations

import json


def overlay_at(host, path: str) -> dict | None:
    res = host.run("findmnt --json --mountpoint %s", path)
    if res.rc != 0:
        return None
    return json.loads(res.stdout)["filesystems"][0]


def test_systemd_is_pid1_and_running(host):
    assert host.run("cat /proc/1/comm").stdout.strip() == "systemd"
    assert host.run("systemctl is-system-running").stdout.strip() == "running"


def test_overlay_mounted_with_tmpfs_upper(host):
    fs = overlay_at(host, "/srv/bench")
    assert fs is not None and fs["fstype"] == "overlay"
    upper = next(o for o in fs["options"].split(",") if o.startswith("upperdir=")).split("=", 1)[1]
    assert upper.startswith("/run/overlayfs/") and upper.endswith("/upper")
    tmpfs = overlay_at(host, upper.rsplit("/", 1)[0])
    assert tmpfs is not None and tmpfs["fstype"] == "tmpfs"
    assert host.file("/srv/bench/hello.txt").content_string == "from the lower layer\n"


def test_writes_vanish_and_overlay_returns_after_reboot(host, reboot):
    host.run_expect([0], "echo changed > /srv/bench/hello.txt && touch /srv/bench/new")
    assert host.file("/srv/bench/new").exists
    # The lower layer is never written to.
    assert host.file("/opt/bench/lower/hello.txt").content_string == "from the lower layer\n"

    assert reboot(host) == "running"

    fs = overlay_at(host, "/srv/bench")
    assert fs is not None and fs["fstype"] == "overlay"
    props = host.run("systemctl show -p ActiveState,UnitFileState srv-bench.mount").stdout
    assert "ActiveState=active" in props and "UnitFileState=enabled" in props
    assert not host.file("/srv/bench/new").exists
    assert host.file("/srv/bench/hello.txt").content_string == "from the lower layer\n"


def systemd_version(host) -> int:
    # "systemd 257 (257.9-1~deb13u1)"
    return int(host.run("systemctl --version").stdout.split()[1])


def test_naive_unit_on_a_fresh_tmpfs(host, reboot):
    # /run is a fresh tmpfs after every boot: nothing recreates upper/ and
    # work/ of the naive unit. systemd < 256 does not create them for
    # Type=overlay and the mount fails (what the module's prepare service
    # exists for); systemd >= 256 (Debian 13: 257) creates them itself,
    # empty, and the overlay mounts.
    reboot(host)
    assert not host.file("/run/naive").exists
    res = host.run("systemctl start srv-naive.mount")
    if systemd_version(host) < 256:
        assert res.rc != 0
        assert host.run("systemctl is-active srv-naive.mount").stdout.strip() == "failed"
        host.run("systemctl reset-failed srv-naive.mount")
    else:
        assert res.rc == 0, res.stderr
        fs = overlay_at(host, "/srv/naive")
        assert fs is not None and fs["fstype"] == "overlay"
        assert host.file("/run/naive/upper").is_directory
        assert host.file("/run/naive/upper").listdir() == []
        host.run_expect([0], "systemctl stop srv-naive.mount")


def test_missing_persistent_upper_is_not_recreated(host):
    # The mount module's unit asserts its persistent upper: on systemd >= 256
    # (which would create it, empty, like the naive unit's) as on 252 the
    # start fails and nothing is created.
    fs = overlay_at(host, "/srv/benchp")
    upper = next(o for o in fs["options"].split(",") if o.startswith("upperdir=")).split("=", 1)[1]
    host.run_expect([0], "systemctl stop srv-benchp.mount && mv %s %s.lost" % (upper, upper))
    try:
        assert host.run("systemctl start srv-benchp.mount").rc != 0
        assert not host.file(upper).exists
        assert overlay_at(host, "/srv/benchp") is None
        props = host.run("systemctl show -p AssertResult,ActiveState srv-benchp.mount").stdout
        # systemd 257 leaves the unit inactive, not failed: AssertResult says why.
        assert "AssertResult=no" in props and "ActiveState=active" not in props
    finally:
        host.run("mv %s.lost %s && systemctl reset-failed srv-benchp.mount", upper, upper)
    host.run_expect([0], "systemctl start srv-benchp.mount")
    assert overlay_at(host, "/srv/benchp") is not None
