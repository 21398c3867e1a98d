# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _host as hst
from ansible_collections.overlayfs.systemd.plugins.module_utils import _info as info
from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.module_utils import _plan as pn
from ansible_collections.overlayfs.systemd.plugins.module_utils import _preflight as pf
from ansible_collections.overlayfs.systemd.plugins.module_utils import _spec as sp
from ansible_collections.overlayfs.systemd.plugins.module_utils import _units as un

SYSTEMD_ESCAPE = shutil.which("systemd-escape") or "/usr/bin/systemd-escape"

TRICKY_PATHS = [
    "/srv/my-overlay",
    "/var/lib/foo-bar",
    "/srv/a b",
    "/srv/.hidden",
    "/.x/.y",
    "/srv/kiosk.d",
    "/srv/ärger/日本",
    "/srv/a,b",
    "/srv/a:b",
    "/srv/a\\b",
    "//srv//x",
    "/srv/x/",
    "/",
    "/srv/under_score",
    "/srv/tab\there",
    "/srv/per%cent",
    "/srv/~tilde/@at/+plus",
    "/srv/-lead",
    "/srv/x.",
    "/srv/a=b",
    '/srv/quote"d',
    "/srv/dollar$x",
]


def real_escape(path: str) -> str:
    out = subprocess.run(
        [SYSTEMD_ESCAPE, "--path", "--suffix=mount", "--", path], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


# No skip: the real tool is the reference (make test installs systemd's
# tools on a machine that lacks them), and a missing one fails loudly.
@pytest.mark.parametrize("path", TRICKY_PATHS)
def test_unit_name_matches_systemd_escape(path):
    assert nm.unit_name(path) == real_escape(path)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/srv/my-overlay", "srv-my\\x2doverlay"),
        ("/var/lib/foo-bar", "var-lib-foo\\x2dbar"),
        ("/", "-"),
        ("/.x", "\\x2ex"),
        ("/a/./b", "a-b"),
        ("/srv/é", "srv-\\xc3\\xa9"),
    ],
)
def test_escape_path_known_values(path, expected):
    assert nm.escape_path(path) == expected


def test_escape_path_refuses_dotdot():
    with pytest.raises(er.OverlayError):
        nm.escape_path("/a/../b")


@pytest.mark.parametrize("path", ["/" + "a" * 250, "/srv/" + "é" * 62, "/" + "-" * 63])
def test_unit_name_too_long_is_refused(path):
    with pytest.raises(er.OverlayError) as err:
        nm.unit_name(path)
    assert err.value.param == "path"
    assert "255" in str(err.value)


def test_unit_name_at_limit_is_accepted():
    path = "/" + "a" * (255 - len(".mount"))
    assert len(nm.unit_name(path)) == 255


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/srv/x", "/srv/x"),
        ("//srv///x//", "/srv/x"),
        ("/", "/"),
        ("/srv/a b", "/srv/a b"),
        ("/srv/a,b:c", "/srv/a,b:c"),
    ],
)
def test_normalize_path_ok(path, expected):
    assert nm.normalize_path(path, "path") == expected


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("srv/x", "relative"),
        ("", "non-empty"),
        (None, "non-empty"),
        ("/srv/a\nb", "newline"),
        ("/srv/a\x00b", "NUL"),
        ("/srv/a\rb", "control"),
        ("/srv/../etc", "'..'"),
        ("/srv/./x", "'.'"),
        ("/srv/x\\", "backslash"),
        ("/srv/x ", "whitespace"),
        ("/srv/\udcff", "UTF-8"),
    ],
)
def test_normalize_path_refused(path, fragment):
    with pytest.raises(er.OverlayError) as err:
        nm.normalize_path(path, "lowerdir")
    assert err.value.param == "lowerdir"
    assert fragment in str(err.value)
    assert "lowerdir" in str(err.value)


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/opt/a", "/opt/a"),
        ("/opt/a,b", "/opt/a\\,b"),
        ("/opt/a:b", "/opt/a\\:b"),
        ("/opt/a\\b", "/opt/a\\\\b"),
        ("/opt/a b", "/opt/a b"),
    ],
)
def test_escape_layer_round_trip(path, expected):
    assert minfo.escape_layer(path) == expected
    assert minfo.unescape_layer(expected) == path
    assert minfo.split_unescaped(expected + ":" + expected, ":") == [expected, expected]


# Every character that needs care in a layer path, alone and all in one:
# the path, the kernel's option value (escape_layer), and what the unit file
# says so that systemd's option filter hands mount(8) that value.
B = "\\"
ESCAPING_TABLE = [
    ("/srv/back" + B + "slash", "/srv/back" + B * 2 + "slash", "/srv/back" + B * 4 + "slash"),
    ("/srv/com,ma", "/srv/com" + B + ",ma", "/srv/com" + B + ",ma"),
    ("/srv/co:lon", "/srv/co" + B + ":lon", "/srv/co" + B + ":lon"),
    ("/srv/spa ce", "/srv/spa ce", "/srv/spa ce"),
    ("/srv/per%cent", "/srv/per%cent", "/srv/per%%cent"),
    ("/srv/all" + B + ",: %x", "/srv/all" + B * 3 + "," + B + ": %x", "/srv/all" + B * 5 + "," + B + ": %%x"),
    (B * 2 + "dbl", B * 4 + "dbl", B * 8 + "dbl"),
]


@pytest.mark.parametrize("path, kernel, unit", ESCAPING_TABLE)
def test_layer_escaping_for_kernel_and_systemd(path, kernel, unit):
    assert minfo.escape_layer(path) == kernel
    assert un.escape_unit_value(un.options_unit_text(kernel)) == unit
    assert un.options_from_unit_text(unit.replace("%%", "%")) == kernel
    assert minfo.unescape_layer(kernel) == path


