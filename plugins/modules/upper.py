#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: upper
short_description: Inspect, discard, commit or export the upper layer of an overlay managed by overlayfs.systemd.mount
description:
  - Works on the overlay mounted at O(path) whose units were written by M(overlayfs.systemd.mount) (they carry
    C(X-OverlayfsSystemd-*) keys). Other overlays are refused.
  - V(inspected) lists what the upper layer changes compared with the lower layers, without changing anything.
  - V(discarded) throws the changes away. It stops the overlay, replaces the upper and work directories with empty
    ones (never while mounted) and starts the overlay again.
  - V(committed) turns the merged view into a new lower layer at O(dest) and restacks the overlay on it with an
    empty upper, through the same unit machinery as M(overlayfs.systemd.mount).
  - V(exported) writes the upper layer as an OCI image layer tar at O(dest).
  - Paths in the results are relative to the overlay root (V(etc/motd) for C(<path>/etc/motd)).
author:
  - overlayfs.systemd maintainers (@overlayfs-systemd)
requirements:
  - systemd as the init system (C(systemctl)); Linux with the C(overlay) file system.
  - Root (the module reads C(trusted.overlay.*) extended attributes and copies owners and device nodes).
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details: Reads the upper layer and reports the same lists and actions it would act on; copies, stops,
      deletes and writes nothing. O(confirm) is not needed in check mode.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details: For V(discarded) and V(committed), the upper layer's changes as the C(before) text (one line per
      entry, C(+) added, C(~) modified, C(-) deleted, C(!) opaque) and, for V(committed), the unit files that change;
      for V(exported), the archive path and the entries it holds.
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: partial
    details:
      - V(inspected) never changes anything.
      - V(discarded) reports no change when the upper layer is already empty.
      - V(committed) reports no change when O(dest) is already the top lower layer and the upper is empty.
      - V(exported) refuses an existing O(dest) unless O(force=true), which writes it again (always changed).
  safe_file_operations:
    description: Uses Ansible's strict file operation functions to ensure proper permissions and avoid data corruption.
    support: full
    details: The archive is written to a temporary file in the O(dest) directory and moved into place; a committed
      layer is copied to a hidden sibling of O(dest) and renamed when complete; the old upper and work directories
      are moved aside and deleted only after the overlay runs again.
options:
  path:
    description:
      - The mount point of the overlay, as given to M(overlayfs.systemd.mount).
    type: str
    required: true
  state:
    description:
      - V(inspected) reports C(added), C(modified), C(deleted) and C(opaque) entries with counts and bytes.
        Works on a mounted or stopped overlay (a tmpfs upper exists only while its tmpfs is mounted).
      - V(discarded) needs O(confirm). It checks that nothing uses the overlay (the processes are named
        otherwise, and nothing is changed), stops it, replaces the upper and work directories with empty ones
        of the same owner and mode, and starts it again if it was mounted. Works for persistent and tmpfs uppers.
      - V(committed) needs O(confirm) and O(dest), and a mounted overlay. It copies the merged view to O(dest)
        (no whiteout or C(trusted.overlay.*) xattr of the upper is copied), then stops the overlay, empties its
        upper and work directories and mounts it again with O(dest) as its top lower layer. Old lower layers are
        never changed.
      - Deleted files stay deleted and replaced directories stay replaced. Stacked on the old lowers, a copy
        alone would let their entries show through again, so O(dest) gets a whiteout (a character device 0/0,
        the kernel's marker in any layer) for each entry of the old lowers that the merged view no longer shows
        (RV(masked)). With O(squash=true) nothing is below O(dest) and it holds no marker at all.
      - V(exported) writes the upper layer as an OCI image layer tar to O(dest) (whiteouts as C(.wh.<name>),
        opaque directories as C(.wh..wh..opq)). Reading a live upper gives a consistent archive only when
        nothing writes to the overlay meanwhile.
    type: str
    choices: [inspected, discarded, committed, exported]
    default: inspected
  dest:
    description:
      - With O(state=committed), the directory that becomes the new lower layer. It must not exist (its parent
        directories are created), must be an absolute path outside every layer, the mount point and the tmpfs
        of the overlay. A lower layer may sit on any file system, also a container's overlay root.
      - With O(state=exported), the archive file. Its directory must exist; an existing file is refused unless
        O(force=true). It must not be inside the overlay or its layers. Written with mode C(0600).
    type: path
  squash:
    description:
      - With O(state=committed), make O(dest) the only lower layer (it holds the whole merged view) instead of
        putting it on top of the old lowers.
    type: bool
    default: false
  compression:
    description:
      - With O(state=exported), V(gzip) compresses the archive (an OCI C(tar+gzip) layer).
    type: str
    choices: [none, gzip]
    default: none
  force:
    description:
      - With O(state=exported), overwrite an existing O(dest).
    type: bool
    default: false
  confirm:
    description:
      - Required for O(state=discarded) and O(state=committed) (outside check mode). The name of the overlay's
        mount unit, for example V(srv-kiosk.mount) for O(path=/srv/kiosk). The error message of a run without it
        gives the exact value. A guard against deleting the wrong upper layer by accident.
    type: str
notes:
  - "Whiteouts: a deleted lower entry is a character device 0/0 in the upper (or, with Linux 6.7 or later, a
    zero-size file with the C(trusted.overlay.whiteout) xattr); a replaced directory is opaque
    (C(trusted.overlay.opaque=y)). The value C(x) marks a directory that may hold xattr whiteouts; it is not opaque."
  - "Overlays mounted with C(redirect_dir=on) or C(metacopy=on) are refused by V(committed) and V(exported): their
    upper entries point at data in the lowers. V(inspected) reports such entries in RV(redirects) and RV(metacopy)."
  - "V(discarded) and V(committed) never delete in a live upper (the kernel would keep showing stale content):
    the overlay is stopped first. A tmpfs upper keeps its tmpfs; only the overlay unit restarts."
  - "After V(committed), the upper root directory takes the owner, mode, xattrs and times of the merged root, so
    the merged view looks the same. With a tmpfs upper the root directory is recreated at every boot, so its
    times then change."
