# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The ``host`` fixture of the module tests: a fresh fake host (see ``fakehost.py``).

The one injection point: it replaces ``_names.ROOTS`` (every place the modules read or write)
and the AnsibleModule methods that exit or run commands.
"""

from __future__ import annotations

import pytest
from fakehost import make_host


@pytest.fixture
def host(tmp_path, monkeypatch):
    return make_host(tmp_path, monkeypatch)
