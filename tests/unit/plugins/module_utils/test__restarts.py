# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Restart bookkeeping: the units a stop takes down are found before and started again after."""

from __future__ import annotations

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _restarts as rs


class FakeSystemd:
    """Units with reverse dependencies; stopping a unit stops what requires it, like systemd."""

    def __init__(self, units, fail_start=()):
        self.units = units  # name -> dict(ActiveState=..., RequiredBy=..., BoundBy=..., ConsistsOf=...)
        self.fail_start = set(fail_start)
        self.calls = []

    def show(self, units, props):
        self.calls.append(("show", tuple(units)))
        return {u: {p: self.units.get(u, {}).get(p, "") for p in props} for u in units}

    def stop(self, unit):
        self.units[unit]["ActiveState"] = "inactive"
        for dep in rs.reverse_dependencies(self.units[unit]):
            if self.units[dep]["ActiveState"] == "active":
                self.stop(dep)

    def start(self, unit):
        self.calls.append(("start", unit))
        if unit in self.fail_start:
            self.units[unit]["ActiveState"] = "failed"
            raise RuntimeError("Job for %s failed" % unit)
        self.units[unit]["ActiveState"] = "active"

    def journal_tail(self, unit, lines=20):
        return "Dec 01 kiosk[42]: cannot open /srv/kiosk/state\nDec 01 systemd[1]: %s: Failed" % unit


def kiosk(**extra):
    units = {
        "srv-a.mount": dict(ActiveState="active", RequiredBy="overlays.target"),
        "srv-busy.mount": dict(ActiveState="active", RequiredBy="overlays.target app.service"),
        "overlays.target": dict(ActiveState="active", RequiredBy="kiosk.service", BoundBy="watch.service"),
        "kiosk.service": dict(ActiveState="active"),
        "watch.service": dict(ActiveState="active"),
        "app.service": dict(ActiveState="active"),
        "idle.service": dict(ActiveState="inactive"),
    }
    units["overlays.target"]["RequiredBy"] += " idle.service"
    units.update(extra)
    return units


def test_nothing_stopped_costs_no_call():
    sd = FakeSystemd(kiosk())
    assert rs.active_dependents([], sd.show) == []
    assert sd.calls == []


def test_found_transitively_over_requires_and_bindsto_active_only():
    sd = FakeSystemd(kiosk())
    found = rs.active_dependents(["srv-a.mount"], sd.show)
    assert found == ["overlays.target", "kiosk.service", "watch.service"]  # idle.service was not active
    assert len([c for c in sd.calls if c[0] == "show"]) == 3  # one per level


def test_busy_overlay_partial_converge_brings_the_target_and_the_service_back():
    """The run restarts srv-a (stopping the target and kiosk.service), then fails for the busy one."""
    sd = FakeSystemd(kiosk())
    before = rs.active_dependents(["srv-a.mount"], sd.show)
    sd.stop("srv-a.mount")
    sd.units["srv-a.mount"]["ActiveState"] = "active"  # restarted by the run
    assert sd.units["kiosk.service"]["ActiveState"] == "inactive"
    back = rs.bring_back(sd, before)
    assert back.restarted == ["overlays.target", "kiosk.service", "watch.service"]
    assert back.failed == [] and back.message() is None
    assert all(sd.units[u]["ActiveState"] == "active" for u in before)
    assert sd.units["idle.service"]["ActiveState"] == "inactive"  # not started: it was not running before


def test_units_still_active_are_not_started_again():
    sd = FakeSystemd(kiosk())
    before = rs.active_dependents(["srv-a.mount"], sd.show)
    back = rs.bring_back(sd, before)
    assert back.restarted == [] and not [c for c in sd.calls if c[0] == "start"]


def test_a_unit_that_fails_to_come_back_is_an_error_with_its_journal():
    sd = FakeSystemd(kiosk(), fail_start=["kiosk.service"])
    before = rs.active_dependents(["srv-a.mount"], sd.show)
    sd.stop("srv-a.mount")
    back = rs.bring_back(sd, before, start_error=RuntimeError)
    assert back.restarted == ["overlays.target", "watch.service"]
    assert back.failed[0]["unit"] == "kiosk.service"
    assert "cannot open /srv/kiosk/state" in back.failed[0]["journal"][0]
    assert "kiosk.service (Job for kiosk.service failed)" in back.message()


def test_a_start_that_returns_but_leaves_the_unit_inactive_is_an_error():
    sd = FakeSystemd(kiosk())
    before = ["kiosk.service"]
    sd.units["kiosk.service"]["ActiveState"] = "inactive"
    sd.start = lambda unit: sd.calls.append(("start", unit))  # systemctl start returned, unit died at once
    back = rs.bring_back(sd, before)
    assert back.restarted == [] and back.failed[0]["error"] == "not active after start"


def test_cycles_end():
    units = {
        "a.mount": dict(ActiveState="active", RequiredBy="x.service"),
        "x.service": dict(ActiveState="active", RequiredBy="y.service"),
        "y.service": dict(ActiveState="active", RequiredBy="x.service a.mount"),
    }
    assert rs.active_dependents(["a.mount"], FakeSystemd(units).show) == ["x.service", "y.service"]


@pytest.mark.parametrize(
    "props,want",
    [
        ({"RequiredBy": "a b", "BoundBy": "b c", "ConsistsOf": ""}, ["a", "b", "c"]),
        ({}, []),
    ],
)
def test_reverse_dependencies(props, want):
    assert rs.reverse_dependencies(props) == want