@pytest.mark.parametrize("path, kernel, unit", [row for row in ESCAPING_TABLE if row[0].startswith("/")])
def test_rendered_unit_reads_back_every_character(path, kernel, unit):
    spec = spec_of(path="/srv/merged", lowerdir=[path, "/opt/base"], upper="none")
    text = un.render_units(spec)[spec.unit]
    assert "\nOptions=lowerdir=%s:/opt/base," % unit in text
    options = dict(un.parse_unit(text).entries("Mount"))["Options"]
    assert info.parse_unit_options(options).lowerdir == [path, "/opt/base"]


def test_unit_value_quoting():
    assert un.escape_unit_value("size=50%") == "size=50%%"
    assert un.quote_unit_word('/srv/a "b"\\c%') == '"/srv/a \\"b\\"\\\\c%%"'


@pytest.mark.parametrize(
    "raw, decoded",
    [
        ("/srv/a\\040b", "/srv/a b"),
        ("/srv/a\\054b", "/srv/a,b"),
        ("/srv/a\\072b", "/srv/a:b"),
        ("/srv/a\\134b", "/srv/a\\b"),
        ("/srv/\\303\\244", "/srv/ä"),
        ("/srv/plain", "/srv/plain"),
        ("/srv/trailing\\", "/srv/trailing\\"),
    ],
)
def test_decode_mountinfo_octal(raw, decoded):
    assert minfo.decode_mountinfo_octal(raw) == decoded


@pytest.mark.parametrize(
    "s, sep, parts",
    [
        ("a:b:c", ":", ["a", "b", "c"]),
        ("a\\:b:c", ":", ["a\\:b", "c"]),
        ("a::b", ":", ["a", "", "b"]),
        ("a\\\\:b", ":", ["a\\\\", "b"]),
        ("", ",", [""]),
    ],
)
def test_split_unescaped(s, sep, parts):
    assert minfo.split_unescaped(s, sep) == parts


MOUNTINFO = (
    # the root of a Debian 12 host
    "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n"
    "25 22 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=401564k,mode=755\n"
    # an overlay with escaped paths (space, comma, colon, backslash) in every layer
    "120 22 0:60 / /srv/my\\040app rw,nosuid,nodev,relatime shared:70 - overlay overlay "
    "rw,lowerdir=/opt/a\\134\\054b:/opt/c\\134:d:/opt/e\\040f,upperdir=/var/lib/o/u\\134\\054p,"
    "workdir=/var/lib/o/w,redirect_dir=on,index=off\n"
    # garbage lines
    "this is not a mountinfo line\n"
    "x y 0:1 / /z rw - ext4 /dev/x rw\n"
    "\n"
    "12 1 0:1 / /short rw\n"
    # many lowers, read-only overlay
    "130 22 0:61 / /srv/ro ro,relatime shared:71 - overlay overlay ro,lowerdir=/l1:/l2:/l3:/l4:/l5::/d1\n"
    # lowerdir+= form (kernel >= 6.8)
    "140 22 0:62 / /srv/plus rw,relatime - overlay overlay rw,lowerdir+=/opt/x\\072y,lowerdir+=/opt/z,"
    "datadir+=/opt/data,upperdir=/up,workdir=/wk,uuid=on\n"
    # root overlay as overlayroot mounts it
    "1 0 0:30 / / rw,relatime - overlay overlayroot rw,lowerdir=/media/root-ro,"
    "upperdir=/media/root-rw/overlay,workdir=/media/root-rw/overlay-workdir/_\n"
)


def test_parse_mountinfo_skips_garbage():
    mounts = minfo.parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == ["/", "/run", "/srv/my app", "/srv/ro", "/srv/plus", "/"]
    assert mounts[0].fstype == "ext4" and mounts[0].source == "/dev/vda1"
    assert mounts[1].optional_fields == ("shared:5",)
    assert minfo.parse_mountinfo("") == []
    assert minfo.parse_mountinfo("\x00garbage - - -\n1 2 3") == []


def test_parse_overlay_escaped_layers():
    m = minfo.mount_at(minfo.parse_mountinfo(MOUNTINFO), "/srv/my app")
    assert m is not None
    opts = minfo.parse_overlay_options(m.super_options, m.mount_options)
    assert opts.lowerdir == ["/opt/a,b", "/opt/c:d", "/opt/e f"]
    assert opts.upperdir == "/var/lib/o/u,p"
    assert opts.workdir == "/var/lib/o/w"
    assert opts.options == {"rw": None, "redirect_dir": "on", "index": "off"}
    assert opts.readonly is False


def test_parse_overlay_readonly_many_lowers_and_datadirs():
    m = minfo.mount_at(minfo.parse_mountinfo(MOUNTINFO), "/srv/ro")
    opts = minfo.parse_overlay_options(m.super_options, m.mount_options)
    assert opts.lowerdir == ["/l1", "/l2", "/l3", "/l4", "/l5"]
    assert opts.datadir == ["/d1"]
    assert opts.upperdir is None and opts.workdir is None
    assert opts.readonly is True


def test_parse_overlay_lowerdir_plus_form():
    m = minfo.mount_at(minfo.parse_mountinfo(MOUNTINFO), "/srv/plus")
    opts = minfo.parse_overlay_options(m.super_options)
    assert opts.lowerdir == ["/opt/x:y", "/opt/z"]
    assert opts.datadir == ["/opt/data"]
    assert (opts.upperdir, opts.workdir) == ("/up", "/wk")
    assert opts.options["uuid"] == "on"


