#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: readonly_root_probe
short_description: Read a host's read-only root state, preflight checks and facts (for the readonly_root role)
description:
  - Reads, and never changes, what the role C(overlayfs.systemd.readonly_root) decides on - whether / is the
    overlayroot overlay, the overlayroot config in the real root, the kernel the next boot runs (the newest
    C(/boot/vmlinuz-*) by version) and its initramfs, the backend's packages in dpkg's status, RAM,
    machine-id, SSH host keys, the persistent file system and paths, the trial-boot records.
  - Evaluates the role's preflight checks, builds C(readonly_root_facts), and with O(verify=true) lists what the
    running boot lacks against the declaration.
  - The role's internal probe; use the role rather than this module in playbooks.
author:
  - overlayfs.systemd maintainers (@overlayfs-systemd)
requirements:
  - Linux with C(/proc/self/mountinfo); C(lsinitramfs) (initramfs-tools) when O(state=enabled).
version_added: 0.1.0
attributes:
  check_mode:
    details: The module only reads (O(verify) creates and removes one temporary file per persistent path).
  diff_mode:
    support: none
  idempotent:
    details: Always returns C(changed=false).
extends_documentation_fragment:
  - overlayfs.systemd.attributes
options:
  state:
    description: The role's C(readonly_root_state).
    type: str
    choices: [enabled, disabled]
    default: enabled
  tmpfs_size:
    description: The role's C(readonly_root_tmpfs_size).
    type: str
    default: 25%
  min_free_ram:
    description: The role's C(readonly_root_min_free_ram).
    type: str
    default: 256M
  persistent_base:
    description: The role's C(readonly_root_persistent_base), without a trailing slash.
    type: str
    default: /persist
  persistent_device:
    description: The role's C(readonly_root_persistent_device).
    type: str
    default: ""
  persistent_paths:
    description: The role's C(readonly_root_persistent_paths), without trailing slashes.
    type: list
    elements: str
    default: []
  upper_warn_percent:
    description: The role's C(readonly_root_upper_warn_percent).
    type: int
    default: 90
  preflight_waive:
    description: The role's C(readonly_root_preflight_waive).
    type: list
    elements: str
    choices: [os_family, persistent_paths, tmpfs_size, persistent_base, overlayroot_package, initramfs, overlay_module,
      ram, machine_id, ssh_host_keys, kernel_cmdline]
    default: []
  overlayroot:
    description: The overlayroot value the role writes; RV(facts_after_write) reports the next boot with it.
    type: str
    default: ""
  files:
    description: Files to read from the real root, relative to it; returned in C(probe.files).
    type: list
    elements: str
    default: []
  links:
    description: Symbolic links to read from the real root, relative to it; returned in C(probe.links).
    type: list
    elements: str
    default: []
  unit_names:
    description: The mount unit of each persistent path, named in the verification's messages.
    type: dict
    default: {}
  manage_packages:
    description:
      - The role's C(readonly_root_manage_packages). With O(state=enabled), the failing checks that the package
        step of RV(packages) fixes are returned in RV(deferred), not in RV(unmet).
    type: bool
    default: false
  verify:
    description:
      - Also test that every persistent path is writable and return RV(problems) and RV(warnings_found) (each
        also a warning).
    type: bool
    default: false
seealso:
  - name: docs/kiosk.md
    description: The readonly_root role, its facts and its trial boot.
    link: https://github.com/overlayfs-systemd/overlayfs.systemd/blob/main/docs/kiosk.md
"""

EXAMPLES = r"""
- name: What the host runs and what its next boot does
  overlayfs.systemd.readonly_root_probe:
    state: enabled
    persistent_device: /dev/disk/by-label/persist
    persistent_paths: [/var/lib/kiosk]
  register: probe

- name: Show the facts
  ansible.builtin.debug:
    var: probe.facts
"""

RETURN = r"""
check_mode:
  description:
    - Whether this task ran in check mode, also when C(check_mode=true) is set on the task, a block or an
      include (where C(ansible_check_mode) stays false). The role takes it as its own check mode.
  returned: always
  type: bool
  sample: false
offline:
  description:
    - Why systemd cannot be asked on this host (an image root in a chroot, no C(/run/systemd/system),
      C(SYSTEMD_OFFLINE=1)), decided as M(overlayfs.systemd.mount) does; null on a booted host.
    - When set, nothing of the build host's running system is read (its mounts, PID 1, kernel command line,
      C(/proc/filesystems)); the kernel judged is the image's newest C(/boot/vmlinuz-*), nothing counts as
      mounted, the C(ram) check is passed as not judged, no check is left to the package step, and
      C(offline) is true in RV(facts).
  returned: always
  type: str
  sample: running in a chroot (/ is not the root of PID 1)
probe:
  description: The raw reads (boot state, config in the real root, initramfs, RAM, mounts, trial records).
  returned: always
  type: dict
checks:
  description: Every preflight check evaluated for O(state), each with C(name), C(ok) and C(msg).
  returned: always
  type: list
  elements: dict
unmet:
  description: The failing checks not waived by O(preflight_waive).
  returned: always
  type: list
  elements: dict
