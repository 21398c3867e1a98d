# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure rules of mount_info: declared overlays, live overlays, drift, tmpfs use."""

from __future__ import annotations

import os

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _info as info
from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.module_utils import _spec as sp
from ansible_collections.overlayfs.systemd.plugins.module_utils import _units as un

# Lines captured from real kernels (6.1 and 6.18): a Docker container's root,
# a hand-made overlay whose lower has a space, a comma, a colon and a
# backslash in its name (octal escapes for space, backslash and comma; the
# colon keeps the overlay's own backslash escape), the same lowers mounted
# read-only without upper (the kernel adds redirect_dir=on), overlayroot's
# root, a tmpfs holding an upper.
DOCKER_ROOT = (
    "46 42 0:39 / /var/lib/docker/overlay2/d3ac7a5f/merged rw,relatime shared:2 - overlay overlay "
    "rw,lowerdir=/var/lib/docker/overlay2/l/I5TCWAABLRZM:/var/lib/docker/overlay2/l/AFUETTWH5EWB,"
    "upperdir=/var/lib/docker/overlay2/d3ac7a5f/diff,workdir=/var/lib/docker/overlay2/d3ac7a5f/work"
)
ESCAPED = (
    "47 27 0:40 / /tmp/mi-t/m rw,relatime - overlay overlay rw,lowerdir=/tmp/mi-t/l1:/tmp/mi-t/l\\0402\\134\\054x"
    "\\134:y,upperdir=/tmp/mi-t/t/u,workdir=/tmp/mi-t/t/w,uuid=on"
)
READONLY = (
    "50 27 0:43 / /tmp/mi-t/m2 rw,relatime - overlay overlay ro,lowerdir=/tmp/mi-t/l1:/tmp/mi-t/l\\0402\\134\\054x"
    "\\134:y,redirect_dir=on"
)
TMPFS_T = "43 27 0:39 / /tmp/mi-t/t rw,relatime - tmpfs tmpfs rw,size=1024k"
OVERLAYROOT = (
    "26 1 0:25 / / rw,relatime - overlay overlayroot rw,lowerdir=/media/root-ro,upperdir=/media/root-rw/overlay,"
    "workdir=/media/root-rw/overlay-workdir/_"
)
ROOT_RW = "24 1 0:23 / /media/root-rw rw,relatime - tmpfs tmpfs-root rw,size=2097152k"
SPACE_POINT = (
    "60 27 0:50 / /srv/my\\040app rw,nosuid,nodev,relatime - overlay overlay rw,lowerdir+=/l/a\\072b,"
    "lowerdir+=/l/c,datadir+=/d/x,upperdir=/u/up,workdir=/u/wk,uuid=on"
)
MANY_LOWERS = "70 27 0:51 / /srv/many rw,relatime - overlay overlay ro,lowerdir=%s" % ":".join(
    "/opt/layer%02d" % i for i in range(40)
)
GARBAGE = [
    "",
    "garbage",
    "1 2 3",
    "x y 0:1 / /a rw - overlay overlay rw,lowerdir=/x",
    "5 1 nocolon / /b rw - overlay overlay rw,lowerdir=/x",
    "6 1 0:1 / /c rw - overlay",
    "\x00\xff - - - -",
    "7 1 0:1 / /d rw shared:1",
]


