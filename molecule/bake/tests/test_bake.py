"""The baked image, booted: the overlays the role wrote offline into its root mount at boot, as declared."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

# The inventory also holds the image root (a chroot host); only the booted container is verified here.
testinfra_hosts = ["ansible://overlayfs-bake"]

CONFIG, CACHE = "/etc/appliance", "/var/cache/appliance"
LOWERS = {CONFIG: ["/opt/appliance/site", "/opt/appliance/defaults"], CACHE: ["/opt/appliance/cache-skeleton"]}


def report(host) -> dict[str, dict]:
    res = host.ansible("overlayfs.systemd.mount_info", "managed_only=true", check=False)
    assert not res.get("failed"), res
    return {o["path"]: o for o in res["overlays"]}


def findmnt(host, path: str, *args: str) -> dict:
    out = host.check_output("findmnt --json %s %s", " ".join(args) or "--mountpoint", path)
    return json.loads(out)["filesystems"][0]


def overlay_options(fs: dict) -> dict[str, str]:
    return dict(opt.split("=", 1) for opt in fs["options"].split(",") if "=" in opt)


def test_mounted_at_boot_managed_without_drift(host):
    overlays = report(host)
    assert sorted(overlays) == [CONFIG, CACHE]
    for path, o in overlays.items():
        assert o["managed"] and o["mounted"] and o["enabled"], o
        assert o["active_state"] == "active" and o["drift"] == [] and o["drift_keys"] == [], o
        assert o["lowerdir"] == LOWERS[path]
    assert overlays[CONFIG]["upper"] == "persistent"
    assert overlays[CONFIG]["upperdir"].startswith("/var/lib/overlayfs/")
    assert overlays[CACHE]["upper"] == "tmpfs"
    assert overlays[CACHE]["tmpfs"]["size"] == 16 * 1024 * 1024


def test_the_kernel_shows_the_declared_layers(host):
    overlays = report(host)
    for path in (CONFIG, CACHE):
        fs = findmnt(host, path)
        assert fs["fstype"] == "overlay"
        opts = overlay_options(fs)
        assert opts["lowerdir"] == ":".join(LOWERS[path])
        assert opts["upperdir"] == overlays[path]["upperdir"]
        assert opts["workdir"] == overlays[path]["workdir"]
    # The persistent upper is on the volume the image's /var/lib/overlayfs became, the other on its tmpfs.
    assert findmnt(host, overlays[CONFIG]["upperdir"], "--target")["fstype"] not in ("overlay", "tmpfs")
    assert findmnt(host, overlays[CACHE]["upperdir"], "--target")["fstype"] == "tmpfs"


def test_overlays_target_requires_both(host):
    props = host.check_output("systemctl show -p ActiveState,UnitFileState,Requires overlays.target")
    values = dict(line.split("=", 1) for line in props.splitlines())
    assert values["ActiveState"] == "active" and values["UnitFileState"] == "enabled"
    assert {"etc-appliance.mount", "var-cache-appliance.mount"} <= set(shlex.split(values["Requires"]))
    assert host.check_output("systemctl list-units --failed --plain --no-legend") == ""


def test_merged_views_show_the_lowers(host):
    # The site layer shadows the vendor default; the default's other file shows through.
    assert host.file(CONFIG + "/appliance.conf").content_string == "mode=site\n"
    assert host.file(CONFIG + "/limits.conf").content_string == "max=10\n"
    assert host.file(CACHE + "/README").content_string == "cache\n"


def test_writes_land_in_the_uppers_and_the_persistent_one_survives_a_reboot(host, reboot):
    overlays = report(host)
    host.run_expect([0], "echo max=99 > %s/limits.conf && echo scratch > %s/scratch", CONFIG, CACHE)
    assert host.file(overlays[CONFIG]["upperdir"] + "/limits.conf").content_string == "max=99\n"
    assert host.file(overlays[CACHE]["upperdir"] + "/scratch").content_string == "scratch\n"
    assert host.file("/opt/appliance/defaults/limits.conf").content_string == "max=10\n"
    assert not host.file("/opt/appliance/cache-skeleton/scratch").exists
    reboot(host)
    assert host.file(CONFIG + "/limits.conf").content_string == "max=99\n"
    assert not host.file(CACHE + "/scratch").exists
    assert host.file(CACHE + "/README").content_string == "cache\n"
    assert all(o["mounted"] and o["drift"] == [] for o in report(host).values())


def test_the_guide_shows_this_playbook():
    """docs/appliance.md shows bake.yml as it is, so the guide's playbook is the one proven here."""
    here = Path(__file__).resolve().parent.parent
    guide = (here.parent.parent / "docs" / "appliance.md").read_text(encoding="utf-8")
    assert "```yaml\n" + (here / "bake.yml").read_text(encoding="utf-8") + "```\n" in guide
