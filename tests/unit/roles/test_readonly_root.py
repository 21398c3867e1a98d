# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The readonly_root role's declarations agree with each other and with the probe module."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.overlayfs.systemd.plugins.module_utils._readonly_root import CHECK_NAMES

ROLE = Path(__file__).resolve().parents[3] / "roles" / "readonly_root"
SPEC = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
PY_TYPES = {"str": str, "path": str, "bool": bool, "int": int, "list": list, "float": (int, float)}


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


def test_waivable_checks_are_the_checks_the_probe_evaluates():
    # Every check but the declaration's own (paths, sizes) can be waived.
    choices = SPEC["readonly_root_preflight_waive"]["choices"]
    assert set(choices) == set(CHECK_NAMES) - {"persistent_paths", "tmpfs_size"}
