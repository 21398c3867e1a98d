# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The one host-wide lock every changing run of this collection takes.

An exclusive ``flock`` on :data:`LOCK_PATH` under ``/run/lock`` (a tmpfs:
gone at reboot, so never stale across boots; a holder that dies releases it
with its file descriptor). A second run waits up to ``lock_timeout``
seconds and reports how long it waited and behind whom; on timeout it fails
naming the holder (pid and command line) before it changed anything.

The holder writes its pid into the file after it got the lock (information
only: the flock is the lock). Who holds it is read from ``/proc/locks``
first (the kernel's word), then from the file.

Read-only runs (``mount_info``, ``upper state=inspected``, check mode)
take no lock: :func:`needs_lock` says which runs do.

A role whose writes span several tasks (readonly_root) holds it with the
``host_lock`` module: :func:`start_holder` leaves a detached process holding
it, :func:`stop_holder` ends that process.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

LOCK_PATH = "/run/lock/overlayfs-systemd.lock"
#: The parameter every changing module takes (documented in doc_fragments/lock.py).
LOCK_ARGUMENT_SPEC: dict[str, Any] = dict(lock_timeout=dict(type="float", default=120))
DEFAULT_TIMEOUT = 120
POLL_INTERVAL = 0.1
CMDLINE_MAX = 300


class LockError(Exception):
    """The lock could not be taken; nothing was changed. ``holder`` names who has it."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None, waited: float = 0.0) -> None:
        super().__init__(message)
        self.message = message
        self.holder = holder
        self.waited = waited
        self.param = "lock_timeout"


@dataclass
class LockReport:
    """What taking the lock cost: for the module result (``lock``)."""

    path: str
    waited: float = 0.0
    holder: dict[str, Any] | None = None
    taken: bool = False

    def as_result(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(path=self.path, taken=self.taken, waited=round(self.waited, 1))
        if self.holder is not None:
            out["waited_for"] = self.holder
        return out

    def message(self) -> str | None:
        """A sentence for a warning when this run waited, None when it did not."""
        if self.holder is None and self.waited < 1.0:
            return None
        who = describe_holder(self.holder) if self.holder is not None else "another run"
        return "waited %.1f s for the host lock %s held by %s" % (self.waited, self.path, who)


def needs_lock(*, check_mode: bool, changes: bool = True) -> bool:
    """Whether a run takes the exclusive lock: every run that may change the host."""
    return changes and not check_mode


def parse_proc_locks(text: str, dev: int, ino: int) -> list[int]:
    """Pids holding a FLOCK on the file (``dev``, ``ino``) according to ``/proc/locks`` text.

    A line reads ``1: FLOCK  ADVISORY  WRITE 1234 08:02:131 0 EOF``; lines
    of waiters start with ``->`` and are skipped. The device is major:minor
    in hex.
    """
    want = "%02x:%02x:%d" % (os.major(dev), os.minor(dev), ino)
    pids = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK":
            continue
        if _same_dev_ino(fields[5], want):
            try:
                pids.append(int(fields[4]))
            except ValueError:
                continue
    return pids


def _same_dev_ino(value: str, want: str) -> bool:
    try:
        major, minor, inode = value.split(":")
        w_major, w_minor, w_inode = want.split(":")
        return (int(major, 16), int(minor, 16), int(inode)) == (int(w_major, 16), int(w_minor, 16), int(w_inode))
    except ValueError:
        return False


def parse_lock_file(text: str) -> int | None:
    """The pid a holder wrote into the lock file (``pid=1234`` on the first line), None if none."""
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "pid" and value.strip().isdigit():
            return int(value.strip())
    return None


def read_cmdline(pid: int, proc_root: str = "/proc") -> str | None:
    """The command line of ``pid`` (NULs as spaces, shortened), None if the process is gone."""
    try:
        with open("%s/%d/cmdline" % (proc_root, pid), "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    text = " ".join(raw.replace(b"\0", b" ").decode("utf-8", "replace").split())
    return text if len(text) <= CMDLINE_MAX else text[: CMDLINE_MAX - 3] + "..."


def describe_holder(holder: dict[str, Any]) -> str:
    cmd = holder.get("cmdline")
    return "pid %s (%s)" % (holder.get("pid"), cmd if cmd else "command line unknown")


def timeout_message(path: str, timeout: float, holder: dict[str, Any] | None) -> str:
    who = describe_holder(holder) if holder is not None else "a process this run could not identify"
    return (
        "another run of overlayfs.systemd holds the host lock %s: %s. Waited %s s (lock_timeout), nothing was "
        "changed. Let that run finish, or raise lock_timeout" % (path, who, _seconds(timeout))
    )


def _seconds(value: float) -> str:
    return ("%d" % value) if float(value).is_integer() else ("%.1f" % value)


@dataclass
class HostLock:
    """The exclusive host lock; ``acquire()`` waits up to ``timeout`` seconds.

    ``clock``, ``sleep`` and ``proc_root`` are for unit tests.
    """

    path: str = ""
    timeout: float = DEFAULT_TIMEOUT
    proc_root: str = "/proc"
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    fd: int | None = None
    report: LockReport = field(init=False)

    def __post_init__(self) -> None:
        self.path = self.path or LOCK_PATH
        self.report = LockReport(self.path)

    def acquire(self) -> LockReport:
        """Take the lock (waiting if held); raises LockError on timeout or an unsafe lock file."""
        if self.timeout < 0:
            raise LockError("lock_timeout must be 0 or more seconds, got %s" % self.timeout)
        fd = self._open()
        start = self.clock()
        holder: dict[str, Any] | None = None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                if holder is None:
                    holder = self.holder(fd)
                waited = self.clock() - start
                if waited >= self.timeout:
                    raise LockError(timeout_message(self.path, self.timeout, holder), holder, waited)
                self.sleep(min(POLL_INTERVAL, max(self.timeout - waited, 0.0)))
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._record_self(fd)
        self.report = LockReport(self.path, waited=self.clock() - start, holder=holder, taken=True)
        return self.report

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> LockReport:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self, fd: int) -> dict[str, Any] | None:
        """Who holds the lock on ``fd``'s file: from /proc/locks, else from the pid the holder wrote."""
        st = os.fstat(fd)
        pids: list[int] = []
        try:
            with open("%s/locks" % self.proc_root, encoding="ascii", errors="replace") as fh:
                pids = [p for p in parse_proc_locks(fh.read(), st.st_dev, st.st_ino) if p != os.getpid()]
        except OSError:
            pids = []
        if not pids:
            try:
                written = parse_lock_file(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
            except OSError:
                written = None
            pids = [written] if written is not None else []
        if not pids:
            return None
        return dict(pid=pids[0], cmdline=read_cmdline(pids[0], self.proc_root))

    def _open(self) -> int:
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o755)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LockError(
                "cannot open the host lock %s (%s); remove it if it is a symlink or not a regular file"
                % (self.path, exc.strerror)
            ) from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            os.close(fd)
            raise LockError(
                "the host lock %s is not a regular file owned by uid %d (another user may hold it to block "
                "this collection); remove it" % (self.path, os.geteuid())
            )
        return fd

    def _record_self(self, fd: int) -> None:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, ("pid=%d\n" % os.getpid()).encode("ascii"), 0)
        except OSError:  # information only
            pass


