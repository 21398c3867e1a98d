#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mount
short_description: Manage one OverlayFS mount as systemd units (persistent, tmpfs or no upper layer)
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
  - systemd as the init system (C(systemctl)); Linux with the C(overlay) file system.
  - C(/usr/bin/install) (coreutils) on the target when O(upper=tmpfs).
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Runs the same reads and comparison and reports what would change; creates no directory, writes
      no unit, runs no C(systemctl) command that changes anything.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: Returns the before and after text of every unit file that changes.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
    details: Compares the rendered units with the files on disk (ignoring the header comment) and the wanted
      layers with the live mount; a second run reports no change and runs no C(daemon-reload).
  safe_file_operations:
    description: Uses Ansible's strict file operation functions to ensure proper permissions and avoid data corruption.
    support: full
    details: Unit files are written to a temporary file in the same directory and moved into place.
options:
  path:
    description:
      - The mount point (C(Where=)). An absolute path; C(.) and C(..) components, control characters, a
        trailing backslash or trailing whitespace are refused. V(/) and API file systems (C(/proc), C(/sys),
        C(/dev), C(/run/systemd)) are refused.
      - It must not be a layer, lie inside one or contain one.
      - The escaped unit name must fit in 255 bytes (each escaped byte such as C(-) or a non-ASCII byte takes 4).
    type: str
    required: true
  lowerdir:
    description:
      - The read-only layers, top-most first. At least one (two with O(upper=none)), at most 500, no duplicates,
        none nested in another.
      - With O(state=mounted) every lower must exist and be a directory.
      - C(,) C(:) C(\) C(%) and spaces in paths are escaped for the kernel and for systemd's option filter
        (tested on Debian 12 and 13). With util-linux 2.39 and 2.40 (not tested), C(mount) may split a comma in a
        path; the module warns there.
      - With util-linux 2.39 or later (new mount API, at most 255 bytes a value) a C(lowerdir=) list longer than
        that is written as one C(lowerdir+=) option a layer where the kernel is 6.8 or later and no path holds
        C(,) or C(\); elsewhere it is refused with the reason.
      - Required unless O(state=absent).
    type: list
    elements: str
  upper:
    description:
      - Where writes go.
      - V(persistent) keeps them on disk in O(upperdir), surviving reboots.
      - V(tmpfs) keeps them on a tmpfs of its own (size O(tmpfs_size)), lost at every reboot. A restart of the
        overlay keeps the tmpfs and its content; stopping or removing the tmpfs unit discards it.
      - V(none) makes a read-only overlay; the kernel needs at least two lowers.
    type: str
    choices: [persistent, tmpfs, none]
    default: persistent
  upperdir:
    description:
      - Upper directory for O(upper=persistent). Defaults to C(/var/lib/overlayfs/<id>/upper).
      - Must be given together with O(workdir), on the same mount, not on an overlay or a file system
        without the features the kernel needs (NFS, CIFS, FAT...), not used by another live overlay.
      - Not allowed with O(upper=tmpfs) or O(upper=none).
    type: str
  workdir:
    description:
      - Work directory for O(upper=persistent). Defaults to C(/var/lib/overlayfs/<id>/work).
      - The kernel empties C(<workdir>/work) at every mount, so an existing non-empty workdir is refused unless
        this overlay's managed unit already uses it (only empty C(work) and C(index) directories are accepted).
    type: str
  tmpfs_size:
    description:
      - Size limit of the tmpfs holding the upper layer (C(size=)), bytes with an optional C(k), C(m), C(g)
        suffix (V(256M)) or a percentage of RAM (V(25%)). A full tmpfs means C(ENOSPC) in the merged view.
      - Only used with O(upper=tmpfs). Changing it on a mounted tmpfs resizes it by remount (C(systemctl reload)).
    type: str
    default: 25%
  tmpfs_nr_inodes:
    description:
      - Inode limit of the tmpfs (C(nr_inodes=)), a number with an optional C(k), C(m), C(g) suffix.
        Not set means the kernel default (half the RAM pages).
      - Only used with O(upper=tmpfs).
    type: str
  tmpfs_mode:
    description:
      - Mode of the tmpfs root C(/run/overlayfs/<id>), an octal string. Only used with O(upper=tmpfs).
    type: raw
    default: '0755'
  state:
    description:
      - V(mounted) writes and enables the units and makes sure the overlay is mounted with the wanted layers.
      - V(present) writes the units (and enables them per O(enabled)) without starting or stopping anything;
        RV(reboot_required) tells whether a live mount differs.
      - V(unmounted) writes the units and stops the overlay (checking first that nothing uses it). With
        O(upper=tmpfs) the tmpfs stays mounted with its content until reboot or O(state=absent).
      - V(absent) stops the overlay (busy check first), disables it and removes the unit files this
        collection wrote. Upper and work data are kept unless O(purge=true); a non-empty tmpfs upper makes
        it refuse unless O(purge=true).
    type: str
    choices: [mounted, present, unmounted, absent]
    default: mounted
  enabled:
    description:
      - Whether the overlay is mounted at boot (C(systemctl enable), C(WantedBy=local-fs.target) plus O(wanted_by)).
    type: bool
    default: true
  owner:
    description:
      - Owner (name or uid) of the upper root directory, which becomes the owner of the merged root.
      - Default is the owner of the top-most lower, so the merged root looks like the lower.
      - Applied when the module creates the upper; when given, also enforced on an existing persistent upper.
    type: str
  group:
    description:
      - Group (name or gid) of the upper root directory. Default is the top-most lower's group.
    type: str
  mode:
    description:
      - Mode of the upper root directory as an octal string (V('0755')). Default is the top-most lower's mode.
    type: raw
  redirect_dir:
    description:
      - Kernel C(redirect_dir=) feature. Not set means the kernel default. Quote the value in YAML
        (V('on'), V('off')), otherwise YAML turns it into a boolean.
      - Do not enable it over layers that untrusted users can write.
    type: str
    choices: ['on', follow, nofollow, 'off']
  index:
    description:
      - Kernel C(index=) feature (inode index, needed by O(nfs_export)). Not set means the kernel default.
      - With an index, the upper remembers its lower; mounting it later over other lowers fails (C(ESTALE)).
    type: bool
  metacopy:
    description:
      - Kernel C(metacopy=) feature. Conflicts with O(redirect_dir) other than V(on), with O(nfs_export)
        and O(userxattr). Never enable it over untrusted layers.
    type: bool
  xino:
    description:
      - Kernel C(xino=) feature. Not set means the kernel default.
    type: str
    choices: ['on', 'off', auto]
  nfs_export:
    description:
      - Kernel C(nfs_export=) feature. Conflicts with O(index=false) and O(metacopy=true).
    type: bool
  uuid:
    description:
      - Kernel C(uuid=) feature (kernel 6.6 or later for V(auto) and V(on)). Not set means the kernel default.
    type: str
    choices: ['on', 'off', auto, 'null']
  userxattr:
    description:
      - Use C(user.overlay.*) instead of C(trusted.overlay.*) extended attributes. Conflicts with O(metacopy)
        and O(redirect_dir) other than V(nofollow). On tmpfs it needs Linux 6.6 or later.
    type: bool
  volatile:
    description:
      - Kernel C(volatile) option (no syncs to the upper). Only allowed with O(upper=tmpfs); on a persistent
        upper the kernel leaves C(work/incompat/volatile) behind and refuses every later mount.
    type: bool
  flags:
    description:
      - Generic mount flags of the overlay. The default V([nosuid, nodev]) follows the overlayfs CVE history
        (set-uid and device files copied up from layers). Give V([]) for none.
      - At most one of V(noatime), V(relatime), V(strictatime).
    type: list
    elements: str
    choices: [ro, noatime, nosuid, nodev, noexec, relatime, nodiratime, strictatime, sync, dirsync]
    default: [nosuid, nodev]
  description:
    description:
      - C(Description=) of the overlay unit. Default C(OverlayFS <path>).
    type: str
  before:
    description:
      - Extra C(Before=) units of the overlay unit (full unit names). C(Before=local-fs.target) is always set.
    type: list
    elements: str
    default: []
  after:
    description:
      - Extra C(After=) units of the overlay unit. Layer paths need none; they get C(RequiresMountsFor=).
    type: list
    elements: str
    default: []
  requires:
    description:
      - Extra C(Requires=) units of the overlay unit.
    type: list
    elements: str
    default: []
  wanted_by:
    description:
      - Extra C(WantedBy=) units in C([Install]), in addition to C(local-fs.target).
    type: list
    elements: str
    default: []
  timeout:
    description:
      - C(TimeoutSec=) of the overlay unit, a systemd time span (V(90), V(90s), V(2min)). Not set means the
        systemd default.
    type: str
  apply:
    description:
      - How a change reaches a live overlay whose layers or mount options differ.
      - V(restart) stops and starts it (an overlay cannot change layers by remount, so the module never uses
        C(reload)). If any process uses the mount (working directory, root, open file, mapping) or another
        file system is mounted below it, the module fails naming the processes and changes nothing.
      - V(next_boot) writes the units, leaves the live mount alone and returns RV(reboot_required=true).
    type: str
    choices: [restart, next_boot]
    default: restart
  purge:
    description:
      - With O(state=absent), also delete the upper and work directories (the data!) that the removed unit
        used, and the C(/var/lib/overlayfs/<id>) directory of the default layout. Lowers are never deleted.
        A directory that is a mount point or has mounts below it is refused.
      - A tmpfs upper's changes are lost when its tmpfs stops (O(state=absent), or a change of O(upper) away
        from V(tmpfs)). While that upper holds anything, the module refuses such a run unless O(purge=true).
    type: bool
    default: false
  allow_nonempty_mountpoint:
    description:
      - Mount even if O(path) is a non-empty directory; its content is hidden while the overlay is mounted.
    type: bool
    default: false
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
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import (
    ARGUMENT_SPEC,
    REQUIRED_IF,
    REQUIRED_TOGETHER,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import Systemd


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_together=REQUIRED_TOGETHER,
        required_if=REQUIRED_IF,
    )
    try:
        result = converge(module, Systemd(module), module.params)
    except ModuleFailure as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
