# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The layer module end to end against the fake host of ``fakehost.py``.

Archives are unpacked for real (as root); overlays that use a layer are set
up with the mount module, whose fake systemd writes mountinfo.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from functools import partial

import pytest
from fakehost import expect_failed, expect_ok

from ansible_collections.overlayfs.systemd.plugins.module_utils import _image as img
from ansible_collections.overlayfs.systemd.plugins.modules import layer as mod
from ansible_collections.overlayfs.systemd.plugins.modules import mount as mount_mod

ok = partial(expect_ok, mod.main)
failed = partial(expect_failed, mod.main)


def tar_of(members: list[tuple[str, bytes | None, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode in members:
            ti = tarfile.TarInfo(name)
            ti.mode = mode
            if data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


CHANGE = [("etc", None, 0o755), ("etc/motd", b"v2\n", 0o644), ("etc/.wh.old", b"", 0o644), ("file.txt", b"x\n", 0o644)]


@pytest.fixture
def archive(host):
    data = gzip.compress(tar_of(CHANGE), mtime=0)
    p = host.path("incoming/k2.tar.gz")
    os.makedirs(os.path.dirname(p))
    with open(p, "wb") as fh:
        fh.write(data)
    return p, img.sha256_of(data), img.sha256_of(tar_of(CHANGE))


def layer_path(host, name="k2"):
    return host.path("var/lib/overlayfs/layers/" + name)


def test_present_check_mode_diff_then_apply_then_again(host, archive):
    src, digest, diff_id = archive
    path = layer_path(host)
    args = {"path": path, "src": src, "digest": digest}
    r = ok(args, check_mode=True, diff=True)
    assert r["changed"] and (r["digest"], r["diff_id"], r["compression"]) == (digest, diff_id, "gzip")
    assert r["counts"]["whiteouts"] == 1
    assert r["diff"]["before"] == "" and "digest: %s\n" % digest in r["diff"]["after"]
    assert not os.path.lexists(os.path.dirname(path))  # check mode made not even the parent
    r = ok(args)
    assert r["changed"]
    assert stat.S_ISCHR(os.lstat(os.path.join(path, "etc/old")).st_mode)
    assert open(os.path.join(path, "etc/motd"), "rb").read() == b"v2\n"
    r = ok(args)
    assert not r["changed"] and r["digest"] == digest
    # without any digest given, the archive is identified by reading it (not unpacked again)
    assert not ok({"path": path, "src": src})["changed"]
    assert not ok({"path": path, "src": src, "diff_id": diff_id}, check_mode=True)["changed"]


def test_another_archive_at_an_existing_layer_is_refused(host, archive):
    src, digest, dummy = archive
    path = layer_path(host)
    ok({"path": path, "src": src})
    other = host.path("incoming/other.tar")
    with open(other, "wb") as fh:
        fh.write(tar_of([("new", b"n\n", 0o644)]))
    r = failed({"path": path, "src": other})
    assert r["param"] == "path" and "never changes in place" in r["msg"] and digest in r["msg"]
    assert not os.path.lexists(os.path.join(path, "new"))


def test_digest_mismatch_fails_also_in_check_mode_and_leaves_nothing(host, archive):
    src, dummy, dummy2 = archive
    path = layer_path(host)
    for check in (True, False):
        r = failed({"path": path, "src": src, "digest": "sha256:" + "0" * 64}, check_mode=check)
        assert r["param"] == "digest" and "mismatch" in r["msg"]
        assert not os.path.lexists(path)
    assert os.listdir(os.path.dirname(path)) == []


def test_hostile_archive_fails_with_hint(host):
    src = host.path("incoming/evil.tar")
    os.makedirs(os.path.dirname(src))
    with open(src, "wb") as fh:
        fh.write(tar_of([("ok", b"fine\n", 0o644), ("../../../etc/cron.d/evil", b"x", 0o644)]))
    r = failed({"path": layer_path(host), "src": src})
    assert r["param"] == "src" and "leaves the layer" in r["msg"] and "nothing was unpacked" in r["hint"]
    assert os.listdir(os.path.dirname(layer_path(host))) == []


def test_bad_parameters_are_named(host, archive):
    src, dummy, dummy2 = archive
    assert failed({"path": layer_path(host), "src": src, "digest": "abc"})["param"] == "digest"
    assert failed({"path": layer_path(host), "src": src, "diff_id": "sha256:zz"})["param"] == "diff_id"
    assert "src" in failed({"path": layer_path(host)})["msg"]
    os.makedirs(layer_path(host, "handmade"))
    r = failed({"path": layer_path(host, "handmade"), "src": src})
    assert r["param"] == "path" and "not imported" in r["msg"]
    r = failed({"path": layer_path(host, "handmade"), "state": "absent"})
    assert "nothing was removed" in r["msg"] and os.path.isdir(layer_path(host, "handmade"))


def test_layer_on_an_overlay_is_refused_before_unpacking(host, archive):
    src, dummy, dummy2 = archive
    host.add_mount("90 22 0:90 / %s rw - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c" % host.path("ovl"))
    r = failed({"path": host.path("ovl/layers/k2"), "src": src})
    assert r["param"] == "path" and "overlayfs" in r["msg"] and "another file system" in r["msg"]
    assert not os.path.lexists(host.path("ovl/layers"))


def test_absent_refused_while_a_managed_overlay_uses_it_then_removed(host, archive):
    src, dummy, dummy2 = archive
    path = layer_path(host)
    ok({"path": path, "src": src})
    overlay = {"path": host.path("srv/app"), "lowerdir": [path, host.path("opt/app/base")]}
    unit = expect_ok(mount_mod.main, overlay)["unit"]
    r = failed({"path": path, "state": "absent"})
    assert unit in r["msg"] and "nothing was removed" in r["msg"]
    assert {(u["unit"], u["source"], u["as"]) for u in r["users"]} == {
        (unit, "unit", "lowerdir"),
        ("", "mountinfo", "lowerdir"),
    }
    assert failed({"path": path, "state": "absent"}, check_mode=True)["users"]
    assert os.path.isdir(path)
    # roll back: the overlay goes back to its old stack, then the layer can go
    expect_ok(mount_mod.main, dict(overlay, lowerdir=[host.path("opt/app/v2"), host.path("opt/app/base")]))
    r = ok({"path": path, "state": "absent"}, check_mode=True, diff=True)
    assert r["changed"] and "digest: " in r["diff"]["before"] and os.path.isdir(path)
    r = ok({"path": path, "state": "absent"})
    assert r["changed"] and not os.path.lexists(path)
    assert os.listdir(os.path.dirname(path)) == []
    assert not ok({"path": path, "state": "absent"})["changed"]