def test_parse_root_overlay_line():
    mounts = minfo.parse_mountinfo(MOUNTINFO)
    root = minfo.mount_at(mounts, "/")
    assert root.fstype == "overlay" and root.source == "overlayroot"
    opts = minfo.parse_overlay_options(root.super_options, root.mount_options)
    assert opts.lowerdir == ["/media/root-ro"]
    assert opts.upperdir == "/media/root-rw/overlay"
    assert opts.workdir == "/media/root-rw/overlay-workdir/_"


def test_mount_containing_and_submounts():
    mounts = minfo.parse_mountinfo(MOUNTINFO)
    assert minfo.mount_containing(mounts, "/run/overlayfs/x").mount_point == "/run"
    assert minfo.mount_containing(mounts, "/srv/my app/sub").mount_point == "/srv/my app"
    assert minfo.submounts(mounts, "/srv") == ["/srv/my app", "/srv/plus", "/srv/ro"]
    assert minfo.submounts(mounts, "/srv/ro") == []


BASE = {"path": "/srv/app", "lowerdir": ["/opt/app/v2", "/opt/app/base"]}


def spec_of(**kw):
    params = dict(BASE)
    params.update(kw)
    return sp.build_spec(params)


def test_build_spec_defaults():
    spec = spec_of()
    oid = nm.overlay_id("/srv/app")
    assert oid.startswith("srv_app_") and len(oid) == len("srv_app_") + 8
    assert spec.upperdir == "/var/lib/overlayfs/%s/upper" % oid
    assert spec.workdir == "/var/lib/overlayfs/%s/work" % oid
    assert spec.flags == ("nosuid", "nodev")
    assert spec.unit == "srv-app.mount"
    assert spec.state == "mounted" and spec.apply == "restart" and spec.enabled


@pytest.mark.parametrize(
    "a, b",
    [("/srv/a-b", "/srv/a_b"), ("/srv/a b", "/srv/a_b"), ("/srv/a/b", "/srv/a_b")],
)
def test_overlay_id_collision_free(a, b):
    assert nm.overlay_id(a) != nm.overlay_id(b)
    assert nm.overlay_id(a).rsplit("_", 1)[0] == nm.overlay_id(b).rsplit("_", 1)[0]


def test_overlay_id_slug_is_bounded():
    oid = nm.overlay_id("/" + "x" * 300)
    assert len(oid) == 48 + 1 + 8


@pytest.mark.parametrize(
    "overrides, param, fragment",
    [
        ({"path": "relative"}, "path", "relative"),
        ({"path": "/"}, "path", "initramfs"),
        ({"path": "/proc/x"}, "path", "API"),
        ({"lowerdir": []}, "lowerdir", "at least one"),
        ({"lowerdir": ["/opt/a", "/opt/a"]}, "lowerdir", "twice"),
        ({"lowerdir": ["/opt/a", "/opt/a/b"]}, "lowerdir", "overlap"),
        ({"lowerdir": ["/opt/a"], "upper": "none"}, "lowerdir", "at least 2"),
        ({"lowerdir": ["/srv/app"]}, "lowerdir", "mount point"),
        ({"lowerdir": ["/srv/app/inner"]}, "lowerdir", "mount point"),
        ({"lowerdir": ["/srv"]}, "lowerdir", "mount point"),
        ({"upperdir": "/d/u"}, "workdir", "together"),
        ({"upperdir": "/opt/app/v2/u", "workdir": "/d/w"}, "upperdir", "overlap"),
        ({"upperdir": "/d/u", "workdir": "/d/u/w"}, "workdir", "overlap"),
        ({"upperdir": "/d/u", "workdir": "/opt/app/base"}, "workdir", "overlap"),
        ({"upperdir": "/d/u", "workdir": "/d/w", "upper": "tmpfs"}, "upperdir", "tmpfs"),
        ({"upperdir": "/d/u", "workdir": "/d/w", "upper": "none"}, "upperdir", "read-only"),
        ({"lowerdir": ["/var"]}, "lowerdir", "upperdir/workdir explicitly"),
        ({"metacopy": True, "redirect_dir": "off"}, "metacopy", "redirect_dir"),
        ({"metacopy": True, "redirect_dir": "follow"}, "metacopy", "redirect_dir"),
        ({"metacopy": True, "redirect_dir": "nofollow"}, "metacopy", "redirect_dir"),
        ({"nfs_export": True, "index": False}, "nfs_export", "index"),
        ({"nfs_export": True, "metacopy": True}, "nfs_export", "metacopy"),
        ({"userxattr": True, "redirect_dir": "on"}, "userxattr", "redirect_dir"),
        ({"userxattr": True, "metacopy": True}, "userxattr", "metacopy"),
        ({"volatile": True}, "volatile", "incompat/volatile"),
        ({"volatile": True, "upper": "none"}, "volatile", "upper=none"),
        ({"redirect_dir": True}, "redirect_dir", "one of"),
        ({"upper": "tmpfs", "tmpfs_size": "50 %"}, "tmpfs_size", "percentage"),
        ({"upper": "tmpfs", "tmpfs_size": "1000%"}, "tmpfs_size", "percentage"),
        ({"upper": "tmpfs", "tmpfs_size": "12T"}, "tmpfs_size", "tmpfs_size"),
        ({"upper": "tmpfs", "tmpfs_nr_inodes": "10%"}, "tmpfs_nr_inodes", "tmpfs_nr_inodes"),
        ({"mode": "0855"}, "mode", "octal"),
        ({"mode": "rwx"}, "mode", "octal"),
        ({"tmpfs_mode": "99999"}, "tmpfs_mode", "octal"),
        ({"flags": ["rw"]}, "flags", "rw"),
        ({"flags": ["noatime", "relatime"]}, "flags", "only one"),
        ({"flags": ["ro", "ro"]}, "flags", "twice"),
        ({"after": ["network online"]}, "after", "unit name"),
        ({"wanted_by": ["multi-user"]}, "wanted_by", "unit name"),
        ({"before": ["x%i.service"]}, "before", "unit name"),
        ({"description": "two\nlines"}, "description", "one line"),
        ({"timeout": "soon"}, "timeout", "time span"),
        ({"owner": "a b"}, "owner", "owner"),
        ({"state": "remounted"}, "state", "state"),
        ({"apply": "now"}, "apply", "apply"),
        ({"upper": "disk"}, "upper", "upper"),
        ({"path": "/srv/" + "é" * 70}, "path", "255"),
    ],
)
def test_build_spec_refuses(overrides, param, fragment):
    with pytest.raises(er.OverlayError) as err:
        spec_of(**overrides)
    assert err.value.param == param, str(err.value)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        {"metacopy": True},
        {"metacopy": True, "redirect_dir": "on"},
        {"userxattr": True, "redirect_dir": "nofollow"},
        {"nfs_export": True, "index": True},
        {"upper": "tmpfs", "volatile": True, "tmpfs_size": "50%"},
        {"upper": "tmpfs", "tmpfs_size": "256M", "tmpfs_nr_inodes": "10k"},
        {"mode": "755"},
        {"mode": 0o750},
        {"timeout": "1min 30s"},
        {"timeout": 90},
        {"flags": []},
        {"state": "absent", "lowerdir": []},
    ],
)
def test_build_spec_accepts(overrides):
    spec_of(**overrides)