def mounts_of(*lines: str) -> list[minfo.MountInfo]:
    return minfo.parse_mountinfo("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "line, point, lowers, datadir, upper, work, readonly",
    [
        (
            DOCKER_ROOT,
            "/var/lib/docker/overlay2/d3ac7a5f/merged",
            ["/var/lib/docker/overlay2/l/I5TCWAABLRZM", "/var/lib/docker/overlay2/l/AFUETTWH5EWB"],
            [],
            "/var/lib/docker/overlay2/d3ac7a5f/diff",
            "/var/lib/docker/overlay2/d3ac7a5f/work",
            False,
        ),
        (ESCAPED, "/tmp/mi-t/m", ["/tmp/mi-t/l1", "/tmp/mi-t/l 2,x:y"], [], "/tmp/mi-t/t/u", "/tmp/mi-t/t/w", False),
        (READONLY, "/tmp/mi-t/m2", ["/tmp/mi-t/l1", "/tmp/mi-t/l 2,x:y"], [], None, None, True),
        (OVERLAYROOT, "/", ["/media/root-ro"], [], "/media/root-rw/overlay", "/media/root-rw/overlay-workdir/_", False),
        (SPACE_POINT, "/srv/my app", ["/l/a:b", "/l/c"], ["/d/x"], "/u/up", "/u/wk", False),
        (MANY_LOWERS, "/srv/many", ["/opt/layer%02d" % i for i in range(40)], [], None, None, True),
    ],
)
def test_report_of_captured_lines(line, point, lowers, datadir, upper, work, readonly):
    mounts = mounts_of(*GARBAGE, line, *GARBAGE)
    assert info.overlay_mount_points(mounts) == [point]
    (report,) = info.build_report([point], mounts, {}, {}, "/etc/systemd/system", lambda p: None)
    entry = report.as_dict()
    assert (entry["path"], entry["lowerdir"], entry["datadir"]) == (point, lowers, datadir)
    assert (entry["upperdir"], entry["workdir"], entry["readonly"]) == (upper, work, readonly)
    assert entry["mounted"] and not entry["managed"] and entry["drift"] == []
    assert entry["unit"] == nm.unit_name(point)
    assert "rw" not in entry["options"] and "ro" not in entry["options"]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_garbage_never_crashes(garbage):
    mounts = mounts_of(garbage)
    selected = info.select_paths(mounts, {}, None, False)
    assert info.build_report(selected, mounts, {}, {}, "/etc/systemd/system", lambda p: None) == []


@pytest.mark.parametrize(
    "lines, upperdir, kind",
    [
        ((OVERLAYROOT, ROOT_RW), "/media/root-rw/overlay", "tmpfs"),
        ((TMPFS_T, ESCAPED), "/tmp/mi-t/t/u", "tmpfs"),
        ((DOCKER_ROOT,), "/var/lib/docker/overlay2/d3ac7a5f/diff", "persistent"),
        ((OVERLAYROOT,), "/media/root-rw/overlay", "persistent"),
        ((READONLY,), None, "none"),
        ((ROOT_RW,), "relative/upper", "persistent"),
    ],
)
def test_infer_upper(lines, upperdir, kind):
    assert info.infer_upper(upperdir, mounts_of(*lines)) == kind


def statvfs(frsize=4096, blocks=0, bfree=0, files=0, ffree=0) -> os.statvfs_result:
    return os.statvfs_result((frsize, frsize, blocks, bfree, bfree, files, ffree, ffree, 0, 255))


@pytest.mark.parametrize(
    "st, size, used, percent, inodes_used, inodes_percent",
    [
        (statvfs(blocks=1024, bfree=1024, files=1000, ffree=997), 4194304, 0, 0.0, 3, 0.3),
        (statvfs(blocks=1024, bfree=512, files=1000, ffree=500), 4194304, 2097152, 50.0, 500, 50.0),
        (statvfs(blocks=1024, bfree=0, files=1000, ffree=990), 4194304, 4194304, 100.0, 10, 1.0),
        (statvfs(blocks=3, bfree=2, files=10, ffree=10), 12288, 4096, 33.3, 0, 0.0),
        # size=0: an unlimited tmpfs reports no blocks
        (statvfs(blocks=0, bfree=0, files=0, ffree=0), 0, 0, 0.0, 0, 0.0),
    ],
)
def test_tmpfs_usage(st, size, used, percent, inodes_used, inodes_percent):
    u = info.tmpfs_usage("/run/x", st)
    assert u["path"] == "/run/x"
    assert (u["size"], u["used"], u["percent"]) == (size, used, percent)
    assert (u["inodes_used"], u["inodes_percent"]) == (inodes_used, inodes_percent)
    assert u["available"] == st.f_bavail * st.f_frsize and u["inodes"] == st.f_files


# ---------------------------------------------------------------------------
# Declared overlays: the unit files the mount module renders, read back
# ---------------------------------------------------------------------------


def units_of(**kw) -> dict[str, str]:
    p = {"path": "/srv/app", "lowerdir": ["/opt/v2", "/opt/base"]}
    p.update(kw)
    spec = sp.resolve_ownership(sp.build_spec(p), 0, 0, 0o755)
    return un.render_units(spec)


