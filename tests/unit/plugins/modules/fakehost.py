# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fake host the module tests run against (shared by every module's tests).

A temporary directory holds the unit directory, a mountinfo file and a fake
/proc. ``run_command`` is replaced by a small fake systemd that mounts and
unmounts by editing that mountinfo file from the unit file it is asked to
start, so the modules' verification reads what the "kernel" shows.
``conftest.py`` turns :func:`make_host` into the ``host`` fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import pytest
from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19 has no helper: set the arguments the way AnsibleModule reads them.

    @contextlib.contextmanager
    def patch_module_args(args):
        args = {"_ansible_remote_tmp": "/tmp", "_ansible_keep_remote_files": False, **args}
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved


from ansible_collections.overlayfs.systemd.plugins.module_utils import _hostlock as hostlock
from ansible_collections.overlayfs.systemd.plugins.module_utils import _liveguard as liveguard
from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.module_utils import _units as un

MUTATING = ("start", "stop", "restart", "reload", "enable", "disable", "reenable", "daemon-reload")


class AnsibleExitJson(Exception):
    @property
    def result(self):
        return self.args[0]


class AnsibleFailJson(Exception):
    @property
    def result(self):
        return self.args[0]


def octal_escape(s: str, chars: str) -> str:
    return "".join("\\%03o" % ord(c) if c in chars else c for c in s)


class FakeHost:
    def __init__(self, root):
        self.root = root
        self.unit_dir = root / "etc" / "systemd" / "system"
        self.unit_dir.mkdir(parents=True)
        self.mountinfo = root / "mountinfo"
        self.mountinfo.write_text(
            "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro\n"
            "25 22 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,mode=755\n"
        )
        self.proc = root / "proc"
        self.proc.mkdir()
        self.commands: list[list[str]] = []
        self.enabled: set[str] = set()
        self.fail_start: dict[str, str] = {}
        #: Units whose next start fails once with this stderr (a restart after rollback works).
        self.fail_once: dict[str, str] = {}
        self.util_linux = "2.38.1"
        #: The overlay module's parameters (/sys/module/overlay/parameters): empty, so every default is off.
        self.overlay_params = root / "sys" / "module" / "overlay" / "parameters"
        self.overlay_params.mkdir(parents=True)
        self.roots = nm.Roots(
            persistent_base=str(root / "var" / "lib" / "overlayfs"),
            tmpfs_base=str(root / "run" / "overlayfs"),
            unit_dir=str(self.unit_dir),
            mountinfo=str(self.mountinfo),
            proc=str(self.proc),
            fstab=str(root / "fstab"),
            overlay_params=str(self.overlay_params),
            booted_marker=str(root / "run" / "systemd" / "system"),
        )
        # A host booted with systemd; tests of offline runs (an image root) remove it.
        (root / "run" / "systemd" / "system").mkdir(parents=True)
        self.next_id = 200
        self.active: set[str] = set()

    # -- helpers for tests -------------------------------------------------
    def path(self, rel: str) -> str:
        return str(self.root / rel.lstrip("/"))

    def unit_text(self, name: str) -> str | None:
        p = self.unit_dir / name
        return p.read_text() if p.exists() else None

    def systemctl(self, verb: str | None = None) -> list[list[str]]:
        out = [c[1:] for c in self.commands if c[0].endswith("systemctl")]
        return [c for c in out if verb is None or c[0] == verb]

    def mutating(self) -> list[list[str]]:
        return [c for c in self.systemctl() if c[0] in MUTATING]

    def add_service(self, name: str, requires: str, active: bool = True) -> None:
        """A service whose unit Requires= ``requires`` (a kiosk app after the overlays)."""
        (self.unit_dir / name).write_text(
            "[Unit]\nRequires=%s\nAfter=%s\n\n[Service]\nExecStart=/bin/mkdir -p %s\n"
            % (requires, requires, self.path("run/" + name))
        )
        if active:
            self.active.add(name)

    def add_mount(self, line: str) -> None:
        with open(self.mountinfo, "a") as fh:
            fh.write(line + "\n")

    # -- fake systemd ------------------------------------------------------
    def _mount_section(self, name: str) -> dict[str, str]:
        return un.parse_unit(self.unit_text(name)).values("Mount")

    def _mount(self, name: str) -> None:
        keys = self._mount_section(name)
        # What systemd's option filter hands mount(8).
        opts = minfo.split_unescaped(un.options_from_unit_text(keys["Options"]), ",")
        flags = [o for o in opts if o in ("ro", "nosuid", "nodev", "noexec")]
        mount_opts = ",".join(["ro" if "ro" in flags else "rw"] + [f for f in flags if f != "ro"] + ["relatime"])
        where = keys["Where"]
        if keys["Type"] == "overlay":
            # The kernel makes $workdir/work at mount.
            for o in opts:
                if o.startswith("workdir="):
                    os.makedirs(os.path.join(o.split("=", 1)[1], "work"), exist_ok=True)
            super_opts = ",".join(octal_escape(o, ", \t\n\\") for o in opts if o not in flags)
            line = "%d 22 0:%d / %s %s - overlay overlay rw,%s" % (
                self.next_id,
                self.next_id,
                octal_escape(where, " \t\n\\"),
                mount_opts,
                super_opts,
            )
        else:
            line = "%d 25 0:%d / %s %s - tmpfs tmpfs rw,%s" % (
                self.next_id,
                self.next_id,
                where,
                mount_opts,
                keys["Options"],
            )
        self.next_id += 1
        self.add_mount(line)

    def _unmount(self, name: str) -> None:
        keys = self._mount_section(name)
        where = octal_escape(keys.get("Where", "//none"), " \t\n\\")
        lines = self.mountinfo.read_text().splitlines()
        keep = [x for x in lines if x.split(" ")[4] != where]
        self.mountinfo.write_text("".join(x + "\n" for x in keep))

    def _start(self, name: str) -> tuple[int, str, str]:
        if name in self.fail_start:
            return 1, "", self.fail_start[name]
        if name in self.fail_once:
            return 1, "", self.fail_once.pop(name)
        if name in self.active:
            return 0, "", ""
        text = self.unit_text(name)
        if text is None:
            return 5, "", "Failed to start %s: Unit %s not found.\n" % (name, name)
        for line in text.splitlines():
            if line.startswith(("Requires=", "BindsTo=")):
                rc, out, err = self._start(line.split("=", 1)[1])
                if rc:
                    return rc, out, err
        if name.endswith(".mount"):
            self._mount(name)
        else:
            for key, value in un.parse_unit(text).entries("Service"):
                if key == "ExecStart":
                    os.makedirs(value.rsplit(" ", 1)[1].strip('"'), exist_ok=True)
        self.active.add(name)
        return 0, "", ""

    def required_by(self, name: str) -> list[str]:
        """The units whose file says Requires= or BindsTo= ``name`` (systemd's RequiredBy=/BoundBy=)."""
        out = []
        for p in sorted(self.unit_dir.iterdir()):
            lines = p.read_text().splitlines() if p.is_file() else []
            if "Requires=%s" % name in lines or "BindsTo=%s" % name in lines:
                out.append(p.name)
        return out

    def _stop(self, name: str) -> None:
        if name.endswith(".mount") and self.unit_text(name) is not None:
            self._unmount(name)
        self.active.discard(name)
        # systemd's Requires=/BindsTo=: stopping a unit stops the active units that require it.
        for other in self.required_by(name):
            if other in self.active:
                self._stop(other)

    def run_command(self, args, check_rc=False, environ_update=None, **kw):
        assert environ_update == {"LC_ALL": "C"}
        args = list(args)
        self.commands.append(args)
        prog = os.path.basename(args[0])
        if prog == "mount":
            return 0, "mount from util-linux %s (libmount %s: selinux)\n" % (self.util_linux, self.util_linux), ""
        if prog == "journalctl":
            unit = args[args.index("-u") + 1]
            if unit.endswith(".service"):
                return 0, "%s[77]: cannot open the kiosk state\nsystemd[1]: %s: Failed\n" % (unit, unit), ""
            return 0, "mount[99]: mount: wrong fs type, bad option, bad superblock on overlay\n", ""
        verb = args[1]
        if verb == "show":
            units = args[args.index("--") + 1 :]
            blocks = []
            for u in units:
                blocks.append(
                    "Id=%s\nUnitFileState=%s\nNeedDaemonReload=no\nActiveState=%s\nRequiredBy=%s\nBoundBy=\n"
                    % (
                        u,
                        "enabled" if u in self.enabled else "disabled",
                        "active" if u in self.active else "inactive",
                        " ".join(self.required_by(u)),
                    )
                )
            return 0, "\n".join(blocks), ""
        if verb == "daemon-reload":
            return 0, "", ""
        if verb == "start":
            return self._start(args[2])
        if verb == "stop":
            self._stop(args[2])
            return 0, "", ""
        if verb in ("enable", "reenable"):
            self.enabled.add(args[2])
            return 0, "", ""
        if verb == "disable":
            self.enabled.discard(args[2])
            return 0, "", ""
        if verb == "reload":
            return 0, "", ""
        raise AssertionError("unexpected command %r" % args)


