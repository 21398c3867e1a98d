# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A declaration travels one way through prepare(): each module_utils file on the road is entered once.

The profiler records the files of the functions ``_converge.prepare`` calls
(reading a spec's derived names, the ``unit`` properties, is data access
and not counted); consecutive calls into one file are one visit.
"""

from __future__ import annotations

import os
import sys

import pytest
from fakehost import expect_failed, expect_ok

from ansible_collections.overlayfs.systemd.plugins.modules import mount

ROAD = ["_spec.py", "_host.py", "_units.py", "_preflight.py", "_plan.py"]
SPEC_PROPERTIES = {"unit", "tmpfs_unit", "prepare_unit", "feature_map"}


def visits(fn):
    """The module_utils files prepare() calls into, in order (one entry per visit)."""
    seq: list[str] = []

    def profile(frame, event, arg):
        caller = frame.f_back
        if event != "call" or caller is None or caller.f_code.co_name != "prepare":
            return
        if not caller.f_code.co_filename.endswith(os.path.join("module_utils", "_converge.py")):
            return
        name = os.path.basename(frame.f_code.co_filename)
        if (
            name == "_converge.py"
            or frame.f_code.co_name in SPEC_PROPERTIES
            or "module_utils" not in frame.f_code.co_filename
        ):
            return
        if not seq or seq[-1] != name:
            seq.append(name)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return seq


def params(host, **kw):
    return dict({"path": host.path("srv/app"), "lowerdir": [host.path("opt/app/v2"), host.path("opt/app/base")]}, **kw)


@pytest.mark.parametrize(
    "first, second",
    [
        ({}, {}),
        ({}, {"lowerdir": ["opt/app/v3", "opt/app/base"]}),
        ({"upper": "tmpfs"}, {"upper": "persistent", "purge": True}),
        ({}, {"state": "absent", "purge": True}),
    ],
)
def test_prepare_enters_each_file_once(host, first, second):
    def resolved(kw):
        if "lowerdir" in kw:
            kw = dict(kw, lowerdir=[host.path(x) for x in kw["lowerdir"]])
        return params(host, **kw)

    assert visits(lambda: expect_ok(mount.main, resolved(first))) == ROAD
    road = visits(lambda: expect_ok(mount.main, resolved(second)))
    assert road == (ROAD if second.get("state") != "absent" else ["_spec.py", "_host.py", "_preflight.py", "_plan.py"])


def test_a_refusal_stops_on_the_road(host):
    os.makedirs(host.path("srv/app"))
    with open(host.path("srv/app/data"), "w") as fh:
        fh.write("hidden by the overlay\n")
    road = visits(lambda: expect_failed(mount.main, params(host)))
    assert road == ["_spec.py", "_host.py", "_units.py", "_preflight.py"]
    missing_lower = visits(lambda: expect_failed(mount.main, params(host, lowerdir=[host.path("opt/missing")])))
    assert missing_lower == ["_spec.py", "_host.py"]  # the upper root copies the top lower's owner: a host fact
