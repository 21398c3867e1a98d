# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""mountinfo parsing and the overlay layer escaping (``_mountinfo``)."""

from __future__ import annotations

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo


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
