#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: mount_info
short_description: List every OverlayFS mount of a host, its units, tmpfs use and drift
version_added: 0.1.0
description:
  - Reports one entry per overlay, whether it is mounted (read from C(/proc/self/mountinfo)) or only declared
    by a unit file that M(overlayfs.systemd.mount) wrote in C(/etc/systemd/system).
  - Overlays nobody here created (a container runtime's, or C(/) on an overlayroot machine) are listed too,
    with RV(overlays[].managed=false).
  - Layer paths are decoded completely (the kernel's octal escapes and the overlay C(\,) C(\:) escapes), and
    both the C(lowerdir=) form and the newer C(lowerdir+=)/C(datadir+=) form are understood.
  - "For a managed overlay, RV(overlays[].drift) lists how the live host differs from its units: other layers,
    other options, not mounted although enabled, a failed unit, a unit changed on disk but not reloaded, or
    another file system mounted at the path."
  - The systemd state of all reported units is read with one C(systemctl show) call. Without a running
    systemd the module warns and reports the states as null.
author:
  - overlayfs.systemd maintainers (@overlayfs-systemd)
requirements:
  - Linux (C(/proc/self/mountinfo)); systemd (C(systemctl)) for the unit states.
attributes:
  check_mode:
    details: The module only reads; it runs the same way in check mode.
  diff_mode:
    support: none
    details: Nothing changes, so there is no diff.
  idempotent:
    details: Always returns C(changed=false).
extends_documentation_fragment:
  - overlayfs.systemd.attributes
options:
  path:
    description:
      - Report only the overlays at these mount points (one path or a list). Paths are normalised (no trailing
        or double slashes); a path that is no overlay gives no entry.
      - Not set means every overlay.
    type: list
    elements: str
  managed_only:
    description:
      - Report only the overlays declared by this collection's unit files, mounted or not.
    type: bool
    default: false
notes:
  - "Kernel-added options are not drift: the kernel shows features such as C(uuid=on), C(redirect_dir),
    C(index), C(xino), C(metacopy) or C(nfs_export) from its own defaults; they count only when the unit sets
    them to another value."
  - "The upper kind of an unmanaged overlay is inferred: no upper directory gives V(none), an upper directory
    on a tmpfs mount gives V(tmpfs), anything else V(persistent)."
  - "Only the mount namespace of the module's process is seen (on a container host, the host's overlays, not
    those inside other containers' namespaces unless they are also mounted here)."
seealso:
  - module: overlayfs.systemd.mount
    description: Declare an overlay as systemd units; the overlays it manages are reported with their drift.
  - module: overlayfs.systemd.mounts
    description: Many overlays in one call.
  - module: overlayfs.systemd.upper
    description: What an overlay's upper layer changes, file by file.
  - ref: ansible_collections.overlayfs.systemd.docsite.mount_info
    description: The guide to the report and to finding broken kiosks across an inventory.
  - name: overlayfs kernel documentation
    description: Layers, features and their mount options.
    link: https://docs.kernel.org/filesystems/overlayfs.html
"""

EXAMPLES = r"""
- name: Every overlay of the host
  overlayfs.systemd.mount_info:
  register: overlays_report

- name: Show mount points and upper kinds
  ansible.builtin.debug:
    msg: "{{ overlays_report.overlays | items2dict(key_name='path', value_name='upper') }}"

- name: Only the overlays this collection manages, mounted or not
  overlayfs.systemd.mount_info:
    managed_only: true
  register: managed_report

- name: One overlay by its mount point
  overlayfs.systemd.mount_info:
    path: /srv/kiosk
  register: kiosk_report

- name: Its tmpfs upper's use, when it has one and is mounted
  ansible.builtin.debug:
    msg: "{{ kiosk_report.overlays | selectattr('tmpfs') | map(attribute='tmpfs.percent') | list }}"

# Finding broken kiosks across an inventory: run against every kiosk, collect
# the problems of each host, and report them once for the whole play.
- name: Overlays of every kiosk
  overlayfs.systemd.mount_info:
    managed_only: true
  register: kiosk_overlays

- name: Problems of this kiosk, drifted overlays and tmpfs uppers over 90 % full
  ansible.builtin.set_fact:
    kiosk_drift: "{{ kiosk_overlays.overlays | selectattr('drift') | items2dict(key_name='path', value_name='drift') }}"
    kiosk_full: >-
      {{ kiosk_overlays.overlays | selectattr('tmpfs') | selectattr('tmpfs.percent', 'gt', 90)
         | map(attribute='path') | list }}

- name: Broken kiosks of the whole play, reported once
  ansible.builtin.debug:
    msg:
      drifted: "{{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, 'kiosk_drift'))
                   | selectattr('1')) }}"
      tmpfs_full: "{{ dict(ansible_play_hosts | zip(ansible_play_hosts | map('extract', hostvars, 'kiosk_full'))
                      | selectattr('1')) }}"
  run_once: true

