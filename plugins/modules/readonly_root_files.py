#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: readonly_root_files
short_description: Write files and symbolic links into a root directory in one step (for the readonly_root role)
description:
  - Makes O(root) hold each of O(files) (content, mode, owned by root) and O(links) (symbolic links with the given
    target), and none of O(absent); creates missing parent directories (mode 0755, owned by root).
  - Compares by content, so a run that finds everything in place changes nothing. Each file is written
    atomically (a temporary file in the same directory, fsynced, renamed over the old one), each link is
    replaced by a rename, and the file system is flushed when anything changed.
  - The role C(overlayfs.systemd.readonly_root) writes its configuration, units and enablement links into the
    real root with it (one task instead of one per file); use the role rather than this module in playbooks.
author:
  - overlayfs.systemd maintainers (@overlayfs-systemd)
version_added: 0.1.0
attributes:
  check_mode:
    details: Reports what would change and writes nothing.
  diff_mode:
    details: One diff per changed path; a link shows as C(link to TARGET).
  idempotent:
    details: By content, mode and owner of each file and the target of each link.
extends_documentation_fragment:
  - overlayfs.systemd.attributes
  - overlayfs.systemd.attributes.files
options:
  root:
    description: The directory the paths are relative to, for example C(/) or C(/media/root-ro). Must exist.
    type: path
    required: true
  files:
    description: Regular files to hold exactly O(files[].content).
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: The path relative to O(root).
        type: str
        required: true
      content:
        description: The whole content, written as given (UTF-8).
        type: str
        required: true
      mode:
        description: Permission bits as an octal string.
        type: str
        default: "0644"
  links:
    description: Symbolic links to hold the target O(links[].src); whatever file or link is at O(links[].dest) is
      replaced (a directory there fails the task).
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: The path of the link relative to O(root).
        type: str
        required: true
      src:
        description: The link's target, written as given (an absolute path is resolved inside the booted system).
        type: str
        required: true
  absent:
    description: Files or links to remove, relative to O(root); paths that do not exist are fine, a directory fails.
    type: list
    elements: str
    default: []
  seeds:
    description:
      - Directories made once, at absolute paths (not under O(root)) - the role's persistent paths on the
        persistent file system. Nothing is done when O(seeds[].dest) exists.
      - When O(seeds[].source) is a directory, O(seeds[].dest) becomes a copy of it (C(cp -a) into a hidden
        name next to it, then renamed into place, so a killed run leaves no half copy that a later run would
        take for done); otherwise an empty directory (mode 0755).
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: The directory to make, an absolute path; missing parents are created (mode 0755).
        type: str
        required: true
      source:
        description: The directory whose content O(seeds[].dest) starts with, an absolute path.
        type: str
        required: true
  directories:
    description: Directories to create when missing (mode 0755), absolute paths (not under O(root)).
    type: list
    elements: str
    default: []
  remount:
    description:
      - A read-only mount point (the real root under the overlay, C(/media/root-ro)) to remount read-write for
        the writes and read-only again afterwards, also when a write fails. Nothing is remounted when nothing
        changes or in check mode.
      - The read-only remount is retried a few times; if it still fails the task fails naming the error, since
        the real root would stay writable.
    type: path
seealso:
  - name: docs/kiosk.md
    description: The readonly_root role.
    link: https://github.com/overlayfs-systemd/overlayfs.systemd/blob/main/docs/kiosk.md
"""

EXAMPLES = r"""
- name: An image root to write into
  ansible.builtin.file:
    path: /srv/image-root/etc/systemd/system
    state: directory
    mode: "0755"

- name: A unit and its enablement link, and no stale drop-in
  overlayfs.systemd.readonly_root_files:
    root: /srv/image-root
    files:
      - dest: etc/systemd/system/hello.service
        content: |
          [Service]
          ExecStart=/bin/true
          [Install]
          WantedBy=multi-user.target
    links:
      - dest: etc/systemd/system/multi-user.target.wants/hello.service
        src: /etc/systemd/system/hello.service
    absent:
      - etc/systemd/system/hello.service.d/old.conf
  register: written

- name: What changed
  ansible.builtin.debug:
    var: written.changes
"""

RETURN = r"""
changes:
  description: Each path changed (or, in check mode, that would change), in order.
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: C(file), C(link), C(absent), C(seed) or C(directory).
      type: str
    dest:
      description: The path relative to O(root) (absolute for C(seed) and C(directory)).
      type: str
  sample: [{kind: file, dest: etc/overlayroot.local.conf}]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils._rootfiles import (
    apply,
    diffs,
    plan,
    plan_seeds,
    remount,
)

ARGUMENT_SPEC = dict(
    root=dict(type="path", required=True),
    files=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(
            dest=dict(type="str", required=True),
            content=dict(type="str", required=True),
            mode=dict(type="str", default="0644"),
        ),
    ),
    links=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(dest=dict(type="str", required=True), src=dict(type="str", required=True)),
    ),
    absent=dict(type="list", elements="str", default=[]),
    seeds=dict(
        type="list",
        elements="dict",
        default=[],
        options=dict(dest=dict(type="str", required=True), source=dict(type="str", required=True)),
    ),
    directories=dict(type="list", elements="str", default=[]),
    remount=dict(type="path"),
)


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    prm = module.params
    root = prm["root"]
    if not os.path.isdir(root):
        module.fail_json(msg="root: %s is not a directory; give the existing root to write into" % root, changed=False)
    try:
        changes = plan(root, prm["files"], prm["links"], prm["absent"])
        changes += plan_seeds(prm["seeds"], prm["directories"])
    except ValueError as exc:
        module.fail_json(msg="%s; nothing was changed" % exc, changed=False)
    result: dict = dict(changed=bool(changes), changes=[dict(kind=c.kind, dest=c.dest) for c in changes])
    if module._diff:
        result["diff"] = diffs(root, changes)
    if changes and not module.check_mode:

        def run(argv):
            return module.run_command(argv, environ_update={"LC_ALL": "C"})

        try:
            if prm["remount"]:
                remount(run, prm["remount"], "rw")
            try:
                apply(module, root, changes, run)
            finally:
                if prm["remount"]:
                    remount(run, prm["remount"], "ro")
        except OSError as exc:
            module.fail_json(msg="writing under root %s failed: %s" % (root, exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
