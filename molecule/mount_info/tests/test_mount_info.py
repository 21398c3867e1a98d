"""mount_info's report against the host's own tools: findmnt, df, systemctl.

converge.yml leaves the host drifted (other lowers mounted by hand over
/srv/mi-persist, a full tmpfs upper and an edited unit for /srv/mi-tmpfs,
two overlays mounted by hand). Every figure of the report is compared with
what findmnt, df and systemctl say; after a reboot the units are back in
charge and the drift is gone.
"""

from __future__ import annotations

import json

import pytest

MANAGED = ["/srv/mi-persist", "/srv/mi-ro", "/srv/mi-tmpfs"]


def report(host, args: str = "") -> dict[str, dict]:
    res = host.ansible("overlayfs.systemd.mount_info", args, check=False)
    assert not res.get("failed"), res
    assert res["changed"] is False
    return {o["path"]: o for o in res["overlays"]}


def findmnt_overlays(host) -> dict[str, dict]:
    out = json.loads(host.check_output("findmnt --json --list -t overlay -o TARGET,FSTYPE,OPTIONS,VFS-OPTIONS"))
    return {fs["target"]: fs for fs in out["filesystems"]}


def top_fstype(host, path: str) -> str | None:
    res = host.run("findmnt --noheadings --output FSTYPE --mountpoint %s", path)
    return res.stdout.strip().splitlines()[-1] if res.rc == 0 else None


def unit_props(host, unit: str) -> dict[str, str]:
    out = host.check_output("systemctl show -p ActiveState,SubState,UnitFileState,NeedDaemonReload -- %s", unit)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def option(options: str, key: str) -> str | None:
    for opt in options.split(","):
        if opt.startswith(key + "="):
            return opt.split("=", 1)[1]
    return None


def test_every_mounted_overlay_is_reported(host):
    rep = report(host)
    live = {path for path in findmnt_overlays(host) if top_fstype(host, path) == "overlay"}
    assert {p for p, o in rep.items() if o["mounted"]} == live
    assert "/" in live and rep["/"]["managed"] is False
    assert {p for p, o in rep.items() if o["managed"]} == set(MANAGED)


def test_layers_match_findmnt(host):
    rep = report(host)
    for path, fs in findmnt_overlays(host).items():
        entry = rep[path]
        # Paths of this scenario have no ':' or ',' to escape.
        assert ":".join(entry["lowerdir"]) == option(fs["options"], "lowerdir"), path
        assert entry["upperdir"] == option(fs["options"], "upperdir"), path
        assert entry["workdir"] == option(fs["options"], "workdir"), path
        assert entry["readonly"] == ("ro" in fs["vfs-options"].split(",") or entry["upperdir"] is None), path


def test_hand_mounted_lowers_are_drift(host):
    entry = report(host, "path=/srv/mi-persist")["/srv/mi-persist"]
    assert option(findmnt_overlays(host)["/srv/mi-persist"]["options"], "lowerdir") == "/opt/mi/other:/opt/mi/base"
    assert any(d.startswith("lowerdir differs") for d in entry["drift"])


def test_states_match_systemctl(host):
    rep = report(host)
    for path in MANAGED + ["/srv/mi-hand"]:
        entry = rep[path]
        props = unit_props(host, entry["unit"])
        assert entry["active_state"] == props["ActiveState"], path
        assert entry["sub_state"] == props["SubState"], path
        assert entry["enabled"] == (props["UnitFileState"] == "enabled"), path
        reload_drift = any("NeedDaemonReload=yes" in d for d in entry["drift"])
        assert reload_drift == (props["NeedDaemonReload"] == "yes"), path
    assert unit_props(host, rep["/srv/mi-tmpfs"]["unit"])["NeedDaemonReload"] == "yes"


def test_tmpfs_usage_matches_df(host):
    entry = report(host, "path=/srv/mi-tmpfs")["/srv/mi-tmpfs"]
    tmpfs = entry["tmpfs"]
    size, used, avail = host.check_output("df -B1 --output=size,used,avail %s | tail -n 1", tmpfs["path"]).split()
    assert (tmpfs["size"], tmpfs["used"], tmpfs["available"]) == (int(size), int(used), int(avail))
    inodes, iused = host.check_output("df --output=itotal,iused %s | tail -n 1", tmpfs["path"]).split()
    assert (tmpfs["inodes"], tmpfs["inodes_used"]) == (int(inodes), int(iused))
    assert tmpfs["percent"] >= 99


@pytest.mark.parametrize("path", ["/srv/mi-hand", "/srv/mi-hand-tmp"])
def test_hand_mounted_overlays_are_unmanaged(host, path):
    entry = report(host, f"path={path}")[path]
    assert top_fstype(host, path) == "overlay"
    assert entry["managed"] is False and entry["drift"] == []
    assert entry["unit"] == host.check_output("systemd-escape --path --suffix=mount %s", path)


def test_reboot_clears_the_drift(host, reboot):
    reboot(host)
    rep = report(host)
    for path in MANAGED:
        entry = rep[path]
        assert top_fstype(host, path) == "overlay", path
        assert entry["mounted"] and entry["active_state"] == "active", path
        assert entry["drift"] == [], (path, entry["drift"])
    # The units' layers are back; the tmpfs upper is fresh.
    assert rep["/srv/mi-persist"]["lowerdir"] == ["/opt/mi/base"]
    assert rep["/srv/mi-tmpfs"]["tmpfs"]["percent"] < 5
    # Hand mounts do not survive a reboot.
    assert "/srv/mi-hand" not in rep and "/srv/mi-hand-tmp" not in rep