def make_host(tmp_path, monkeypatch) -> FakeHost:
    h = FakeHost(tmp_path)
    # The one injection point of the host's places: every module_utils file reads them from _names.ROOTS.
    monkeypatch.setattr(nm, "ROOTS", h.roots)
    # ... and the two of fleet safety: the host lock and the layer records.
    monkeypatch.setattr(liveguard, "RECORD_DIR", str(tmp_path / "run" / "overlayfs-systemd" / "layers"))
    monkeypatch.setattr(hostlock, "LOCK_PATH", str(tmp_path / "run" / "lock" / "overlayfs-systemd.lock"))

    def exit_json(self, **kw):
        raise AnsibleExitJson(kw)

    def fail_json(self, msg, **kw):
        kw.update(failed=True, msg=msg)
        raise AnsibleFailJson(kw)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, *a, **k: "/usr/bin/" + name)
    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, *a, **k: h.run_command(*a, **k))
    for rel in ("opt/app/v2", "opt/app/base", "opt/app/v3"):
        os.makedirs(h.path(rel))
    os.chmod(h.path("opt/app/v2"), 0o751)
    (tmp_path / "opt" / "app" / "base" / "file.txt").write_text("base\n")
    return h


def run_main(main, args, check_mode=False, diff=False):
    """Run a module's main() with ``args``; returns the AnsibleExitJson or AnsibleFailJson raised."""
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    with patch_module_args(args):
        with pytest.raises((AnsibleExitJson, AnsibleFailJson)) as info:
            main()
    return info.value


def expect_ok(main, args, **kw) -> dict:
    """main()'s result, which must be a success (the failure message otherwise)."""
    res = run_main(main, args, **kw)
    assert isinstance(res, AnsibleExitJson), res.result.get("msg")
    return res.result


def expect_failed(main, args, **kw) -> dict:
    """main()'s result, which must be a failure."""
    res = run_main(main, args, **kw)
    assert isinstance(res, AnsibleFailJson), res.result
    return res.result


HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@contextlib.contextmanager
def lock_held(seconds: float = 30.0):
    """Another process holding the host lock (the patched path) for ``seconds``; yields its Popen."""
    os.makedirs(os.path.dirname(hostlock.LOCK_PATH), exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, hostlock.LOCK_PATH, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
