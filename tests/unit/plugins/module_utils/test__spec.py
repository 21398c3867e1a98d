# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The spec and its validation (``_spec``)."""

from __future__ import annotations

import pytest
from specs import spec_of

from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.module_utils import _spec as sp
from ansible_collections.overlayfs.systemd.plugins.module_utils import _units as un


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