@pytest.mark.parametrize(
    "kw, lowers, upper",
    [
        ({}, ["/opt/v2", "/opt/base"], "persistent"),
        ({"upper": "tmpfs"}, ["/opt/v2", "/opt/base"], "tmpfs"),
        ({"upper": "none"}, ["/opt/v2", "/opt/base"], "none"),
        ({"lowerdir": ["/opt/a,b", "/opt/c:d", "/opt/e\\f", "/opt/g h", "/opt/5%"]}, None, "persistent"),
        ({"path": "/srv/per%cent dir", "lowerdir": ["/opt/x"], "upper": "tmpfs"}, ["/opt/x"], "tmpfs"),
    ],
)
def test_declared_overlays_read_back_rendered_units(kw, lowers, upper):
    units = units_of(**kw)
    units["unrelated.service"] = "[Service]\nExecStart=/bin/true\n"
    declared = info.declared_overlays(units)
    path = kw.get("path", "/srv/app")
    assert list(declared) == [kw.get("path", "/srv/app")]
    decl = declared[kw.get("path", "/srv/app")]
    spec = sp.build_spec({"path": path, "lowerdir": kw.get("lowerdir", ["/opt/v2", "/opt/base"]), **kw})
    assert decl.path == path and decl.unit == nm.unit_name(path) and decl.upper == upper
    assert decl.layers.lowerdir == (lowers or list(spec.lowerdir))
    assert (decl.layers.upperdir, decl.layers.workdir) == (spec.upperdir, spec.workdir)
    assert decl.flags == {"nosuid", "nodev"} and decl.features == {}
    assert sorted(decl.units) == sorted(units_of(**kw))
    assert decl.problems == ()


def test_declared_overlays_ignore_foreign_and_report_broken_units():
    foreign = "[Unit]\nDescription=mine\n[Mount]\nWhat=overlay\nWhere=/srv/x\nType=overlay\nOptions=lowerdir=/a\n"
    broken = "%s\n[Unit]\nX-OverlayfsSystemd-Path=/srv/b\n[Mount]\nWhere=/srv/b\n" % un.HEADER
    no_path = "%s\n[Unit]\nX-OverlayfsSystemd-Id=x\n[Mount]\nOptions=lowerdir=/a\n" % un.HEADER
    declared = info.declared_overlays({"srv-x.mount": foreign, "srv-b.mount": broken, "srv-c.mount": no_path})
    assert list(declared) == ["/srv/b"]
    assert declared["/srv/b"].problems == ("unit srv-b.mount has no Options=, so no layers",)
    assert declared["/srv/b"].upper == "none"


@pytest.mark.parametrize(
    "value, lowers, upper, options",
    [
        ("lowerdir=/a:/b,upperdir=/u,workdir=/w,nosuid", ["/a", "/b"], "/u", {"nosuid": None}),
        ("lowerdir=/a\\,b:/c\\:d,index=on,userxattr", ["/a,b", "/c:d"], None, {"index": "on", "userxattr": None}),
        # A literal backslash: written four times, systemd's filter makes it two, the kernel one.
        ("lowerdir=/a\\\\\\\\b:/tab\tx,ro", ["/a\\b", "/tab\tx"], None, {"ro": None}),
        # Written twice (units of 0.1.0): what systemd really mounts has none.
        ("lowerdir=/a\\\\b", ["/ab"], None, {}),
        # A backslash before a comma: the filter's \\ then the kernel's \,
        ("lowerdir=/x\\\\\\\\\\,y:/z,upperdir=/u\\\\\\\\,workdir=/w", ["/x\\,y", "/z"], "/u\\", {}),
        ("lowerdir=/a\\134b", ["/a134b"], None, {}),
        ("lowerdir=/a::/data1", ["/a"], None, {}),
    ],
)
def test_parse_unit_options(value, lowers, upper, options):
    opts = info.parse_unit_options(value)
    assert opts.lowerdir == lowers and opts.upperdir == upper
    assert {k: v for k, v in opts.options.items() if k != "ro"} == {k: v for k, v in options.items() if k != "ro"}
    assert opts.readonly == ("ro" in options)