- name: Fail the kiosks whose overlays drifted
  ansible.builtin.assert:
    that: kiosk_drift | length == 0
    fail_msg: "{{ inventory_hostname }}: {{ kiosk_drift }}"
    quiet: true
"""

RETURN = r"""
overlays:
  description:
    - One entry per overlay, sorted by mount point. Layers are the live ones when the overlay is mounted,
      otherwise the ones the unit declares.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The mount point.
      type: str
      sample: /srv/kiosk
    lowerdir:
      description: The lower layers, top-most first, decoded (no octal or overlay escapes left).
      type: list
      elements: str
      sample: [/opt/kiosk/v2, /opt/kiosk/base]
    datadir:
      description: Data-only lower layers (C(lowerdir=a::b) or C(datadir+=)), empty for most overlays.
      type: list
      elements: str
      sample: []
    upperdir:
      description: The upper directory, null for an overlay without upper.
      type: str
      sample: /run/overlayfs/srv_kiosk_1f2e3d4c/upper
    workdir:
      description: The work directory, null for an overlay without upper.
      type: str
      sample: /run/overlayfs/srv_kiosk_1f2e3d4c/work
    options:
      description:
        - Every other option, name to value; a flag without value (C(nosuid), C(volatile)) maps to null.
        - For a mounted overlay, the per-mount flags (C(nosuid), C(nodev), C(relatime)...) and the overlay's
          own options as the kernel shows them (C(uuid), C(index)...); C(rw)/C(ro) are in RV(overlays[].readonly).
          Otherwise the options of the unit's C(Options=).
      type: dict
      sample: {nosuid: null, nodev: null, relatime: null, uuid: "on"}
    readonly:
      description: Whether the merged view is read-only (C(ro), or no upper layer).
      type: bool
      sample: false
    mounted:
      description: Whether an overlay is mounted at RV(overlays[].path) now (the top-most mount there).
      type: bool
      sample: true
    managed:
      description: Whether a unit file written by this collection declares this overlay.
      type: bool
      sample: true
    unit:
      description:
        - The overlay's C(.mount) unit (for an unmanaged overlay, the name systemd gives its mount point).
          Null when that name would exceed 255 bytes.
      type: str
      sample: srv-kiosk.mount
    unit_path:
      description:
        - The unit file. For a managed overlay the file in C(/etc/systemd/system); otherwise systemd's
          C(FragmentPath), null when the mount has no unit file.
      type: str
      sample: /etc/systemd/system/srv-kiosk.mount
    active_state:
      description: The unit's C(ActiveState) (C(active), C(inactive), C(failed)...); null without systemd.
      type: str
      sample: active
    sub_state:
      description: The unit's C(SubState) (C(mounted), C(dead), C(failed)...); null without systemd.
      type: str
      sample: mounted
    enabled:
      description: Whether the unit is enabled (mounted at boot; C(UnitFileState) C(enabled)); null without systemd.
      type: bool
      sample: true
    upper:
      description:
        - Where writes go. V(persistent) (an upper directory on disk), V(tmpfs) (lost at reboot) or V(none)
          (read-only overlay). Declared by the unit for a managed overlay, inferred for the others.
      type: str
      sample: tmpfs
    tmpfs:
      description: Size and use of the tmpfs holding a mounted tmpfs upper; null otherwise.
      type: dict
      contains:
        path:
          description: The tmpfs mount point.
          type: str
          sample: /run/overlayfs/srv_kiosk_1f2e3d4c
        size:
          description: Size in bytes (0 for an unlimited tmpfs).
          type: int
          sample: 268435456
        used:
          description: Bytes used.
          type: int
          sample: 1048576
        available:
          description: Bytes still free.
          type: int
          sample: 267386880
        percent:
          description: Used bytes as a percentage of the size, one decimal (0 for an unlimited tmpfs).
          type: float
          sample: 0.4
        inodes:
          description: Total inodes (C(nr_inodes)).
          type: int
          sample: 251074
        inodes_used:
          description: Inodes in use.
          type: int
          sample: 12
        inodes_percent:
          description: Used inodes as a percentage of the total, one decimal.
          type: float
          sample: 0.0
    interrupted_commit:
      description:
        - For a managed overlay, the journal of an O(overlayfs.systemd.upper#module:state=committed) run that died
          before it finished (its C(pid), C(dest), C(phase), C(method), C(old_lowers), C(new_lowers)), null when
          there is none. The overlay is then usually stopped; run M(overlayfs.systemd.upper) with
          O(overlayfs.systemd.upper#module:state=committed) and the same C(dest) to finish or undo it.
      type: dict
      sample: null
    drift:
      description:
        - For a managed overlay, the differences between its units and the live host, one sentence each;
          empty when they agree, and always empty for an unmanaged overlay.
        - "Reported: another file system mounted at the path; other C(lowerdir), C(datadir), C(upperdir) or
          C(workdir); flags C(ro), C(nosuid), C(nodev), C(noexec) differing either way (a read-only fallback
          shows here); other flags or overlay options the unit sets; overlay options live but not in the unit
          (other than those the kernel adds); not mounted although enabled; a unit failed, not loadable, or
          changed on disk but not reloaded (C(NeedDaemonReload=yes))."
      type: list
      elements: str
      sample: ["lowerdir differs: live [/opt/kiosk/hotfix, /opt/kiosk/base], unit [/opt/kiosk/v2, /opt/kiosk/base]"]
    drift_keys:
      description:
        - For a mounted managed overlay, the drift of its upper and work directories as keys (their sentences are
          in RV(overlays[].drift) too); M(overlayfs.systemd.mount) and M(overlayfs.systemd.mounts) repair each
          as a change (a restart, or with C(apply=next_boot) at the next boot).
        - V(upper_missing), V(work_missing) (the directory is gone; the overlay still writes into the deleted
          one), V(upper_replaced), V(work_replaced) (another directory now has the path, another inode than the
          one recorded when this collection mounted it in this boot, or a workdir without the C(work)
          directory the kernel made at mount), V(upper_not_unit), V(work_not_unit) (mounted with another
          directory than the unit names).
      type: list
      elements: str
      sample: [upper_replaced]
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _host, _names
from ansible_collections.overlayfs.systemd.plugins.module_utils import _journal as jn
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._info import (
    SHOW_PROPS,
    DeclaredOverlay,
    build_report,
    declared_overlays,
    select_paths,
    units_to_show,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import OverlayOptions
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    normalize_path,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd


def _layer_drift(decl: DeclaredOverlay, live: OverlayOptions) -> list[dict[str, Any]]:
    return _host.layer_drift_of(
        path=decl.path, unit=decl.unit, unit_upperdir=decl.layers.upperdir, unit_workdir=decl.layers.workdir, live=live
    )


ARGUMENT_SPEC: dict[str, Any] = dict(
    path=dict(type="list", elements="str"),
    managed_only=dict(type="bool", default=False),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result: dict[str, Any] = dict(changed=False, overlays=[])
    try:
        wanted = [normalize_path(p, "path") for p in module.params["path"] or []]
    except OverlayError as exc:
        module.fail_json(msg=str(exc), param=exc.param, **result)
    # The host is read where the mount module reads it (_names.ROOTS).
    mounts = _host.read_mounts()
    declared = declared_overlays(_host.unit_files(_names.ROOTS.unit_dir))
    selected = select_paths(mounts, declared, wanted, module.params["managed_only"])
    props: dict[str, dict[str, str]] = {}
    names = units_to_show(selected, declared)
    if names:
        try:
            props = Systemd(module).show(names, SHOW_PROPS)
        except CommandError as exc:
            module.warn("unit states unknown, reported as null: %s" % exc)
    report = build_report(
        selected, mounts, declared, props, _names.ROOTS.unit_dir, os.statvfs, layer_drift=_layer_drift
    )
    result["overlays"] = [entry.as_dict() for entry in report]
    for entry in result["overlays"]:
        decl = declared.get(entry["path"])
        entry["interrupted_commit"] = _interrupted_commit(decl.layers.upperdir if decl else None)
    module.exit_json(**result)


def _interrupted_commit(upperdir: str | None) -> dict[str, Any] | None:
    """The journal of an interrupted ``upper state=committed`` beside ``upperdir`` (``_journal``), or None."""
    if not upperdir:
        return None
    text = _host.read_text(jn.journal_path(upperdir))
    if text is None:
        return None
    try:
        return jn.from_text(text).as_result()
    except jn.JournalError as exc:
        return {"error": str(exc)}


if __name__ == "__main__":
    main()
