#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mount
short_description: Manage one OverlayFS mount as systemd units (persistent, tmpfs or no upper layer)
version_added: 0.1.0
description:
  - Declares one overlay at O(path) as a systemd C(.mount) unit in C(/etc/systemd/system), validates it
    against the kernel's rules before touching the host, creates the upper and work directories, starts
    and enables it, and verifies the live mount in C(/proc/self/mountinfo).
  - "Layer model: O(lowerdir) lists read-only layers, top-most first (as in the kernel's C(lowerdir=)).
    Writes go to the upper layer, chosen by O(upper): V(persistent) keeps it on disk (O(upperdir)/O(workdir),
    default C(/var/lib/overlayfs/<id>/upper) and C(/var/lib/overlayfs/<id>/work)), V(tmpfs) keeps it in RAM
    on a tmpfs of its own mounted at C(/run/overlayfs/<id>) (lost at every reboot and whenever that tmpfs is
    unmounted), V(none) mounts a read-only overlay of at least two lowers."
  - "C(<id>) is the mount point's components joined by C(_) (characters outside C([A-Za-z0-9.]) become C(_),
    at most 48 characters), then C(_) and the first 8 hex digits of the SHA-256 of the path. For example
    O(path=/srv/kiosk) gives C(srv_kiosk_) followed by 8 hex digits. The ids never collide between mount points."
  - Unit names are the escaped mount point exactly as C(systemd-escape --path --suffix=mount) computes them,
    for example C(/srv/my-app) gives C(srv-my\x2dapp.mount). With O(upper=tmpfs) the module also manages the
    tmpfs unit (the escaped C(/run/overlayfs/<id>)) and a oneshot service C(overlayfs-prepare-<id>.service)
    that recreates the upper and work directories on the fresh tmpfs at every boot, before the overlay mounts.
  - Every unit file starts with the comment C(# Managed by overlayfs.systemd - do not edit; changes are
    overwritten.) and carries C(X-OverlayfsSystemd-*) keys in C([Unit]) (ignored by systemd) that record the
    overlay id, the upper kind and the layer paths. Comparisons ignore the comment line only.
author:
  - overlayfs.systemd maintainers (@overlayfs-systemd)
requirements:
  - systemd as the init system (C(systemctl)); Linux with the C(overlay) file system. Offline (an image root, see
    the notes) no C(systemctl) is needed.
  - C(/usr/bin/install) (coreutils) on the target when O(upper=tmpfs).
attributes:
  check_mode:
    details: Runs the same reads and comparison and reports what would change; creates no directory, writes
      no unit, runs no C(systemctl) command that changes anything.
  diff_mode:
    details: Returns the before and after text of every unit file that changes.
  idempotent:
    details: Compares the rendered units with the files on disk (ignoring the header comment) and the wanted
      layers with the live mount; a second run reports no change and runs no C(daemon-reload).
  safe_file_operations:
    details: Unit files are written to a temporary file in the same directory and moved into place.
extends_documentation_fragment:
  - overlayfs.systemd.attributes
  - overlayfs.systemd.lock
  - overlayfs.systemd.offline
  - overlayfs.systemd.attributes.files
  - overlayfs.systemd.overlay
notes:
  - "Why no remount: overlayfs ignores (older stacks) or refuses (kernel 6.5 and util-linux 2.39 or later) layer
    changes on remount, so the module changes a live overlay only by stop and start (O(apply=restart)) or at
    the next boot (O(apply=next_boot))."
  - "Dependencies: systemd infers none from C(What=overlay); the unit gets C(RequiresMountsFor=) on every lower
    and on the upper and work directories (or the tmpfs root), and C(Before=local-fs.target)."
  - "tmpfs behaviour: the tmpfs unit is mounted with C(mode=0755,uid=0,gid=0,nosuid,nodev,size=...); C(%) is
    written as C(%%) in unit files. A fresh tmpfs has no upper or work directory, so the prepare service runs
    C(/usr/bin/install -d) for both at every boot. Stopping the tmpfs unit discards all changes."
  - "Rollback: if starting or verifying the overlay fails, the previous unit files come back, systemd is
    reloaded, the previous overlay is started again if it was mounted, directories this run created are
    removed, and the error carries the C(systemctl) output and the journal tail of the unit."
  - "The merged root shows the upper root's owner and mode; that is why O(owner), O(group) and O(mode) default
    to the top-most lower's."
  - "Inside a container whose root is an overlay, a persistent upper must be on a tmpfs or a volume: the kernel
    refuses an upper on overlayfs, and the module says so before mounting."
  - "The module does not lock against concurrent runs for the same overlay."
