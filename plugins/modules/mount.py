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
      - C(,) C(:) and C(\) in paths are escaped for the kernel. With util-linux 2.39 or later, C(mount) passes
        each option separately and a comma in a path may not survive; the module warns.
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
        collection wrote. Upper and work data are kept unless O(purge=true).
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

import grp
import os
import pwd
import shutil
import stat
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _overlay
from ansible_collections.overlayfs.systemd.plugins.module_utils._overlay import (
    NEW_API_VALUE_MAX,
    OverlayError,
    OverlaySpec,
    build_spec,
    candidate_units,
    check_option_limits,
    describe_mismatch,
    dir_entries,
    find_holders,
    is_within,
    live_matches,
    make_dirs_secure,
    managed_keys,
    mount_at,
    mount_containing,
    overlay_id,
    parse_mountinfo,
    parse_overlay_options,
    plan,
    render_options,
    render_units,
    resolve_ownership,
    submounts,
    workdir_is_fresh,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd

# File-system roots; overridden only by unit tests.
UNIT_DIR = "/etc/systemd/system"
MOUNTINFO = "/proc/self/mountinfo"
PROC_ROOT = "/proc"
FSTAB = "/etc/fstab"

UNIT_FILE_MODE = 0o644
PRIVATE_DIR_MODE = 0o700
UNSUITABLE_UPPER_FS = (
    "overlay",
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "vfat",
    "msdos",
    "exfat",
    "iso9660",
    "squashfs",
    "erofs",
)

ARGUMENT_SPEC: dict[str, Any] = dict(
    path=dict(type="str", required=True),
    lowerdir=dict(type="list", elements="str"),
    upper=dict(type="str", choices=["persistent", "tmpfs", "none"], default="persistent"),
    upperdir=dict(type="str"),
    workdir=dict(type="str"),
    tmpfs_size=dict(type="str", default="25%"),
    tmpfs_nr_inodes=dict(type="str"),
    tmpfs_mode=dict(type="raw", default="0755"),
    state=dict(type="str", choices=["mounted", "present", "unmounted", "absent"], default="mounted"),
    enabled=dict(type="bool", default=True),
    owner=dict(type="str"),
    group=dict(type="str"),
    mode=dict(type="raw"),
    redirect_dir=dict(type="str", choices=["on", "follow", "nofollow", "off"]),
    index=dict(type="bool"),
    metacopy=dict(type="bool"),
    xino=dict(type="str", choices=["on", "off", "auto"]),
    nfs_export=dict(type="bool"),
    uuid=dict(type="str", choices=["on", "off", "auto", "null"]),
    userxattr=dict(type="bool"),
    volatile=dict(type="bool"),
    flags=dict(
        type="list",
        elements="str",
        choices=[
            "ro",
            "noatime",
            "nosuid",
            "nodev",
            "noexec",
            "relatime",
            "nodiratime",
            "strictatime",
            "sync",
            "dirsync",
        ],
        default=["nosuid", "nodev"],
    ),
    description=dict(type="str"),
    before=dict(type="list", elements="str", default=[]),
    after=dict(type="list", elements="str", default=[]),
    requires=dict(type="list", elements="str", default=[]),
    wanted_by=dict(type="list", elements="str", default=[]),
    timeout=dict(type="str"),
    apply=dict(type="str", choices=["restart", "next_boot"], default="restart"),
    purge=dict(type="bool", default=False),
    allow_nonempty_mountpoint=dict(type="bool", default=False),
)


class ActivationError(Exception):
    """Activation failed after something was changed; main() rolls back."""

    def __init__(self, step: str, cause: Exception) -> None:
        super().__init__("%s: %s" % (step, cause))
        self.step = step
        self.cause = cause


class BusyError(OverlayError):
    def __init__(self, message: str, holders: list[dict[str, Any]]) -> None:
        super().__init__(message, "apply")
        self.holders = holders


# ---------------------------------------------------------------------------
# Reading the host
# ---------------------------------------------------------------------------


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def read_mounts() -> list[_overlay.MountInfo]:
    return parse_mountinfo(read_text(MOUNTINFO) or "")


def resolve_ids(spec: OverlaySpec) -> OverlaySpec:
    """Fill in the upper root's uid/gid/mode from the parameters or the top lower."""
    lower_st: os.stat_result | None = None
    if spec.owner is None or spec.group is None or spec.mode is None:
        top = spec.lowerdir[0]
        try:
            lower_st = os.stat(top)
        except OSError as exc:
            raise OverlayError(
                "lowerdir %s does not exist or cannot be read (%s); the upper root copies its owner and mode "
                "by default. Create it, or give owner, group and mode" % (top, exc.strerror),
                "lowerdir",
            ) from exc
    if spec.owner is not None:
        uid = _lookup_id(spec.owner, "owner")
    elif lower_st is not None:
        uid = lower_st.st_uid
    if spec.group is not None:
        gid = _lookup_id(spec.group, "group")
    elif lower_st is not None:
        gid = lower_st.st_gid
    if spec.mode is not None:
        mode = spec.mode
    elif lower_st is not None:
        mode = stat.S_IMODE(lower_st.st_mode)
    return resolve_ownership(spec, uid, gid, mode)


def _lookup_id(name: str, param: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        if param == "owner":
            return pwd.getpwnam(name).pw_uid
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise OverlayError(
            "%s %r does not exist on the host; create it or give a numeric id" % (param, name), param
        ) from None


def fstab_has(path: str) -> bool:
    text = read_text(FSTAB) or ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            if _overlay.decode_mountinfo_octal(fields[1]).rstrip("/") == path:
                return True
    return False


def preflight(
    spec: OverlaySpec,
    mounts: list[_overlay.MountInfo],
    current: dict[str, str | None],
    live: _overlay.MountInfo | None,
    util_linux: tuple[int, int] | None,
) -> list[str]:
    """Host checks mirroring the kernel's rules; raises OverlayError, returns warnings."""
    warnings: list[str] = []
    if spec.state == "absent":
        return warnings
    for low in spec.lowerdir:
        if not os.path.isdir(low):
            what = "does not exist" if not os.path.lexists(low) else "is not a directory"
            if spec.state == "mounted":
                raise OverlayError("lowerdir %s %s; create it or remove it from lowerdir" % (low, what), "lowerdir")
            warnings.append("lowerdir %s %s; the overlay will fail to mount until it does" % (low, what))

    recorded = managed_keys(current.get(spec.unit))
    live_opts = parse_overlay_options(live.super_options) if live is not None else None

    if spec.upper == "persistent" and spec.upperdir is not None and spec.workdir is not None:
        m_up = mount_containing(mounts, spec.upperdir)
        m_work = mount_containing(mounts, spec.workdir)
        if m_up is not None and m_work is not None and m_up.mount_id != m_work.mount_id:
            raise OverlayError(
                "upperdir %s (on the mount at %s) and workdir %s (on the mount at %s) must be on the same mount; "
                "put both under one directory of one file system"
                % (spec.upperdir, m_up.mount_point, spec.workdir, m_work.mount_point),
                "workdir",
            )
        try:
            dev_up = os.stat(_overlay.nearest_existing(spec.upperdir)).st_dev
            dev_work = os.stat(_overlay.nearest_existing(spec.workdir)).st_dev
        except OSError:
            dev_up = dev_work = None
        if dev_up is not None and dev_up != dev_work:
            raise OverlayError(
                "upperdir %s and workdir %s must be on the same file system" % (spec.upperdir, spec.workdir), "workdir"
            )
        if m_up is not None and m_up.fstype in UNSUITABLE_UPPER_FS:
            if m_up.fstype == "overlay":
                why = "the kernel refuses an upper on overlayfs (for example a container's root)"
            else:
                why = "the kernel needs xattrs, d_type and whiteouts that %s lacks" % m_up.fstype
            raise OverlayError(
                "upperdir %s is on a %s mount at %s: %s. Put upperdir and workdir on a real file system, "
                "a volume, or use upper: tmpfs" % (spec.upperdir, m_up.fstype, m_up.mount_point, why),
                "upperdir",
            )
        if m_up is not None and "ro" in m_up.mount_options.split(","):
            raise OverlayError(
                "upperdir %s is on the read-only mount at %s; the kernel needs a writable upper"
                % (spec.upperdir, m_up.mount_point),
                "upperdir",
            )
        used_here = recorded.get("Workdir") == spec.workdir or (
            live_opts is not None and live_opts.workdir == spec.workdir
        )
        if not used_here and not workdir_is_fresh(spec.workdir):
            raise OverlayError(
                "workdir %s is not empty and this overlay's managed unit does not use it; the kernel deletes what "
                "is in %s/work at mount. Give an empty or new directory" % (spec.workdir, spec.workdir),
                "workdir",
            )
    if spec.upperdir is not None and spec.workdir is not None:
        for m in mounts:
            if m.fstype != "overlay" or m.mount_point == spec.path:
                continue
            other = parse_overlay_options(m.super_options, m.mount_options)
            theirs = [("upperdir", other.upperdir), ("workdir", other.workdir)] + [
                ("lowerdir", x) for x in other.lowerdir
            ]
            for mine_name, mine in (("upperdir", spec.upperdir), ("workdir", spec.workdir)):
                for their_name, their in theirs:
                    if their and (is_within(mine, their) or is_within(their, mine)):
                        raise OverlayError(
                            "%s %s overlaps the %s %s of the overlay mounted at %s; overlays sharing layers corrupt "
                            "each other. Choose another %s"
                            % (mine_name, mine, their_name, their, m.mount_point, mine_name),
                            mine_name,
                        )
    for m in mounts:
        if m.fstype != "overlay" or m.mount_point == spec.path:
            continue
        other = parse_overlay_options(m.super_options, m.mount_options)
        for low in spec.lowerdir:
            for their in (other.upperdir, other.workdir):
                if their and (is_within(low, their) or is_within(their, low)):
                    warnings.append(
                        "lowerdir %s overlaps the upper/work %s of the overlay at %s: changes there are online "
                        "changes to this lower (undefined behaviour)" % (low, their, m.mount_point)
                    )

    if live is None and spec.state in ("mounted", "present"):
        if os.path.islink(spec.path):
            raise OverlayError("path %s is a symlink; systemd refuses non-canonical mount points" % spec.path, "path")
        if os.path.lexists(spec.path) and not os.path.isdir(spec.path):
            raise OverlayError("path %s exists and is not a directory" % spec.path, "path")
        names = dir_entries(spec.path)
        if names and not spec.allow_nonempty_mountpoint:
            raise OverlayError(
                "path %s is not empty (%s); the overlay would hide its content. Move it into a lower layer, "
                "or set allow_nonempty_mountpoint: true"
                % (spec.path, ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")),
                "path",
            )

    per_value = NEW_API_VALUE_MAX if util_linux is not None and util_linux >= (2, 39) else None
    check_option_limits(render_options(spec), per_value)
    if per_value is not None:
        layers = list(spec.lowerdir) + [x for x in (spec.upperdir, spec.workdir) if x]
        if any("," in x for x in layers):
            warnings.append("a layer path contains ','; util-linux >= 2.39 passes options one by one and may split it")
    if fstab_has(spec.path):
        warnings.append(
            "%s also appears in %s; a unit in /etc/systemd/system takes precedence, remove the fstab line"
            % (spec.path, FSTAB)
        )
    return warnings


def purge_targets(spec: OverlaySpec, current: dict[str, str | None]) -> list[str]:
    """Directories purge=true deletes: those the managed unit recorded, or the spec's."""
    keys = managed_keys(current.get(spec.unit))
    if keys:
        up, work = keys.get("Upperdir"), keys.get("Workdir")
        kind = keys.get("Upper")
    else:
        up, work, kind = spec.upperdir, spec.workdir, spec.upper
    if kind != "persistent" or not up or not work:
        return []
    targets = [x for x in (up, work) if os.path.lexists(x)]
    base = "%s/%s" % (_overlay.PERSISTENT_BASE, overlay_id(spec.path))
    if up == base + "/upper" and work == base + "/work" and os.path.lexists(base):
        targets.append(base)
    return targets


def check_purge(spec: OverlaySpec, targets: list[str], mounts: list[_overlay.MountInfo]) -> None:
    for t in targets:
        for low in spec.lowerdir:
            if is_within(low, t) or is_within(t, low):
                raise OverlayError("purge refuses %s: it overlaps lowerdir %s" % (t, low), "purge")
        if mount_at(mounts, t) is not None or submounts(mounts, t):
            raise OverlayError("purge refuses %s: it is or contains a mount point; unmount it first" % t, "purge")
        if os.path.islink(t):
            raise OverlayError("purge refuses %s: it is a symlink" % t, "purge")


def busy_check(spec: OverlaySpec, stop_units: list[str], mounts: list[_overlay.MountInfo]) -> None:
    checks = []
    if spec.unit in stop_units:
        checks.append(spec.path)
    tmpfs_dir = _overlay.tmpfs_dir_for(spec.id)
    if spec.tmpfs_unit in stop_units:
        checks.append(tmpfs_dir)
    holders: list[dict[str, Any]] = []
    subs: list[str] = []
    for mp in checks:
        holders += find_holders(mp, PROC_ROOT)
        subs += [s for s in submounts(mounts, mp) if s != spec.path]
    if holders or subs:
        parts = ["pid %d (%s): %s" % (h["pid"], h["comm"], h["reason"]) for h in holders]
        parts += ["mount %s" % s for s in subs]
        raise BusyError(
            "overlay %s is busy, refusing to stop it; nothing was changed. In use by: %s. Stop these processes "
            "or unmount these, or use apply: next_boot" % (spec.path, "; ".join(parts)),
            holders,
        )


# ---------------------------------------------------------------------------
# Changing the host
# ---------------------------------------------------------------------------


def write_unit(module: AnsibleModule, name: str, text: str) -> None:
    """Write a unit file atomically: temp file in the same directory, fsync, move, 0644."""
    dest = os.path.join(UNIT_DIR, name)
    fd, tmp = tempfile.mkstemp(dir=UNIT_DIR, prefix=".%s." % name[:100], suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, UNIT_FILE_MODE)
        module.atomic_move(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    os.chmod(dest, UNIT_FILE_MODE)
    dfd = os.open(UNIT_DIR, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def remove_unit(name: str) -> None:
    try:
        os.unlink(os.path.join(UNIT_DIR, name))
    except FileNotFoundError:
        pass


def directories_to_create(spec: OverlaySpec) -> list[tuple[str, int, int, int, int]]:
    """(path, mode, uid, gid, parent_mode) of the directories the overlay needs on disk."""
    if spec.state == "absent" or spec.upper != "persistent" or spec.upperdir is None or spec.workdir is None:
        return []
    if spec.upper_uid is None or spec.upper_gid is None or spec.upper_mode is None:
        raise OverlayError("the upper root's owner and mode must be resolved first", "mode")
    parent_mode = PRIVATE_DIR_MODE if spec.default_layout else 0o755
    return [
        (spec.upperdir, spec.upper_mode, spec.upper_uid, spec.upper_gid, parent_mode),
        (spec.workdir, PRIVATE_DIR_MODE, 0, 0, parent_mode),
    ]


def missing_dirs(path: str) -> list[str]:
    out = []
    cur = path
    while cur != "/" and not os.path.lexists(cur):
        out.append(cur)
        cur = os.path.dirname(cur)
    return list(reversed(out))


def upper_root_fixes(spec: OverlaySpec) -> list[str]:
    """Explicit owner/group/mode that differ on an existing persistent upper root."""
    if spec.upper != "persistent" or spec.upperdir is None or not os.path.isdir(spec.upperdir):
        return []
    st = os.lstat(spec.upperdir)
    fixes = []
    if spec.owner is not None and st.st_uid != spec.upper_uid:
        fixes.append("owner")
    if spec.group is not None and st.st_gid != spec.upper_gid:
        fixes.append("group")
    if spec.mode is not None and stat.S_IMODE(st.st_mode) != spec.upper_mode:
        fixes.append("mode")
    return fixes


def remove_created(created: list[str], mounts: list[_overlay.MountInfo]) -> list[str]:
    errors = []
    for d in reversed(created):
        if mount_at(mounts, d) is not None:
            continue
        try:
            if os.path.isdir(d) and not os.path.islink(d):
                shutil.rmtree(d)
        except OSError as exc:
            errors.append("%s: %s" % (d, exc))
    return errors


def verify_mount(spec: OverlaySpec) -> _overlay.MountInfo:
    live = mount_at(read_mounts(), spec.path)
    if live is None or live.fstype != "overlay":
        raise OverlayError("systemd reported success but no overlay is mounted at %s" % spec.path, "path")
    opts = parse_overlay_options(live.super_options)
    if not live_matches(spec, opts, live.mount_options):
        raise OverlayError(
            "the overlay at %s is mounted with other layers or flags than wanted (the kernel may have fallen "
            "back to read-only): %s" % (spec.path, describe_mismatch(spec, opts, live.mount_options)),
            "path",
        )
    return live


def rollback(
    module: AnsibleModule,
    sd: Systemd,
    spec: OverlaySpec,
    current: dict[str, str | None],
    touched: list[str],
    created: list[str],
    was_mounted: bool,
) -> list[str]:
    """Undo what this run did; returns the problems met (best effort)."""
    problems = []
    for name in touched:
        try:
            old = current.get(name)
            if old is None:
                remove_unit(name)
            else:
                write_unit(module, name, old)
        except OSError as exc:
            problems.append("restore %s: %s" % (name, exc))
    if touched:
        try:
            sd.daemon_reload()
        except CommandError as exc:
            problems.append(str(exc))
    if was_mounted and mount_at(read_mounts(), spec.path) is None:
        try:
            sd.start(spec.unit)
        except CommandError as exc:
            problems.append("restart of the previous overlay: %s" % exc)
    problems += remove_created(created, read_mounts())
    return problems


def unit_diff(name: str, before: str | None, after: str | None) -> dict[str, str]:
    path = os.path.join(UNIT_DIR, name)
    return {"before": before or "", "after": after or "", "before_header": path, "after_header": path}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_together=[("upperdir", "workdir")],
        required_if=[
            ("state", "mounted", ("lowerdir",)),
            ("state", "present", ("lowerdir",)),
            ("state", "unmounted", ("lowerdir",)),
        ],
    )
    result: dict[str, Any] = dict(changed=False, reboot_required=False, actions=[], created_directories=[])
    try:
        spec = build_spec(module.params)
    except OverlayError as exc:
        module.fail_json(msg=str(exc), param=exc.param, **result)
    result.update(
        unit=spec.unit,
        unit_path=os.path.join(UNIT_DIR, spec.unit),
        upperdir=spec.upperdir,
        workdir=spec.workdir,
    )
    sd = Systemd(module)
    actions: list[str] = result["actions"]
    created: list[str] = result["created_directories"]
    touched: list[str] = []
    current: dict[str, str | None] = {}
    was_mounted = False
    try:
        mounts = read_mounts()
        live = mount_at(mounts, spec.path)
        if live is not None and live.fstype != "overlay":
            if spec.state in ("mounted", "present"):
                raise OverlayError(
                    "path %s is already the mount point of a %s file system (%s); unmount it first"
                    % (spec.path, live.fstype, live.source),
                    "path",
                )
            live = None
        was_mounted = live is not None
        tmpfs_dir = _overlay.tmpfs_dir_for(spec.id)
        live_tmpfs = mount_at(mounts, tmpfs_dir)
        if live_tmpfs is not None and live_tmpfs.fstype != "tmpfs":
            live_tmpfs = None
        names = candidate_units(spec.path)
        current = {n: read_text(os.path.join(UNIT_DIR, n)) for n in names}
        props = sd.show(names, ["Id", "UnitFileState", "NeedDaemonReload", "ActiveState"])
        enabled_now = props.get(spec.unit, {}).get("UnitFileState") == "enabled"
        pending_reload = any(
            props.get(n, {}).get("NeedDaemonReload") == "yes" for n in names if current.get(n) is not None
        )

        if spec.state != "absent":
            spec = resolve_ids(spec)
            desired = render_units(spec)
            result["units"] = list(desired)
            result["options"] = render_options(spec)
            util_linux = sd.util_linux_version()
            for w in preflight(spec, mounts, current, live, util_linux):
                module.warn(w)
            purge = []
        else:
            desired = {}
            purge = purge_targets(spec, current) if spec.purge else []
            check_purge(spec, purge, mounts)
        pl = plan(spec, desired, current, live, live_tmpfs, enabled_now, pending_reload, purge)
        if spec.state == "absent":
            result["units"] = list(pl.remove)
        for name in pl.keep_unmanaged:
            module.warn("%s/%s exists but was not written by overlayfs.systemd; left alone" % (UNIT_DIR, name))

        dirs = []
        if spec.state != "absent":
            for path, mode, uid, gid, parent_mode in directories_to_create(spec):
                for d in missing_dirs(path):
                    if d not in created:
                        created.append(d)
                        actions.append("create directory %s" % d)
                dirs.append((path, mode, uid, gid, parent_mode))
            if spec.state == "mounted" and not os.path.lexists(spec.path):
                for d in missing_dirs(spec.path):
                    created.append(d)
                    actions.append("create directory %s" % d)
                dirs.append((spec.path, 0o755, 0, 0, 0o755))
        fixes = upper_root_fixes(spec) if spec.state != "absent" else []
        if fixes:
            actions.append("set %s of %s" % ("/".join(fixes), spec.upperdir))
        actions += ["stop %s" % u for u in pl.stop]
        actions += ["write %s" % u for u in pl.write] + ["remove %s" % u for u in pl.remove]
        if pl.daemon_reload:
            actions.append("daemon-reload")
        actions += ["reload %s" % u for u in pl.reload_units] + ["start %s" % u for u in pl.start]
        actions += ["enable %s" % u for u in pl.enable] + ["reenable %s" % u for u in pl.reenable]
        actions += ["disable %s" % u for u in pl.disable] + ["purge %s" % p for p in pl.purge]
        result["reboot_required"] = pl.reboot_required
        result["changed"] = bool(actions)
        changed_units = list(pl.write) + list(pl.remove)
        if module._diff and changed_units:
            result["diff"] = [unit_diff(n, current.get(n), pl.write.get(n)) for n in changed_units]

        if module.check_mode:
            result["mounted"] = was_mounted
            module.exit_json(**result)

        # Busy check first: a busy overlay must leave everything exactly as it was.
        if pl.stop:
            busy_check(spec, pl.stop, mounts)
        created.clear()
        step = "create directories"
        try:
            for path, mode, uid, gid, parent_mode in dirs:
                make_dirs_secure(path, mode, uid, gid, created, parent_mode)
            if fixes and spec.upperdir is not None:
                fd = os.open(spec.upperdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
                try:
                    os.fchown(
                        fd,
                        -1 if spec.upper_uid is None else spec.upper_uid,
                        -1 if spec.upper_gid is None else spec.upper_gid,
                    )
                    if spec.upper_mode is not None:
                        os.fchmod(fd, spec.upper_mode)
                finally:
                    os.close(fd)
            for unit in pl.stop:
                step = "stop %s" % unit
                sd.stop(unit)
            for name in pl.disable:
                step = "disable %s" % name
                sd.disable(name)
            for name, text in pl.write.items():
                step = "write %s" % name
                touched.append(name)
                write_unit(module, name, text)
            for name in pl.remove:
                step = "remove %s" % name
                touched.append(name)
                remove_unit(name)
            if pl.daemon_reload:
                step = "daemon-reload"
                sd.daemon_reload()
            for name in pl.reload_units:
                step = "reload %s" % name
                sd.reload(name)
            for name in pl.start:
                step = "start %s" % name
                sd.start(name)
                if name == spec.unit:
                    step = "verify %s" % name
                    verify_mount(spec)
        except (CommandError, OverlayError, OSError) as exc:
            if spec.state == "absent":
                raise
            raise ActivationError(step, exc) from exc
        for name in pl.enable:
            sd.enable(name)
        for name in pl.reenable:
            sd.reenable(name)
        for target in pl.purge:
            if os.path.lexists(target):
                shutil.rmtree(target)
        final = mount_at(read_mounts(), spec.path)
        result["mounted"] = final is not None and final.fstype == "overlay"
    except BusyError as exc:
        # Refused before anything was touched: nothing changed.
        result.update(changed=False, mounted=was_mounted)
        module.fail_json(msg=str(exc), param=exc.param, holders=exc.holders, **result)
    except OverlayError as exc:
        result.update(changed=False, mounted=was_mounted)
        module.fail_json(msg=str(exc), param=exc.param, **result)
    except ActivationError as exc:
        journal = "\n".join(
            t
            for t in (sd.journal_tail(u) for u in [spec.unit, spec.prepare_unit, spec.tmpfs_unit] if u in current)
            if t
        )
        problems = rollback(module, sd, spec, current, touched, created, was_mounted)
        final = mount_at(read_mounts(), spec.path)
        result["mounted"] = final is not None and final.fstype == "overlay"
        cause = exc.cause
        msg = "%s failed; rolled back the unit files and removed the directories this run created. %s" % (
            exc.step,
            cause,
        )
        if problems:
            msg += " Rollback problems: %s" % "; ".join(problems)
        extra: dict[str, Any] = {"journal": journal}
        if isinstance(cause, CommandError):
            extra.update(cmd=cause.cmd, rc=cause.rc, stdout=cause.stdout, stderr=cause.stderr)
        module.fail_json(msg=msg, **extra, **result)
    except CommandError as exc:
        result["mounted"] = was_mounted
        module.fail_json(msg=str(exc), cmd=exc.cmd, rc=exc.rc, stdout=exc.stdout, stderr=exc.stderr, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