@contextmanager
def host_lock(module: Any, *, changes: bool = True) -> Iterator[LockReport]:
    """Hold the host lock around a module's run (none in check mode or for read-only runs).

    Yields the report (``taken`` false when no lock was needed); a run that
    waited gets a warning. Raises LockError on timeout.
    """
    if not needs_lock(check_mode=module.check_mode, changes=changes):
        yield LockReport(LOCK_PATH)
        return
    lock = HostLock(timeout=module.params["lock_timeout"])
    report = lock.acquire()
    try:
        msg = report.message()
        if msg:
            module.warn(msg)
        yield report
    finally:
        lock.release()


def run_locked(
    module: Any,
    run: Callable[[], dict[str, Any]],
    *,
    failure: Callable[[str, dict[str, Any]], Exception],
    changes: bool = True,
) -> dict[str, Any]:
    """``run()`` under the host lock; its result (or its failure's) gets the ``lock`` key.

    ``failure(msg, result)`` builds the module's failure type, which carries
    a ``result`` dict; a lock timeout becomes one with ``changed=False``.
    """
    try:
        with host_lock(module, changes=changes) as report:
            try:
                result = run()
            except Exception as exc:
                if isinstance(getattr(exc, "result", None), dict):
                    exc.result["lock"] = report.as_result()  # type: ignore[attr-defined]
                raise
    except LockError as exc:
        refused = LockReport(LOCK_PATH, waited=exc.waited, holder=exc.holder)
        raise failure(exc.message, dict(changed=False, param=exc.param, lock=refused.as_result())) from None
    result["lock"] = report.as_result()
    return result


# A lock held across several tasks (the readonly_root role's writes): a
# detached process takes it and keeps it until released or ``hold`` seconds
# passed (a controller that died never releases it).


