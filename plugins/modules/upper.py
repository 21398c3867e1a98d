#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: upper
short_description: Inspect, discard, commit or export the upper layer of an overlay managed by overlayfs.systemd.mount
version_added: 0.1.0
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
    details: Reads the upper layer and reports the same lists and actions it would act on; copies, stops,
      deletes and writes nothing. O(confirm) is not needed in check mode.
  diff_mode:
    details: For V(discarded) and V(committed), the upper layer's changes as the C(before) text (one line per
      entry, C(+) added, C(~) modified, C(-) deleted, C(!) opaque) and, for V(committed), the unit files that change;
      for V(exported), the archive path and the entries it holds.
  idempotent:
    support: partial
    details:
      - V(inspected) never changes anything.
      - V(discarded) reports no change when the upper layer is already empty.
      - V(committed) reports no change when O(dest) is already the top lower layer and the upper is empty.
      - V(exported) refuses an existing O(dest) unless O(force=true), which writes it again (always changed).
  safe_file_operations:
    details: The archive is written to a temporary file in the O(dest) directory and moved into place; a committed
      layer is copied to a hidden sibling of O(dest) and renamed when complete; the old upper and work directories
      are moved aside and deleted only after the overlay runs again.
extends_documentation_fragment:
  - overlayfs.systemd.attributes
  - overlayfs.systemd.lock
  - overlayfs.systemd.attributes.files
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
      - V(committed) needs O(confirm) and O(dest), and a mounted overlay. It stops the overlay, makes the
        upper itself the new top lower layer O(dest), and mounts the overlay again on O(dest) and the old lowers
        with an empty upper; its cost is the size of the change, not of the image (RV(method)). On the same file
        system as the upper, O(dest) is the upper renamed (nothing is copied); otherwise (a tmpfs upper) a copy
        of the upper only, keeping whiteouts, opaque markers, owners, modes, times, xattrs and hard links. The
        overlay's bookkeeping xattrs (C(trusted.overlay.origin), C(impure), C(nlink), C(upper), C(uuid)) are
        dropped; C(opaque), C(whiteout) and C(whiteouts) stay. Old lower layers are never changed.
      - A O(dest) on an overlayfs (for example a container's root) cannot hold the upper's whiteouts; it is
        refused before anything is copied or stopped. Put it on another file system or use O(squash=true).
      - With O(squash=true), the whole merged view is copied to O(dest) (no whiteout or C(trusted.overlay.*)
        xattr), which becomes the only lower layer.
      - V(exported) writes the upper layer as an OCI image layer tar to O(dest) (whiteouts as C(.wh.<name>),
        opaque directories as C(.wh..wh..opq)) and returns its C(digest) and C(diff_id). With
        O(format=image), O(dest) is the whole stack (each lower, bottom first, then the upper) as an image
        archive that C(docker load) accepts. Reading a live upper gives a consistent archive only when
        nothing writes to the overlay meanwhile.
    type: str
    choices: [inspected, discarded, committed, exported]
    default: inspected
  dest:
    description:
      - With O(state=committed), the directory that becomes the new lower layer. It must not exist (its parent
        directories are created), must be an absolute path outside every layer, the mount point and the tmpfs
        of the overlay. Not on an overlayfs unless O(squash=true).
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
  format:
    description:
      - With O(state=exported), V(layer) writes the upper as one OCI layer tar; V(image) writes every lower
        (bottom first) and the upper as the layers of one image archive (C(manifest.json) for C(docker load),
        and an OCI image layout) tagged O(image_tag).
    type: str
    choices: [layer, image]
    default: layer
  image_tag:
    description:
      - With O(format=image), the C(repository:tag) the image is loaded as. Default
        C(overlayfs-systemd/<mount point with - for />:latest).
    type: str
  source_date_epoch:
    description:
      - With O(state=exported), clamp every entry's mtime to at most this many seconds since the epoch
        (like C(SOURCE_DATE_EPOCH)). Entries are always written sorted with numeric owners, so the same
        content gives the same C(digest); with this also when its files were written at different times.
    type: int
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
    description: Sets up the overlays this module works on.
  - module: overlayfs.systemd.mount_info
    description: Every overlay of a host, its upper kind and its drift.
  - ref: ansible_collections.overlayfs.systemd.docsite.upper
    description: The upper layer's lifecycle guide, with the benchmark.
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
    - With V(discarded) and V(committed) on a mounted overlay (they stop and start it), the units that were
      active before and that the stop took down with it (the aggregate target, services that C(Requires=) it),
      started again by this run, also when it failed. A unit that does not come back fails the run
      (C(failed_units), with its journal lines).
  returned: when the state stopped the overlay
  type: list
  elements: str
  sample: [overlays.target, kiosk.service]
cleaned:
  description:
    - Leftovers of an earlier run that died (its pid is gone) beside O(dest), the upper or the work directory,
      removed by this run (in check mode, to remove); each with C(path), C(beside), C(kind) (C(partial) a
      copy of V(committed), C(discard) or C(commit) a moved-aside layer), C(pid) and C(action).
    - A moved-aside layer is removed only once the overlay runs on the directory it was moved away from;
      otherwise it is kept, listed in RV(leftovers_kept) with the way back, and the run warns.
  returned: always
  type: list
  elements: dict
  sample: [{path: /srv/layers/.v2.overlayfs-partial-4242, beside: /srv/layers/v2, kind: partial, pid: "4242",
    action: removed}]
interrupted_commit:
  description:
    - The journal of a V(committed) run that died before it finished (C(.UPPER.overlayfs-journal) beside the upper
      directory), with its C(pid), C(dest), C(squash), C(old_lowers), C(new_lowers), C(phase) (V(stop), V(move) or
      V(swap)) and C(method).
    - For V(committed) also C(action) and C(reason), what this run did (in check mode, would do) with it
      V(back) (O(dest) was empty or a copy of data still in place - removed, the overlay started on its old
      lowers, then the commit ran again), V(forward) (the upper's data was in the complete O(dest) - the commit
      was finished) or V(done) (only the cleanup was left). A state the journal's steps never leave is refused
      and nothing is deleted.
    - V(discarded) and V(exported) refuse while it exists; V(committed) with another O(dest) or O(squash) refuses.
  returned: when a commit was interrupted
  type: dict
  sample: {pid: 4242, dest: /srv/layers/v2, phase: move, method: copy, action: back}
leftovers_kept:
  description: Leftovers found and kept, each with C(path) and C(reason).
  returned: always
  type: list
  elements: dict
  sample: []
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
method:
  description:
    - How V(committed) made O(dest) from the upper - V(rename) (same file system, nothing copied) or V(copy)
      (the upper only). Absent with O(squash=true).
  returned: when O(state=committed) changed something, outside check mode
  type: str
  sample: rename
copied:
  description:
    - What O(dest) holds - C(files), C(directories), C(symlinks), C(hardlinks), C(specials), C(bytes); for a
      stacked commit also C(whiteouts), C(opaque) and C(dropped_xattrs) (bookkeeping xattrs removed). With
      V(rename) nothing was copied; the counts say what moved.
  returned: when O(state=committed) changed something, outside check mode
  type: dict
  sample: {files: 10, directories: 4, symlinks: 0, hardlinks: 1, whiteouts: 1, opaque: 1, specials: 0,
    bytes: 40960, dropped_xattrs: 12}
masked:
  description:
    - Kept for compatibility - always empty. A stacked commit needs no extra whiteouts (the upper's own
      hide what was deleted), a squashed one has nothing below it.
  returned: when O(state=committed) changed something
  type: list
  elements: str
  sample: []
archive:
  description:
    - What V(exported) wrote - C(entries), C(whiteouts), C(opaque) markers, file C(bytes) read, the archive
      C(size), its C(digest) (C(sha256:...) of the file as written, the OCI blob digest) and C(diff_id)
      (sha256 of the uncompressed tar; equal to C(digest) without compression).
    - C(skipped) lists sockets, which a tar cannot hold.
  returned: when O(state=exported), outside check mode
  type: dict
  sample: {entries: 12, whiteouts: 1, opaque: 1, bytes: 4096, size: 20480, digest: "sha256:3f0a...",
    diff_id: "sha256:3f0a...", skipped: []}
image:
  description:
    - What V(exported) with O(format=image) wrote - C(image_id) (the config digest C(docker images) shows),
      C(repo_tag), C(layers) bottom first (each C(digest), C(diff_id), C(size)), the C(archive_digest) and
      C(size) of the archive file.
  returned: when O(format=image), outside check mode
  type: dict
  sample: {image_id: "sha256:9a1c...", repo_tag: "overlayfs-systemd/srv-kiosk:latest", layers: [],
    archive_digest: "sha256:51d0...", size: 73400320}
holders:
  description:
    - When V(discarded) or V(committed) refused a busy overlay, the processes using it, each with C(pid),
      C(comm) and C(reason) (C(cwd), C(root), C(fd <n> <path>) or C(maps <path>)).
  returned: failure because the overlay is busy
  type: list
  elements: dict
  sample: [{pid: 4242, comm: kiosk-browser, reason: "fd 7 /srv/kiosk/profile/lock"}]
param:
  description: The option at fault when the module refused the request before changing anything (V(path),
    V(dest) or V(confirm)); the message names its value and the fix.
  returned: failure because a check refused the request
  type: str
  sample: confirm
journal:
  description: With V(committed), the last journal lines of the overlay's units when restacking failed (the old
    upper, work directories and units were put back).
  returned: failure while restacking the overlay
  type: str
  sample: "2026-01-01T10:00:00+0000 host mount[412]: mount: /srv/kiosk: wrong fs type, bad option..."
