# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The unit_name filter against the real systemd-escape, over the mount tests' tricky paths."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.overlayfs.systemd.plugins.filter.unit_name import FilterModule, unit_name

# The tricky paths and the systemd-escape runner live with the escaping tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "module_utils"))
from test__names import TRICKY_PATHS, real_escape  # noqa: E402

# Paths with control characters get a unit name from systemd-escape, but no
# unit file can carry them: the filter refuses them like the mount module.
REFUSED = [p for p in TRICKY_PATHS if any(ord(c) < 0x20 for c in p)]
ACCEPTED = [p for p in TRICKY_PATHS if p not in REFUSED]


def test_the_split_is_not_empty():
    assert REFUSED == ["/srv/tab\there"] and len(ACCEPTED) == len(TRICKY_PATHS) - 1


@pytest.mark.parametrize("path", ACCEPTED)
def test_filter_matches_systemd_escape(path):
    assert unit_name(path) == real_escape(path)


@pytest.mark.parametrize("path", REFUSED)
def test_control_characters_refused(path):
    with pytest.raises(AnsibleFilterError, match="control character"):
        unit_name(path)


def test_suffix():
    assert unit_name("/mnt/my share", suffix="automount") == "mnt-my\\x20share.automount"
    assert FilterModule().filters()["unit_name"] is unit_name


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("relative/path", "is relative"),
        ("", "non-empty absolute path"),
        ("/srv/../etc", "'..' component"),
        ("/srv/./x", "'.' component"),
        ("/" + "a" * 250, "at most 255"),
        ("/" + "-" * 63, "at most 255"),
        (42, "expected a path string, got int"),
        (None, "expected a path string, got NoneType"),
    ],
)
def test_errors(value, fragment):
    with pytest.raises(AnsibleFilterError, match="^unit_name: ") as exc:
        unit_name(value)
    assert fragment in str(exc.value)


def test_longest_accepted_name():
    path = "/" + "a" * (255 - len(".mount"))
    assert unit_name(path) == real_escape(path) and len(unit_name(path)) == 255
