# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""copy_tree with its worker threads, and the ways it copies a file's data.

The first copy_tree tests (everything kept, dest refused) are in
test__upper.py; these run as root too (owners, device nodes, trusted.*).
"""

from __future__ import annotations

import errno
import os
import stat
import threading

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy as lc
from ansible_collections.overlayfs.systemd.plugins.module_utils import _upper as up

T0 = 1_700_000_000_123_456_789


def put(path: str, data: bytes = b"", *, mode: int = 0o644, owner=(0, 0), xattrs=None, mtime_ns: int = T0) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)
    os.chown(path, *owner)
    for k, v in (xattrs or {}).items():
        os.setxattr(path, k, v)
    os.chmod(path, mode)
    os.utime(path, ns=(mtime_ns - 3, mtime_ns))


def snapshot(root: str) -> dict[str, tuple]:
    """Every entry under ``root``: kind, mode, owner, times, xattrs, content or target, hard-link group."""
    out: dict[str, tuple] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            xa = {k: v for k, v in up.read_xattrs(p).items() if not k.startswith("security.")}
            if stat.S_ISREG(st.st_mode):
                fd = os.open(p, os.O_RDONLY | os.O_NOATIME)  # the atimes are compared
                try:
                    body = os.read(fd, st.st_size + 1)
                finally:
                    os.close(fd)
                group = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else None
            else:
                body = os.readlink(p) if stat.S_ISLNK(st.st_mode) else st.st_rdev
                group = None
            # reading a directory or a link target may touch its atime
            times = (st.st_atime_ns, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else (st.st_mtime_ns,)
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, times, xa, body, group, st.st_nlink)
    return out


@pytest.fixture
def tree(tmp_path):
    """More entries than one hand-over holds, hard links across directories and batches, xattrs, owners."""
    src = tmp_path / "merged"
    many = src / "many"
    for i in range(lc.BATCH + 7):
        put(str(many / ("f%04d" % i)), b"%d\n" % i * (i % 5), mode=0o640 if i % 2 else 0o604, owner=(i % 3, i % 4))
    put(str(src / "a/linked"), b"shared\n", mode=0o4755, owner=(1001, 1002), xattrs={"user.k": b"v"})
    (src / "b").mkdir()
    os.link(str(src / "a/linked"), str(src / "b/linked-too"))
    os.link(str(src / "a/linked"), str(many / "zz-linked"))
    put(str(src / "a/x"), b"x", owner=(5, 6), xattrs={"trusted.app": b"t", "trusted.overlay.origin": b"o"})
    put(str(src / "a/empty"), mode=0o2750, owner=(0, 7))
    put(str(src / "big"), os.urandom(3 * up.CHUNK + 17))
    os.symlink("a/x", str(src / "sym"))
    os.lchown(str(src / "sym"), 8, 9)
    os.link(str(src / "sym"), str(src / "b/sym-hard"), follow_symlinks=False)
    os.mkfifo(str(src / "a/fifo"), 0o620)
    os.mknod(str(src / "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    for d in ("many", "a", "b", ""):
        os.chmod(str(src / d), 0o751)
        os.utime(str(src / d), ns=(T0 + 1, T0 + 2))
    os.setxattr(str(src / "a"), "user.dir", b"1")
    return src


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_copy_tree_same_result_with_any_number_of_workers(tree, tmp_path, workers):
    dest = str(tmp_path / ("dest%d" % workers))
    regular = [os.lstat(os.path.join(d, f)) for d, _dirs, fs in os.walk(tree) for f in fs]
    regular = [st for st in regular if stat.S_ISREG(st.st_mode)]
    stats = lc.copy_tree(str(tree), dest, workers=workers)
    assert stats == {
        "files": lc.BATCH + 7 + 4,
        "directories": 3,
        "symlinks": 1,
        "hardlinks": 3,
        "specials": 2,
        "bytes": sum(size for _ino, size in {(st.st_ino, st.st_size) for st in regular}),
    }
    want, got = snapshot(str(tree)), snapshot(dest)
    assert got.keys() == want.keys()
    for rel, entry in want.items():
        mode, uid, gid, times, xa, body, group, nlink = entry
        xa = {k: v for k, v in xa.items() if not k.startswith("trusted.overlay.")}
        assert got[rel][:6] == (mode, uid, gid, times, xa, body), rel
        assert got[rel][7] == nlink, rel
    a = os.lstat(os.path.join(dest, "a/linked"))
    assert a.st_ino == os.lstat(os.path.join(dest, "b/linked-too")).st_ino == os.lstat(dest + "/many/zz-linked").st_ino
    assert stat.S_IMODE(a.st_mode) == 0o4755  # the set-uid bit outlives the chown
    assert os.lstat(os.path.join(dest, "b/sym-hard")).st_ino == os.lstat(os.path.join(dest, "sym")).st_ino
    assert "trusted.overlay.origin" not in up.read_xattrs(os.path.join(dest, "a/x"))
    assert threading.active_count() == 1


def test_copy_tree_owner_under_a_set_gid_parent(tmp_path):
    """New entries take a set-gid parent's group; a source owned by root:root must still get it back."""
    parent = tmp_path / "sgid"
    parent.mkdir()
    os.chown(str(parent), 0, 4321)
    os.chmod(str(parent), 0o2775)
    src = tmp_path / "src"
    put(str(src / "d/root-owned"), b"r", owner=(0, 0))
    put(str(src / "d/group-owned"), b"g", owner=(0, 4321))
    os.chmod(str(src), 0o755)
    os.chown(str(src), 0, 0)
    dest = str(parent / "copy")
    lc.copy_tree(str(src), dest)
    for rel, gid in (("d/root-owned", 0), ("d/group-owned", 4321), ("d", 0), ("", 0)):
        assert os.lstat(os.path.join(dest, rel)).st_gid == gid, rel


