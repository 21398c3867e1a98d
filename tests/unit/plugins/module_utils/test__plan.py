# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The plan (``_plan``)."""

from __future__ import annotations

from specs import resolved, spec_of

from ansible_collections.overlayfs.systemd.plugins.module_utils import _mountinfo as minfo
from ansible_collections.overlayfs.systemd.plugins.module_utils import _names as nm
from ansible_collections.overlayfs.systemd.plugins.module_utils import _plan as pn
from ansible_collections.overlayfs.systemd.plugins.module_utils import _spec as sp
from ansible_collections.overlayfs.systemd.plugins.module_utils import _units as un


def mi(point, fstype="overlay", super_options="", mount_options="rw,nosuid,nodev,relatime"):
    return minfo.MountInfo(1, 1, "0:1", "/", point, mount_options, fstype, fstype, super_options)


def live_for(spec, mount_options="rw,nosuid,nodev,relatime", **over):
    opts = ",".join(un.render_options(spec))
    for key, value in over.items():
        opts = opts.replace(key, value)
    # mountinfo shows the user string with ',' ' ' '\\' octal-escaped
    parts = []
    for o in minfo.split_unescaped(opts, ","):
        parts.append(o.replace("\\", "\\134").replace(",", "\\054").replace(" ", "\\040"))
    return mi(spec.path, super_options="rw," + ",".join(parts), mount_options=mount_options)