# ---------------------------------------------------------------------------
# Drift
# ---------------------------------------------------------------------------


def live_line(kw=None, super_extra="", mount_options="rw,nosuid,nodev,relatime", lowers=None, upper=True):
    """The mountinfo line the kernel shows for the overlay of ``units_of(**kw)``."""
    spec = sp.build_spec({"path": "/srv/app", "lowerdir": ["/opt/v2", "/opt/base"], **(kw or {})})
    opts = ["lowerdir=" + ":".join(lowers or spec.lowerdir)]
    if upper and spec.upperdir:
        opts += ["upperdir=" + spec.upperdir, "workdir=" + spec.workdir]
    ro = "ro" if spec.upperdir is None else "rw"
    return "90 22 0:90 / /srv/app %s - overlay overlay %s,%s%s" % (mount_options, ro, ",".join(opts), super_extra)


UNIT = nm.unit_name("/srv/app")
ENABLED = {UNIT: {"LoadState": "loaded", "ActiveState": "active", "SubState": "mounted", "UnitFileState": "enabled"}}


def props(unit=UNIT, **kw):
    p = dict(ENABLED[UNIT])
    p.update(kw)
    return {unit: p}


@pytest.mark.parametrize(
    "kw, line, unit_props, expected",
    [
        # agrees; kernel-added options are not drift
        ({}, live_line(), ENABLED, []),
        ({}, live_line(super_extra=",uuid=on,redirect_dir=on,index=off,xino=off,metacopy=off"), ENABLED, []),
        ({"upper": "none"}, live_line({"upper": "none"}), ENABLED, []),
        ({"upper": "tmpfs"}, live_line({"upper": "tmpfs"}, super_extra=",uuid=on"), ENABLED, []),
        ({"flags": ["nosuid", "nodev", "noatime"]}, live_line(mount_options="rw,nosuid,nodev,noatime"), ENABLED, []),
        ({"index": True}, live_line(), ENABLED, []),  # the kernel shows only non-defaults
        # layers
        (
            {},
            live_line(lowers=["/opt/v3", "/opt/base"]),
            ENABLED,
            ["lowerdir differs: live [/opt/v3, /opt/base], unit [/opt/v2, /opt/base]"],
        ),
        ({}, live_line(upper=False), ENABLED, ["upperdir differs: live (none), unit ", "workdir differs: live (none)"]),
        # flags
        ({}, live_line(mount_options="ro,nosuid,nodev,relatime"), ENABLED, ["read-only on the live mount"]),
        ({}, live_line(mount_options="rw,nodev,relatime"), ENABLED, ["flag nosuid is in the unit but not on the"]),
        ({}, live_line(mount_options="rw,nosuid,nodev,noexec"), ENABLED, ["flag noexec on the live mount, not in"]),
        ({"flags": ["noatime"]}, live_line(mount_options="rw,relatime"), ENABLED, ["flag noatime is in the unit"]),
        ({"flags": ["ro"]}, live_line(mount_options="ro,relatime"), ENABLED, []),
        ({"flags": ["ro"]}, live_line(mount_options="rw,relatime"), ENABLED, ["flag ro is in the unit but not on"]),
        # options the unit sets
        ({"index": True}, live_line(super_extra=",index=off"), ENABLED, ["option index=on in the unit, index=off"]),
        ({"volatile": True, "upper": "tmpfs"}, live_line({"upper": "tmpfs"}), ENABLED, ["option volatile is in the"]),
        ({}, live_line(super_extra=",userxattr"), ENABLED, ["option userxattr on the live mount, not in the unit"]),
        # states
        ({}, None, ENABLED, ["not mounted, but %s is enabled (mounted at boot)" % UNIT]),
        ({}, None, props(UnitFileState="disabled", ActiveState="inactive"), []),
        ({}, None, {}, []),
        ({}, live_line(), props(ActiveState="failed", SubState="failed"), ["unit %s failed (SubState=failed)" % UNIT]),
        ({}, live_line(), props(NeedDaemonReload="yes"), ["unit %s changed on disk but not reloaded" % UNIT]),
        # A missing persistent upper: the unit's assertion refused the start.
        (
            {},
            None,
            props(ActiveState="failed", SubState="failed", AssertResult="no"),
            [
                "not mounted, but %s is enabled" % UNIT,
                "%s refused to start: its persistent upper /var/lib/overlayfs/srv_app_" % UNIT,
                "unit %s failed (SubState=failed)" % UNIT,
            ],
        ),
        ({"upper": "none"}, None, props(UnitFileState="disabled", AssertResult="no"), []),
        ({}, live_line(), props(LoadState="bad-setting"), ["unit %s is not loadable (LoadState=bad-setting)" % UNIT]),
        (
            {},
            "91 22 0:91 / /srv/app rw,relatime - tmpfs tmpfs rw,size=1024k",
            props(UnitFileState="disabled"),
            ["/srv/app is mounted with tmpfs (source tmpfs), not the overlay of %s" % UNIT],
        ),
    ],
)
def test_drift(kw, line, unit_props, expected):
    decl = info.declared_overlays(units_of(**kw))["/srv/app"]
    top = minfo.mount_at(mounts_of(line), "/srv/app") if line else None
    found = info.drift(decl, top, unit_props)
    assert len(found) == len(expected), found
    for message, prefix in zip(found, expected, strict=True):
        assert message.startswith(prefix), (message, prefix)


