# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Layer directories: records, where they may live, who uses them, removal, a stack as an image."""

from __future__ import annotations

import json
import os
import stat
import tarfile

import pytest
from test__unpack import kiosk_change, write

from ansible_collections.overlayfs.systemd.plugins.module_utils import _layer as lay
from ansible_collections.overlayfs.systemd.plugins.module_utils import _unpack as unp
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import parse_mountinfo


@pytest.fixture
def parent(tmp_path):
    p = tmp_path / "layers"
    p.mkdir()
    return p


def test_record_matches():
    rec = {"digest": "sha256:" + "a" * 64, "diff_id": "sha256:" + "b" * 64}
    assert lay.record_matches(rec, rec["digest"], None)
    assert lay.record_matches(rec, rec["diff_id"], None)
    assert lay.record_matches(rec, None, rec["diff_id"])
    assert not lay.record_matches(rec, None, rec["digest"])
    assert not lay.record_matches(rec, "sha256:" + "c" * 64, None)


MOUNTINFO = (
    "30 1 0:25 / / rw - ext4 /dev/vda1 rw\n"
    "40 30 0:40 / /srv/kiosk rw,relatime - overlay overlay "
    "rw,lowerdir=/var/lib/overlayfs/layers/k2:/opt/base,upperdir=/var/lib/overlayfs/x/upper,"
    "workdir=/var/lib/overlayfs/x/work\n"
    "50 30 0:41 / /var/lib/docker/c1 rw - overlay overlay rw,lowerdir=/l1,upperdir=/u1,workdir=/w1\n"
)


def test_placement_on_overlay_refused():
    mounts = parse_mountinfo(MOUNTINFO)
    problem = lay.placement_problem("/var/lib/docker/c1/layers/k", mounts)
    assert problem is not None and "overlayfs" in problem and "/var/lib/docker/c1" in problem
    assert lay.placement_problem("/var/lib/overlayfs/layers/k3", mounts) is None


def test_layer_users_from_mountinfo():
    mounts = parse_mountinfo(MOUNTINFO)
    assert lay.layer_users("/var/lib/overlayfs/layers/k2", {}, mounts) == [
        {"unit": "", "path": "/srv/kiosk", "as": "lowerdir", "source": "mountinfo"}
    ]
    # a directory holding a used layer is in use too; a sibling is not
    assert lay.layer_users("/var/lib/overlayfs/layers", {}, mounts)[0]["as"] == "lowerdir"
    assert lay.layer_users("/var/lib/overlayfs/layers/k1", {}, mounts) == []
    assert lay.layer_users("/var/lib/overlayfs/x", {}, mounts)[0]["as"] == "upperdir"


def test_remove_layer(parent):
    (parent / "x" / "a").mkdir(parents=True)
    lay.remove_layer(str(parent / "x"))
    assert os.listdir(parent) == []


def test_stack_image_round_trip(tmp_path, parent):
    """Two layer directories -> image archive -> each blob imported again gives the same layer."""
    src, dummy, dummy2 = write(tmp_path, kiosk_change())
    top = str(parent / "k2")
    unp.import_layer(src, top)
    base = tmp_path / "base"
    (base / "etc").mkdir(parents=True)
    (base / "etc" / "old.conf").write_text("old\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = tmp_path / "image.tar"
    with open(out, "wb") as fh:
        ident = lay.write_stack_image([str(base), top], fh, str(scratch), repo_tag="kiosk:2", compression="gzip")
    assert os.listdir(scratch) == []
    with tarfile.open(out) as tf:
        manifest = json.loads(tf.extractfile("manifest.json").read())[0]
        config = json.loads(tf.extractfile(manifest["Config"]).read())
        assert config["rootfs"]["diff_ids"] == [layer["diff_id"] for layer in ident["layers"]]
        blob = tf.extractfile(manifest["Layers"][1]).read()
    (tmp_path / "k2.tgz").write_bytes(blob)
    again = unp.import_layer(str(tmp_path / "k2.tgz"), str(parent / "k2-again"), diff_id=ident["layers"][1]["diff_id"])
    assert again.counts["whiteouts"] == 1 and again.counts["opaque"] == 1 and again.counts["hardlinks"] == 1
    assert stat.S_ISCHR(os.lstat(parent / "k2-again" / "etc" / "old.conf").st_mode)
    assert os.getxattr(parent / "k2-again" / "var" / "cache", "trusted.overlay.opaque") == b"y"
