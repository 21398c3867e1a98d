# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host lock against a real second process holding a real flock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _hostlock as hl

HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"pid=%d\\n" % os.getpid(), 0)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds the lock for ``seconds``; yields (start, path)."""
    procs = []
    path = str(tmp_path / "lock" / "overlayfs-systemd.lock")
    os.makedirs(os.path.dirname(path))
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)

    def start(seconds, marker="converge-kiosk-marker"):
        proc = subprocess.Popen(
            [sys.executable, str(script), path, str(seconds), marker], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc

    yield start, path
    for p in procs:
        p.kill()
        p.wait()


def test_free_lock_is_taken_at_once_and_records_the_pid(tmp_path):
    path = str(tmp_path / "run" / "lock" / "x.lock")
    lock = hl.HostLock(path=path, timeout=5)
    report = lock.acquire()
    try:
        assert report.taken and report.waited < 0.5 and report.holder is None
        assert report.message() is None
        with open(path) as fh:
            assert hl.parse_lock_file(fh.read()) == os.getpid()
    finally:
        lock.release()
    assert lock.fd is None


def test_timeout_fails_naming_the_holder_pid_and_cmdline(holder):
    start, path = holder
    proc = start(30)
    lock = hl.HostLock(path=path, timeout=0.4)
    t0 = time.monotonic()
    with pytest.raises(hl.LockError) as err:
        lock.acquire()
    assert 0.35 <= time.monotonic() - t0 < 3
    exc = err.value
    assert exc.holder["pid"] == proc.pid
    assert "converge-kiosk-marker" in exc.holder["cmdline"]
    assert "pid %d (" % proc.pid in exc.message and "converge-kiosk-marker" in exc.message
    assert "Waited 0.4 s (lock_timeout), nothing was changed" in exc.message
    assert exc.param == "lock_timeout"
    assert lock.fd is None  # the descriptor was closed
    assert proc.poll() is None  # the holder still holds it


def test_zero_timeout_tries_once(holder):
    start, path = holder
    start(30)
    sleeps = []
    lock = hl.HostLock(path=path, timeout=0, sleep=sleeps.append)
    with pytest.raises(hl.LockError):
        lock.acquire()
    assert sleeps == []


def test_a_second_run_waits_and_says_for_how_long_and_for_whom(holder):
    start, path = holder
    proc = start(1.0)
    lock = hl.HostLock(path=path, timeout=20)
    report = lock.acquire()
    try:
        assert 0.5 <= report.waited < 10
        assert report.holder["pid"] == proc.pid
        msg = report.message()
        assert msg.startswith("waited %.1f s for the host lock %s held by pid %d" % (report.waited, path, proc.pid))
        res = report.as_result()
        assert res["waited"] == round(report.waited, 1) and res["waited_for"]["pid"] == proc.pid
    finally:
        lock.release()


def test_a_holder_killed_with_sigkill_releases_the_lock(holder):
    start, path = holder
    proc = start(30)
    proc.kill()
    proc.wait()
    with hl.HostLock(path=path, timeout=2) as report:
        assert report.taken and report.waited < 1


def test_fake_clock_waits_exactly_the_timeout(holder):
    start, path = holder
    start(30)
    now = [100.0]
    lock = hl.HostLock(path=path, timeout=3, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    with pytest.raises(hl.LockError) as err:
        lock.acquire()
    assert err.value.waited == pytest.approx(3.0)


def test_symlinked_lock_file_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "x.lock"
    link.symlink_to(target)
    with pytest.raises(hl.LockError, match="remove it if it is a symlink"):
        hl.HostLock(path=str(link), timeout=0).acquire()


def test_lock_file_of_another_owner_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "x.lock"
    path.write_text("")
    monkeypatch.setattr(hl.os, "geteuid", lambda: os.stat(path).st_uid + 1)
    with pytest.raises(hl.LockError, match="not a regular file owned by uid"):
        hl.HostLock(path=str(path), timeout=0).acquire()


def test_negative_timeout_is_refused(tmp_path):
    with pytest.raises(hl.LockError, match="lock_timeout must be 0 or more"):
        hl.HostLock(path=str(tmp_path / "x"), timeout=-1).acquire()


@pytest.mark.parametrize(
    "text,dev,ino,want",
    [
        ("1: FLOCK  ADVISORY  WRITE 1234 00:1a:77 0 EOF\n", os.makedev(0, 0x1A), 77, [1234]),
        ("1: FLOCK  ADVISORY  WRITE 1234 00:1a:77 0 EOF\n", os.makedev(0, 0x1A), 78, []),
        ("1: POSIX  ADVISORY  WRITE 99 00:1a:77 0 EOF\n", os.makedev(0, 0x1A), 77, []),
        (
            "1: FLOCK  ADVISORY  WRITE 5 fd:01:9 0 EOF\n1: -> FLOCK  ADVISORY  WRITE 6 fd:01:9 0 EOF\n",
            os.makedev(0xFD, 1),
            9,
            [5],
        ),
        ("garbage\n", 0, 0, []),
    ],
)
def test_parse_proc_locks(text, dev, ino, want):
    assert hl.parse_proc_locks(text, dev, ino) == want


@pytest.mark.parametrize("check_mode,changes,want", [(False, True, True), (True, True, False), (False, False, False)])
def test_needs_lock_only_for_changing_runs(check_mode, changes, want):
    assert hl.needs_lock(check_mode=check_mode, changes=changes) is want


def test_read_cmdline_of_a_gone_pid_is_none(tmp_path):
    assert hl.read_cmdline(12345, proc_root=str(tmp_path)) is None
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cmdline").write_bytes(b"python3\0" + b"x" * 400 + b"\0")
    out = hl.read_cmdline(7, proc_root=str(tmp_path))
    assert out.startswith("python3 xx") and out.endswith("...") and len(out) == hl.CMDLINE_MAX
