# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The upper-layer rules, on synthetic upper trees built as root.

Whiteouts are real character devices 0/0 (mknod) and opaque, redirect and
metacopy markers real ``trusted.overlay.*`` xattrs, as the kernel writes
them; these tests run as root (here and in CI).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy as lc
from ansible_collections.overlayfs.systemd.plugins.module_utils import _oci as oci
from ansible_collections.overlayfs.systemd.plugins.module_utils import _upper as up

S_DIR, S_REG, S_CHR, S_LNK, S_FIFO = stat.S_IFDIR, stat.S_IFREG, stat.S_IFCHR, stat.S_IFLNK, stat.S_IFIFO
OPQ = {up.XATTR_OPAQUE: b"y"}


@pytest.mark.parametrize(
    "mode, rdev, size, xattrs, kind",
    [
        (S_CHR | 0o000, 0, 0, {}, up.WHITEOUT),
        (S_CHR | 0o644, os.makedev(1, 3), 0, {}, up.SPECIAL),
        (S_REG | 0o644, 0, 0, {up.XATTR_WHITEOUT: b""}, up.WHITEOUT),
        (S_REG | 0o644, 0, 5, {up.XATTR_WHITEOUT: b""}, up.REGULAR),
        (S_REG | 0o644, 0, 0, {}, up.REGULAR),
        (S_REG | 0o644, 0, 9, {up.XATTR_METACOPY: b""}, up.METACOPY),
        (S_DIR | 0o755, 0, 0, {up.XATTR_OPAQUE: b"y"}, up.OPAQUE_DIR),
        (S_DIR | 0o755, 0, 0, {up.XATTR_OPAQUE: b"y\0"}, up.OPAQUE_DIR),
        (S_DIR | 0o755, 0, 0, {up.XATTR_OPAQUE: b"x"}, up.DIRECTORY),
        (S_DIR | 0o755, 0, 0, {up.XATTR_REDIRECT: b"/a/b"}, up.REDIRECT_DIR),
        (S_DIR | 0o755, 0, 0, {"user.x": b"y"}, up.DIRECTORY),
        (S_LNK | 0o777, 0, 4, {}, up.SYMLINK),
        (S_FIFO | 0o644, 0, 0, {}, up.SPECIAL),
    ],
)
def test_classify(mode, rdev, size, xattrs, kind):
    assert up.classify(mode, rdev, size, xattrs) == kind


@pytest.mark.parametrize(
    "parent, value, target",
    [
        ("a/b", b"/x/y", "x/y"),
        ("a/b", b"old", "a/b/old"),
        ("", b"old\0", "old"),
        ("a", b"/top", "top"),
    ],
)
def test_redirect_target(parent, value, target):
    assert up.redirect_target(parent, value) == target


@pytest.mark.parametrize(
    "rel, whiteout, opaque",
    [
        ("etc/motd", "etc/.wh.motd", "etc/motd/.wh..wh..opq"),
        ("top", ".wh.top", "top/.wh..wh..opq"),
        ("a/b/c d", "a/b/.wh.c d", "a/b/c d/.wh..wh..opq"),
    ],
)
def test_oci_names(rel, whiteout, opaque):
    assert up.oci_whiteout_name(rel) == whiteout
    assert up.oci_opaque_name(rel) == opaque


@pytest.mark.parametrize(
    "name, value, private",
    [("trusted.overlay.opaque", b"y", True), ("trusted.overlay.origin", b"", True), ("user.a", b"", False)],
)
def test_overlay_xattrs_are_private(name, value, private):
    assert up.is_overlay_xattr(name) is private
    assert (name in up.public_xattrs({name: value})) is not private


# ---------------------------------------------------------------------------
# Synthetic layers
# ---------------------------------------------------------------------------