def resolved(**kw):
    return sp.resolve_ownership(spec_of(**kw), 0, 0, 0o755)


def test_render_options_order_and_escaping():
    spec = spec_of(
        lowerdir=["/opt/a,b", "/opt/c:d", "/opt/e\\f"],
        upperdir="/data/u",
        workdir="/data/w",
        xino="auto",
        index=False,
        redirect_dir="on",
        userxattr=False,
        volatile=None,
        uuid="off",
        flags=["ro", "noexec"],
    )
    assert un.render_options(spec) == [
        "lowerdir=/opt/a\\,b:/opt/c\\:d:/opt/e\\\\f",
        "upperdir=/data/u",
        "workdir=/data/w",
        "redirect_dir=on",
        "index=off",
        "xino=auto",
        "uuid=off",
        "ro",
        "noexec",
    ]


def test_render_options_switches_and_readonly():
    spec = spec_of(upper="none", userxattr=True, metacopy=False, flags=[])
    assert un.render_options(spec) == ["lowerdir=/opt/app/v2:/opt/app/base", "metacopy=off", "userxattr"]


def test_render_persistent_unit():
    spec = resolved(lowerdir=["/opt/50%/a"], description="App 100%", timeout="2min", wanted_by=["multi-user.target"])
    units = un.render_units(spec)
    assert list(units) == ["srv-app.mount"]
    text = units["srv-app.mount"]
    assert text.startswith(un.HEADER + "\n[Unit]\n")
    assert "Description=App 100%%\n" in text
    assert f'RequiresMountsFor="/opt/50%%/a" "{spec.upperdir}" "{spec.workdir}"\n' in text
    assert f"Options=lowerdir=/opt/50%%/a,upperdir={spec.upperdir},workdir={spec.workdir},nosuid,nodev\n" in text
    assert "What=overlay\nWhere=/srv/app\nType=overlay\n" in text
    assert "TimeoutSec=2min\n" in text
    assert "Before=local-fs.target\n" in text
    assert "[Install]\nWantedBy=local-fs.target\nWantedBy=multi-user.target\n" in text
    assert "X-OverlayfsSystemd-Upper=persistent\n" in text
    assert un.parse_unit(text).managed["Path"] == "/srv/app"
    assert un.parse_unit(text).managed["Id"] == spec.id


def test_render_tmpfs_units():
    spec = sp.resolve_ownership(spec_of(upper="tmpfs", tmpfs_size="50%", tmpfs_nr_inodes="20k"), 1000, 100, 0o750)
    units = un.render_units(spec)
    tmpfs_dir = "/run/overlayfs/%s" % spec.id
    tmpfs_unit = nm.unit_name(tmpfs_dir)
    prep = "overlayfs-prepare-%s.service" % spec.id
    assert list(units) == ["srv-app.mount", tmpfs_unit, prep]
    overlay = units["srv-app.mount"]
    assert "Requires=%s\nAfter=%s\n" % (prep, prep) in overlay
    assert '"%s"' % tmpfs_dir in overlay
    assert "upperdir=%s/upper,workdir=%s/work" % (tmpfs_dir, tmpfs_dir) in overlay
    tmpfs = units[tmpfs_unit]
    assert "Options=mode=0755,uid=0,gid=0,nosuid,nodev,size=50%%,nr_inodes=20k\n" in tmpfs
    assert "What=tmpfs\nWhere=%s\nType=tmpfs\n" % tmpfs_dir in tmpfs
    for line in ("DefaultDependencies=no", "Conflicts=umount.target", "Before=umount.target"):
        assert line + "\n" in tmpfs
    service = units[prep]
    assert "BindsTo=%s\nAfter=%s\nBefore=srv-app.mount\n" % (tmpfs_unit, tmpfs_unit) in service
    assert "RemainAfterExit=yes\n" in service
    assert 'ExecStart=/usr/bin/install -d -m 0750 -o 1000 -g 100 "%s/upper"\n' % tmpfs_dir in service
    assert 'ExecStart=/usr/bin/install -d -m 0700 -o 0 -g 0 "%s/work"\n' % tmpfs_dir in service
    for text in units.values():
        assert text.startswith(un.HEADER + "\n")
        assert un.parse_unit(text).managed["Upper"] == "tmpfs"