seealso:
  - module: overlayfs.systemd.mount
  - name: OCI image layer specification
    description: Whiteouts and opaque markers in layer tars.
    link: https://github.com/opencontainers/image-spec/blob/main/layer.md
"""

EXAMPLES = r"""
- name: A kiosk overlay with a persistent upper (set up first)
  overlayfs.systemd.mount:
    path: /srv/kiosk
    lowerdir:
      - /opt/kiosk/base
    state: mounted

- name: See what the kiosk changed
  overlayfs.systemd.upper:
    path: /srv/kiosk
    state: inspected
  register: kiosk_changes

- name: Show the counts
  ansible.builtin.debug:
    msg: "{{ kiosk_changes.counts }}"

- name: Export the changes as an OCI image layer
  overlayfs.systemd.upper:
    path: /srv/kiosk
    state: exported
    dest: /root/kiosk-changes.tar.gz
    compression: gzip
    force: true

- name: Keep the changes as the next base layer
  overlayfs.systemd.upper:
    path: /srv/kiosk
    state: committed
    dest: /var/lib/overlayfs/layers/kiosk-1
    confirm: srv-kiosk.mount

- name: Throw away whatever was changed since
  overlayfs.systemd.upper:
    path: /srv/kiosk
    state: discarded
    confirm: srv-kiosk.mount
"""

RETURN = r"""
unit:
  description: The overlay's mount unit (the value O(confirm) expects).
  returned: always
  type: str
  sample: srv-kiosk.mount
upper:
  description: The kind of upper layer, V(persistent) or V(tmpfs), from the managed unit.
  returned: always
  type: str
  sample: persistent
upperdir:
  description: The upper directory.
  returned: always
  type: str
  sample: /var/lib/overlayfs/srv_kiosk_1f2e3d4c/upper
workdir:
  description: The work directory.
  returned: always
  type: str
  sample: /var/lib/overlayfs/srv_kiosk_1f2e3d4c/work
lowerdir:
  description: The lower layers after the run, top first (with O(state=committed), O(dest) first).
  returned: always
  type: list
  elements: str
  sample: [/var/lib/overlayfs/layers/kiosk-1, /opt/kiosk/base]
mounted:
  description: Whether the overlay is mounted after the run (in check mode, before it).
  returned: always
  type: bool
  sample: true
added:
  description: Entries the upper adds (no lower entry of that name), relative to the overlay root.
  returned: always
  type: list
  elements: str
  sample: [etc/new.conf]
modified:
  description:
    - Entries that exist in a lower and were changed, with C(change) V(data) (content or symlink target),
      V(metadata) (owner, mode, times or xattrs only) or V(type) (replaced by another kind of file).
    - Directories that are only in the upper because something below them changed are not listed.
  returned: always
  type: list
  elements: dict
  sample: [{path: etc/motd, change: data}, {path: bin/tool, change: metadata}]
deleted:
  description: Lower entries deleted through the merged view (whiteouts).
  returned: always
  type: list
  elements: str
  sample: [etc/old.conf]
