# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unit names, overlay ids and path normalisation (``_names``); unit names checked against the real systemd-escape."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm

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
    "a, b",
    [("/srv/a-b", "/srv/a_b"), ("/srv/a b", "/srv/a_b"), ("/srv/a/b", "/srv/a_b")],
)
def test_overlay_id_collision_free(a, b):
    assert nm.overlay_id(a) != nm.overlay_id(b)
    assert nm.overlay_id(a).rsplit("_", 1)[0] == nm.overlay_id(b).rsplit("_", 1)[0]


def test_overlay_id_slug_is_bounded():
    oid = nm.overlay_id("/" + "x" * 300)
    assert len(oid) == 48 + 1 + 8