def test_render_tmpfs_needs_resolved_owner():
    with pytest.raises(er.OverlayError):
        un.render_units(spec_of(upper="tmpfs"))


def test_render_escaped_where():
    spec = resolved(path="/srv/my app-1", lowerdir=["/opt/a b", "/opt/c"], upper="none")
    units = un.render_units(spec)
    assert list(units) == ["srv-my\\x20app\\x2d1.mount"]
    assert "Where=/srv/my app-1\n" in units["srv-my\\x20app\\x2d1.mount"]
    assert 'RequiresMountsFor="/opt/a b" "/opt/c"\n' in units["srv-my\\x20app\\x2d1.mount"]


@pytest.mark.parametrize(
    "text, stripped",
    [
        (un.HEADER + "\n[Unit]\n", "[Unit]\n"),
        ("# Managed by overlayfs.systemd (old wording)\n[Unit]\n", "[Unit]\n"),
        ("# another comment\n[Unit]\n", "# another comment\n[Unit]\n"),
        (None, None),
    ],
)
def test_strip_header(text, stripped):
    assert un.strip_header(text) == stripped


@pytest.mark.parametrize(
    "options, limit, ok",
    [
        (["lowerdir=" + "a" * 255], 255, True),
        (["lowerdir=" + "a" * 256], 255, False),
        (["lowerdir=" + "a" * 256], None, True),
        (["lowerdir=" + "a" * 4087], None, False),
        (["lowerdir=" + "a" * 4000, "nosuid"], None, True),
        (["lowerdir=/a", "upperdir=" + "u" * 300], 255, False),
    ],
)
def test_check_option_limits(options, limit, ok):
    if ok:
        sp.check_option_limits(options, limit)
    else:
        with pytest.raises(er.OverlayError) as err:
            sp.check_option_limits(options, limit)
        assert err.value.param in ("lowerdir", "upperdir")


def mi(point, fstype="overlay", super_options="", mount_options="rw,nosuid,nodev,relatime"):
    return minfo.MountInfo(1, 1, "0:1", "/", point, mount_options, fstype, fstype, super_options)


def live_for(spec, mount_options="rw,nosuid,nodev,relatime", **over):
    opts = ",".join(un.render_options(spec))
    for key, value in over.items():
        opts = opts.replace(key, value)
    # mountinfo shows the user string with ',' ' ' '\\' octal-escaped
    parts = []
    for o in minfo.split_unescaped(opts, ","):
        parts.append(o.replace("\\", "\\134").replace(",", "\\054").replace(" ", "\\040"))
    return mi(spec.path, super_options="rw," + ",".join(parts), mount_options=mount_options)