def write(path, data: bytes | str = b"", mode=0o644, mtime_ns=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def whiteout(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def mkdir(path, xattrs=None, mode=0o755):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    for k, v in (xattrs or {}).items():
        os.setxattr(path, k, v)


T0 = 1_700_000_000_123_456_789


@pytest.fixture
def layers(tmp_path):
    """Two lowers and an upper as overlayfs leaves them after a session of changes."""
    l1, l2, upper = tmp_path / "l1", tmp_path / "l2", tmp_path / "upper"
    for d in (l1, l2, upper):
        d.mkdir()
    # lower 2 (bottom)
    write(str(l2 / "etc/motd"), "hello\n", mtime_ns=T0)
    write(str(l2 / "etc/gone.conf"), "bye\n")
    write(str(l2 / "etc/hidden-by-l1"), "old\n")
    write(str(l2 / "cache/a"), "a\n")
    write(str(l2 / "cache/b"), "b\n")
    write(str(l2 / "bin/tool"), "#!/bin/sh\n", mode=0o755, mtime_ns=T0)
    write(str(l2 / "same.txt"), "same\n", mtime_ns=T0)
    write(str(l2 / "moved/inner"), "inner\n")
    write(str(l2 / "was-file"), "f\n")
    os.symlink("etc/motd", str(l2 / "link"))
    # lower 1 deletes a file of lower 2 itself (a committed layer keeps no whiteouts, an imported one may)
    whiteout(str(l1 / "etc/hidden-by-l1"))
    write(str(l1 / "etc/l1only"), "one\n")
    # upper
    mkdir(str(upper / "etc"))
    write(str(upper / "etc/motd"), "hello, changed\n")  # data
    whiteout(str(upper / "etc/gone.conf"))  # deleted
    write(str(upper / "etc/hidden-by-l1"), "new\n")  # lower entry is whited out in l1: added
    write(str(upper / "etc/xwh"), b"")  # xattr whiteout (Linux 6.7+ form)
    os.setxattr(str(upper / "etc/xwh"), up.XATTR_WHITEOUT, b"")
    mkdir(str(upper / "cache"), OPQ)  # replaced directory
    write(str(upper / "cache/c"), "c\n")
    write(str(upper / "bin/tool"), "#!/bin/sh\n", mode=0o700, mtime_ns=T0)  # metadata only
    write(str(upper / "same.txt"), "same\n", mtime_ns=T0)  # copied up, unchanged
    write(str(upper / "new/deep/file.bin"), b"\0" * 1000)  # added, with parents
    mkdir(str(upper / "renamed"), {up.XATTR_REDIRECT: b"/moved"})  # redirect_dir
    write(str(upper / "renamed/inner2"), "x\n")
    write(str(upper / "meta"), b"", mode=0o600)  # metacopy
    os.setxattr(str(upper / "meta"), up.XATTR_METACOPY, b"")
    write(str(l2 / "meta"), "data in lower\n")
    os.symlink("etc/other", str(upper / "link"))  # symlink retargeted
    mkdir(str(upper / "was-file"))  # a file replaced by a directory
    return str(upper), [str(l1), str(l2)]


def test_inspect_reports_each_kind(layers):
    upper, lowers = layers
    rep = up.inspect_upper(upper, lowers)
    # cache/c sits in an opaque directory: the lower cache/a and cache/b are gone, c is new
    assert rep.added == ["cache/c", "etc/hidden-by-l1", "new", "new/deep", "new/deep/file.bin", "renamed/inner2"]
    assert rep.deleted == ["etc/gone.conf", "etc/xwh"]
    assert rep.opaque == ["cache"]
    assert rep.redirects == [{"path": "renamed", "from": "moved"}]
    assert rep.metacopy == ["meta"]
    assert rep.modified == [
        {"path": "bin/tool", "change": "metadata"},
        {"path": "etc/motd", "change": "data"},
        {"path": "link", "change": "data"},
        {"path": "meta", "change": "metadata"},
        {"path": "was-file", "change": "type"},
    ]
    res = rep.as_result()
    assert res["counts"] == {"added": 6, "modified": 5, "deleted": 2, "opaque": 1, "entries": 18}
    assert res["bytes"] == {"added": 2 + 4 + 1000 + 2, "modified": len("hello, changed\n")}
    text = rep.summary()
    assert "- etc/gone.conf\n" in text and "! cache (opaque" in text and "~ etc/motd (data)\n" in text


def test_inspect_empty_and_unchanged(tmp_path):
    lower, upper = tmp_path / "l", tmp_path / "u"
    write(str(lower / "a"), "a\n", mtime_ns=T0)
    write(str(upper / "a"), "a\n", mtime_ns=T0)
    rep = up.inspect_upper(str(upper), [str(lower)])
    assert rep.added == rep.deleted == rep.opaque == rep.modified == [] and rep.entries == 1
    os.unlink(str(upper / "a"))
    assert up.inspect_upper(str(upper), [str(lower)]).empty


def test_inspect_opaque_lower_stops_lookup(tmp_path):
    """An opaque directory in a lower hides the lowers below it."""
    l1, l2, upper = tmp_path / "l1", tmp_path / "l2", tmp_path / "u"
    mkdir(str(l1 / "d"), OPQ)
    write(str(l2 / "d/x"), "x\n")
    write(str(upper / "d/x"), "x\n")
    mkdir(str(upper))
    rep = up.inspect_upper(str(upper), [str(l1), str(l2)])
    assert rep.added == ["d/x"]


def test_lower_entry_and_dirs(layers):
    upper, lowers = layers
    path, st, dirs = up.lower_entry(lowers, "etc")
    assert path == os.path.join(lowers[0], "etc") and stat.S_ISDIR(st.st_mode)
    assert dirs == [os.path.join(lowers[0], "etc"), os.path.join(lowers[1], "etc")]
    assert up.lower_entry(dirs, "hidden-by-l1")[0] is None
    assert up.lower_dirs_for(lowers, "moved") == [os.path.join(lowers[1], "moved")]
    assert up.lower_dirs_for(lowers, "same.txt") == []


# ---------------------------------------------------------------------------
# OCI layer tar
# ---------------------------------------------------------------------------


@pytest.fixture
def plain_layers(tmp_path):
    """An upper without redirect/metacopy entries (what a default overlay writes)."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    write(str(lower / "etc/motd"), "hello\n")
    write(str(lower / "etc/gone.conf"), "bye\n")
    write(str(lower / "cache/a"), "a\n")
    write(str(lower / "keep/k"), "k\n")
    mkdir(str(upper / "etc"))
    write(str(upper / "etc/motd"), "hello, changed\n", mtime_ns=T0)
    os.setxattr(str(upper / "etc/motd"), "user.origin", b"kiosk\xff\x00bin")
    os.setxattr(str(upper / "etc/motd"), "trusted.overlay.origin", b"\x00\x01")
    whiteout(str(upper / "etc/gone.conf"))
    mkdir(str(upper / "cache"), OPQ)
    write(str(upper / "cache/new"), "n\n", mode=0o4755)
    os.chown(str(upper / "cache/new"), 1234, 5678)
    os.chmod(str(upper / "cache/new"), 0o4755)
    write(str(upper / "hard1"), "linked\n")
    os.link(str(upper / "hard1"), str(upper / "hard2"))
    os.symlink("etc/motd", str(upper / "sym"))
    os.mknod(str(upper / "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(str(upper / "fifo"), 0o640)
    return str(upper), str(lower)


def read_members(data: bytes, gz: bool = False) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz" if gz else "r:") as tf:
        return {m.name.rstrip("/"): m for m in tf.getmembers()}


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_oci_layer_entries(plain_layers, compression):
    upper, dummy = plain_layers
    buf = io.BytesIO()
    stats = oci.write_oci_layer(upper, buf, compression)
    data = buf.getvalue()
    if compression == "gzip":
        assert data[:2] == b"\x1f\x8b"
        assert gzip.decompress(data)[:100]
    members = read_members(data, compression == "gzip")
    assert set(members) == {
        "etc",
        "etc/motd",
        "etc/.wh.gone.conf",
        "cache",
        "cache/.wh..wh..opq",
        "cache/new",
        "hard1",
        "hard2",
        "sym",
        "null",
        "fifo",
    }
    assert (stats.entries, stats.whiteouts, stats.opaque) == (11, 1, 1)
    motd = members["etc/motd"]
    assert motd.pax_headers["mtime"] == "%d.%09d" % divmod(T0, 10**9)
    assert motd.pax_headers["SCHILY.xattr.user.origin"].encode("utf-8", "surrogateescape") == b"kiosk\xff\x00bin"
    assert not [k for m in members.values() for k in m.pax_headers if "trusted.overlay" in k]
    new = members["cache/new"]
    assert (new.uid, new.gid, new.mode, new.uname) == (1234, 5678, 0o4755, "")
    assert members["hard2"].islnk() and members["hard2"].linkname == "hard1"
    assert members["sym"].issym() and members["sym"].linkname == "etc/motd"
    assert members["null"].ischr() and (members["null"].devmajor, members["null"].devminor) == (1, 3)
    assert members["fifo"].isfifo() and members["fifo"].mode == 0o640
    assert members["etc/.wh.gone.conf"].size == 0


def apply_oci_layer(data: bytes, root: str) -> None:
    """A small OCI layer applier: honour .wh. entries, then extract the rest."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
        members = tf.getmembers()
        for m in members:
            d, dummy, name = m.name.rstrip("/").rpartition("/")
            target_dir = os.path.join(root, d)
            if name == up.OCI_OPAQUE_MARKER:
                for child in os.listdir(target_dir):
                    p = os.path.join(target_dir, child)
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
            elif name.startswith(up.OCI_WHITEOUT_PREFIX):
                p = os.path.join(target_dir, name[len(up.OCI_WHITEOUT_PREFIX) :])
                shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        rest = [m for m in members if not m.name.rstrip("/").rpartition("/")[2].startswith(up.OCI_WHITEOUT_PREFIX)]
        for m in rest:
            p = os.path.join(root, m.name.rstrip("/"))
            if m.isdir() and os.path.isdir(p):
                continue
            if os.path.lexists(p) and not os.path.isdir(p):
                os.unlink(p)
        tf.extractall(root, members=rest, numeric_owner=True, filter="fully_trusted")
        # tarfile does not restore PAX xattrs; an applier has to
        for m in rest:
            for key, value in m.pax_headers.items():
                if key.startswith("SCHILY.xattr."):
                    p = os.path.join(root, m.name.rstrip("/"))
                    os.setxattr(p, key[13:], value.encode("utf-8", "surrogateescape"), follow_symlinks=False)


def snapshot(root: str) -> dict[str, tuple]:
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(d, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(open(p, "rb").read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            else:
                content = st.st_rdev
            out[os.path.relpath(p, root)] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), content)
    return out


def test_oci_layer_round_trip(plain_layers, tmp_path):
    """Applying the layer onto the lower gives the merged view overlayfs shows."""
    upper, lower = plain_layers
    buf = io.BytesIO()
    oci.write_oci_layer(upper, buf, "gzip")
    scratch = str(tmp_path / "scratch")
    shutil.copytree(lower, scratch, symlinks=True)
    apply_oci_layer(buf.getvalue(), scratch)
    got = snapshot(scratch)
    assert "etc/gone.conf" not in got and "cache/a" not in got
    assert set(got) == {"etc", "etc/motd", "cache", "cache/new", "keep", "keep/k", "hard1", "hard2", "sym"} | {
        "null",
        "fifo",
    }
    assert open(os.path.join(scratch, "etc/motd")).read() == "hello, changed\n"
    assert os.getxattr(os.path.join(scratch, "etc/motd"), "user.origin") == b"kiosk\xff\x00bin"
    assert os.stat(os.path.join(scratch, "hard1")).st_ino == os.stat(os.path.join(scratch, "hard2")).st_ino


@pytest.mark.parametrize("xattr, what", [(up.XATTR_METACOPY, "metacopy"), (up.XATTR_REDIRECT, "redirected")])
def test_oci_layer_refuses_lower_references(tmp_path, xattr, what):
    upper = tmp_path / "u"
    if xattr == up.XATTR_METACOPY:
        write(str(upper / "f"), b"")
        os.setxattr(str(upper / "f"), xattr, b"")
    else:
        mkdir(str(upper / "d"), {xattr: b"/old"})
    with pytest.raises(up.UpperError, match=what):
        oci.write_oci_layer(str(upper), io.BytesIO())


def test_oci_layer_unknown_compression(tmp_path):
    with pytest.raises(up.UpperError, match="compression"):
        oci.write_oci_layer(str(tmp_path), io.BytesIO(), "zstd")


# ---------------------------------------------------------------------------
# Commit copy
# ---------------------------------------------------------------------------


def meta(path: str) -> tuple:
    st = os.lstat(path)
    xattrs = {k: v for k, v in up.read_xattrs(path).items() if not k.startswith("security.")}
    return (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_rdev, xattrs)


def test_copy_tree_preserves_everything(tmp_path):
    src, dest = tmp_path / "merged", str(tmp_path / "layer")
    write(str(src / "d/file"), "data\n" * 1000, mode=0o4750, mtime_ns=T0)
    os.chown(str(src / "d/file"), 1001, 1002)
    os.chmod(str(src / "d/file"), 0o4750)
    os.setxattr(str(src / "d/file"), "user.k", b"v\x00\xff")
    os.setxattr(str(src / "d/file"), "trusted.overlay.origin", b"x")
    os.setxattr(str(src / "d/file"), "trusted.app", b"t")
    os.utime(str(src / "d/file"), ns=(T0 - 5, T0))
    os.link(str(src / "d/file"), str(src / "hard"))
    os.symlink("d/file", str(src / "sym"))
    os.lchown(str(src / "sym"), 1003, 1004)
    os.utime(str(src / "sym"), ns=(T0, T0 + 7), follow_symlinks=False)
    os.mknod(str(src / "null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    os.mkfifo(str(src / "fifo"), 0o620)
    mkdir(str(src / "d/empty"), mode=0o1777)
    mkdir(str(src / "d"), {"user.dir": b"1", "trusted.overlay.opaque": b"y"}, mode=0o750)
    for d in ("d/empty", "d", ""):
        os.utime(str(src / d), ns=(T0 + 1, T0 + 2))
    stats = lc.copy_tree(str(src), dest)
    assert stats == {"files": 1, "directories": 2, "symlinks": 1, "hardlinks": 1, "specials": 2, "bytes": 5000}
    for rel in ("d/file", "sym", "null", "fifo", "d/empty", "d", "hard"):
        a, b = meta(str(src / rel)), meta(os.path.join(dest, rel))
        want_x = {k: v for k, v in a[5].items() if not k.startswith("trusted.overlay.")}
        assert b[:5] == a[:5], rel
        assert b[5] == want_x, rel
    assert meta(dest)[:4] == meta(str(src))[:4]
    assert os.lstat(os.path.join(dest, "d/file")).st_atime_ns == T0 - 5
    assert os.stat(os.path.join(dest, "hard")).st_ino == os.stat(os.path.join(dest, "d/file")).st_ino
    assert os.readlink(os.path.join(dest, "sym")) == "d/file"
    assert open(os.path.join(dest, "d/file")).read() == "data\n" * 1000
    assert "trusted.overlay.opaque" not in up.read_xattrs(os.path.join(dest, "d"))


def test_copy_tree_refuses_existing_dest(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "dest").mkdir()
    with pytest.raises(FileExistsError):
        lc.copy_tree(str(tmp_path / "src"), str(tmp_path / "dest"))


# ---------------------------------------------------------------------------
# Emptying layers
# ---------------------------------------------------------------------------


def test_swap_empty_and_restore(tmp_path):
    d = tmp_path / "upper"
    write(str(d / "x/y"), "y\n")
    os.chown(str(d), 1001, 1002)
    os.chmod(str(d), 0o751)
    os.setxattr(str(d), "trusted.overlay.origin", b"o")
    aside = lc.swap_empty(str(d), "discard")
    assert os.listdir(str(d)) == [] and os.path.isfile(os.path.join(aside, "x/y"))
    st = os.lstat(str(d))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1001, 1002, 0o751)
    assert up.read_xattrs(str(d)) == {} or "trusted.overlay.origin" not in up.read_xattrs(str(d))
    assert os.path.dirname(aside) == str(tmp_path) and ".upper.overlayfs-discard-" in aside
    lc.restore_swap(str(d), aside)
    assert open(str(d / "x/y")).read() == "y\n" and not os.path.exists(aside)


def test_swap_empty_with_template(tmp_path):
    d, tpl = tmp_path / "upper", tmp_path / "tpl"
    write(str(d / "f"), "f")
    mkdir(str(tpl), {"user.look": b"same", "trusted.overlay.uuid": b"u"}, mode=0o705)
    os.utime(str(tpl), ns=(T0, T0))
    aside = lc.swap_empty(str(d), "commit", template=str(tpl))
    st = os.lstat(str(d))
    assert stat.S_IMODE(st.st_mode) == 0o705 and st.st_mtime_ns == T0
    assert up.read_xattrs(str(d)).get("user.look") == b"same"
    assert "trusted.overlay.uuid" not in up.read_xattrs(str(d))
    lc.remove_tree(aside)
    assert not os.path.exists(aside)


@pytest.mark.parametrize(
    "dest, problem",
    [
        ("/srv/kiosk/layer", "the mount point /srv/kiosk"),
        ("/var/lib/overlayfs/x/upper/l", "upperdir"),
        ("/opt/base/new", "lowerdir /opt/base"),
        ("/opt", "lowerdir /opt/base"),
        ("/var/lib/overlayfs/layers/k1", None),
    ],
)
def test_dest_problems(dest, problem):
    layers = [
        ("the mount point", "/srv/kiosk"),
        ("upperdir", "/var/lib/overlayfs/x/upper"),
        ("workdir", "/var/lib/overlayfs/x/work"),
        ("lowerdir", "/opt/base"),
    ]
    problems = lc.dest_problems(dest, layers)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems)


def test_mask_lowers_hides_what_the_merged_view_dropped(tmp_path):
    """A full copy on top of the old lowers: whiteouts exactly where a lower entry would come back."""
    l1, l2, dest = tmp_path / "l1", tmp_path / "l2", tmp_path / "dest"
    write(str(l2 / "gone.txt"), "g\n")
    write(str(l2 / "dir/old"), "o\n")
    write(str(l2 / "dir/keep"), "k\n")
    write(str(l2 / "hidden-in-l1"), "h\n")
    whiteout(str(l1 / "hidden-in-l1"))
    write(str(l1 / "dir/l1file"), "1\n")
    write(str(l2 / "was-dir/inner"), "i\n")
    write(str(dest / "dir/keep"), "k\n")
    write(str(dest / "dir/new"), "n\n")
    write(str(dest / "was-dir"), "now a file\n")
    os.utime(str(dest / "dir"), ns=(T0, T0))
    masked = lc.mask_lowers(str(dest), [str(l1), str(l2)])
    assert masked == ["dir/l1file", "dir/old", "gone.txt"]
    for rel in masked:
        st = os.lstat(str(dest / rel))
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.lstat(str(dest / "dir")).st_mtime_ns == T0
    assert up.read_xattrs(str(dest / "dir")) == {} or not any(
        k.startswith("trusted.overlay") for k in up.read_xattrs(str(dest / "dir"))
    )
    assert lc.mask_lowers(str(dest), []) == []
