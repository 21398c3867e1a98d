# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The OCI layer rules: digests, member checks, whiteout names, reproducible entries, image archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from ansible_collections.overlayfs.systemd.plugins.module_utils import _image as img

HEX = "a" * 64


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, None),
        ("sha256:" + HEX, "sha256:" + HEX),
        (HEX, "sha256:" + HEX),
        ("SHA256:" + HEX.upper(), "sha256:" + HEX),
    ],
)
def test_parse_digest_accepts(value, expected):
    assert img.parse_digest(value, "digest") == expected


@pytest.mark.parametrize("value", ["sha256:abc", "md5:" + HEX, "sha256:" + "g" * 64, ""])
def test_parse_digest_refuses_and_names_the_parameter(value):
    with pytest.raises(img.LayerError) as info:
        img.parse_digest(value, "diff_id")
    assert info.value.param == "diff_id"
    assert "sha256:<64 hex digits>" in str(info.value)


def test_hashing_reader_hashes_everything_read_and_drained():
    data = b"x" * 3_000_000
    r = img.HashingReader(io.BytesIO(data))
    assert r.read(10) == b"x" * 10
    r.drain()
    assert r.size == len(data)
    assert r.digest == "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "name, expected",
    [
        ("a/b", "a/b"),
        ("./a//b/", "a/b"),
        (".", ""),
        ("/etc/passwd", None),
        ("../x", None),
        ("a/../../x", None),
        ("a/..", None),
        ("a\0b", None),
    ],
)
def test_clean_name(name, expected):
    assert img.clean_name(name) == expected


@pytest.mark.parametrize(
    "rel, target, escapes",
    [
        ("a/link", "../b", False),
        ("a/link", "../../b", True),
        ("link", "..", True),
        ("a/b/link", "../../c", False),
        ("etc/localtime", "/usr/share/zoneinfo/UTC", False),
        ("a/link", "x/../../..", True),
        ("a/link", "./b", False),
    ],
)
def test_symlink_escapes(rel, target, escapes):
    assert img.symlink_escapes(rel, target) is escapes


@pytest.mark.parametrize(
    "rel, expected",
    [
        ("etc/.wh.motd", ("whiteout", "etc/motd")),
        (".wh.top", ("whiteout", "top")),
        ("var/cache/.wh..wh..opq", ("opaque", "var/cache")),
        (".wh..wh..opq", ("opaque", "")),
        ("x/.wh..wh.plnk", ("reserved", "x/.wh..wh.plnk")),
        ("etc/motd", None),
        ("etc/a.wh.b", None),
    ],
)
def test_whiteout_target(rel, expected):
    assert img.whiteout_target(rel) == expected


def member(name, kind=tarfile.REGTYPE, mode=0o644, linkname="", major=0, minor=0, pax=None):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.linkname = linkname
    ti.devmajor, ti.devminor = major, minor
    ti.pax_headers = pax or {}
    return ti