class TestPlan:
    def setup_method(self):
        self.spec = resolved()
        self.desired = un.render_units(self.spec)
        self.names = nm.candidate_units(self.spec.path)
        self.empty = dict.fromkeys(self.names)

    def current(self, **texts):
        cur = dict(self.empty)
        cur.update(texts)
        return cur

    def test_fresh_install(self):
        pl = pn.plan(self.spec, self.desired, self.empty, None, None, False)
        assert list(pl.write) == ["srv-app.mount"]
        assert pl.daemon_reload and pl.start == ["srv-app.mount"] and pl.enable == ["srv-app.mount"]
        assert not pl.stop and pl.changed

    def test_converged(self):
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(self.spec, self.desired, cur, live_for(self.spec), None, True)
        assert not pl.changed and not pl.reboot_required

    def test_header_change_is_not_a_change(self):
        text = self.desired["srv-app.mount"].replace(un.HEADER, "# Managed by overlayfs.systemd v0")
        pl = pn.plan(self.spec, self.desired, self.current(**{"srv-app.mount": text}), live_for(self.spec), None, True)
        assert not pl.changed

    def test_pending_reload(self):
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(self.spec, self.desired, cur, live_for(self.spec), None, True, pending_reload=True)
        assert pl.daemon_reload and not pl.write and not pl.stop

    def test_changed_lowers_restart(self):
        old = resolved(lowerdir=["/opt/app/v1", "/opt/app/base"])
        cur = self.current(**{"srv-app.mount": un.render_units(old)["srv-app.mount"]})
        pl = pn.plan(self.spec, self.desired, cur, live_for(old), None, True)
        assert pl.restart and pl.stop == ["srv-app.mount"] and pl.start == ["srv-app.mount"]
        assert pl.daemon_reload and not pl.enable

    def test_changed_lowers_next_boot(self):
        spec = sp.resolve_ownership(spec_of(apply="next_boot"), 0, 0, 0o755)
        old = resolved(lowerdir=["/opt/app/v1", "/opt/app/base"])
        cur = self.current(**{"srv-app.mount": un.render_units(old)["srv-app.mount"]})
        pl = pn.plan(spec, un.render_units(spec), cur, live_for(old), None, True)
        assert pl.reboot_required and not pl.stop and not pl.start and list(pl.write) == ["srv-app.mount"]

    def test_description_change_needs_no_restart(self):
        spec = resolved(description="Other")
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(spec, un.render_units(spec), cur, live_for(self.spec), None, True)
        assert list(pl.write) == ["srv-app.mount"] and not pl.stop and not pl.restart

    def test_wanted_by_change_reenables(self):
        spec = resolved(wanted_by=["multi-user.target"])
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(spec, un.render_units(spec), cur, live_for(self.spec), None, True)
        assert pl.reenable == ["srv-app.mount"] and not pl.stop

    def test_live_readonly_fallback_is_stale(self):
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        live = live_for(self.spec, mount_options="ro,nosuid,nodev,relatime")
        pl = pn.plan(self.spec, self.desired, cur, live, None, True)
        assert pl.restart

    def test_unmounted_and_present(self):
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        spec = sp.resolve_ownership(spec_of(state="unmounted"), 0, 0, 0o755)
        pl = pn.plan(spec, self.desired, cur, live_for(self.spec), None, True)
        assert pl.stop == ["srv-app.mount"] and not pl.start
        spec = sp.resolve_ownership(spec_of(state="present", enabled=False), 0, 0, 0o755)
        pl = pn.plan(spec, self.desired, cur, None, None, True)
        assert not pl.start and pl.disable == ["srv-app.mount"]

    def test_absent(self):
        spec = spec_of(state="absent")
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(spec, {}, cur, live_for(self.spec), None, True, purge_paths=["/x"])
        assert pl.stop == ["srv-app.mount"] and pl.remove == ["srv-app.mount"]
        assert pl.disable == ["srv-app.mount"] and pl.daemon_reload and pl.purge == ["/x"]
        assert not pn.plan(spec, {}, self.empty, None, None, False).changed

    def test_absent_keeps_unmanaged_unit(self):
        spec = spec_of(state="absent")
        cur = self.current(**{"srv-app.mount": "[Mount]\nWhat=/dev/sdb\n"})
        pl = pn.plan(spec, {}, cur, None, None, False)
        assert not pl.remove and pl.keep_unmanaged == ["srv-app.mount"] and not pl.changed

    def test_switch_tmpfs_to_persistent(self):
        tspec = sp.resolve_ownership(spec_of(upper="tmpfs"), 0, 0, 0o755)
        cur = self.current(**un.render_units(tspec))
        tmpfs_live = mi(tspec.tmpfs_dir, fstype="tmpfs")
        pl = pn.plan(self.spec, self.desired, cur, live_for(tspec), tmpfs_live, True)
        assert pl.stop == ["srv-app.mount", tspec.tmpfs_unit, tspec.prepare_unit]
        assert sorted(pl.remove) == sorted([tspec.tmpfs_unit, tspec.prepare_unit])
        assert pl.start == ["srv-app.mount"]

    def test_switch_tmpfs_to_persistent_next_boot_keeps_tmpfs(self):
        spec = sp.resolve_ownership(spec_of(apply="next_boot"), 0, 0, 0o755)
        tspec = sp.resolve_ownership(spec_of(upper="tmpfs"), 0, 0, 0o755)
        cur = self.current(**un.render_units(tspec))
        pl = pn.plan(spec, un.render_units(spec), cur, live_for(tspec), mi(tspec.tmpfs_dir, "tmpfs"), True)
        assert not pl.stop and not pl.remove and pl.reboot_required

    def test_tmpfs_resize_reloads(self):
        tspec = sp.resolve_ownership(spec_of(upper="tmpfs", tmpfs_size="1G"), 0, 0, 0o755)
        old = sp.resolve_ownership(spec_of(upper="tmpfs", tmpfs_size="512M"), 0, 0, 0o755)
        cur = self.current(**un.render_units(old))
        pl = pn.plan(tspec, un.render_units(tspec), cur, live_for(old), mi(tspec.tmpfs_dir, "tmpfs"), True)
        assert pl.reload_units == [tspec.tmpfs_unit] and not pl.stop


def test_live_matches_readonly_overlay():
    spec = resolved(upper="none")
    assert pn.live_matches(
        spec, minfo.parse_overlay_options("ro,lowerdir=/opt/app/v2:/opt/app/base"), "ro,nosuid,nodev"
    )
    assert not pn.live_matches(spec, minfo.parse_overlay_options("ro,lowerdir=/opt/app/v2"), "ro,nosuid,nodev")
    assert not pn.live_matches(spec, minfo.parse_overlay_options("lowerdir=/opt/app/v2:/opt/app/base"), "ro")


def make_proc(root, pid, comm, cwd="/", fds=(), maps=()):
    d = root / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    os.symlink(cwd, d / "cwd")
    os.symlink("/", d / "root")
    for i, target in enumerate(fds):
        os.symlink(target, d / "fd" / str(i))
    (d / "maps").write_text(
        "".join("7f0000000000-7f0000001000 r-xp 00000000 fd:01 1234    %s\n" % m for m in maps)
        + "7ffd0000-7ffd1000 rw-p 00000000 00:00 0    [stack]\n"
    )


def test_find_holders(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 100, "bash", cwd="/srv/app/sub")
    make_proc(proc, 101, "less", fds=["/dev/null", "/srv/app/log (deleted)"])
    make_proc(proc, 102, "python3", maps=["/srv/app/lib/x.so", "/srv/app/lib/x.so"])
    make_proc(proc, 103, "idle", cwd="/srv/application", fds=["/srv/app2/x", "socket:[123]"])
    make_proc(proc, os.getpid(), "self", cwd="/srv/app")
    (proc / "self").mkdir()
    (proc / "999").mkdir()  # a process that vanished: nothing readable
    holders = hst.find_holders("/srv/app", str(proc))
    assert holders == [
        {"pid": 100, "comm": "bash", "reason": "cwd"},
        {"pid": 101, "comm": "less", "reason": "fd 1 /srv/app/log"},
        {"pid": 102, "comm": "python3", "reason": "maps /srv/app/lib/x.so"},
    ]
    assert hst.find_holders("/srv/app", str(tmp_path / "nothing")) == []