def test_drift_of_a_tmpfs_units_failure_and_reload():
    units = units_of(upper="tmpfs")
    decl = info.declared_overlays(units)["/srv/app"]
    tmpfs_unit = next(n for n in units if n.startswith("run-"))
    prepare = next(n for n in units if n.endswith(".service"))
    found = info.drift(
        decl,
        minfo.mount_at(mounts_of(live_line({"upper": "tmpfs"})), "/srv/app"),
        {**ENABLED, tmpfs_unit: {"NeedDaemonReload": "yes"}, prepare: {"ActiveState": "failed", "SubState": "x"}},
    )
    # Units in order: the overlay, then its others sorted (overlayfs-prepare-... before run-...).
    assert found == [
        "unit %s failed (SubState=x); see journalctl -u %s" % (prepare, prepare),
        "unit %s changed on disk but not reloaded (NeedDaemonReload=yes); run systemctl daemon-reload" % tmpfs_unit,
    ]


# ---------------------------------------------------------------------------
# Selection, units to query, the whole report
# ---------------------------------------------------------------------------


def test_select_paths_and_units_to_show():
    units = units_of(upper="tmpfs")
    declared = info.declared_overlays(units)
    long_point = "/" + "x" * 250
    mounts = mounts_of(DOCKER_ROOT, OVERLAYROOT, "92 1 0:9 / %s rw - overlay overlay ro,lowerdir=/a:/b" % long_point)
    everything = info.select_paths(mounts, declared)
    assert everything == sorted(["/", "/srv/app", "/var/lib/docker/overlay2/d3ac7a5f/merged", long_point])
    assert info.select_paths(mounts, declared, managed_only=True) == ["/srv/app"]
    assert info.select_paths(mounts, declared, ["/", "/nope"]) == ["/"]
    assert info.select_paths(mounts, declared, ["/"], managed_only=True) == []
    names = info.units_to_show(everything, declared)
    assert names[0] == "-.mount" and sorted(units) == sorted(names[1:4])
    assert nm.unit_name("/var/lib/docker/overlay2/d3ac7a5f/merged") in names
    assert len(names) == 5 and len(set(names)) == 5  # the 255-byte name is left out
    assert info.mount_unit(long_point) is None


def test_overlay_covered_by_another_mount_is_not_live():
    mounts = mounts_of(ESCAPED, "99 47 0:99 / /tmp/mi-t/m rw - tmpfs tmpfs rw")
    assert info.overlay_mount_points(mounts) == []


# Every key RETURN documents for an entry of ``overlays``.
RETURNED_KEYS = (
    "path lowerdir datadir upperdir workdir options readonly mounted managed unit unit_path active_state "
    "sub_state enabled upper tmpfs drift drift_keys"
).split()


