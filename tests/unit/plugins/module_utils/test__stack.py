# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""An upper as the next lower, on real overlays (as root): the merged view must not change.

Each test mounts an overlay, makes a session's changes through its merged
view (a changed file, a deleted one, a replaced directory, a hard link to a
lower file, an xattr), records a manifest of the merged view, unmounts,
moves the upper with ``stack_upper`` and mounts ``dest:lower`` with a fresh
upper: the manifest must be the same.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _stack as stk
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import parse_mountinfo
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper import UpperError, read_xattrs


def sh(*argv):
    r = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip("%s failed here: %s" % (argv[0], r.stderr.strip()))


def manifest(root: str) -> list[tuple]:
    """Every entry: path, type+mode, owner, mtime, content digest, public xattrs, hard-link group."""
    out, groups = [], {}
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(d, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            content = ""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    content = hashlib.sha256(fh.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            xa = {k: v for k, v in read_xattrs(p).items() if not k.startswith(("trusted.overlay.", "security."))}
            group = groups.setdefault((st.st_dev, st.st_ino), rel) if st.st_nlink > 1 else ""
            out.append((rel, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, content, sorted(xa.items()), group))
    return out


@pytest.fixture
def stack(tmp_path):
    """lower on disk; upper/work on disk or on their own tmpfs; unmounted at the end."""
    mounted: list[str] = []

    def make(upper_on_tmpfs: bool):
        lower = tmp_path / "lower"
        (lower / "etc").mkdir(parents=True)
        (lower / "etc" / "motd").write_text("v1\n")
        (lower / "etc" / "old.conf").write_text("old\n")
        (lower / "cache").mkdir()
        (lower / "cache" / "stale").write_text("stale\n")
        (lower / "data").mkdir()
        (lower / "data" / "a").write_text("shared\n")
        os.chown(lower / "data" / "a", 1000, 1000)
        base = tmp_path / "rw"
        base.mkdir()
        if upper_on_tmpfs:
            sh("mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(base))
            mounted.append(str(base))
        (base / "upper").mkdir()
        (base / "work").mkdir()
        merged = tmp_path / "merged"
        merged.mkdir()
        opts = "lowerdir=%s,upperdir=%s,workdir=%s,index=off,redirect_dir=off,metacopy=off" % (
            lower,
            base / "upper",
            base / "work",
        )
        sh("mount", "-t", "overlay", "overlay", "-o", opts, str(merged))
        mounted.append(str(merged))
        (merged / "etc" / "motd").write_text("v2\n")
        os.setxattr(merged / "etc" / "motd", "user.note", b"golden")
        os.unlink(merged / "etc" / "old.conf")
        for n in os.listdir(merged / "cache"):
            os.unlink(merged / "cache" / n)
        os.rmdir(merged / "cache")
        os.mkdir(merged / "cache")
        (merged / "cache" / "fresh").write_text("fresh\n")
        os.link(merged / "data" / "a", merged / "data" / "a-link")
        before = manifest(str(merged))
        subprocess.run(["umount", str(merged)], check=True)
        mounted.remove(str(merged))
        return lower, base, merged, before

    def remount(lowers, upper, work, merged):
        opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (":".join(map(str, lowers)), upper, work)
        sh("mount", "-t", "overlay", "overlay", "-o", opts, str(merged))
        mounted.append(str(merged))

    yield make, remount
    for m in reversed(mounted):
        subprocess.run(["umount", m], check=False)


def test_same_filesystem_is_a_rename_and_keeps_the_view(tmp_path, stack):
    make, remount = stack
    lower, base, merged, before = make(upper_on_tmpfs=False)
    dest = tmp_path / "layers" / "k2"
    dest.parent.mkdir()
    ino = os.lstat(base / "upper" / "etc" / "motd").st_ino
    how, counts = stk.stack_upper(str(base / "upper"), str(dest))
    assert how == "rename" and not os.path.lexists(base / "upper")
    assert os.lstat(dest / "etc" / "motd").st_ino == ino  # nothing copied
    assert counts["whiteouts"] == 1 and counts["opaque"] == 1 and counts["hardlinks"] == 1
    for p, _dirs, files in os.walk(dest):
        for n in [p] + [os.path.join(p, f) for f in files]:
            assert not set(read_xattrs(n)) & set(stk.BOOKKEEPING_XATTRS), n
    (tmp_path / "rw" / "upper").mkdir()
    for n in os.listdir(base / "work"):
        subprocess.run(["rm", "-rf", str(base / "work" / n)], check=True)
    remount([dest, lower], base / "upper", base / "work", merged)
    assert manifest(str(merged)) == before
    assert not (merged / "etc" / "old.conf").exists()
    assert sorted(os.listdir(merged / "cache")) == ["fresh"]


def test_tmpfs_upper_is_copied_with_markers_and_hard_links(tmp_path, stack):
    make, remount = stack
    lower, base, merged, before = make(upper_on_tmpfs=True)
    dest = tmp_path / "layers" / "k2"
    dest.parent.mkdir()
    how, counts = stk.stack_upper(str(base / "upper"), str(dest))
    assert how == "copy" and os.path.isdir(base / "upper")  # the upper stays until the caller empties it
    assert counts["whiteouts"] == 1 and counts["opaque"] == 1 and counts["hardlinks"] == 1
    assert counts["files"] == 3  # motd, cache/fresh, data/a (a-link is the hard link)
    assert os.lstat(dest / "data" / "a").st_ino == os.lstat(dest / "data" / "a-link").st_ino
    wh = os.lstat(dest / "etc" / "old.conf")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(dest / "cache", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(dest.parent)) == ["k2"]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "upper").mkdir()
    (fresh / "work").mkdir()
    remount([dest, lower], fresh / "upper", fresh / "work", merged)
    after = manifest(str(merged))
    # Before the commit the kernel reports two inode numbers for the two names of the copied-up hard
    # link (upper on tmpfs, lower on disk, index=off); in the new layer they are one inode, as they
    # were in the upper. Everything else is the same.
    assert [e[:-1] for e in after] == [e[:-1] for e in before]
    assert os.lstat(merged / "data" / "a").st_ino == os.lstat(merged / "data" / "a-link").st_ino


def test_redirect_or_metacopy_upper_is_refused_before_moving(tmp_path):
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/old")
    with pytest.raises(UpperError) as info:
        stk.stack_upper(str(upper), str(tmp_path / "dest"))
    assert info.value.param == "squash" and "trusted.overlay.redirect" in str(info.value)
    assert os.path.isdir(upper / "moved") and not os.path.lexists(tmp_path / "dest")


def test_dest_on_an_overlay_is_refused_with_the_fix():
    mounts = parse_mountinfo(
        "1 0 0:1 / / rw - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w\n"
        "2 1 0:2 / /var/lib/overlayfs rw - ext4 /dev/vdb rw\n"
    )
    problem = stk.dest_problem("/opt/layers/k2", mounts)
    assert problem is not None and "squash: true" in problem and "nothing was copied" in problem
    assert stk.dest_problem("/var/lib/overlayfs/layers/k2", mounts) is None


@pytest.mark.parametrize(
    "name, kept",
    [
        ("trusted.overlay.opaque", True),
        ("trusted.overlay.whiteout", True),
        ("trusted.overlay.whiteouts", True),
        ("trusted.overlay.origin", False),
        ("trusted.overlay.impure", False),
        ("trusted.overlay.uuid", False),
        ("user.note", True),
        ("security.selinux", True),
    ],
)
def test_travels(name, kept):
    assert stk.travels(name) is kept


def test_rename_across_mounts_of_one_file_system_falls_back_to_a_copy(tmp_path, monkeypatch):
    """Two bind mounts of one file system share st_dev, but rename(2) between them says EXDEV."""
    upper = tmp_path / "upper"
    (upper / "etc").mkdir(parents=True)
    (upper / "etc" / "motd").write_text("v2\n")
    os.mknod(upper / "etc" / "gone", stat.S_IFCHR, os.makedev(0, 0))
    real_rename = os.rename

    def rename(src, dst, *a, **kw):
        if os.fspath(src) == str(upper):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *a, **kw)

    monkeypatch.setattr(stk.os, "rename", rename)
    how, counts = stk.stack_upper(str(upper), str(tmp_path / "k2"))
    assert how == "copy" and counts["files"] == 1 and counts["whiteouts"] == 1
    assert (tmp_path / "k2" / "etc" / "motd").read_text() == "v2\n" and upper.is_dir()
