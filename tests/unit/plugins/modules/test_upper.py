# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The upper module end to end against the fake host of ``fakehost.py``.

The overlay is set up with the mount module; the fake systemd only edits
mountinfo, so the mount point is a plain directory standing in for the
merged view, and the upper directory holds what overlayfs would have
written there (whiteouts as real char devices 0/0, opaque xattrs).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import tarfile
from functools import partial

import pytest
from fakehost import expect_failed, expect_ok, patch_module_args

from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.module_utils import _units as un
from ansible_collections.overlayfs.systemd.plugins.modules import mount as mount_mod
from ansible_collections.overlayfs.systemd.plugins.modules import mount_info as mount_info_mod
from ansible_collections.overlayfs.systemd.plugins.modules import upper as mod

ok = partial(expect_ok, mod.main)
failed = partial(expect_failed, mod.main)


@pytest.fixture
def kernel_defaults(host):
    """The overlay module's defaults: off, unless a test writes its own (the fake host's, not the host's /sys)."""
    return host.overlay_params


def mount_params(host, **kw):
    p = {"path": host.path("srv/app"), "lowerdir": [host.path("opt/app/v2"), host.path("opt/app/base")]}
    p.update(kw)
    return p


def populate(upper: str, merged: str) -> None:
    """What a session leaves: a new file, a changed one, a deleted one, a replaced directory."""
    os.makedirs(os.path.join(upper, "cache"))
    os.setxattr(os.path.join(upper, "cache"), "trusted.overlay.opaque", b"y")
    with open(os.path.join(upper, "cache", "fresh"), "w") as fh:
        fh.write("fresh\n")
    with open(os.path.join(upper, "new.txt"), "w") as fh:
        fh.write("new\n")
    with open(os.path.join(upper, "file.txt"), "w") as fh:
        fh.write("base, changed\n")
    os.mknod(os.path.join(upper, "gone.txt"), stat.S_IFCHR, os.makedev(0, 0))
    for rel, text in (("new.txt", "new\n"), ("file.txt", "base, changed\n"), ("cache/fresh", "fresh\n")):
        p = os.path.join(merged, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as fh:
            fh.write(text)


@pytest.fixture
def app(host):
    """A mounted persistent overlay with changes in its upper; returns the mount module result."""
    base = host.path("opt/app/base")
    os.makedirs(os.path.join(base, "cache"))
    with open(os.path.join(base, "cache", "old"), "w") as fh:
        fh.write("old\n")
    with open(os.path.join(base, "gone.txt"), "w") as fh:
        fh.write("gone\n")
    r = expect_ok(mount_mod.main, mount_params(host))
    populate(r["upperdir"], host.path("srv/app"))
    os.makedirs(os.path.join(r["workdir"], "work", "stale"))
    host.commands.clear()
    return r


def test_inspected_lists_changes_and_changes_nothing(host, app):
    r = ok({"path": host.path("srv/app")})
    assert not r["changed"] and r["mounted"] and r["unit"] == app["unit"]
    assert r["added"] == ["cache/fresh", "new.txt"]
    assert r["modified"] == [{"path": "file.txt", "change": "data"}]
    assert r["deleted"] == ["gone.txt"]
    assert r["opaque"] == ["cache"]
    assert r["counts"] == {"added": 2, "modified": 1, "deleted": 1, "opaque": 1, "entries": 5}
    assert r["bytes"] == {"added": 10, "modified": 14}
    assert (r["upper"], r["upperdir"], r["workdir"]) == ("persistent", app["upperdir"], app["workdir"])
    assert host.mutating() == []


def test_inspected_on_a_stopped_overlay(host, app):
    expect_ok(mount_mod.main, mount_params(host, state="unmounted"))
    r = ok({"path": host.path("srv/app"), "state": "inspected"})
    assert not r["mounted"] and r["deleted"] == ["gone.txt"]


def test_unmanaged_and_missing_units_are_refused(host):
    r = failed({"path": host.path("srv/app")})
    assert "does not exist" in r["msg"] and r["param"] == "path"
    unit = nm.unit_name(host.path("srv/app"))
    (host.unit_dir / unit).write_text("[Mount]\nWhat=overlay\nWhere=%s\nType=overlay\n" % host.path("srv/app"))
    r = failed({"path": host.path("srv/app"), "state": "discarded", "confirm": unit})
    assert "not written by overlayfs.systemd" in r["msg"]


def test_upper_none_is_refused(host):
    expect_ok(mount_mod.main, mount_params(host, upper="none"))
    r = failed({"path": host.path("srv/app")})
    assert "no upper layer" in r["msg"]


def test_discarded_needs_the_exact_confirm(host, app):
    before = sorted(os.listdir(app["upperdir"]))
    r = failed({"path": host.path("srv/app"), "state": "discarded"})
    assert "confirm: %s" % app["unit"] in r["msg"] and r["param"] == "confirm"
    r = failed({"path": host.path("srv/app"), "state": "discarded", "confirm": "other.mount"})
    assert "'other.mount'" in r["msg"]
    assert sorted(os.listdir(app["upperdir"])) == before and host.mutating() == []


def test_discarded_check_and_diff_mode_change_nothing(host, app):
    r = ok({"path": host.path("srv/app"), "state": "discarded"}, check_mode=True, diff=True)
    assert r["changed"] and r["deleted"] == ["gone.txt"]
    assert r["actions"] == [
        "stop %s" % app["unit"],
        "empty %s" % app["upperdir"],
        "empty %s" % app["workdir"],
        "start %s" % app["unit"],
    ]
    (d,) = r["diff"]
    assert d["before"] == (
        "+ cache/fresh\n+ new.txt\n~ file.txt (data)\n- gone.txt\n! cache (opaque: replaces the lower directory)\n"
    )
    assert d["after"] == "" and d["before_header"] == app["upperdir"]
    assert len(os.listdir(app["upperdir"])) == 4 and host.mutating() == []


def test_discarded_empties_upper_and_work_while_stopped(host, app):
    st = os.stat(app["upperdir"])
    calls = []
    real_stop = host._stop

    def stop(name):
        real_stop(name)
        calls.append(sorted(os.listdir(app["upperdir"])))  # still full when the mount goes away

    host._stop = stop
    args = {"path": host.path("srv/app"), "state": "discarded", "confirm": app["unit"]}
    r = ok(args)
    assert r["changed"] and r["mounted"]
    assert calls == [["cache", "file.txt", "gone.txt", "new.txt"]]
    assert os.listdir(app["upperdir"]) == [] and os.listdir(app["workdir"]) == [
        "work"
    ]  # made again by the kernel at mount
    st2 = os.stat(app["upperdir"])
    assert (st2.st_uid, st2.st_gid, st2.st_mode) == (st.st_uid, st.st_gid, st.st_mode)
    assert [c[0] for c in host.mutating()] == ["stop", "start"]
    assert not [n for n in os.listdir(os.path.dirname(app["upperdir"])) if "overlayfs-discard" in n]
    host.commands.clear()
    r = ok(args)
    assert not r["changed"] and host.mutating() == []


def test_discarded_busy_overlay_is_refused(host, app):
    d = host.proc / "4242"
    (d / "fd").mkdir(parents=True)
    (d / "comm").write_text("kiosk\n")
    os.symlink(host.path("srv/app/new.txt"), d / "fd" / "3")
    r = failed({"path": host.path("srv/app"), "state": "discarded", "confirm": app["unit"]})
    assert "busy" in r["msg"] and "kiosk" in r["msg"] and "next_boot" not in r["msg"]
    assert r["msg"] == (
        "overlay %s is busy, refusing to stop it; nothing was changed. In use by: pid 4242 (kiosk): fd 3 %s. "
        "Stop these processes or unmount these" % (host.path("srv/app"), host.path("srv/app/new.txt"))
    )
    assert r["holders"] == [{"pid": 4242, "comm": "kiosk", "reason": "fd 3 %s" % host.path("srv/app/new.txt")}]
    assert len(os.listdir(app["upperdir"])) == 4 and host.mutating() == []


def test_discarded_failed_start_puts_the_upper_back(host, app):
    host.fail_start[app["unit"]] = "mount: wrong fs type\n"
    r = failed({"path": host.path("srv/app"), "state": "discarded", "confirm": app["unit"]})
    assert "put back" in r["msg"]
    assert sorted(os.listdir(app["upperdir"])) == ["cache", "file.txt", "gone.txt", "new.txt"]


def test_discarded_tmpfs_upper(host):
    r0 = expect_ok(mount_mod.main, mount_params(host, upper="tmpfs"))
    populate(r0["upperdir"], host.path("srv/app"))
    unit = r0["unit"]
    r = ok({"path": host.path("srv/app"), "state": "discarded", "confirm": unit})
    assert r["upper"] == "tmpfs" and r["changed"] and r["mounted"]
    assert os.listdir(r0["upperdir"]) == []
    stops = [c[1] for c in host.systemctl("stop")]
    assert stops == [unit]  # the tmpfs stays mounted


def test_committed(host, app):
    dest = host.path("var/layers/app-1")
    old_unit = host.unit_text(app["unit"])
    args = {"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]}
    ino = os.lstat(os.path.join(app["upperdir"], "file.txt")).st_ino
    r = ok(args, diff=True)
    lowers = [dest, host.path("opt/app/v2"), host.path("opt/app/base")]
    assert r["changed"] and r["mounted"] and r["lowerdir"] == lowers and r["dest"] == dest
    # the upper itself is the new layer: renamed (same file system), nothing copied
    assert r["method"] == "rename" and os.lstat(os.path.join(dest, "file.txt")).st_ino == ino
    assert open(os.path.join(dest, "file.txt")).read() == "base, changed\n"
    assert sorted(os.listdir(dest)) == ["cache", "file.txt", "gone.txt", "new.txt"]
    # its own whiteout and opaque marker keep hiding what the merged view dropped: no masks needed
    assert r["masked"] == []
    st = os.lstat(os.path.join(dest, "gone.txt"))
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(os.path.join(dest, "cache"), "trusted.overlay.opaque") == b"y"
    # the kernel makes work/ again at mount
    assert os.listdir(app["upperdir"]) == [] and os.listdir(app["workdir"]) == ["work"]
    assert r["copied"]["files"] == 3 and r["copied"]["whiteouts"] == 1 and r["copied"]["opaque"] == 1
    text = host.unit_text(app["unit"])
    assert "lowerdir=%s:" % dest in text and text != old_unit
    assert [c[0] for c in host.mutating()] == ["stop", "daemon-reload", "start"]
    assert not any(a.startswith("copy ") for a in r["actions"])
    moved = r["actions"].index("rename %s to %s" % (app["upperdir"], dest))
    assert (
        r["actions"].index("stop %s" % app["unit"])
        < moved
        < r["actions"].index("empty %s" % app["upperdir"])
        < r["actions"].index("start %s" % app["unit"])
    )
    assert r["diff"][0]["before"].startswith("+ cache/fresh") and "v2" in r["diff"][1]["before"]
    live = minfo.mount_at(minfo.parse_mountinfo(host.mountinfo.read_text()), host.path("srv/app"))
    assert minfo.parse_overlay_options(live.super_options).lowerdir == lowers
    # again: dest is the top lower and the upper is empty
    host.commands.clear()
    r2 = ok(args)
    assert not r2["changed"] and host.mutating() == []


def test_committed_squash(host, app):
    dest = host.path("var/layers/app-1")
    r = ok({"path": host.path("srv/app"), "state": "committed", "dest": dest, "squash": True, "confirm": app["unit"]})
    assert r["lowerdir"] == [dest] and r["masked"] == []
    assert sorted(os.listdir(dest)) == ["cache", "file.txt", "new.txt"]
    assert "lowerdir=%s\n" % dest in host.unit_text(app["unit"]).replace(",", "\n")


def test_committed_dest_on_an_overlay_refused_before_anything(host, app):
    host.add_mount("95 22 0:95 / %s rw - overlay overlay rw,lowerdir=/a,upperdir=/b,workdir=/c" % host.path("ovl"))
    args = {"path": host.path("srv/app"), "state": "committed", "dest": host.path("ovl/k2"), "confirm": app["unit"]}
    for check in (True, False):
        r = failed(args, check_mode=check)
        assert r["param"] == "dest" and "squash: true" in r["msg"] and "nothing was copied" in r["msg"]
    assert host.mutating() == [] and len(os.listdir(app["upperdir"])) == 4
    assert not os.path.lexists(host.path("ovl/k2"))
    # squash writes no marker: allowed there
    assert ok(dict(args, squash=True))["lowerdir"] == [host.path("ovl/k2")]


def test_committed_failed_start_puts_the_renamed_upper_back(host, app):
    dest = host.path("var/layers/app-1")
    host.fail_once[app["unit"]] = "mount: wrong fs type"
    r = failed({"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]})
    assert "put back" in r["msg"] and not os.path.lexists(dest)
    assert sorted(os.listdir(app["upperdir"])) == ["cache", "file.txt", "gone.txt", "new.txt"]


def test_committed_check_mode(host, app):
    dest = host.path("var/layers/app-1")
    r = ok({"path": host.path("srv/app"), "state": "committed", "dest": dest}, check_mode=True, diff=True)
    assert r["changed"] and not os.path.exists(dest)
    assert r["actions"] == [
        "stop %s" % app["unit"],
        "write %s" % app["unit"],
        "move %s to %s (rename, or copy of the upper only)" % (app["upperdir"], dest),
        "empty %s" % app["upperdir"],
        "empty %s" % app["workdir"],
        "daemon-reload",
        "start %s" % app["unit"],
    ]
    assert dest in r["diff"][1]["after"] and dest not in r["diff"][1]["before"]
    assert host.mutating() == [] and len(os.listdir(app["upperdir"])) == 4


@pytest.mark.parametrize(
    "dest, fragment",
    [
        ("srv/app/layer", "overlaps the mount point"),
        ("opt/app/base/layer", "overlaps lowerdir"),
        ("opt/app/v2/x", "overlaps lowerdir"),
        ("opt/app/v3", "already exists"),
    ],
)
def test_committed_refuses_bad_dest(host, app, dest, fragment):
    r = failed({"path": host.path("srv/app"), "state": "committed", "dest": host.path(dest), "confirm": app["unit"]})
    assert fragment in r["msg"] and r["param"] == "dest"
    assert host.mutating() == [] and len(os.listdir(app["upperdir"])) == 4


def test_committed_refuses_upperdir_dest(host, app):
    r = failed(
        {"path": host.path("srv/app"), "state": "committed", "dest": app["upperdir"] + "/x", "confirm": app["unit"]}
    )
    assert "overlaps upperdir" in r["msg"]


def test_committed_needs_a_mounted_overlay(host, app):
    expect_ok(mount_mod.main, mount_params(host, state="unmounted"))
    r = failed(
        {"path": host.path("srv/app"), "state": "committed", "dest": host.path("var/l1"), "confirm": app["unit"]}
    )
    assert "not mounted" in r["msg"]


def test_committed_refuses_redirect_dir(host):
    r0 = expect_ok(mount_mod.main, mount_params(host, redirect_dir="on"))
    r = failed({"path": host.path("srv/app"), "state": "committed", "dest": host.path("var/l1"), "confirm": r0["unit"]})
    assert "redirect_dir=on" in r["msg"] and not os.path.exists(host.path("var/l1"))


def test_committed_busy_is_refused_before_copying(host, app):
    d = host.proc / "77"
    (d / "fd").mkdir(parents=True)
    (d / "comm").write_text("sh\n")
    os.symlink(host.path("srv/app"), d / "cwd")
    dest = host.path("var/layers/app-1")
    r = failed({"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]})
    assert r["holders"][0]["pid"] == 77 and not os.path.exists(dest) and host.mutating() == []


def test_committed_failed_start_rolls_back(host, app):
    dest = host.path("var/layers/app-1")
    old_unit = host.unit_text(app["unit"])
    host.fail_once[app["unit"]] = "mount: wrong fs type\n"
    r = failed({"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]})
    assert "rolled back" in r["msg"] and "put back" in r["msg"]
    assert host.unit_text(app["unit"]) == old_unit
    assert sorted(os.listdir(app["upperdir"])) == ["cache", "file.txt", "gone.txt", "new.txt"]
    assert not os.path.exists(dest) and r["mounted"]


def test_exported(host, app):
    dest = host.path("out/app.tar.gz")
    os.makedirs(os.path.dirname(dest))
    args = {"path": host.path("srv/app"), "state": "exported", "dest": dest, "compression": "gzip"}
    r = ok(args)
    assert r["changed"] and host.mutating() == []
    data = open(dest, "rb").read()
    assert r["archive"]["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    assert r["archive"]["size"] == len(data) and r["archive"]["whiteouts"] == 1
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    with tarfile.open(dest, "r:gz") as tf:
        names = sorted(m.name for m in tf.getmembers())
    assert names == sorted(["cache", "cache/.wh..wh..opq", "cache/fresh", "file.txt", ".wh.gone.txt", "new.txt"])
    r = failed(args)
    assert "already exists" in r["msg"] and "force" in r["msg"]
    r = ok(dict(args, force=True, compression="none"))
    assert r["changed"] and open(dest, "rb").read(2) != b"\x1f\x8b"
    assert r["archive"]["diff_id"] == r["archive"]["digest"]  # uncompressed: the blob is the tar


def test_exported_identity_and_reproducible(host, app):
    """digest (the blob) and diff_id (the tar) per the OCI spec; same content and epoch -> same digest."""
    out = host.path("out")
    os.makedirs(out)
    base = {"path": host.path("srv/app"), "state": "exported", "compression": "gzip"}
    r = ok(dict(base, dest=out + "/a.tgz"))
    tar = gzip.decompress(open(out + "/a.tgz", "rb").read())
    assert r["archive"]["diff_id"] == "sha256:" + hashlib.sha256(tar).hexdigest() != r["archive"]["digest"]
    # same content, touched later: different digest, unless the times are clamped
    os.utime(os.path.join(app["upperdir"], "new.txt"), (2_000_000_000, 2_000_000_000))
    epoch = dict(base, source_date_epoch=1_500_000_000)
    r1 = ok(dict(epoch, dest=out + "/b.tgz"))
    os.utime(os.path.join(app["upperdir"], "new.txt"), (1_900_000_000, 1_900_000_000))
    r2 = ok(dict(epoch, dest=out + "/c.tgz"))
    assert r1["archive"]["digest"] == r2["archive"]["digest"] != r["archive"]["digest"]
    with tarfile.open(out + "/b.tgz") as tf:
        assert max(m.mtime for m in tf.getmembers()) <= 1_500_000_000
    # the whole stack as an image: every lower bottom first, then the upper
    r = ok(dict(base, dest=out + "/image.tar", format="image", compression="none"))
    with tarfile.open(out + "/image.tar") as tf:
        manifest = json.loads(tf.extractfile("manifest.json").read())[0]
        config = json.loads(tf.extractfile(manifest["Config"]).read())
    assert manifest["RepoTags"] == [r["image"]["repo_tag"]] and r["image"]["repo_tag"].endswith("-srv-app:latest")
    assert len(manifest["Layers"]) == 3 and config["rootfs"]["diff_ids"] == [x["diff_id"] for x in r["image"]["layers"]]
    assert failed(dict(base, dest=out + "/bad.tar", format="image", image_tag="Bad Tag"))["param"] == "image_tag"


def test_exported_check_mode_writes_nothing(host, app):
    dest = host.path("app.tar")
    r = ok({"path": host.path("srv/app"), "state": "exported", "dest": dest}, check_mode=True, diff=True)
    assert r["changed"] and not os.path.exists(dest) and r["actions"] == ["write %s" % dest]
    assert "- gone.txt" in r["diff"][0]["after"] and "archive" not in r


def test_exported_refuses_dest_inside_the_overlay(host, app):
    r = failed({"path": host.path("srv/app"), "state": "exported", "dest": app["upperdir"] + "/x.tar"})
    assert "overlaps upperdir" in r["msg"] and r["param"] == "dest"


def test_committed_refuses_metacopy_by_kernel_default(host, app, kernel_defaults):
    """mountinfo omits a feature that equals the overlay module's default: read the default."""
    (kernel_defaults / "metacopy").write_text("Y\n")
    (kernel_defaults / "redirect_dir").write_text("N\n")
    dest = host.path("var/l1")
    r = failed({"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]})
    assert "metacopy=on" in r["msg"] and "redirect_dir=on" not in r["msg"]
    assert not os.path.exists(dest)
    (kernel_defaults / "metacopy").write_text("N\n")
    assert ok({"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]})["changed"]


def test_discarded_refuses_an_upper_another_overlay_mounts(host, app):
    expect_ok(mount_mod.main, mount_params(host, state="unmounted"))
    host.add_mount(
        "95 22 0:95 / /srv/intruder rw - overlay overlay rw,lowerdir=/l,upperdir=%s,workdir=/w" % app["upperdir"]
    )
    r = failed({"path": host.path("srv/app"), "state": "discarded", "confirm": app["unit"]})
    assert "still mounted at /srv/intruder" in r["msg"] and "put back" in r["msg"]
    assert len(os.listdir(app["upperdir"])) == 4


def test_units_of_main_are_read_like_new_ones(host, app):
    """A unit main wrote (no declaration): inspected reports the same, committed restacks from its parameters."""
    new_result = ok({"path": host.path("srv/app")})
    unit_path = host.unit_dir / app["unit"]
    text = unit_path.read_text()
    unit_path.write_text("".join(x for x in text.splitlines(True) if not x.startswith(un.X_PREFIX + "Declaration=")))
    assert ok({"path": host.path("srv/app")}) == new_result
    dest = host.path("var/layers/app-1")
    r = ok({"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]})
    assert r["lowerdir"] == [dest, host.path("opt/app/v2"), host.path("opt/app/base")]
    assert un.read_declaration(unit_path.read_text())["lowerdir"] == r["lowerdir"]


# ---------------------------------------------------------------------------
# Leftovers of dead runs (issue 11)
# ---------------------------------------------------------------------------


def test_committed_removes_a_dead_runs_partial_copy(host, app):
    dest = host.path("var/layers/app-1")
    partial = host.path("var/layers/.app-1.overlayfs-partial-31337")
    os.makedirs(os.path.join(partial, "half"))
    args = {"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]}
    r = ok(args, check_mode=True)
    assert r["cleaned"] == [dict(path=partial, beside=dest, kind="partial", pid="31337", action="would remove")]
    assert os.path.isdir(partial)
    r = ok(args)
    assert r["cleaned"][0]["path"] == partial and r["cleaned"][0]["action"] == "removed"
    assert not os.path.exists(partial) and sorted(os.listdir(host.path("var/layers"))) == ["app-1"]
    assert r["lowerdir"][0] == dest
    assert ok(args)["cleaned"] == []


def test_a_running_pids_partial_copy_is_left_alone(host, app):
    (host.proc / "31337").mkdir()
    partial = host.path("var/layers/.app-1.overlayfs-partial-31337")
    os.makedirs(partial)
    r = ok(
        {
            "path": host.path("srv/app"),
            "state": "committed",
            "dest": host.path("var/layers/app-1"),
            "confirm": app["unit"],
        }
    )
    assert r["cleaned"] == [] and os.path.isdir(partial) and "still runs" in r["leftovers_kept"][0]["reason"]


def test_moved_aside_upper_of_a_dead_run(host, app):
    """Removed once the overlay runs on the upper again; kept (the only copy) while it does not."""
    aside = os.path.join(os.path.dirname(app["upperdir"]), ".upper.overlayfs-commit-31337")
    os.makedirs(os.path.join(aside, "etc"))
    with open(os.path.join(aside, "etc", "only-here"), "w") as fh:
        fh.write("data\n")
    expect_ok(mount_mod.main, mount_params(host, state="unmounted"))
    r = ok({"path": host.path("srv/app"), "state": "discarded", "confirm": app["unit"]})
    assert r["cleaned"] == [] and os.path.isfile(os.path.join(aside, "etc", "only-here"))
    assert "only copy of its data" in r["leftovers_kept"][0]["reason"]
    expect_ok(mount_mod.main, mount_params(host, allow_nonempty_mountpoint=True))  # the fake's merged view is a dir
    r = ok({"path": host.path("srv/app"), "state": "discarded", "confirm": app["unit"]})
    assert [c["path"] for c in r["cleaned"]] == [aside] and not os.path.exists(aside)


def test_inspected_looks_for_no_leftovers(host, app):
    partial = host.path("var/layers/.app-1.overlayfs-partial-31337")
    os.makedirs(partial)
    r = ok({"path": host.path("srv/app")})
    assert "cleaned" not in r and not r["lock"]["taken"] and os.path.isdir(partial)


def test_committed_brings_back_the_service_that_requires_the_overlay(host, app):
    host.add_service("app.service", app["unit"])
    r = ok({"path": host.path("srv/app"), "state": "committed", "dest": host.path("var/l1"), "confirm": app["unit"]})
    assert r["restarted_units"] == ["app.service"] and "app.service" in host.active
    assert ["start", "app.service"] in host.systemctl()


def test_discarded_brings_back_the_service_also_when_it_fails(host, app):
    host.add_service("app.service", app["unit"])
    host.fail_once[app["unit"]] = "mount failed\n"
    r = failed({"path": host.path("srv/app"), "state": "discarded", "confirm": app["unit"]})
    assert r["restarted_units"] == ["app.service"] and "app.service" in host.active


class Killed(BaseException):
    """Stands in for SIGKILL: no except clause of the module catches it (the journal and the stop stay)."""


def _kill(*args, **kwargs):
    raise Killed()


def _journal_of(app):
    path = os.path.join(os.path.dirname(app["upperdir"]), ".upper.overlayfs-journal")
    return json.load(open(path)) if os.path.exists(path) else None


def _live_lowers(host):
    live = minfo.mount_at(minfo.parse_mountinfo(open(host.mountinfo).read()), host.path("srv/app"))
    return None if live is None else minfo.parse_overlay_options(live.super_options).lowerdir


@pytest.mark.parametrize("where", ["copy_upper", "swap_empty"])
def test_committed_killed_stacked_copy_is_resumed(host, app, monkeypatch, where):
    """A stacked copy killed mid-copy is undone and done again; killed after dest was complete, finished."""
    from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy, _stack

    dest = host.path("var/layers/app-1")
    args = {"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]}
    old_unit = host.unit_text(app["unit"])
    monkeypatch.setattr(_stack, "same_filesystem", lambda upper, dest: False)  # the upper on a tmpfs: a copy
    target = _stack if where == "copy_upper" else _layercopy
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        mp.setattr(target, where, _kill)
        run_killed(args)
    j = _journal_of(app)
    assert j["phase"] == ("move" if where == "copy_upper" else "swap") and j["method"] == "copy"
    assert _live_lowers(host) is None  # stopped
    assert host.unit_text(app["unit"]) == old_unit  # the units change only once dest is complete
    assert sorted(os.listdir(app["upperdir"])) == ["cache", "file.txt", "gone.txt", "new.txt"]  # never touched
    r = ok(args)
    assert r["changed"] and r["mounted"] and r["method"] == "copy"
    assert r["interrupted_commit"]["action"] == ("back" if where == "copy_upper" else "forward")
    assert r["lowerdir"] == [dest, host.path("opt/app/v2"), host.path("opt/app/base")]
    assert _live_lowers(host) == r["lowerdir"]
    assert _journal_of(app) is None
    assert sorted(os.listdir(dest)) == ["cache", "file.txt", "gone.txt", "new.txt"]
    assert open(os.path.join(dest, "file.txt")).read() == "base, changed\n"
    assert os.listdir(app["upperdir"]) == []
    assert not [n for n in os.listdir(os.path.dirname(dest)) if "overlayfs-" in n]
    assert not [n for n in os.listdir(os.path.dirname(app["upperdir"])) if "overlayfs-" in n]
    assert ok(args)["changed"] is False  # and then it is done


def test_committed_killed_after_rename_is_finished(host, app, monkeypatch):
    """Killed right after rename(2) moved the upper to dest: the re-run finishes, nothing is copied."""
    from ansible_collections.overlayfs.systemd.plugins.module_utils import _stack

    dest = host.path("var/layers/app-1")
    args = {"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]}
    ino = os.lstat(os.path.join(app["upperdir"], "file.txt")).st_ino
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        mp.setattr(_stack, "strip_bookkeeping", _kill)
        run_killed(args)
    assert _journal_of(app)["method"] == "rename" and not os.path.exists(app["upperdir"])
    r = ok(args)
    assert r["interrupted_commit"]["action"] == "forward" and r["method"] == "rename"
    assert os.lstat(os.path.join(dest, "file.txt")).st_ino == ino
    assert _live_lowers(host) == [dest, host.path("opt/app/v2"), host.path("opt/app/base")]
    assert os.listdir(app["upperdir"]) == [] and _journal_of(app) is None


def test_interrupted_commit_other_states(host, app, monkeypatch):
    from ansible_collections.overlayfs.systemd.plugins.module_utils import _stack

    dest = host.path("var/layers/app-1")
    args = {"path": host.path("srv/app"), "state": "committed", "dest": dest, "confirm": app["unit"]}
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Killed):
        mp.setattr(_stack, "stack_upper", _kill)
        run_killed(args)
    r = ok({"path": host.path("srv/app")})
    assert r["interrupted_commit"]["dest"] == dest and r["interrupted_commit"]["phase"] == "move"
    info = expect_ok(mount_info_mod.main, {"path": [host.path("srv/app")]})
    assert info["overlays"][0]["interrupted_commit"]["dest"] == dest
    r = failed({"path": host.path("srv/app"), "state": "discarded", "confirm": app["unit"]})
    assert "was interrupted in phase move" in r["msg"] and r["param"] == "state"
    r = failed(dict(args, dest=host.path("var/layers/other")))
    assert "dest: %s" % dest in r["msg"] and r["param"] == "dest"
    check = ok(args, check_mode=True)
    assert check["interrupted_commit"]["action"] == "back" and _journal_of(app) is not None
    assert ok(args)["interrupted_commit"]["action"] == "back"
    assert _live_lowers(host)[0] == dest
    info = expect_ok(mount_info_mod.main, {"path": [host.path("srv/app")]})
    assert info["overlays"][0]["interrupted_commit"] is None


def run_killed(args):
    """main() with ``args``, letting Killed through (expect_ok would turn it into a failure or swallow it)."""
    with patch_module_args(dict(args)):
        mod.main()