def test_build_report_managed_tmpfs_overlay_with_usage():
    units = units_of(upper="tmpfs")
    declared = info.declared_overlays(units)
    decl = declared["/srv/app"]
    tmpfs_dir = os.path.dirname(decl.layers.upperdir)
    mounts = mounts_of(
        "80 1 0:80 / %s rw,nosuid,nodev,relatime - tmpfs tmpfs rw,size=4096k,mode=755" % tmpfs_dir,
        live_line({"upper": "tmpfs"}, super_extra=",uuid=on"),
        OVERLAYROOT,
    )
    measured = []

    def fake_statvfs(path):
        measured.append(path)
        return statvfs(blocks=1024, bfree=256, files=100, ffree=90)

    p = {n: {"ActiveState": "active", "SubState": "mounted", "UnitFileState": "enabled"} for n in units}
    selected = info.select_paths(mounts, declared)
    report = {e.path: e.as_dict() for e in info.build_report(selected, mounts, declared, p, "/etc/u", fake_statvfs)}
    app = report["/srv/app"]
    assert measured == [tmpfs_dir]
    assert app["managed"] and app["mounted"] and app["enabled"] and app["drift"] == []
    assert (app["active_state"], app["sub_state"]) == ("active", "mounted")
    assert app["unit_path"] == "/etc/u/" + UNIT and app["upper"] == "tmpfs"
    assert app["tmpfs"]["percent"] == 75.0 and app["tmpfs"]["path"] == tmpfs_dir
    assert app["options"] == {"nosuid": None, "nodev": None, "relatime": None, "uuid": "on"}
    root = report["/"]
    assert not root["managed"] and root["upper"] == "persistent" and root["tmpfs"] is None
    assert root["active_state"] is None and root["enabled"] is None and root["unit_path"] is None
    assert set(app) == set(root) == set(RETURNED_KEYS)


def test_build_report_tmpfs_that_cannot_be_measured():
    declared = info.declared_overlays(units_of(upper="tmpfs"))
    tmpfs_dir = os.path.dirname(declared["/srv/app"].layers.upperdir)
    mounts = mounts_of("80 1 0:80 / %s rw - tmpfs tmpfs rw" % tmpfs_dir, live_line({"upper": "tmpfs"}))

    def gone(path):
        raise FileNotFoundError(path)

    (entry,) = info.build_report(["/srv/app"], mounts, declared, {}, "/etc/u", gone)
    assert entry.mounted and entry.upper == "tmpfs" and entry.tmpfs is None


def test_build_report_declared_but_not_mounted_uses_the_unit():
    declared = info.declared_overlays(units_of(upper="none", flags=["ro", "nosuid"]))
    p = {UNIT: {"ActiveState": "inactive", "SubState": "dead", "UnitFileState": "disabled", "FragmentPath": "/x"}}
    (report,) = info.build_report(["/srv/app"], [], declared, p, "/etc/u", lambda path: None)
    entry = report.as_dict()
    assert not entry["mounted"] and entry["managed"] and entry["readonly"] and entry["upper"] == "none"
    assert entry["lowerdir"] == ["/opt/v2", "/opt/base"] and entry["options"] == {"nosuid": None}
    assert entry["enabled"] is False and entry["unit_path"] == "/etc/u/" + UNIT and entry["drift"] == []


def test_build_report_layer_drift_of_a_mounted_overlay_only():
    """The upper/work drift the caller measures is reported as keys and sentences, for mounted overlays."""
    declared = info.declared_overlays(units_of(upper="tmpfs"))
    mounts = mounts_of(live_line({"upper": "tmpfs"}))
    asked = []

    def layer_drift(decl, live):
        asked.append((decl.path, live.upperdir))
        return [dict(key="upper_missing", path=live.upperdir, message="the upper directory %s is gone" % live.upperdir)]

    (entry,) = info.build_report(["/srv/app"], mounts, declared, {}, "/etc/u", lambda p: None, layer_drift=layer_drift)
    assert entry.drift_keys == ["upper_missing"] and entry.drift[-1].startswith("the upper directory")
    assert asked == [("/srv/app", declared["/srv/app"].layers.upperdir)]
    (entry,) = info.build_report(["/srv/app"], [], declared, {}, "/etc/u", lambda p: None, layer_drift=layer_drift)
    assert entry.drift_keys == [] and len(asked) == 1
