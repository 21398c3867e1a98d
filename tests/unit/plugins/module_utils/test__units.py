# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit rendering, the unit-file parser and the recorded declaration (``_units``)."""

from __future__ import annotations

import json
import os

import pytest
from specs import resolved, spec_of

from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _info as info
from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.module_utils import _spec as sp
from ansible_collections.overlayfs.systemd.plugins.module_utils import _units as un


def test_unit_value_quoting():
    assert un.escape_unit_value("size=50%") == "size=50%%"
    assert un.quote_unit_word('/srv/a "b"\\c%') == '"/srv/a \\"b\\"\\\\c%%"'


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
    spec = resolved(**overrides)
    lines = [x for x in un.render_units(spec)[spec.unit].splitlines() if x.startswith("AssertPathIsDirectory=")]
    if asserted is None:
        assert lines == []
    else:
        assert len(lines) == 1 and lines[0].startswith("AssertPathIsDirectory=" + asserted)
        assert lines[0] == "AssertPathIsDirectory=" + un.escape_unit_value(spec.upperdir)