waived:
  description: The failing checks waived by O(preflight_waive).
  returned: always
  type: list
  elements: dict
deferred:
  description: With O(manage_packages), the failing checks the package step of RV(packages) fixes.
  returned: always
  type: list
  elements: dict
packages:
  description:
    - What the role's package step does on this host; nothing (empty C(install), null C(rebuild)) when the
      packages are installed and the next boot's initramfs has what overlayroot needs, and on a box running
      the overlay (it would install into the tmpfs upper).
  returned: always
  type: dict
  contains:
    install:
      description: The backend's packages (overlayroot, busybox, e2fsprogs) not installed.
      type: list
      elements: str
    rebuild:
      description:
        - The kernel whose initramfs lacks overlayroot's script or busybox (and grep), the one the next boot
          runs; null when nothing is to be rebuilt or the initramfs cannot be listed.
      type: str
    create:
      description: The initramfs of C(rebuild) does not exist (C(update-initramfs -c), not C(-u)).
      type: bool
    initramfs:
      description: The path of the next boot's initramfs.
      type: str
    fixes:
      description: The preflight checks the step makes pass.
      type: list
      elements: str
  sample: {install: [overlayroot, busybox], rebuild: 6.1.0-40-amd64, create: false,
    initramfs: /boot/initrd.img-6.1.0-40-amd64, fixes: [overlayroot_package, initramfs]}
facts:
  description: C(readonly_root_facts) of the running boot (see docs/kiosk.md).
  returned: always
  type: dict
facts_after_write:
  description: RV(facts) with the next boot as O(overlayroot) configures it.
  returned: always
  type: dict
size_kib:
  description: O(tmpfs_size) in KiB (-1 if invalid).
  returned: always
  type: int
problems:
  description: With O(verify), what the running boot lacks against the declaration (empty when it is as declared).
  returned: when verify
  type: list
  elements: str
warnings_found:
  description:
    - With O(verify), what is degraded but accepted (a dead persistent disk when disabling, a nearly full upper).
  returned: when verify
  type: list
  elements: str
"""

import dataclasses

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils._offline import offline_reason
from ansible_collections.overlayfs.systemd.plugins.module_utils._offline_host import observe
from ansible_collections.overlayfs.systemd.plugins.module_utils._readonly_root import (
    CHECK_NAMES,
    Declaration,
    facts,
    package_plan,
    preflight,
    size_kib,
    split_failing,
    verify,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._readonly_root_host import probe, writable

ARGUMENT_SPEC = dict(
    state=dict(type="str", choices=["enabled", "disabled"], default="enabled"),
    tmpfs_size=dict(type="str", default="25%"),
    min_free_ram=dict(type="str", default="256M"),
    persistent_base=dict(type="str", default="/persist"),
    persistent_device=dict(type="str", default=""),
    persistent_paths=dict(type="list", elements="str", default=[]),
    upper_warn_percent=dict(type="int", default=90),
    preflight_waive=dict(type="list", elements="str", default=[], choices=list(CHECK_NAMES)),
    overlayroot=dict(type="str", default=""),
    files=dict(type="list", elements="str", default=[]),
    links=dict(type="list", elements="str", default=[]),
    unit_names=dict(type="dict", default={}),
    manage_packages=dict(type="bool", default=False),
    verify=dict(type="bool", default=False),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    prm = module.params
    decl = Declaration(
        state=prm["state"],
        tmpfs_size=prm["tmpfs_size"],
        min_free_ram=prm["min_free_ram"],
        persistent_base=prm["persistent_base"],
        persistent_device=prm["persistent_device"],
        persistent_paths=tuple(prm["persistent_paths"]),
        upper_warn_percent=prm["upper_warn_percent"],
        preflight_waive=tuple(prm["preflight_waive"]),
        overlayroot=prm["overlayroot"],
        unit_names=prm["unit_names"],
        manage_packages=prm["manage_packages"],
    )

    def run(argv):
        path = module.get_bin_path(argv[0])
        if path is None:
            return 127, "", "%s: command not found" % argv[0]
        return module.run_command([path] + list(argv[1:]), environ_update={"LC_ALL": "C"})

    args = dict(prm, list_initramfs=prm["state"] == "enabled")
    host = probe(args=args, run=run, offline=offline_reason(observe()))
    offline = host.get("offline")
    if offline:
        # An image root: the role installs no packages there, so nothing is left to its package step.
        decl = dataclasses.replace(decl, manage_packages=False)
    checks = preflight(host, decl)
    plan = package_plan(host)
    result = dict(
        changed=False,
        check_mode=module.check_mode,
        probe=host,
        checks=checks,
        packages=plan,
        **split_failing(checks, decl, plan),
        facts=facts(host, decl),
        facts_after_write=facts(host, decl, configured=decl.overlayroot),
        size_kib=size_kib(decl.tmpfs_size, host["mem_total_kib"]),
        offline=offline,
    )
    if prm["verify"]:
        result["problems"], result["warnings_found"] = verify(host, decl, writable(decl.persistent_paths))
        for msg in result["warnings_found"]:
            module.warn(msg)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
