# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The readonly_root role's declarations, and the pure parts of its probe (files/probe.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

ROLE = Path(__file__).resolve().parents[3] / "roles" / "readonly_root"
SPEC = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
PY_TYPES = {"str": str, "path": str, "bool": bool, "int": int, "list": list}

_spec = importlib.util.spec_from_file_location("readonly_root_probe", ROLE / "files" / "probe.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def test_defaults_match_argument_specs_exactly():
    assert list(DEFAULTS) == list(SPEC)
    for name, spec in SPEC.items():
        assert name.startswith("readonly_root_"), name
        assert DEFAULTS[name] == spec["default"], name
        assert isinstance(DEFAULTS[name], PY_TYPES[spec["type"]]), name


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({}, None),
        ({"readonly_root_backend": "systemd-volatile"}, "readonly_root_backend"),
        ({"readonly_root_state": "on"}, "readonly_root_state"),
        ({"readonly_root_preflight_waive": ["ram", "everything"]}, "readonly_root_preflight_waive"),
        ({"readonly_root_persistent_paths": "/var/lib/kiosk"}, None),  # a string becomes a one-item list
    ],
)
def test_argument_spec_validation(values, error):
    result = ArgumentSpecValidator(SPEC).validate(dict(DEFAULTS, **values))
    if error is None:
        assert not result.error_messages
    else:
        assert any(error in m for m in result.error_messages), result.error_messages


def test_waivable_checks_are_the_checks_the_role_evaluates():
    checks = (ROLE / "templates" / "checks.j2").read_text()
    for name in SPEC["readonly_root_preflight_waive"]["choices"]:
        assert f"- name: {name}\n" in checks, name


@pytest.mark.parametrize(
    ("conf", "local", "expected"),
    [
        (None, None, ""),
        ('overlayroot=""\n', None, ""),
        ('overlayroot=""\n', 'overlayroot="tmpfs:swap=0,recurse=0"\n', "tmpfs:swap=0,recurse=0"),
        ('overlayroot="tmpfs"\n', 'overlayroot="disabled"  # maintenance\n', "disabled"),
        ('overlayroot="tmpfs"\n', "# overlayroot=disabled\n", "tmpfs"),
        ("overlayroot=tmpfs:recurse=0\n", None, "tmpfs:recurse=0"),
    ],
)
def test_overlayroot_value_local_conf_wins(tmp_path, conf, local, expected):
    (tmp_path / "etc").mkdir()
    if conf is not None:
        (tmp_path / "etc" / "overlayroot.conf").write_text(conf)
    if local is not None:
        (tmp_path / "etc" / "overlayroot.local.conf").write_text(local)
    assert probe.overlayroot_value(str(tmp_path)) == expected


@pytest.mark.parametrize(
    ("field", "expected"),
    [("/media/root-ro", "/media/root-ro"), (r"/srv/a\040b", "/srv/a b"), (r"/x\134y", "/x\\y")],
)
def test_mountinfo_unescape(field, expected):
    assert probe.unescape(field) == expected


def test_mountinfo_parses_this_host():
    mounts = probe.mountinfo()
    assert "/" in mounts and mounts["/"]["fstype"]