@pytest.mark.parametrize(
    "ti, allow_setuid, fragment",
    [
        (member("/etc/shadow"), False, "leaves the layer"),
        (member("a/../../etc/shadow"), False, "leaves the layer"),
        (member("h", tarfile.LNKTYPE, linkname="/etc/shadow"), False, "points out of the layer"),
        (member("h", tarfile.LNKTYPE, linkname="../outside"), False, "points out of the layer"),
        (member("a/s", tarfile.SYMTYPE, linkname="../../etc"), False, "above the layer root"),
        (member("dev/sda", tarfile.BLKTYPE, major=8, minor=0), False, "block device 8:0"),
        (member("dev/null", tarfile.CHRTYPE, major=1, minor=3), False, "character device 1:3"),
        (member("bin/su", mode=0o4755), False, "set-uid"),
        (member("bin/wall", mode=0o2755), False, "set-uid/set-gid"),
        (member("bin/ping", pax={"SCHILY.xattr.security.capability": "\x01"}), False, "file capabilities"),
        (member("d", pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"}), True, "trusted.overlay.redirect"),
        (member("d", pax={"SCHILY.xattr.user.overlay.metacopy": ""}), True, "user.overlay.metacopy"),
        (member("x", b"V"), False, "tar type"),
        (member("a/.wh."), False, "whiteout without a name"),
    ],
)
def test_member_problem_refuses(ti, allow_setuid, fragment):
    problem = img.member_problem(ti, allow_setuid=allow_setuid)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    "ti, allow_setuid",
    [
        (member("etc/motd"), False),
        (member("./etc/", tarfile.DIRTYPE, mode=0o755), False),
        (member("tmp", tarfile.DIRTYPE, mode=0o1777), False),
        (member("usr/local", tarfile.DIRTYPE, mode=0o2775), False),
        (member("a/h", tarfile.LNKTYPE, linkname="a/f"), False),
        (member("etc/localtime", tarfile.SYMTYPE, linkname="/usr/share/zoneinfo/UTC"), False),
        (member("gone", tarfile.CHRTYPE, major=0, minor=0), False),
        (member("run/fifo", tarfile.FIFOTYPE), False),
        (member("bin/su", mode=0o4755), True),
        (member("f", pax={"SCHILY.xattr.user.note": "hi"}), False),
    ],
)
def test_member_problem_accepts(ti, allow_setuid):
    assert img.member_problem(ti, allow_setuid=allow_setuid) is None


def test_clamp_mtime():
    assert img.clamp_mtime(5_000_000_000, None) == 5_000_000_000
    assert img.clamp_mtime(5_000_000_000, 3) == 3_000_000_000
    assert img.clamp_mtime(2_000_000_000, 3) == 2_000_000_000


def test_normalise_tarinfo_clamps_and_drops_names():
    ti = member("f", pax={"mtime": "1700000000.123456789", "atime": "1", "SCHILY.xattr.user.a": "b"})
    ti.uname, ti.gname = "root", "root"
    ti.mtime = 1700000000
    out = img.normalise_tarinfo(ti, 1000)
    assert (out.uname, out.gname) == ("", "")
    assert out.mtime == 1000
    assert out.pax_headers == {"SCHILY.xattr.user.a": "b", "mtime": "1000.000000000"}
    kept = img.normalise_tarinfo(member("g", pax={"mtime": "5.5"}), None)
    assert kept.pax_headers == {"mtime": "5.5"}


def blob(tmp_path, name, payload: bytes, compress=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(payload)
        tf.addfile(ti, io.BytesIO(payload))
    tar = buf.getvalue()
    data = gzip.compress(tar, mtime=0) if compress else tar
    p = tmp_path / (name + (".tgz" if compress else ".tar"))
    p.write_bytes(data)
    return img.LayerBlob(str(p), img.sha256_of(data), img.sha256_of(tar), len(data), gzip=compress)


def read_archive(data: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            if m.isfile():
                out[m.name] = tf.extractfile(m).read()
    return out


def test_image_archive_is_a_docker_and_oci_image(tmp_path):
    base = blob(tmp_path, "base", b"base\n")
    top = blob(tmp_path, "top", b"top\n", compress=True)
    out = io.BytesIO()
    ident = img.write_image_archive(out, [base, top], repo_tag="overlayfs/kiosk:2", cmd=["/bin/sh"])
    files = read_archive(out.getvalue())
    manifest = json.loads(files["manifest.json"])
    assert manifest[0]["RepoTags"] == ["overlayfs/kiosk:2"]
    assert manifest[0]["Layers"] == ["blobs/sha256/" + img.digest_hex(b.digest) for b in (base, top)]
    config_bytes = files[manifest[0]["Config"]]
    assert img.sha256_of(config_bytes) == ident["image_id"]
    config = json.loads(config_bytes)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [base.diff_id, top.diff_id]}
    assert config["config"] == {"Cmd": ["/bin/sh"]}
    # every blob is stored under its own digest
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert img.sha256_of(data) == "sha256:" + name.rpartition("/")[2]
    index = json.loads(files["index.json"])
    oci_manifest = json.loads(files["blobs/sha256/" + img.digest_hex(index["manifests"][0]["digest"])])
    assert [layer["mediaType"] for layer in oci_manifest["layers"]] == [img.MEDIA_LAYER_TAR, img.MEDIA_LAYER_GZIP]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}


def test_image_archive_is_reproducible_and_stores_a_repeated_blob_once(tmp_path):
    base = blob(tmp_path, "base", b"base\n")
    a, b = io.BytesIO(), io.BytesIO()
    img.write_image_archive(a, [base, base], repo_tag="x:1")
    img.write_image_archive(b, [base, base], repo_tag="x:1")
    assert a.getvalue() == b.getvalue()
    names = tarfile.open(fileobj=io.BytesIO(a.getvalue())).getnames()
    assert names.count("blobs/sha256/" + img.digest_hex(base.digest)) == 1


def test_image_archive_needs_a_layer():
    with pytest.raises(img.LayerError):
        img.write_image_archive(io.BytesIO(), [], repo_tag="x:1")


@pytest.mark.parametrize(
    "tag, ok", [("kiosk:2", True), ("overlayfs/kiosk:v2.1", True), ("Kiosk:2", False), ("kiosk", False)]
)
def test_check_repo_tag(tag, ok):
    if ok:
        assert img.check_repo_tag(tag, "image_tag") == tag
    else:
        with pytest.raises(img.LayerError):
            img.check_repo_tag(tag, "image_tag")


def test_layer_record_round_trip():
    raw = img.layer_record("sha256:" + HEX, "sha256:" + "b" * 64)
    assert img.parse_layer_record(raw) == {"digest": "sha256:" + HEX, "diff_id": "sha256:" + "b" * 64}
    assert img.parse_layer_record(b"not json") is None
    assert img.parse_layer_record(b'{"digest": "x"}') is None
    assert img.parse_layer_record(None) is None


@pytest.mark.parametrize(
    "pax, mtime, expected",
    [
        ({"mtime": "1700000000.123456789"}, 0, 1_700_000_000_123_456_789),
        ({"mtime": "5.5"}, 0, 5_500_000_000),
        ({"mtime": "7"}, 0, 7_000_000_000),
        ({}, 9, 9_000_000_000),
    ],
)
def test_mtime_ns_exact(pax, mtime, expected):
    ti = member("f", pax=pax)
    ti.mtime = mtime
    assert img.mtime_ns(ti) == expected
