#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mounts
short_description: Converge many OverlayFS mounts in one call, optionally removing undeclared ones
version_added: 0.1.0
description:
  - Converges every overlay of O(overlays) exactly as M(overlayfs.systemd.mount) does (the same code), in one
    module call. C(/proc/self/mountinfo) is read once, every overlay is validated and planned before anything
    changes, and at most one C(systemctl daemon-reload) runs for all of them.
  - "Any refusal (an invalid definition, a missing lower, a non-empty mount point, ...) fails the call before
    anything changes; the message names every refused overlay by its path, not only the first."
  - "A busy overlay (a change needs it stopped while a process uses it) is left untouched and reported; the
    other overlays are still converged, and the call fails naming each busy overlay. With C(apply: next_boot)
    nothing is stopped and nothing is busy."
  - An overlay whose activation fails is rolled back alone (its previous unit restored, the directories this
    run created removed); the others stay converged and the call fails.
  - With O(target), writes an aggregate target unit that C(Requires=) and is C(After=) the mount unit of every
    declared overlay with C(state=mounted), so a service can say C(After=overlays.target) and
    C(Requires=overlays.target). The target is C(WantedBy=multi-user.target), enabled and started.
author:
  - overlayfs.systemd maintainers (@overlayfs-systemd)
requirements:
  - systemd as the init system (C(systemctl)); Linux with the C(overlay) file system. Offline (an image root, see
    the notes) no C(systemctl) is needed.
seealso:
  - module: overlayfs.systemd.mount
    description: One overlay, the same options as an item of O(overlays).
  - module: overlayfs.systemd.mount_info
    description: Read the overlays of a host and their drift from the units.
  - module: overlayfs.systemd.upper
    description: Inspect, discard, commit or export the upper layer of one of these overlays.
  - ref: ansible_collections.overlayfs.systemd.docsite.fleet
    description: The fleet guide (the overlays role built on this module, group_vars layout, rolling reboots).
attributes:
  check_mode:
    details: Plans every overlay, the removals and the target, and stops before changing anything.
  diff_mode:
    details: One before/after entry per unit file that changes, of every overlay and of the target.
  safe_file_operations:
    details: Every unit file, and the target, is written to a temporary file beside it and moved into place.
  idempotent:
    details: Nothing changes on a second run with the same overlays; no C(daemon-reload) runs.
extends_documentation_fragment:
  - overlayfs.systemd.attributes
  - overlayfs.systemd.attributes.files
  - overlayfs.systemd.overlay.items
  - overlayfs.systemd.lock
  - overlayfs.systemd.offline
options:
  overlays:
    description:
      - The overlays to converge. Each item takes the options of M(overlayfs.systemd.mount) (O(overlays[].path) is
        required; O(overlays[].lowerdir) unless O(overlays[].state=absent)), checked with the same argument spec
        after O(defaults) is merged under it.
      - Each mount point may be declared once.
    type: list
    elements: dict
    required: true
  defaults:
    description:
      - "Options merged under every item of O(overlays) (an item's own keys win), for example
        C({apply: next_boot}) or C({flags: [nosuid, nodev, noexec]})."
    type: dict
    default: {}
  exclusive:
    description:
      - Also remove every overlay this collection manages on the host (an overlay C(.mount) unit in
        C(/etc/systemd/system) with C(X-OverlayfsSystemd-Role=overlay)) whose mount point is not in O(overlays),
        as M(overlayfs.systemd.mount) with V(state=absent) would. Units not written by this collection are
        never touched.
      - With O(target), also removes other aggregate targets this collection wrote.
    type: bool
    default: false
  purge:
    description:
      - With O(exclusive), also delete the upper and work directories of the removed overlays. By default their
        data is kept.
    type: bool
    default: false
  target:
    description:
      - Name of the aggregate target unit to write, for example V(overlays.target). Omit to manage none.
      - An existing unit of that name not written by this collection is refused.
    type: str
