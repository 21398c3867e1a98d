# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The overlays role's declarations agree with the module and with each other."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import ARGUMENT_SPEC

ROLE = Path(__file__).resolve().parents[3] / "roles" / "overlays"
SPEC = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())


def test_item_options_are_the_mount_modules():
    items = SPEC["overlays_list"]["options"]
    assert list(items) == list(ARGUMENT_SPEC)
    for name, module_spec in ARGUMENT_SPEC.items():
        role_spec = items[name]
        for key in ("type", "elements", "choices", "required"):
            assert role_spec.get(key) == module_spec.get(key), (name, key)
        assert "default" not in role_spec, "%s: the module (or overlays_defaults) decides defaults" % name


def test_defaults_match_argument_specs_exactly():
    assert set(DEFAULTS) == set(SPEC)
    for name, spec in SPEC.items():
        assert DEFAULTS[name] == spec["default"], name
        assert name.startswith("overlays_")


def role_validate(values):
    return ArgumentSpecValidator(SPEC).validate(dict(DEFAULTS, **values))


def test_role_spec_accepts_a_kiosk():
    res = role_validate(
        {
            "overlays_list": [
                {"path": "/srv/kiosk", "lowerdir": ["/opt/k"], "upper": "tmpfs", "tmpfs_size": "64M"},
                {"path": "/etc/kiosk", "lowerdir": ["/opt/c"], "flags": ["nosuid", "noexec"]},
                {"path": "/usr/share/assets", "lowerdir": ["/a", "/b"], "upper": "none"},
            ]
        }
    )
    assert res.error_messages == []


@pytest.mark.parametrize(
    "item, fragment",
    [
        ({"path": "/x", "upper": "disk"}, "upper"),
        ({"path": "/x", "flags": ["rw"]}, "flags"),
        ({"lowerdir": ["/a"]}, "path"),
        ({"path": "/x", "lowerdirs": ["/a"]}, "lowerdirs"),
        ({"path": "/x", "enabled": "maybe"}, "enabled"),
    ],
)
def test_role_spec_refuses_bad_items(item, fragment):
    res = role_validate({"overlays_list": [item]})
    assert res.error_messages and any(fragment in m for m in res.error_messages), res.error_messages


def test_role_spec_refuses_bad_apply():
    assert role_validate({"overlays_apply": "now"}).error_messages