seealso:
  - module: overlayfs.systemd.mounts
    description: Many overlays in one call, removal of undeclared ones, an aggregate target.
  - module: overlayfs.systemd.mount_info
    description: Every overlay of a host and the drift between its units and the live mount.
  - module: overlayfs.systemd.upper
    description: Inspect, discard, commit or export the upper layer of an overlay this module manages.
  - ref: ansible_collections.overlayfs.systemd.docsite.mount
    description: The mount model guide (layers, upper kinds, states, apply policy, checks).
  - name: overlayfs kernel documentation
    description: Layers, features and their conflicts.
    link: https://docs.kernel.org/filesystems/overlayfs.html
  - name: systemd.mount
    description: Mount unit configuration.
    link: https://www.freedesktop.org/software/systemd/man/latest/systemd.mount.html
"""

EXAMPLES = r"""
- name: Writable app directory over a read-only release, thrown away at boot
  overlayfs.systemd.mount:
    path: /srv/kiosk
    lowerdir:
      - /opt/kiosk/v2
      - /opt/kiosk/base
    upper: tmpfs
    tmpfs_size: 256M
    state: mounted

- name: Persistent changes on top of a vendor tree, upper in the default place
  overlayfs.systemd.mount:
    path: /srv/app
    lowerdir:
      - /opt/app/release
    state: mounted

- name: Persistent upper on a data volume, owned by the application user
  overlayfs.systemd.mount:
    path: /srv/web
    lowerdir:
      - /opt/web/release
    upperdir: /srv/overlay-data/web/upper
    workdir: /srv/overlay-data/web/work
    owner: root
    group: root
    mode: "0755"
    flags: [nosuid, nodev, noexec]

- name: Read-only merge of two trees (no upper layer)
  overlayfs.systemd.mount:
    path: /srv/docs
    lowerdir:
      - /opt/docs/site
      - /opt/docs/theme
    upper: none

- name: Change the layers at the next reboot, leaving the live mount alone
  overlayfs.systemd.mount:
    path: /srv/app
    lowerdir:
      - /opt/app/hotfix
      - /opt/app/release
    apply: next_boot
  register: app_overlay

- name: Tell the operator a reboot is pending
  ansible.builtin.debug:
    msg: "Reboot to apply the new layers of /srv/app"
  when: app_overlay.reboot_required

- name: Declare the units, mount only at the next boot
  overlayfs.systemd.mount:
    path: /srv/reports
    lowerdir:
      - /opt/reports
    state: present

- name: Remove the overlay, keep its upper data
  overlayfs.systemd.mount:
    path: /srv/reports
    state: absent

- name: Remove the overlay and delete its upper and work directories
  overlayfs.systemd.mount:
    path: /srv/app
    state: absent
    purge: true
"""

RETURN = r"""
offline:
  description:
    - True when systemd does not run on the target (an image root, a chroot, C(SYSTEMD_OFFLINE=1)). The run
      wrote unit files and their C([Install]) links only and started, stopped and reloaded nothing (see the notes).
  returned: always
  type: bool
  sample: false
layer_drift:
  description:
    - The drift of the live overlay's upper and work directories (the keys of M(overlayfs.systemd.mount_info)'s
      C(drift_keys), such as V(upper_missing) or V(upper_replaced)); each is a change, repaired by a restart
      (or, with O(apply=next_boot), at the next boot, RV(reboot_required)). A missing directory is created again.
  returned: always
  type: list
  elements: str
  sample: []
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
unit:
  description: Name of the overlay C(.mount) unit.
  returned: always
  type: str
  sample: srv-kiosk.mount
unit_path:
  description: Path of the overlay unit file.
  returned: always
  type: str
  sample: /etc/systemd/system/srv-kiosk.mount
units:
  description:
    - All units the module manages for this overlay (the overlay unit, and with O(upper=tmpfs) the tmpfs
      unit and the prepare service). With O(state=absent), the units it removed.
  returned: always
  type: list
  elements: str
  sample: [srv-kiosk.mount, run-overlayfs-srv_kiosk_1f2e3d4c.mount, overlayfs-prepare-srv_kiosk_1f2e3d4c.service]
