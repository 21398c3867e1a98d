# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The options of one overlay, written once for every module that takes them.

``overlayfs.systemd.overlay`` documents them as the module's own options
(``mount``); ``overlayfs.systemd.overlay.items`` documents the same text as the
sub-options of ``overlays[]`` (``mounts``), with every ``O(name)`` reference
pointing at ``O(overlays[].name)``, so ``ansible-doc`` shows each sub-option.
"""

from __future__ import annotations

import re


class ModuleDocFragment:
    # The options of M(overlayfs.systemd.mount), top-level.
    DOCUMENTATION = r"""
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
"""


def _as_items(doc: str) -> str:
    """``DOCUMENTATION`` as the sub-options of ``overlays[]``, every O() pointing into the list."""
    options = doc.split("options:\n", 1)[1]
    options = re.sub(r"O\((?!overlays\[\])", "O(overlays[].", options)
    nested = "".join("    " + line if line.strip() else line for line in options.splitlines(True))
    return "options:\n  overlays:\n    suboptions:\n" + nested


# Derived outside the class body: ansible-test's YAML check reads the class's
# literal strings, and this one is made from DOCUMENTATION.
ModuleDocFragment.ITEMS = _as_items(ModuleDocFragment.DOCUMENTATION)  # type: ignore[attr-defined]