cmd:
  description: With V(committed), the command that failed while restacking (C(systemctl ...)), as an argv list.
  returned: failure of a command while restacking the overlay
  type: list
  elements: str
  sample: [/usr/bin/systemctl, start, srv-kiosk.mount]
rc:
  description: Exit status of RV(cmd).
  returned: failure of a command while restacking the overlay
  type: int
  sample: 1
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
from ansible_collections.overlayfs.systemd.plugins.module_utils._hostlock import LOCK_ARGUMENT_SPEC, run_locked
from ansible_collections.overlayfs.systemd.plugins.module_utils._oci import COMPRESSIONS
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import Systemd
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper_overlay import load_overlay
from ansible_collections.overlayfs.systemd.plugins.module_utils._upper_states import STATES, run_state

ARGUMENT_SPEC: dict[str, Any] = dict(
    path=dict(type="str", required=True),
    state=dict(type="str", choices=list(STATES), default="inspected"),
    dest=dict(type="path"),
    squash=dict(type="bool", default=False),
    compression=dict(type="str", choices=list(COMPRESSIONS), default="none"),
    force=dict(type="bool", default=False),
    format=dict(type="str", choices=["layer", "image"], default="layer"),
    image_tag=dict(type="str"),
    source_date_epoch=dict(type="int"),
    confirm=dict(type="str"),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(ARGUMENT_SPEC, **LOCK_ARGUMENT_SPEC),
        supports_check_mode=True,
        required_if=[("state", "committed", ("dest",)), ("state", "exported", ("dest",))],
    )
    p = module.params
    sd = Systemd(module)
    result: dict[str, Any] = dict(changed=False, actions=[], path=p["path"])

    def run() -> dict[str, Any]:
        run_state(STATES[p["state"]], module, sd, load_overlay(sd, p["path"], result), result)
        return result

    try:
        # Every state but inspected changes the host: it waits for (and holds) the host lock.
        result = run_locked(module, run, failure=ModuleFailure, changes=p["state"] != "inspected")
    except ModuleFailure as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