def test_workdir_is_fresh(tmp_path):
    assert hst.workdir_is_fresh(str(tmp_path / "missing"))
    w = tmp_path / "w"
    w.mkdir()
    assert hst.workdir_is_fresh(str(w))
    (w / "work").mkdir()
    (w / "index").mkdir()
    assert hst.workdir_is_fresh(str(w))
    (w / "work" / "leftover").write_text("x")
    assert not hst.workdir_is_fresh(str(w))
    (w / "work" / "leftover").unlink()
    (w / "data").write_text("x")
    assert not hst.workdir_is_fresh(str(w))


def test_make_dirs_secure(tmp_path):
    created = []
    target = tmp_path / "a" / "b" / "upper"
    assert hst.make_dirs_secure(str(target), 0o750, os.geteuid(), os.getegid(), created, parent_mode=0o700)
    assert created == [str(tmp_path / "a"), str(tmp_path / "a" / "b"), str(target)]
    assert oct(os.stat(target).st_mode & 0o7777) == oct(0o750)
    assert oct(os.stat(tmp_path / "a").st_mode & 0o7777) == oct(0o700)
    again = []
    assert not hst.make_dirs_secure(str(target), 0o750, os.geteuid(), os.getegid(), again)
    assert again == []


def test_make_dirs_secure_refuses_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(er.UnsafePathError) as err:
        hst.make_dirs_secure(str(tmp_path / "link" / "upper"), 0o755, 0, 0, [])
    assert "symlink" in str(err.value)
    assert not (tmp_path / "real" / "upper").exists()


