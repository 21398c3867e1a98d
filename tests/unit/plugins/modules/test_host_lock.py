# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""host_lock end to end: a real detached holder of a real flock, against the other modules' lock."""

from __future__ import annotations

import os
import time
from functools import partial

from fakehost import expect_failed, expect_ok, lock_held

from ansible_collections.overlayfs.systemd.plugins.module_utils import _hostlock as hl
from ansible_collections.overlayfs.systemd.plugins.modules import host_lock as mod
from ansible_collections.overlayfs.systemd.plugins.modules import mounts

ok = partial(expect_ok, mod.main)
failed = partial(expect_failed, mod.main)


def taken_now() -> bool:
    try:
        with hl.HostLock(timeout=0):
            return False
    except hl.LockError:
        return True


def test_held_across_tasks_until_released(host):
    r = ok({"state": "held", "lock_timeout": 5})
    pid = r["holder"]
    try:
        assert not r["changed"] and r["lock"]["taken"] and pid != os.getpid()
        # The task ended; the lock is still held, by the holder, which wrote its pid.
        assert hl.held_by(pid) and taken_now()
        with open(hl.LOCK_PATH) as fh:
            assert hl.parse_lock_file(fh.read()) == pid
        # A changing run of mounts meanwhile waits, then fails naming the holder, and changes nothing.
        items = [{"path": host.path("srv/a"), "lowerdir": [host.path("opt/app/v2")]}]
        m = expect_failed(mounts.main, {"overlays": items, "lock_timeout": 0.2})
        assert "holds the host lock" in m["msg"] and "pid %d (" % pid in m["msg"]
        assert m["lock"]["waited_for"]["pid"] == pid and os.listdir(host.unit_dir) == []
        # Another host_lock too.
        other = failed({"state": "held", "lock_timeout": 0.2})
        assert other["param"] == "lock_timeout" and other["lock"]["waited_for"]["pid"] == pid
    finally:
        rel = ok({"state": "released", "holder": pid})
    assert rel["released"] and not rel["changed"] and not taken_now() and not hl.held_by(pid)
    items = [{"path": host.path("srv/a"), "lowerdir": [host.path("opt/app/v2")]}]
    assert expect_ok(mounts.main, {"overlays": items, "lock_timeout": 0})["changed"]


def test_waits_for_a_run_that_holds_it_and_says_so(host):
    with lock_held(1.0) as other:
        r = ok({"state": "held", "lock_timeout": 20})
    try:
        assert r["lock"]["waited"] >= 0.5 and r["lock"]["waited_for"]["pid"] == other.pid
        assert hl.held_by(r["holder"])
    finally:
        ok({"state": "released", "holder": r["holder"]})


def test_timeout_names_the_holder_and_holds_nothing(host):
    with lock_held() as other:
        r = failed({"state": "held", "lock_timeout": 0.3})
        assert "pid %d (" % other.pid in r["msg"] and "nothing was changed" in r["msg"]
        assert not r["lock"]["taken"] and r["param"] == "lock_timeout"
    assert not taken_now()


def test_check_mode_takes_no_lock_and_never_waits(host):
    with lock_held():
        r = ok({"state": "held", "lock_timeout": 0}, check_mode=True)
        assert "holder" not in r and not r["lock"]["taken"]
        assert ok({"state": "released", "holder": 1}, check_mode=True)["released"] is False


def test_the_holder_lets_go_after_hold_timeout(host):
    pid = ok({"state": "held", "hold_timeout": 0.5})["holder"]
    deadline = time.monotonic() + 10
    while hl.held_by(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not taken_now()
    r = ok({"state": "released", "holder": pid})
    assert r["released"] is False


def test_release_signals_only_the_holder_of_the_lock(host):
    with lock_held() as other:
        # A pid that does not hold the lock (the other run's lock file has no pid): nothing is signalled.
        r = ok({"state": "released", "holder": other.pid})
        assert r["released"] is False and other.poll() is None and taken_now()


def test_released_needs_the_holder(host):
    assert "holder" in failed({"state": "released"})["msg"]


def test_released_without_proc_as_in_an_image_root(host, tmp_path):
    """In a chroot of an image root nothing mounted /proc: the holder is still found (its pid in the taken
    lock file) and released, and a free lock is held by nobody."""
    r = ok({"state": "held", "lock_timeout": 5})
    pid = r["holder"]
    no_proc = str(tmp_path / "no-proc")
    try:
        assert hl.held_by(pid, proc_root=no_proc) and not hl.held_by(pid + 1, proc_root=no_proc)
    finally:
        rel = ok({"state": "released", "holder": pid})
    assert rel["released"] and not hl.held_by(pid, proc_root=no_proc) and not taken_now()
