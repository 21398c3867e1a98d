# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Unpacking OCI layer tars into layer directories, on the real file system (as root).

Each archive is built here member by member, so hostile ones can be made
exactly. One test mounts a real overlay on the imported layer to show the
kernel reads its whiteout and opaque marker.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _image as img
from ansible_collections.overlayfs.systemd.plugins.module_utils import _unpack as unp

MTIME_NS = 1_700_000_000_123_456_789


def entry(name, data=None, kind=None, mode=0o644, uid=0, gid=0, linkname="", major=0, minor=0, xattrs=None):
    ti = tarfile.TarInfo(name)
    ti.type = kind or (tarfile.REGTYPE if data is not None or kind is None else kind)
    ti.mode, ti.uid, ti.gid = mode, uid, gid
    ti.linkname = linkname
    ti.devmajor, ti.devminor = major, minor
    ti.mtime = MTIME_NS // 10**9
    ti.pax_headers = {"mtime": "%d.%09d" % divmod(MTIME_NS, 10**9)}
    for k, v in (xattrs or {}).items():
        ti.pax_headers["SCHILY.xattr." + k] = v
    payload = data.encode() if isinstance(data, str) else data
    if ti.type == tarfile.REGTYPE:
        ti.size = len(payload or b"")
    return ti, payload


def d(name, mode=0o755, **kw):
    return entry(name, kind=tarfile.DIRTYPE, mode=mode, **kw)