def test_make_dirs_secure_refuses_world_writable_parent(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(er.UnsafePathError):
        hst.make_dirs_secure(str(shared / "x" / "upper"), 0o755, 0, 0, [])


ROUND_TRIP = [
    dict(
        path="/srv/kiosk",
        lowerdir=["/opt/a b,c:d", "/opt/base"],
        upper="tmpfs",
        tmpfs_size="50%",
        tmpfs_nr_inodes="10k",
        tmpfs_mode="0750",
        owner="1000",
        group="100",
        mode="0711",
        flags=["nosuid", "noexec", "noatime"],
        index=False,
        redirect_dir="off",
        xino="auto",
        volatile=True,
        timeout="90s",
        description="Kiosk 100%",
        before=["a.service"],
        after=["b.service"],
        requires=["c.service"],
        wanted_by=["multi-user.target"],
    ),
    dict(path="/srv/app", lowerdir=["/opt/x"], upperdir="/data/u", workdir="/data/w", metacopy=True),
    dict(path="/srv/app", lowerdir=["/opt/x"], flags=[]),
    dict(path="/srv/ro", lowerdir=["/opt/x", "/opt/y"], upper="none", uuid="off", nfs_export=True),
]


@pytest.mark.parametrize("params", ROUND_TRIP)
def test_declaration_round_trip(params):
    """The declaration recorded in the overlay unit renders the very same units."""
    spec = sp.resolve_ownership(sp.build_spec(params), 1000, 100, 0o711)
    units = un.render_units(spec)
    back = un.read_declaration(units[spec.unit], units.get(spec.tmpfs_unit), units.get(spec.prepare_unit), False)
    assert back["lowerdir"] == params["lowerdir"] and back["enabled"] is False
    again = sp.resolve_ownership(sp.build_spec(back), 1000, 100, 0o711)
    assert un.render_units(again) == units


#: Lines the units gained after 0.1.0: the recorded declaration, and the
#: assertion that a persistent upper exists.
ADDED_SINCE_0_1_0 = (un.X_PREFIX + "Declaration=", "AssertPathIsDirectory=")


def without_declaration(text):
    return "".join(line for line in text.splitlines(True) if not line.startswith(ADDED_SINCE_0_1_0))


@pytest.mark.parametrize("params", ROUND_TRIP)
def test_legacy_units_read_as_the_declaration(params):
    """A unit without the declaration (0.1.0) reads back the same parameters as the declaration says."""
    spec = sp.resolve_ownership(sp.build_spec(params), 1000, 100, 0o711)
    units = un.render_units(spec)
    legacy = without_declaration(units[spec.unit])
    assert legacy != units[spec.unit]
    args = (units.get(spec.tmpfs_unit), units.get(spec.prepare_unit), True)
    assert un.read_declaration(legacy, *args) == un.read_declaration(units[spec.unit], *args)


def test_declaration_keeps_what_the_unit_text_loses():
    """Before=local-fs.target is rendered once anyway: only the declaration gives it back."""
    spec = sp.resolve_ownership(
        sp.build_spec(dict(path="/srv/a", lowerdir=["/opt/x"], before=["local-fs.target"])), 0, 0, 0o755
    )
    text = un.render_units(spec)[spec.unit]
    assert un.read_declaration(text)["before"] == ["local-fs.target"]
    assert un.read_declaration(without_declaration(text))["before"] == []


def test_damaged_declaration_names_the_fix():
    spec = sp.resolve_ownership(sp.build_spec(dict(path="/srv/a", lowerdir=["/opt/x"])), 0, 0, 0o755)
    text = un.render_units(spec)[spec.unit].replace(un.X_PREFIX + "Declaration={", un.X_PREFIX + "Declaration={x")
    with pytest.raises(er.OverlayError, match="Declaration key of the unit for /srv/a is damaged; apply the overlay"):
        un.read_declaration(text)


def test_units_of_main_are_the_new_units_without_the_declaration():
    """The units 0.1.0 (main before the declaration) wrote, stored in fixtures, differ only by that line."""
    with open(os.path.join(os.path.dirname(__file__), "fixtures", "units-main.json"), encoding="utf-8") as fh:
        cases = json.load(fh)
    for case in cases.values():
        spec = sp.resolve_ownership(sp.build_spec(case["params"]), 1000, 100, 0o711)
        new = un.render_units(spec)
        assert {n: without_declaration(t) for n, t in new.items()} == case["units"]
        assert [n for n in new if new[n] != case["units"][n]] == [spec.unit]


def test_params_from_unit_refuses_foreign_units():
    with pytest.raises(er.OverlayError, match="not written by overlayfs.systemd"):
        un.read_declaration("[Mount]\nWhat=/dev/sdb1\nWhere=/srv/x\n")


def test_parse_unit_last_wins_comments_and_percent():
    text = "[Unit]\nDescription=a\n[Mount]\n# Where=/no\nWhere=/srv/a\nWhere=/srv/100%%\n; x=y\nbroken line\n"
    unit = un.parse_unit(text)
    assert unit.values("Mount") == {"Where": "/srv/100%"}
    assert unit.entries("Mount") == (("Where", "/srv/a"), ("Where", "/srv/100%"))
    assert un.parse_unit(None).values("Mount") == {} and unit.values("Install") == {}


def test_parse_unit_body_is_the_section_as_written():
    text = "# header\n[Unit]\nA=1\n[Mount]\nWhat=x\n# note\n\n[Unit]\nB=2\n"
    unit = un.parse_unit(text)
    assert unit.body("Mount") == "What=x\n# note\n"
    assert unit.body("Unit") == "A=1\nB=2"  # a repeated section continues the first
    assert unit.body("Install") is None and un.parse_unit(None).body("Unit") is None


def test_parse_unit_managed_keys_only_in_unit_section():
    text = "[Unit]\nX-OverlayfsSystemd-Path=/srv/100%%\n[Mount]\nX-OverlayfsSystemd-Id=no\n"
    assert un.parse_unit(text).managed == {"Path": "/srv/100%"}
    assert un.parse_unit("[Unit]\nDescription=x\n").managed == {}


@pytest.mark.parametrize(
    "util_linux, warned",
    [(None, False), ((2, 38), False), ((2, 39), True), ((2, 40), True), ((2, 41), False), ((2, 42), False)],
)
def test_comma_warning_only_where_libmount_may_split(util_linux, warned):
    spec = spec_of(lowerdir=["/opt/a,b", "/opt/base"])
    warnings = pf.check_option_sizes(spec, util_linux)
    assert bool(warnings) == warned
    assert pf.check_option_sizes(spec_of(), util_linux) == []


@pytest.mark.parametrize(
    "overrides, asserted",
    [
        ({"upper": "persistent"}, "/var/lib/overlayfs/srv_app_"),
        ({"upper": "persistent", "upperdir": "/srv/p%x/up", "workdir": "/srv/p%x/wk"}, "/srv/p%%x/up"),
        ({"upper": "tmpfs"}, None),
        ({"upper": "none"}, None),
    ],
)
def test_persistent_upper_must_exist_at_start(overrides, asserted):
    """systemd >= 256 would recreate a missing upper empty: the unit asserts it instead."""
    spec = sp.resolve_ownership(spec_of(**overrides), 0, 0, 0o755)
    lines = [x for x in un.render_units(spec)[spec.unit].splitlines() if x.startswith("AssertPathIsDirectory=")]
    if asserted is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("AssertPathIsDirectory=" + asserted)
        assert lines[0] == "AssertPathIsDirectory=" + un.escape_unit_value(spec.upperdir)


LONG = ["/opt/%s%d" % ("L" * 75, i) for i in range(5)]


@pytest.mark.parametrize(
    "lowers, util_linux, kernel, add",
    [
        (LONG, (2, 41), (6, 8), True),
        (LONG, (2, 39), (6, 18), True),
        (LONG, (2, 41), (6, 7), False),
        (LONG, (2, 41), None, False),
        (LONG, (2, 38), (6, 18), False),
        (LONG, None, (6, 18), False),
        (["/opt/a", "/opt/b"], (2, 41), (6, 18), False),
        (LONG[:4] + ["/opt/a,b" + "x" * 80], (2, 41), (6, 18), False),
        (LONG[:4] + ["/opt/a\\b" + "x" * 80], (2, 41), (6, 18), False),
        (LONG[:4] + ["/opt/a:b" + "x" * 80], (2, 41), (6, 18), True),
    ],
)
def test_choose_lower_form(lowers, util_linux, kernel, add):
    spec = sp.choose_lower_form(spec_of(lowerdir=lowers, upper="none"), util_linux, kernel)
    assert spec.lower_add is add
    rendered = un.render_options(spec)
    if add:
        assert rendered[: len(lowers)] == ["lowerdir+=" + x for x in lowers]
    else:
        assert rendered[0] == "lowerdir=" + ":".join(minfo.escape_layer(x) for x in lowers)


@pytest.mark.parametrize("release, version", [("6.18.44-fc-v769", (6, 18)), ("6.1.0-28-amd64", (6, 1)), ("x", None)])
def test_kernel_version(release, version):
    assert hst.kernel_version(release) == version