notes:
  - Stopping an overlay (a restart to apply new layers, a removal) also stops units that C(Requires=) its mount
    unit, including the aggregate target and services requiring it (systemd's C(Requires=) semantics). The
    module starts the target again; restart your own services from a handler notified by RV(changed).
"""

EXAMPLES = r"""
- name: A kiosk's overlays in one call, with an aggregate target for the app to order after
  overlayfs.systemd.mounts:
    target: overlays.target
    overlays:
      - path: /srv/kiosk-state
        lowerdir: [/opt/kiosk/state-skeleton]
        upper: tmpfs
        tmpfs_size: 64M
      - path: /srv/kiosk-config
        lowerdir: [/opt/kiosk/config-defaults]
      - path: /srv/kiosk-assets
        lowerdir: [/opt/kiosk/theme, /opt/kiosk/assets]
        upper: none
  register: kiosk_overlays

- name: Reboot pending?
  ansible.builtin.debug:
    msg: "{{ kiosk_overlays.reboot_required }}"

- name: New layers at the next boot for every overlay, undeclared overlays removed (their data kept)
  overlayfs.systemd.mounts:
    target: overlays.target
    exclusive: true
    defaults:
      apply: next_boot
    overlays:
      - path: /srv/kiosk-config
        lowerdir: [/opt/kiosk/config-defaults-v2, /opt/kiosk/config-defaults]
      - path: /srv/kiosk-assets
        lowerdir: [/opt/kiosk/theme, /opt/kiosk/assets]
        upper: none
"""

RETURN = r"""
offline:
  description:
    - True when systemd does not run on the target (an image root, a chroot, C(SYSTEMD_OFFLINE=1)). The run
      wrote unit files and their C([Install]) links only and started, stopped and reloaded nothing (see the notes).
  returned: always
  type: bool
  sample: false
lock:
  description: The host-wide lock (O(lock_timeout)) of this run.
  returned: always
  type: dict
  contains:
    path:
      description: The lock file.
      type: str
      sample: /run/lock/overlayfs-systemd.lock
    taken:
      description: Whether this run held the lock (false in check mode and for read-only runs, and when it timed out).
      type: bool
      sample: true
    waited:
      description: Seconds this run waited for another run to release the lock.
      type: float
      sample: 12.4
    waited_for:
      description: The run it waited for (or, on timeout, the holder), C(pid) and C(cmdline).
      type: dict
      returned: when the lock was held by another run
      sample: {pid: 4242, cmdline: /usr/bin/python3 /root/.ansible/tmp/ansible-tmp-1/AnsiballZ_mounts.py}
restarted_units:
  description:
    - Units that were active before this run and that its stops took down with them (the aggregate target, a
      service that C(Requires=) or C(BindsTo=) an overlay or the target), started again by this run, also when
      it failed for another overlay.
  returned: always
  type: list
  elements: str
  sample: [overlays.target, kiosk.service]
failed_units:
  description: The units of RV(restarted_units) that did not come back, each with C(unit), C(error) and C(journal)
    (its last journal lines); the run fails when any did not.
  returned: when a unit did not come back
  type: list
  elements: dict
  sample: [{unit: kiosk.service, error: not active after start, journal: ["kiosk[42]: cannot open /srv/kiosk/x"]}]
changed:
  description: Whether any overlay, removal or the target changed (or, in check mode, would change).
  returned: always
  type: bool
  sample: true
reboot_required:
  description:
    - True when any overlay's live mount differs from its units and was left alone (see M(overlayfs.systemd.mount)).
    - The run then also warns, naming those overlays' paths.
  returned: always
  type: bool
  sample: false
results:
  description:
    - One entry per item of O(overlays), in order, with the keys M(overlayfs.systemd.mount) returns (RV(ignore:unit),
      RV(ignore:units), RV(ignore:mounted), RV(ignore:actions), ...) without C(diff), plus C(path) (normalised),
      C(state), and for a refused, busy or failed item C(failed=true) and C(msg) (starting with the path).
    - "A failed item also carries the failure keys of M(overlayfs.systemd.mount): C(param) (the option a check
      refused), C(holders) (the processes keeping a busy overlay), C(journal) (the journal tail when starting
      it failed), C(cmd), C(rc), C(stdout) and C(stderr) (the command that failed)."
  returned: always
  type: list
  elements: dict
  sample:
    - path: /srv/kiosk-config
      state: mounted
      changed: true
      mounted: true
      reboot_required: false
      unit: srv-kiosk\x2dconfig.mount
      actions: ["write srv-kiosk\\x2dconfig.mount", "daemon-reload", "start srv-kiosk\\x2dconfig.mount"]
removed:
  description: Mount points of the undeclared overlays removed (with O(exclusive); in check mode, to remove).
  returned: always
  type: list
  elements: str
  sample: [/srv/old-app]
removed_results:
  description: The mount module's result of each removal of RV(removed) (or failed removal), like RV(results).
  returned: always
  type: list
  elements: dict
  sample: []
target:
  description: The aggregate target.
  returned: when O(target) is set
  type: dict
  contains:
    name:
      description: The target's unit name.
      type: str
      sample: overlays.target
    unit_path:
      description: Path of the target's unit file.
      type: str
      sample: /etc/systemd/system/overlays.target
    requires:
      description: The mount units the target requires and orders after.
      type: list
      elements: str
      sample: [srv-kiosk\x2dconfig.mount]
    actions:
      description: What the run did to the target (write, enable, start, removal of stale targets).
      type: list
      elements: str
      sample: [write overlays.target, enable overlays.target, start overlays.target]
    changed:
      description: Whether the target changed.
      type: bool
      sample: true
diff:
  description: One entry per unit file that changes (C(before), C(after), C(before_header), C(after_header)).
  returned: in diff mode, when something changes
  type: list
  elements: dict
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils._bulk import converge_many
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import ModuleFailure
from ansible_collections.overlayfs.systemd.plugins.module_utils._hostlock import LOCK_ARGUMENT_SPEC, run_locked
from ansible_collections.overlayfs.systemd.plugins.module_utils._offline_host import systemd_for


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            overlays=dict(type="list", elements="dict", required=True),
            defaults=dict(type="dict", default={}),
            exclusive=dict(type="bool", default=False),
            purge=dict(type="bool", default=False),
            target=dict(type="str"),
            **LOCK_ARGUMENT_SPEC,
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = run_locked(
            module,
            lambda: converge_many(
                module,
                systemd_for(module),
                overlays=p["overlays"],
                defaults=p["defaults"],
                exclusive=p["exclusive"],
                purge=p["purge"],
                target=p["target"],
            ),
            failure=ModuleFailure,
        )
    except ModuleFailure as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
