"""The unit_name filter agrees with systemd-escape ON THE TARGET.

Same tricky paths as the unit tests (imported, one list). Paths the filter
refuses (control characters) must be refused, never escaped differently.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
# make test links the repo as ansible_collections/overlayfs/systemd here.
sys.path.insert(0, str(REPO / ".cache" / "collections"))

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.overlayfs.systemd.plugins.filter.unit_name import unit_name  # noqa: E402
from ansible_collections.overlayfs.systemd.tests.unit.plugins.module_utils.test__names import (  # noqa: E402
    TRICKY_PATHS,
)


@pytest.mark.parametrize("path", TRICKY_PATHS)
def test_filter_matches_systemd_escape_on_target(host, path):
    if any(ord(c) < 0x20 for c in path):
        with pytest.raises(AnsibleFilterError):
            unit_name(path)
        return
    res = host.run("systemd-escape --path --suffix=mount -- %s", path)
    assert res.rc == 0, res.stderr
    assert unit_name(path) == res.stdout.strip()
