# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The preflight's pure checks."""

from __future__ import annotations

import pytest
from specs import spec_of

from ansible_collections.overlayfs.systemd.plugins.module_utils import _preflight as pf


@pytest.mark.parametrize(
    "util_linux, warned",
    [(None, False), ((2, 38), False), ((2, 39), True), ((2, 40), True), ((2, 41), False), ((2, 42), False)],
)
def test_comma_warning_only_where_libmount_may_split(util_linux, warned):
    spec = spec_of(lowerdir=["/opt/a,b", "/opt/base"])
    warnings = pf.check_option_sizes(spec, util_linux)
    assert bool(warnings) == warned
    assert pf.check_option_sizes(spec_of(), util_linux) == []