class TestPlan:
    def setup_method(self):
        self.spec = resolved()
        self.desired = un.render_units(self.spec)
        self.names = nm.candidate_units(self.spec.path)
        self.empty = dict.fromkeys(self.names)

    def current(self, **texts):
        cur = dict(self.empty)
        cur.update(texts)
        return cur

    def test_fresh_install(self):
        pl = pn.plan(self.spec, self.desired, self.empty, None, None, False)
        assert list(pl.write) == ["srv-app.mount"]
        assert pl.daemon_reload and pl.start == ["srv-app.mount"] and pl.enable == ["srv-app.mount"]
        assert not pl.stop and pl.changed

    def test_converged(self):
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(self.spec, self.desired, cur, live_for(self.spec), None, True)
        assert not pl.changed and not pl.reboot_required

    def test_header_change_is_not_a_change(self):
        text = self.desired["srv-app.mount"].replace(un.HEADER, "# Managed by overlayfs.systemd v0")
        pl = pn.plan(self.spec, self.desired, self.current(**{"srv-app.mount": text}), live_for(self.spec), None, True)
        assert not pl.changed

    def test_pending_reload(self):
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(self.spec, self.desired, cur, live_for(self.spec), None, True, pending_reload=True)
        assert pl.daemon_reload and not pl.write and not pl.stop

    def test_changed_lowers_restart(self):
        old = resolved(lowerdir=["/opt/app/v1", "/opt/app/base"])
        cur = self.current(**{"srv-app.mount": un.render_units(old)["srv-app.mount"]})
        pl = pn.plan(self.spec, self.desired, cur, live_for(old), None, True)
        assert pl.restart and pl.stop == ["srv-app.mount"] and pl.start == ["srv-app.mount"]
        assert pl.daemon_reload and not pl.enable

    def test_changed_lowers_next_boot(self):
        spec = sp.resolve_ownership(spec_of(apply="next_boot"), 0, 0, 0o755)
        old = resolved(lowerdir=["/opt/app/v1", "/opt/app/base"])
        cur = self.current(**{"srv-app.mount": un.render_units(old)["srv-app.mount"]})
        pl = pn.plan(spec, un.render_units(spec), cur, live_for(old), None, True)
        assert pl.reboot_required and not pl.stop and not pl.start and list(pl.write) == ["srv-app.mount"]

    def test_description_change_needs_no_restart(self):
        spec = resolved(description="Other")
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(spec, un.render_units(spec), cur, live_for(self.spec), None, True)
        assert list(pl.write) == ["srv-app.mount"] and not pl.stop and not pl.restart

    def test_wanted_by_change_reenables(self):
        spec = resolved(wanted_by=["multi-user.target"])
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(spec, un.render_units(spec), cur, live_for(self.spec), None, True)
        assert pl.reenable == ["srv-app.mount"] and not pl.stop

    def test_live_readonly_fallback_is_stale(self):
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        live = live_for(self.spec, mount_options="ro,nosuid,nodev,relatime")
        pl = pn.plan(self.spec, self.desired, cur, live, None, True)
        assert pl.restart

    def test_unmounted_and_present(self):
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        spec = sp.resolve_ownership(spec_of(state="unmounted"), 0, 0, 0o755)
        pl = pn.plan(spec, self.desired, cur, live_for(self.spec), None, True)
        assert pl.stop == ["srv-app.mount"] and not pl.start
        spec = sp.resolve_ownership(spec_of(state="present", enabled=False), 0, 0, 0o755)
        pl = pn.plan(spec, self.desired, cur, None, None, True)
        assert not pl.start and pl.disable == ["srv-app.mount"]

    def test_absent(self):
        spec = spec_of(state="absent")
        cur = self.current(**{"srv-app.mount": self.desired["srv-app.mount"]})
        pl = pn.plan(spec, {}, cur, live_for(self.spec), None, True, purge_paths=["/x"])
        assert pl.stop == ["srv-app.mount"] and pl.remove == ["srv-app.mount"]
        assert pl.disable == ["srv-app.mount"] and pl.daemon_reload and pl.purge == ["/x"]
        assert not pn.plan(spec, {}, self.empty, None, None, False).changed

    def test_absent_keeps_unmanaged_unit(self):
        spec = spec_of(state="absent")
        cur = self.current(**{"srv-app.mount": "[Mount]\nWhat=/dev/sdb\n"})
        pl = pn.plan(spec, {}, cur, None, None, False)
        assert not pl.remove and pl.keep_unmanaged == ["srv-app.mount"] and not pl.changed

    def test_switch_tmpfs_to_persistent(self):
        tspec = sp.resolve_ownership(spec_of(upper="tmpfs"), 0, 0, 0o755)
        cur = self.current(**un.render_units(tspec))
        tmpfs_live = mi(tspec.tmpfs_dir, fstype="tmpfs")
        pl = pn.plan(self.spec, self.desired, cur, live_for(tspec), tmpfs_live, True)
        assert pl.stop == ["srv-app.mount", tspec.tmpfs_unit, tspec.prepare_unit]
        assert sorted(pl.remove) == sorted([tspec.tmpfs_unit, tspec.prepare_unit])
        assert pl.start == ["srv-app.mount"]

    def test_switch_tmpfs_to_persistent_next_boot_keeps_tmpfs(self):
        spec = sp.resolve_ownership(spec_of(apply="next_boot"), 0, 0, 0o755)
        tspec = sp.resolve_ownership(spec_of(upper="tmpfs"), 0, 0, 0o755)
        cur = self.current(**un.render_units(tspec))
        pl = pn.plan(spec, un.render_units(spec), cur, live_for(tspec), mi(tspec.tmpfs_dir, "tmpfs"), True)
        assert not pl.stop and not pl.remove and pl.reboot_required

    def test_tmpfs_resize_reloads(self):
        tspec = sp.resolve_ownership(spec_of(upper="tmpfs", tmpfs_size="1G"), 0, 0, 0o755)
        old = sp.resolve_ownership(spec_of(upper="tmpfs", tmpfs_size="512M"), 0, 0, 0o755)
        cur = self.current(**un.render_units(old))
        pl = pn.plan(tspec, un.render_units(tspec), cur, live_for(old), mi(tspec.tmpfs_dir, "tmpfs"), True)
        assert pl.reload_units == [tspec.tmpfs_unit] and not pl.stop


def test_live_matches_readonly_overlay():
    spec = resolved(upper="none")
    assert pn.live_matches(
        spec, minfo.parse_overlay_options("ro,lowerdir=/opt/app/v2:/opt/app/base"), "ro,nosuid,nodev"
    )
    assert not pn.live_matches(spec, minfo.parse_overlay_options("ro,lowerdir=/opt/app/v2"), "ro,nosuid,nodev")
    assert not pn.live_matches(spec, minfo.parse_overlay_options("lowerdir=/opt/app/v2:/opt/app/base"), "ro")
