# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Host helpers on a temporary tree (``_host``): /proc holders, fresh workdirs, secure directory creation."""

from __future__ import annotations

import os

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _errors as er
from ansible_collections.overlayfs.systemd.plugins.module_utils import _host as hst


def make_proc(root, pid, comm, cwd="/", fds=(), maps=()):
    d = root / str(pid)
    (d / "fd").mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    os.symlink(cwd, d / "cwd")
    os.symlink("/", d / "root")
    for i, target in enumerate(fds):
        os.symlink(target, d / "fd" / str(i))
    (d / "maps").write_text(
        "".join("7f0000000000-7f0000001000 r-xp 00000000 fd:01 1234    %s\n" % m for m in maps)
        + "7ffd0000-7ffd1000 rw-p 00000000 00:00 0    [stack]\n"
    )


def test_find_holders(tmp_path):
    proc = tmp_path / "proc"
    make_proc(proc, 100, "bash", cwd="/srv/app/sub")
    make_proc(proc, 101, "less", fds=["/dev/null", "/srv/app/log (deleted)"])
    make_proc(proc, 102, "python3", maps=["/srv/app/lib/x.so", "/srv/app/lib/x.so"])
    make_proc(proc, 103, "idle", cwd="/srv/application", fds=["/srv/app2/x", "socket:[123]"])
    make_proc(proc, os.getpid(), "self", cwd="/srv/app")
    (proc / "self").mkdir()
    (proc / "999").mkdir()  # a process that vanished: nothing readable
    holders = hst.find_holders("/srv/app", str(proc))
    assert holders == [
        {"pid": 100, "comm": "bash", "reason": "cwd"},
        {"pid": 101, "comm": "less", "reason": "fd 1 /srv/app/log"},
        {"pid": 102, "comm": "python3", "reason": "maps /srv/app/lib/x.so"},
    ]
    assert hst.find_holders("/srv/app", str(tmp_path / "nothing")) == []


def test_workdir_is_fresh(tmp_path):
    assert hst.workdir_is_fresh(str(tmp_path / "missing"))
    w = tmp_path / "w"
    w.mkdir()
    assert hst.workdir_is_fresh(str(w))
    (w / "work").mkdir()
    (w / "index").mkdir()
    assert hst.workdir_is_fresh(str(w))
    (w / "work" / "leftover").write_text("x")
    assert not hst.workdir_is_fresh(str(w))
    (w / "work" / "leftover").unlink()
    (w / "data").write_text("x")
    assert not hst.workdir_is_fresh(str(w))


def test_make_dirs_secure(tmp_path):
    created = []
    target = tmp_path / "a" / "b" / "upper"
    assert hst.make_dirs_secure(str(target), 0o750, os.geteuid(), os.getegid(), created, parent_mode=0o700)
    assert created == [str(tmp_path / "a"), str(tmp_path / "a" / "b"), str(target)]
    assert oct(os.stat(target).st_mode & 0o7777) == oct(0o750)
    assert oct(os.stat(tmp_path / "a").st_mode & 0o7777) == oct(0o700)
    again = []
    assert not hst.make_dirs_secure(str(target), 0o750, os.geteuid(), os.getegid(), again)
    assert again == []


def test_make_dirs_secure_refuses_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    with pytest.raises(er.UnsafePathError) as err:
        hst.make_dirs_secure(str(tmp_path / "link" / "upper"), 0o755, 0, 0, [])
    assert "symlink" in str(err.value)
    assert not (tmp_path / "real" / "upper").exists()


def test_make_dirs_secure_refuses_world_writable_parent(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(er.UnsafePathError):
        hst.make_dirs_secure(str(shared / "x" / "upper"), 0o755, 0, 0, [])


@pytest.mark.parametrize("release, version", [("6.18.44-fc-v769", (6, 18)), ("6.1.0-28-amd64", (6, 1)), ("x", None)])
def test_kernel_version(release, version):
    assert hst.kernel_version(release) == version