opaque:
  description: Directories that replace the lower directory of the same name (removed, then created again).
  returned: always
  type: list
  elements: str
  sample: [var/cache/app]
redirects:
  description: Renamed directories (C(redirect_dir)) with the lower path they come from.
  returned: always
  type: list
  elements: dict
  sample: []
metacopy:
  description: Files whose upper copy holds metadata only (C(metacopy)); their data is in a lower.
  returned: always
  type: list
  elements: str
  sample: []
counts:
  description: Number of entries in each list, and C(entries), the number of entries in the upper directory.
  returned: always
  type: dict
  sample: {added: 1, modified: 2, deleted: 1, opaque: 1, entries: 9}
bytes:
  description: Bytes of regular files the upper adds (C(added)) and rewrites (C(modified)).
  returned: always
  type: dict
  sample: {added: 4096, modified: 120}
actions:
  description: What the run did (in check mode, would do), in order.
  returned: always
  type: list
  elements: str
  sample: ["copy /srv/kiosk to /var/lib/overlayfs/layers/kiosk-1", "stop srv-kiosk.mount",
    "write srv-kiosk.mount", "empty /var/lib/overlayfs/srv_kiosk_1f2e3d4c/upper", "daemon-reload",
    "start srv-kiosk.mount"]
dest:
  description: The new lower layer (V(committed)) or the archive (V(exported)).
  returned: when O(state) is V(committed) or V(exported)
  type: str
  sample: /var/lib/overlayfs/layers/kiosk-1
copied:
  description: What V(committed) copied into O(dest).
  returned: when O(state=committed) and something was copied
  type: dict
  sample: {files: 120, directories: 14, symlinks: 3, hardlinks: 1, specials: 0, bytes: 1048576}
masked:
  description:
    - The whiteouts V(committed) put into O(dest) so that entries of the old lowers deleted or replaced in
      the merged view stay hidden (relative paths). Empty with O(squash=true).
  returned: when O(state=committed) and something was copied
  type: list
  elements: str
  sample: [etc/old.conf, var/cache/app/stale]
archive:
  description:
    - What V(exported) wrote - C(entries), C(whiteouts), C(opaque) markers, file C(bytes) read, the archive
      C(size) and its C(digest) (C(sha256:...) of the file as written, the OCI blob digest).
    - C(skipped) lists sockets, which a tar cannot hold.
  returned: when O(state=exported), outside check mode
  type: dict
  sample: {entries: 12, whiteouts: 1, opaque: 1, bytes: 4096, size: 20480, digest: "sha256:3f0a...", skipped: []}
holders:
  description:
    - When V(discarded) or V(committed) refused a busy overlay, the processes using it, each with C(pid),
      C(comm) and C(reason) (C(cwd), C(root), C(fd <n> <path>) or C(maps <path>)).
  returned: failure because the overlay is busy
  type: list
  elements: dict
  sample: [{pid: 4242, comm: kiosk-browser, reason: "fd 7 /srv/kiosk/profile/lock"}]
diff:
  description:
    - In diff mode, C(before)/C(after) texts with C(before_header)/C(after_header). For V(discarded) and
      V(committed) the first entry lists the upper's changes that go away from the upper; for V(committed) one
      entry per unit file that changes follows; for V(exported) the archive's entries.
  returned: in diff mode, when something changes
  type: list
  elements: dict
  sample: [{before: "+ etc/new.conf\n- etc/old.conf\n", after: "", before_header: /var/lib/overlayfs/x/upper,
    after_header: /var/lib/overlayfs/x/upper}]
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import ModuleFailure
from ansible_collections.overlayfs.systemd.plugins.module_utils._oci import COMPRESSIONS
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper_states import STATES, load_overlay, run_state

ARGUMENT_SPEC: dict[str, Any] = dict(
    path=dict(type="str", required=True),
    state=dict(type="str", choices=list(STATES), default="inspected"),
    dest=dict(type="path"),
    squash=dict(type="bool", default=False),
    compression=dict(type="str", choices=list(COMPRESSIONS), default="none"),
    force=dict(type="bool", default=False),
    confirm=dict(type="str"),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_if=[("state", "committed", ("dest",)), ("state", "exported", ("dest",))],
    )
    p = module.params
    sd = Systemd(module)
    result: dict[str, Any] = dict(changed=False, actions=[], path=p["path"])
    try:
        overlay = load_overlay(sd, p["path"], result)
        run_state(STATES[p["state"]], module, sd, overlay, result)
    except ModuleFailure as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