def test_copy_tree_worker_error_is_raised_and_threads_end(tree, tmp_path, monkeypatch):
    real = lc._FileCopier.copy

    def copy(self, src, dest, st):
        if src.endswith("f0042"):
            raise OSError(errno.EIO, "injected", src)
        real(self, src, dest, st)

    monkeypatch.setattr(lc._FileCopier, "copy", copy)
    with pytest.raises(OSError, match="injected"):
        lc.copy_tree(str(tree), str(tmp_path / "dest"), workers=3)
    assert threading.active_count() == 1


def test_copy_tree_walker_error_stops_the_workers(tree, tmp_path, monkeypatch):
    real = lc.read_xattrs

    def read_xattrs(path, overlay_only=False):
        if path.endswith("/many"):
            raise OSError(errno.EIO, "injected", path)
        return real(path, overlay_only)

    monkeypatch.setattr(lc, "read_xattrs", read_xattrs)
    with pytest.raises(OSError, match="injected"):
        lc.copy_tree(str(tree), str(tmp_path / "dest"), workers=2)
    assert threading.active_count() == 1


def _pair(tmp_path, data: bytes):
    src = tmp_path / "src"
    src.write_bytes(data)
    return os.open(str(src), os.O_RDONLY), os.open(str(tmp_path / "dst"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def _refuse(err):
    def call(*args):
        raise OSError(err, os.strerror(err))

    return call


@pytest.mark.parametrize(
    "refused, way",
    [
        ((), lc.COPY_RANGE),
        (("copy_file_range",), lc.SENDFILE),
        (("copy_file_range", "sendfile"), lc.READ_WRITE),
    ],
)
@pytest.mark.parametrize("size", [None, "st_size"])
def test_copy_data_falls_back_where_the_kernel_refuses(tmp_path, monkeypatch, refused, way, size):
    data = os.urandom(2 * up.CHUNK + 5)
    for name in refused:
        monkeypatch.setattr(lc.os, name, _refuse(errno.EXDEV if name == "copy_file_range" else errno.EINVAL))
    sfd, dfd = _pair(tmp_path, data)
    try:
        assert lc._copy_data(sfd, dfd, len(data) if size else None) == way
    finally:
        os.close(sfd)
        os.close(dfd)
    assert (tmp_path / "dst").read_bytes() == data


def test_copy_data_without_copy_file_range_in_python(tmp_path, monkeypatch):
    monkeypatch.delattr(lc.os, "copy_file_range")
    sfd, dfd = _pair(tmp_path, b"data")
    try:
        assert lc._copy_data(sfd, dfd, 4) == lc.SENDFILE
    finally:
        os.close(sfd)
        os.close(dfd)
    assert (tmp_path / "dst").read_bytes() == b"data"


def test_copy_data_stops_at_an_earlier_end_and_raises_real_errors(tmp_path, monkeypatch):
    sfd, dfd = _pair(tmp_path, b"short")
    try:
        assert lc._copy_data(sfd, dfd, 100, lc.READ_WRITE) == lc.READ_WRITE
        monkeypatch.setattr(lc.os, "sendfile", _refuse(errno.EIO))
        with pytest.raises(OSError) as exc:
            lc._copy_data(sfd, dfd, 100, lc.SENDFILE)
        assert exc.value.errno == errno.EIO
    finally:
        os.close(sfd)
        os.close(dfd)
    assert (tmp_path / "dst").read_bytes() == b"short"


def test_copy_tree_remembers_the_way_per_device(tmp_path, monkeypatch):
    """A refused copy_file_range is tried once per source file system, not once per file."""
    calls = []

    def refused(*args):
        calls.append(args)
        raise OSError(errno.EXDEV, "cross-device")

    monkeypatch.setattr(lc.os, "copy_file_range", refused)
    for i in range(5):
        put(str(tmp_path / "src" / ("f%d" % i)), b"data %d" % i)
    lc.copy_tree(str(tmp_path / "src"), str(tmp_path / "dest"), workers=0)
    assert len(calls) == 1
    assert (tmp_path / "dest/f4").read_bytes() == b"data 4"


def test_read_xattrs_of_an_fd_skips_the_overlay_ones(tmp_path):
    put(str(tmp_path / "f"), xattrs={"user.a": b"1", "trusted.overlay.origin": b"x", "trusted.b": b"\0"})
    fd = os.open(str(tmp_path / "f"), os.O_RDONLY)
    try:
        assert lc.read_xattrs(fd, skip_overlay=True) == {"user.a": b"1", "trusted.b": b"\0"}
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "cpus, load, workers",
    [(1, 0.0, 0), (2, 0.0, 2), (2, 0.6, 0), (4, 1.2, 3), (4, 2.4, 2), (4, 3.9, 0), (64, 0.0, lc.WORKERS)],
)
def test_default_workers_one_per_idle_cpu(monkeypatch, cpus, load, workers):
    monkeypatch.setattr(lc.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    monkeypatch.setattr(lc.os, "getloadavg", lambda: (load, 0.0, 0.0))
    assert lc.default_workers() == workers