def tar_bytes(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, payload in entries:
            tf.addfile(ti, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def write(tmp_path, entries, compress=False, name="layer.tar"):
    data = tar_bytes(entries)
    blob = gzip.compress(data, mtime=0) if compress else data
    p = tmp_path / name
    p.write_bytes(blob)
    return str(p), img.sha256_of(blob), img.sha256_of(data)


def kiosk_change():
    """What a golden box's session leaves, as an OCI layer."""
    return [
        d("etc"),
        entry("etc/motd", "welcome v2\n", uid=1000, gid=1001, mode=0o640, xattrs={"user.note": "golden"}),
        entry("etc/.wh.old.conf"),
        d("var"),
        d("var/cache", mode=0o750),
        entry("var/cache/.wh..wh..opq"),
        entry("var/cache/fresh", "fresh\n"),
        entry("srv/data", "shared\n"),
        entry("srv/alias", kind=tarfile.LNKTYPE, linkname="srv/data"),
        entry("srv/link", kind=tarfile.SYMTYPE, linkname="../etc/motd"),
        entry("srv/abs", kind=tarfile.SYMTYPE, linkname="/etc/motd"),
        entry("run/fifo", kind=tarfile.FIFOTYPE),
    ]


@pytest.fixture
def parent(tmp_path):
    p = tmp_path / "layers"
    p.mkdir()
    return p


def test_import_makes_whiteouts_opaque_dirs_links_and_metadata(tmp_path, parent):
    src, digest, diff_id = write(tmp_path, kiosk_change())
    path = str(parent / "kiosk-2")
    got = unp.import_layer(src, path)
    assert (got.digest, got.diff_id, got.compression) == (digest, diff_id, "none")
    assert got.counts == {
        "entries": 12,
        "files": 3,
        "directories": 3,
        "symlinks": 2,
        "hardlinks": 1,
        "specials": 1,
        "whiteouts": 1,
        "opaque": 1,
        "bytes": len("welcome v2\nfresh\nshared\n"),
    }
    wh = os.lstat(os.path.join(path, "etc/old.conf"))
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert not os.path.lexists(os.path.join(path, "etc/.wh.old.conf"))
    assert os.getxattr(os.path.join(path, "var/cache"), "trusted.overlay.opaque") == b"y"
    assert not os.path.lexists(os.path.join(path, "var/cache/.wh..wh..opq"))
    assert stat.S_IMODE(os.lstat(os.path.join(path, "var/cache")).st_mode) == 0o750
    motd = os.lstat(os.path.join(path, "etc/motd"))
    assert (motd.st_uid, motd.st_gid, stat.S_IMODE(motd.st_mode)) == (1000, 1001, 0o640)
    assert motd.st_mtime_ns == MTIME_NS
    assert os.getxattr(os.path.join(path, "etc/motd"), "user.note") == b"golden"
    assert os.lstat(os.path.join(path, "srv/data")).st_ino == os.lstat(os.path.join(path, "srv/alias")).st_ino
    assert os.readlink(os.path.join(path, "srv/abs")) == "/etc/motd"
    assert stat.S_ISFIFO(os.lstat(os.path.join(path, "run/fifo")).st_mode)
    # srv/ had no entry of its own: made 0755 like other unpackers do
    assert stat.S_IMODE(os.lstat(os.path.join(path, "srv")).st_mode) == 0o755
    assert unp.read_record(path) == {"digest": digest, "diff_id": diff_id}
    assert sorted(os.listdir(parent)) == ["kiosk-2"]  # no staging sibling left


def test_gzip_digest_and_diff_id_differ_and_both_verify(tmp_path, parent):
    src, digest, diff_id = write(tmp_path, kiosk_change(), compress=True, name="layer.tar.gz")
    assert digest != diff_id
    got = unp.import_layer(src, str(parent / "a"), digest=digest, diff_id=diff_id)
    assert (got.digest, got.diff_id, got.compression) == (digest, diff_id, "gzip")
    # the diff_id alone is accepted as the digest too (the same layer, uncompressed)
    assert unp.import_layer(src, str(parent / "b"), digest=diff_id).digest == digest


@pytest.mark.parametrize("param", ["digest", "diff_id"])
def test_digest_mismatch_leaves_nothing(tmp_path, parent, param):
    src, dummy, dummy2 = write(tmp_path, kiosk_change(), compress=True)
    with pytest.raises(img.LayerError) as info:
        unp.import_layer(src, str(parent / "x"), **{param: "sha256:" + "0" * 64})
    assert info.value.param == param and "nothing was imported" in str(info.value)
    assert os.listdir(parent) == []


HOSTILE = {
    "absolute": [entry("/etc/cron.d/evil", "x")],
    "dotdot": [d("a"), entry("a/../../evil", "x")],
    "hardlink out": [entry("h", kind=tarfile.LNKTYPE, linkname="/etc/shadow")],
    "hardlink to a later file": [entry("h", kind=tarfile.LNKTYPE, linkname="f"), entry("f", "x")],
    "symlink up": [entry("s", kind=tarfile.SYMTYPE, linkname="../../../etc")],
    "through a symlink": [d("sub"), entry("s", kind=tarfile.SYMTYPE, linkname="sub"), entry("s/evil", "x")],
    "block device": [entry("sda", kind=tarfile.BLKTYPE, major=8, minor=0)],
    "char device": [entry("mem", kind=tarfile.CHRTYPE, major=1, minor=1)],
    "setuid": [entry("su", "x", mode=0o4755)],
    "setgid": [entry("wall", "x", mode=0o2755)],
    "capability": [entry("ping", "x", xattrs={"security.capability": "\x01\x00\x00\x02"})],
    "overlay xattr": [d("d", xattrs={"trusted.overlay.redirect": "/etc"})],
    "file and its whiteout": [entry("f", "x"), entry(".wh.f")],
    "dir replaced by a file": [d("etc"), entry("etc", "x")],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("dry", [False, True])
def test_hostile_archive_refused_with_nothing_left(tmp_path, parent, name, dry):
    # good content first, so a half-unpacked directory would exist if the refusal came late
    src, dummy, dummy2 = write(tmp_path, [entry("ok", "fine\n")] + HOSTILE[name])
    outside = set(os.listdir(tmp_path))
    with pytest.raises(img.LayerError) as info:
        unp.import_layer(src, str(parent / "x"), dry=dry)
    assert info.value.param == "src"
    assert os.listdir(parent) == []
    assert set(os.listdir(tmp_path)) == outside
    assert not os.path.lexists("/evil")


def test_setuid_allowed_when_asked(tmp_path, parent):
    src, dummy, dummy2 = write(tmp_path, [entry("su", "x", mode=0o4755)])
    unp.import_layer(src, str(parent / "x"), allow_setuid=True)
    assert stat.S_IMODE(os.lstat(parent / "x" / "su").st_mode) == 0o4755


def test_garbage_and_zstd_refused(tmp_path, parent):
    p = tmp_path / "junk"
    p.write_bytes(gzip.compress(b"not a tar at all" * 100))
    with pytest.raises(img.LayerError, match="not a readable layer tar"):
        unp.import_layer(str(p), str(parent / "x"))
    p.write_bytes(unp.ZSTD_MAGIC + b"\0" * 100)
    with pytest.raises(img.LayerError, match="zstd"):
        unp.import_layer(str(p), str(parent / "x"))
    assert os.listdir(parent) == []


def test_dry_run_reads_and_checks_but_writes_nothing(tmp_path, parent):
    src, digest, diff_id = write(tmp_path, kiosk_change(), compress=True)
    got = unp.import_layer(src, str(parent / "x"), dry=True)
    assert (got.digest, got.diff_id, got.counts["whiteouts"]) == (digest, diff_id, 1)
    assert os.listdir(parent) == []
    assert unp.identify_archive(src) == (digest, diff_id)


def test_reserved_names_skipped_and_reported(tmp_path, parent):
    src, dummy, dummy2 = write(tmp_path, [d("a"), entry("a/.wh..wh.plnk", "")])
    got = unp.import_layer(src, str(parent / "x"))
    assert got.reserved == ["a/.wh..wh.plnk"]
    assert os.listdir(parent / "x" / "a") == []


def test_kernel_reads_the_imported_layer_as_a_lower(tmp_path, parent):
    """lowerdir=layer:base: the whiteout hides base's file, the opaque dir hides base's old content."""
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "old.conf").write_text("old\n")
    (base / "etc" / "motd").write_text("v1\n")
    (base / "var" / "cache").mkdir(parents=True)
    (base / "var" / "cache" / "stale").write_text("stale\n")
    src, dummy, dummy2 = write(tmp_path, kiosk_change())
    layer = str(parent / "k2")
    unp.import_layer(src, layer)
    merged = tmp_path / "merged"
    merged.mkdir()
    r = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s:%s" % (layer, base), str(merged)],
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip("cannot mount an overlay here: %s" % r.stderr.strip())
    try:
        assert (merged / "etc" / "motd").read_text() == "welcome v2\n"
        assert not (merged / "etc" / "old.conf").exists()
        assert sorted(os.listdir(merged / "var" / "cache")) == ["fresh"]
        assert sorted(os.listdir(merged / "etc")) == ["motd"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)
