#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: host_lock
short_description: Hold the collection's host-wide lock across several tasks
version_added: 0.1.0
description:
  - Takes the host-wide lock that every changing run of M(overlayfs.systemd.mount), M(overlayfs.systemd.mounts)
    and M(overlayfs.systemd.upper) takes, and keeps it after the task ended, so that writes done by several
    tasks (the C(overlayfs.systemd.readonly_root) role's) and a run of those modules against the same host run
    one after the other.
  - O(state=held) leaves a detached process on the host holding the lock and returns its pid (RV(holder));
    O(state=released) with that pid ends it. Release in an C(always) section, so a failed task lets go too.
  - The holder lets go by itself after O(hold_timeout) seconds, when the controller died before releasing.
  - Check mode takes no lock and releases nothing.
author:
  - overlayfs.systemd maintainers (@overlayfs-systemd)
seealso:
  - ref: ansible_collections.overlayfs.systemd.docsite.fleet
    description: The fleet guide (running from several places at once).
attributes:
  check_mode:
    details: Check mode takes no lock (it changes nothing, so it never waits for another run).
  diff_mode:
    support: none
  idempotent:
    support: full
    details: The lock is not host state; the module never reports a change.
extends_documentation_fragment:
  - overlayfs.systemd.attributes
  - overlayfs.systemd.lock
options:
  state:
    description:
      - V(held) takes the lock (waiting up to O(lock_timeout)) in a detached process that keeps it.
      - V(released) ends the holder O(holder); nothing when it no longer holds the lock.
    type: str
    required: true
    choices: [held, released]
  holder:
    description: The pid RV(holder) that O(state=held) returned. Required with O(state=released).
    type: int
  hold_timeout:
    description: Seconds after which the holder lets go by itself (the controller never released it).
    type: float
    default: 3600
"""

EXAMPLES = r"""
- name: Take the host lock for the writes
  overlayfs.systemd.host_lock:
    state: held
    lock_timeout: 60
  register: app_lock

- name: Writes that several tasks make
  block:
    - name: A unit file
      ansible.builtin.copy:
        dest: /etc/systemd/system/app.service
        content: "[Service]\nExecStart=/usr/bin/app\n"
        mode: "0644"
  always:
    - name: Let go of the host lock
      overlayfs.systemd.host_lock:
        state: released
        holder: "{{ app_lock.holder }}"
      when: app_lock.holder is defined
"""

RETURN = r"""
holder:
  description: The pid of the process that holds the lock (O(state=held) outside check mode).
  returned: when the lock was taken
  type: int
  sample: 4242
released:
  description: Whether O(state=released) ended a holder that still held the lock (false after O(hold_timeout)).
  returned: with O(state=released)
  type: bool
  sample: true
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
      description: Whether this run took the lock (false in check mode and with O(state=released)).
      type: bool
      sample: true
    waited:
      description: Seconds this run waited for the lock.
      type: float
      sample: 0.0
    waited_for:
      description: The run it waited for (C(pid), C(cmdline)), when the lock was held.
      type: dict
      returned: when the lock was held by another run
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _hostlock as hostlock


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", required=True, choices=["held", "released"]),
            holder=dict(type="int"),
            hold_timeout=dict(type="float", default=3600),
            **hostlock.LOCK_ARGUMENT_SPEC,
        ),
        required_if=[("state", "released", ["holder"])],
        supports_check_mode=True,
    )
    p = module.params
    try:
        result = hostlock.hold_state(
            state=p["state"],
            holder=p["holder"],
            timeout=p["lock_timeout"],
            hold=p["hold_timeout"],
            check_mode=module.check_mode,
        )
    except hostlock.LockError as exc:
        refused = hostlock.LockReport(hostlock.LOCK_PATH, waited=exc.waited, holder=exc.holder)
        module.fail_json(msg=exc.message, changed=False, param=exc.param, lock=refused.as_result())
    for warning in result.pop("warnings"):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