options:
  description: The rendered overlay mount options, in order, before C(%) doubling for the unit file.
  returned: when O(state) is not V(absent)
  type: list
  elements: str
  sample: [lowerdir=/opt/kiosk/v2:/opt/kiosk/base, upperdir=/run/overlayfs/srv_kiosk_1f2e3d4c/upper,
    workdir=/run/overlayfs/srv_kiosk_1f2e3d4c/work, nosuid, nodev]
upperdir:
  description: The upper directory (none for O(upper=none)).
  returned: always
  type: str
  sample: /var/lib/overlayfs/srv_app_0a1b2c3d/upper
workdir:
  description: The work directory (none for O(upper=none)).
  returned: always
  type: str
  sample: /var/lib/overlayfs/srv_app_0a1b2c3d/work
mounted:
  description: Whether an overlay is mounted at O(path) after the run (in check mode, before it), read from mountinfo.
  returned: always
  type: bool
  sample: true
reboot_required:
  description:
    - True when the live overlay differs from the units on disk and the module left it alone
      (O(apply=next_boot), O(state=present), or an obsolete tmpfs still holding the live upper).
  returned: always
  type: bool
  sample: false
actions:
  description: The runtime actions taken (or, in check mode, that would be taken), in order.
  returned: always
  type: list
  elements: str
  sample: ["create directory /var/lib/overlayfs/srv_app_0a1b2c3d/upper", "write srv-app.mount", "daemon-reload",
    "start srv-app.mount", "enable srv-app.mount"]
created_directories:
  description: Directories created by this run (in check mode, that would be created).
  returned: always
  type: list
  elements: str
  sample: [/var/lib/overlayfs/srv_app_0a1b2c3d, /var/lib/overlayfs/srv_app_0a1b2c3d/upper]
holders:
  description: Processes found using the mount when a busy overlay refused the change (pid, comm, reason).
  returned: failure because the overlay is busy
  type: list
  elements: dict
  sample: [{pid: 1234, comm: bash, reason: cwd}]
param:
  description:
    - The option at fault when the module refused the declaration before changing anything (for example
      V(upperdir) or V(lowerdir)); the message names its value and the fix.
  returned: failure because a check refused the declaration
  type: str
  sample: upperdir
journal:
  description: The last journal lines of the units this run started, when starting or verifying them failed
    (the run was rolled back).
  returned: failure while starting or verifying the units
  type: str
  sample: "2026-01-01T10:00:00+0000 host mount[412]: mount: /srv/app: wrong fs type, bad option..."
cmd:
  description: The command that failed (C(systemctl ...)), as an argv list.
  returned: failure of a command
  type: list
  elements: str
  sample: [/usr/bin/systemctl, start, srv-app.mount]
rc:
  description: Exit status of RV(cmd).
  returned: failure of a command
  type: int
  sample: 1
stdout:
  description: Standard output of RV(cmd).
  returned: failure of a command
  type: str
  sample: ""
stderr:
  description: Standard error of RV(cmd).
  returned: failure of a command
  type: str
  sample: "Job for srv-app.mount failed."
diff:
  description:
    - One entry per unit file that changes, with C(before), C(after), C(before_header) and C(after_header)
      (the unit file path). Empty C(before) means a new file, empty C(after) a removed one.
  returned: in diff mode, when something changes
  type: list
  elements: dict
  sample:
    - before: ""
      after: "# Managed by overlayfs.systemd - do not edit; changes are overwritten.\n[Unit]\n..."
      before_header: /etc/systemd/system/srv-kiosk.mount
      after_header: /etc/systemd/system/srv-kiosk.mount
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils._converge import converge
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import ModuleFailure
from ansible_collections.overlayfs.systemd.plugins.module_utils._hostlock import LOCK_ARGUMENT_SPEC, run_locked
from ansible_collections.overlayfs.systemd.plugins.module_utils._offline_host import systemd_for
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import (
    ARGUMENT_SPEC,
    REQUIRED_IF,
    REQUIRED_TOGETHER,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(ARGUMENT_SPEC, **LOCK_ARGUMENT_SPEC),
        supports_check_mode=True,
        required_together=REQUIRED_TOGETHER,
        required_if=REQUIRED_IF,
    )
    try:
        result = run_locked(module, lambda: converge(module, systemd_for(module), module.params), failure=ModuleFailure)
    except ModuleFailure as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