def start_holder(*, timeout: float, hold: float, path: str = "") -> dict[str, Any]:
    """Take the lock in a detached process that keeps it until :func:`stop_holder` or ``hold`` seconds.

    Returns ``pid`` (the holder), ``waited`` and ``waited_for`` like a
    :class:`LockReport`; raises LockError when the lock was not taken.
    """
    if hold <= 0:
        raise LockError("hold_timeout must be more than 0 seconds, got %s" % hold)
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked processes
        try:
            os.close(rfd)
            _detach(wfd)
            os.setsid()
            if os.fork() == 0:
                _hold(wfd, timeout=timeout, hold=hold, path=path or LOCK_PATH)
        finally:
            os._exit(0)
    os.close(wfd)
    os.waitpid(child, 0)
    with os.fdopen(rfd, "rb") as fh:
        line = fh.readline()
    reply = json.loads(line.decode("utf-8")) if line else dict(error="the lock holder process died before it reported")
    if "error" in reply:
        raise LockError(reply["error"], reply.get("holder"), reply.get("waited", 0.0))
    return reply


def _detach(keep: int) -> None:  # pragma: no cover - runs in the forked process
    """Standard streams to /dev/null and every other descriptor but ``keep`` closed (the module's pipes)."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)


def _hold(wfd: int, *, timeout: float, hold: float, path: str) -> None:  # pragma: no cover - forked
    lock = HostLock(path=path, timeout=timeout)
    try:
        report = lock.acquire()
    except LockError as exc:
        os.write(wfd, (json.dumps(dict(error=exc.message, holder=exc.holder, waited=exc.waited)) + "\n").encode())
        return
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the module
        os.write(wfd, (json.dumps(dict(error="cannot take the host lock %s: %s" % (path, exc))) + "\n").encode())
        return
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(True))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out = dict(pid=os.getpid(), waited=round(report.waited, 1), waited_for=report.holder)
    os.write(wfd, (json.dumps(out) + "\n").encode())
    os.close(wfd)
    deadline = time.monotonic() + hold
    while not stop and time.monotonic() < deadline:
        time.sleep(min(POLL_INTERVAL, max(deadline - time.monotonic(), 0.0)))
    lock.release()


def held_by(pid: int, *, path: str = "", proc_root: str = "/proc") -> bool:
    """Whether process ``pid`` holds the host lock now (``/proc/locks``).

    Without ``/proc`` (a chroot of an image root, where nothing mounted it): the lock is taken (a
    non-blocking ``flock`` of the file fails), ``pid`` wrote its pid into it, and ``pid`` runs.
    """
    path = path or LOCK_PATH
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    try:
        with open("%s/locks" % proc_root, encoding="ascii", errors="replace") as fh:
            return pid in parse_proc_locks(fh.read(), st.st_dev, st.st_ino)
    except OSError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            taken = True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            taken = False
        written = parse_lock_file(os.pread(fd, 4096, 0).decode("utf-8", "replace")) if taken else None
    finally:
        os.close(fd)
    if written != pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def stop_holder(pid: int, *, path: str = "", wait: float = 10.0) -> bool:
    """Release the lock that :func:`start_holder`'s process ``pid`` holds; False when it held none any more.

    Only a process that holds the lock and wrote its pid into the lock file
    is signalled; it is waited for until it let go.
    """
    path = path or LOCK_PATH
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            written = parse_lock_file(fh.read())
    except OSError:
        return False
    if written != pid or not held_by(pid, path=path):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while held_by(pid, path=path):
        if time.monotonic() >= deadline:
            raise LockError("the lock holder pid %d did not let go of %s within %s s" % (pid, path, _seconds(wait)))
        time.sleep(POLL_INTERVAL / 2)
    return True


def hold_state(*, state: str, holder: int | None, timeout: float, hold: float, check_mode: bool) -> dict[str, Any]:
    """The ``host_lock`` module's run: its result, with ``warnings``; raises LockError (nothing held)."""
    report = LockReport(LOCK_PATH)
    result: dict[str, Any] = dict(changed=False, warnings=[])
    if state == "released":
        released = not check_mode and holder is not None and stop_holder(holder)
        if not check_mode and not released:
            result["warnings"].append("pid %s no longer held %s (hold_timeout passed?)" % (holder, report.path))
        return dict(result, released=released, lock=report.as_result())
    if check_mode:
        return dict(result, lock=report.as_result())
    got = start_holder(timeout=timeout, hold=hold)
    taken = LockReport(report.path, waited=got["waited"], holder=got["waited_for"], taken=True)
    msg = taken.message()
    if msg:
        result["warnings"].append(msg)
    return dict(result, holder=got["pid"], lock=taken.as_result())
