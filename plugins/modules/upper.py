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

import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _converge as conv
from ansible_collections.overlayfs.systemd.plugins.module_utils import _upper as up
from ansible_collections.overlayfs.systemd.plugins.module_utils._overlay import (
    API_PATHS,
    MountInfo,
    OverlayError,
    build_spec,
    make_dirs_secure,
    managed_keys,
    mount_at,
    normalize_path,
    overlay_id,
    params_from_unit,
    parse_overlay_options,
    prepare_unit_name,
    tmpfs_dir_for,
    unit_name,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._systemd import CommandError, Systemd

ARGUMENT_SPEC: dict[str, Any] = dict(
    path=dict(type="str", required=True),
    state=dict(type="str", choices=["inspected", "discarded", "committed", "exported"], default="inspected"),
    dest=dict(type="path"),
    squash=dict(type="bool", default=False),
    compression=dict(type="str", choices=["none", "gzip"], default="none"),
    force=dict(type="bool", default=False),
    confirm=dict(type="str"),
)


#: The overlay module's defaults (what a mount shows no option for).
OVERLAY_PARAMS = "/sys/module/overlay/parameters"

#: The archive holds whatever the upper holds (secrets included): owner only.
ARCHIVE_MODE = 0o600


@dataclass
class Overlay:
    """The managed overlay at ``path`` as its units and mountinfo show it."""

    path: str
    unit: str
    params: dict[str, Any]
    upper: str
    upperdir: str
    workdir: str
    lowers: list[str]
    live: MountInfo | None
    live_options: dict[str, str | None]

    @property
    def tmpfs_dir(self) -> str | None:
        return tmpfs_dir_for(overlay_id(self.path)) if self.upper == "tmpfs" else None


def load_overlay(sd: Systemd, raw_path: str, result: dict[str, Any]) -> Overlay:
    """Read the managed units and the live mount; refuse overlays this collection does not manage."""
    try:
        path = normalize_path(raw_path, "path")
        unit = unit_name(path)
    except OverlayError as exc:
        raise conv.ConvergeError(str(exc), dict(result, param=exc.param)) from None
    result["unit"] = unit
    text = conv.read_text(os.path.join(conv.UNIT_DIR, unit))
    keys = managed_keys(text)
    if text is None or not keys:
        raise conv.ConvergeError(
            "%s/%s %s; overlayfs.systemd.upper only works on overlays managed by overlayfs.systemd.mount"
            % (conv.UNIT_DIR, unit, "does not exist" if text is None else "was not written by overlayfs.systemd"),
            dict(result, param="path"),
        )
    oid = keys.get("Id", "")
    tmpfs_text = conv.read_text(os.path.join(conv.UNIT_DIR, unit_name(tmpfs_dir_for(oid))))
    prepare_text = conv.read_text(os.path.join(conv.UNIT_DIR, prepare_unit_name(oid)))
    enabled = sd.show([unit], ["UnitFileState"]).get(unit, {}).get("UnitFileState") == "enabled"
    try:
        params = params_from_unit(text, tmpfs_text, prepare_text, enabled)
    except OverlayError as exc:
        raise conv.ConvergeError(str(exc), dict(result, param=exc.param)) from None
    kind = params["upper"]
    result.update(upper=kind, upperdir=keys.get("Upperdir"), workdir=keys.get("Workdir"))
    if kind == "none" or not keys.get("Upperdir") or not keys.get("Workdir"):
        raise conv.ConvergeError(
            "the overlay at %s has no upper layer (upper: none)" % path, dict(result, param="path")
        )
    live = mount_at(conv.read_mounts(), path)
    if live is not None and live.fstype != "overlay":
        live = None
    lowers = list(params["lowerdir"])
    live_options: dict[str, str | None] = {}
    if live is not None:
        opts = parse_overlay_options(live.super_options, live.mount_options)
        live_options = opts.options
        if opts.upperdir != keys["Upperdir"]:
            raise conv.ConvergeError(
                "the overlay mounted at %s uses upperdir %s, but its unit records %s; apply the unit with "
                "overlayfs.systemd.mount first" % (path, opts.upperdir, keys["Upperdir"]),
                dict(result, param="path", mounted=True),
            )
        lowers = list(opts.lowerdir)
    result.update(lowerdir=lowers, mounted=live is not None)
    return Overlay(path, unit, params, kind, keys["Upperdir"], keys["Workdir"], lowers, live, live_options)


def inspect(ov: Overlay) -> up.Inspection:
    if not os.path.isdir(ov.upperdir):
        return up.Inspection()
    return up.inspect_upper(ov.upperdir, ov.lowers)


def require_confirm(module: AnsibleModule, ov: Overlay, what: str, result: dict[str, Any]) -> None:
    if module.check_mode or module.params["confirm"] == ov.unit:
        return
    given = module.params["confirm"]
    raise conv.ConvergeError(
        "state=%s %s; set confirm: %s to proceed%s"
        % (
            module.params["state"],
            what,
            ov.unit,
            "" if given is None else " (confirm %r does not name this overlay's unit)" % given,
        ),
        dict(result, param="confirm"),
    )


def check_not_busy(ov: Overlay, result: dict[str, Any]) -> None:
    """Refuse (nothing changed) when processes or mounts use the overlay."""
    try:
        conv.busy_check(build_spec(ov.params), [ov.unit], conv.read_mounts())
    except conv.BusyError as exc:
        msg = str(exc).replace(", or use apply: next_boot", "")  # the mount module's way out, not ours
        raise conv.ConvergeError(msg, dict(result, holders=exc.holders, param="path")) from None


def stop_overlay(sd: Systemd, ov: Overlay, actions: list[str]) -> None:
    """Stop the overlay unit."""
    sd.stop(ov.unit)
    actions.append("stop %s" % ov.unit)


def ensure_unmounted(ov: Overlay) -> None:
    """Refuse to empty an upper that any overlay still mounts (never delete in a live upper)."""
    for m in conv.read_mounts():
        if m.fstype == "overlay" and (
            m.mount_point == ov.path or parse_overlay_options(m.super_options).upperdir == ov.upperdir
        ):
            raise OverlayError(
                "the upper %s is still mounted at %s; nothing was deleted" % (ov.upperdir, m.mount_point),
                "path",
            )


def upper_diff(ov: Overlay, insp: up.Inspection) -> dict[str, str]:
    return {"before": insp.summary(), "after": "", "before_header": ov.upperdir, "after_header": ov.upperdir}


def discard(module: AnsibleModule, sd: Systemd, ov: Overlay, result: dict[str, Any]) -> None:
    insp = inspect(ov)
    result.update(insp.as_result())
    if insp.empty:
        return
    require_confirm(module, ov, "deletes the upper layer of %s (%d entries)" % (ov.path, insp.entries), result)
    actions: list[str] = result["actions"]
    was_mounted = ov.live is not None
    result["changed"] = True
    if module._diff:
        result["diff"] = [upper_diff(ov, insp)]
    if module.check_mode:
        actions += ["stop %s" % ov.unit] if was_mounted else []
        actions += ["empty %s" % ov.upperdir, "empty %s" % ov.workdir]
        actions += ["start %s" % ov.unit] if was_mounted else []
        return
    if was_mounted:
        check_not_busy(ov, result)
    asides: list[tuple[str, str]] = []
    try:
        if was_mounted:
            stop_overlay(sd, ov, actions)
        ensure_unmounted(ov)
        for d in (ov.upperdir, ov.workdir):
            asides.append((d, up.swap_empty(d, "discard")))
            actions.append("empty %s" % d)
        if was_mounted:
            # It was mounted a moment ago: what lies under the mount point was accepted then.
            conv.converge(module, sd, dict(ov.params, allow_nonempty_mountpoint=True))
            actions.append("start %s" % ov.unit)
    except (OSError, OverlayError, CommandError, conv.ConvergeError) as exc:
        msg = getattr(exc, "msg", None) or str(exc)
        problems = restore(asides)
        if was_mounted and mount_at(conv.read_mounts(), ov.path) is None:
            try:
                sd.start(ov.unit)
            except CommandError as err:
                problems.append(str(err))
        raise conv.ConvergeError(
            "discarding the upper of %s failed; the old upper and work directories were put back. %s%s"
            % (ov.path, msg, (" Problems: %s" % "; ".join(problems)) if problems else ""),
            dict(result, mounted=mount_at(conv.read_mounts(), ov.path) is not None),
        ) from None
    for pair in asides:
        up.remove_tree(pair[1])


def restore(asides: list[tuple[str, str]]) -> list[str]:
    problems = []
    for path, aside in reversed(asides):
        try:
            up.restore_swap(path, aside)
        except OSError as exc:
            problems.append("restore %s from %s: %s" % (path, aside, exc))
    return problems


def dest_param(raw: str, result: dict[str, Any]) -> str:
    """O(dest) normalised (and recorded in the result)."""
    try:
        result["dest"] = normalize_path(raw, "dest")
    except OverlayError as exc:
        raise conv.ConvergeError(str(exc), dict(result, param="dest")) from None
    return result["dest"]


def check_dest(ov: Overlay, dest: str, result: dict[str, Any]) -> None:
    layers = [("the mount point", ov.path), ("upperdir", ov.upperdir), ("workdir", ov.workdir)]
    layers += [("lowerdir", x) for x in ov.lowers]
    if ov.tmpfs_dir:
        layers.append(("the tmpfs of the upper", ov.tmpfs_dir))
    layers += [("the API file system", x) for x in API_PATHS]
    problems = up.dest_problems(dest, layers)
    if dest == "/" or problems:
        raise conv.ConvergeError(
            "%s; choose a path outside the overlay and its layers (for example under /var/lib/overlayfs/layers)"
            % "; ".join(problems or ["dest cannot be /"]),
            dict(result, param="dest"),
        )


def effective_feature(live_options: dict[str, str | None], name: str) -> str:
    """A feature's live value: mountinfo shows it only when it differs from the overlay module's default."""
    if name in live_options:
        return live_options[name] or ""
    try:
        with open(os.path.join(OVERLAY_PARAMS, name), encoding="ascii") as fh:
            return "on" if fh.read().strip() in ("Y", "y", "1") else "off"
    except OSError:
        return "off"


def refuse_redirects(ov: Overlay, verb: str, result: dict[str, Any]) -> None:
    on = [k for k in ("redirect_dir", "metacopy") if effective_feature(ov.live_options, k) == "on"]
    if on:
        raise conv.ConvergeError(
            "the overlay at %s is mounted with %s: its upper entries point at data in the lower layers, so the "
            "module refuses to %s it. Mount it without %s (overlayfs.systemd.mount) first"
            % (ov.path, ", ".join("%s=on" % k for k in on), verb, " and ".join(on)),
            dict(result, param="state"),
        )


def commit(module: AnsibleModule, sd: Systemd, ov: Overlay, result: dict[str, Any]) -> None:
    p = module.params
    dest = dest_param(p["dest"], result)
    insp = inspect(ov)
    result.update(insp.as_result())
    unit_lowers = list(ov.params["lowerdir"])
    if os.path.lexists(dest):
        if unit_lowers[0] == dest and ov.lowers[0] == dest and insp.empty:
            return
        raise conv.ConvergeError(
            "dest %s already exists; committed creates a new directory. Give a new path" % dest,
            dict(result, param="dest"),
        )
    check_dest(ov, dest, result)
    if ov.live is None:
        raise conv.ConvergeError(
            "the overlay at %s is not mounted; committed copies the merged view. Mount it first "
            "(overlayfs.systemd.mount state: mounted)" % ov.path,
            dict(result, param="path"),
        )
    refuse_redirects(ov, "commit", result)
    require_confirm(
        module,
        ov,
        "replaces the lower layers of %s and empties its upper (%d entries)" % (ov.path, insp.entries),
        result,
    )
    root = os.lstat(ov.path)
    new_lowers = [dest] if p["squash"] else [dest] + unit_lowers
    new_params = dict(
        ov.params,
        lowerdir=new_lowers,
        apply="restart",
        owner=str(root.st_uid),
        group=str(root.st_gid),
        mode="%04o" % stat.S_IMODE(root.st_mode),
    )
    actions: list[str] = result["actions"]
    result.update(changed=True, lowerdir=new_lowers)
    diffs = [upper_diff(ov, insp)] if module._diff else []
    if module.check_mode:
        try:
            prep = conv.prepare(sd, dict(new_params, state="present"), diff=module._diff)
        except conv.ConvergeError as exc:
            raise conv.ConvergeError(exc.msg, {**result, **exc.result}) from None
        planned = ["stop %s" % ov.unit] + [a for a in prep.result["actions"] if a.startswith(("write ", "remove "))]
        planned += ["daemon-reload", "start %s" % ov.unit]
        actions += ["copy %s to %s" % (ov.path, dest)] + with_emptying(planned, ov)
        if module._diff:
            result["diff"] = diffs + prep.result.get("diff", [])
        result["lowerdir"] = ov.lowers
        return
    check_not_busy(ov, result)
    parent = os.path.dirname(dest)
    created: list[str] = []
    partial = up.aside_name(dest, "partial")
    try:
        make_dirs_secure(parent, 0o755, 0, 0, created, 0o755)
        result["copied"] = up.copy_tree(ov.path, partial)
        # Stacked on the old lowers, the copy must hide what the merged view no longer shows.
        result["masked"] = [] if p["squash"] else up.mask_lowers(partial, unit_lowers)
        os.rename(partial, dest)
    except (OSError, OverlayError) as exc:
        up.remove_tree(partial)
        for d in reversed(created):
            up.remove_tree(d)
        raise conv.ConvergeError(
            "copying %s to %s failed (%s); removed the partial copy, nothing else was changed" % (ov.path, dest, exc),
            dict(result, changed=False, lowerdir=ov.lowers),
        ) from None
    actions.append("copy %s to %s" % (ov.path, dest))
    try:
        unit_diffs = restack(module, sd, ov, new_params, dest, result)
    except conv.ConvergeError:
        up.remove_tree(dest)
        for d in reversed(created):
            up.remove_tree(d)
        raise
    if module._diff:
        result["diff"] = diffs + unit_diffs


def restack(
    module: AnsibleModule, sd: Systemd, ov: Overlay, new_params: dict[str, Any], dest: str, result: dict[str, Any]
) -> list[dict[str, str]]:
    """Stop, write the units with the new lowers, swap in empty upper/work, start: the mount module's phases.

    Returns the unit diffs. On failure the old upper and work come back and
    ``failed_activation`` restores the old units and mount.
    """
    actions: list[str] = result["actions"]
    try:
        prep = conv.prepare(sd, new_params, diff=module._diff)
        conv.check_busy(prep)
    except conv.ConvergeError as exc:
        raise conv.ConvergeError(
            "%s; removed %s again, nothing else was changed" % (exc.msg, dest), {**result, **exc.result}
        ) from None
    for w in prep.warnings:
        module.warn(w)
    if ov.unit not in prep.plan.stop:
        raise conv.ConvergeError(
            "the restack plan of %s does not stop the overlay (%s); nothing was changed"
            % (ov.path, ", ".join(prep.result["actions"])),
            dict(result, lowerdir=ov.lowers),
        )
    asides: list[tuple[str, str]] = []
    try:
        conv.apply_files(module, sd, prep)
        try:
            ensure_unmounted(ov)
        except OverlayError as exc:
            raise conv.ActivationError("stop %s" % ov.unit, exc) from exc
        asides.append((ov.upperdir, up.swap_empty(ov.upperdir, "commit", template=dest)))
        asides.append((ov.workdir, up.swap_empty(ov.workdir, "commit")))
        if prep.plan.daemon_reload:
            try:
                sd.daemon_reload()
            except CommandError as exc:
                raise conv.ActivationError("daemon-reload", exc) from exc
        conv.activate(module, sd, prep)
    except (conv.ActivationError, OSError, CommandError) as exc:
        problems = restore(asides)
        act = exc if isinstance(exc, conv.ActivationError) else conv.ActivationError("empty the upper", exc)
        err = conv.failed_activation(module, sd, prep, act)
        raise conv.ConvergeError(
            "%s The old upper and work directories were put back; removed %s.%s"
            % (err.msg, dest, (" Problems: %s" % "; ".join(problems)) if problems else ""),
            {**result, **err.result, "lowerdir": ov.lowers},
        ) from None
    for pair in asides:
        up.remove_tree(pair[1])
    res = conv.finish(prep)
    actions += with_emptying([a for a in res["actions"] if not a.startswith("create directory")], ov)
    result["mounted"] = res["mounted"]
    return list(res.get("diff", []))


def with_emptying(actions: list[str], ov: Overlay) -> list[str]:
    """The converge actions with the emptying of upper and work where it happens: before the reload/start."""
    at = next((i for i, a in enumerate(actions) if a.startswith(("daemon-reload", "reload ", "start "))), len(actions))
    return actions[:at] + ["empty %s" % ov.upperdir, "empty %s" % ov.workdir] + actions[at:]


class HashingWriter:
    """A binary sink that hashes and counts what it forwards to a file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = 0
        self.sha = hashlib.sha256()

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.size += len(view)
        while view:
            view = view[os.write(self.fd, view) :]
        return len(data)

    def flush(self) -> None:
        pass


def export(module: AnsibleModule, ov: Overlay, result: dict[str, Any]) -> None:
    p = module.params
    dest = dest_param(p["dest"], result)
    check_dest(ov, dest, result)
    if os.path.isdir(dest) or (os.path.lexists(dest) and not p["force"]):
        raise conv.ConvergeError(
            "dest %s already exists; give a new file name or force: true to overwrite it" % dest,
            dict(result, param="dest"),
        )
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise conv.ConvergeError("the directory of dest %s does not exist; create %s first" % (dest, parent), result)
    refuse_redirects(ov, "export", result)
    insp = inspect(ov)
    result.update(insp.as_result())
    result["changed"] = True
    result["actions"].append("write %s" % dest)
    if module._diff:
        result["diff"] = [{"before": "", "after": insp.summary(), "before_header": dest, "after_header": dest}]
    if module.check_mode:
        return
    if not os.path.isdir(ov.upperdir):
        raise conv.ConvergeError("the upper directory %s does not exist (is the tmpfs mounted?)" % ov.upperdir, result)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=".%s." % os.path.basename(dest)[:100], suffix=".tmp")
    try:
        sink = HashingWriter(fd)
        stats = up.write_oci_layer(ov.upperdir, sink, p["compression"])  # type: ignore[arg-type]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.chmod(tmp, ARCHIVE_MODE)
        module.atomic_move(tmp, dest)
        os.chmod(dest, ARCHIVE_MODE)
    except (OSError, up.UpperError) as exc:
        raise conv.ConvergeError("writing %s failed: %s" % (dest, exc), dict(result, changed=False)) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if os.path.exists(tmp):
            os.unlink(tmp)
    result["archive"] = {
        "entries": stats.entries,
        "whiteouts": stats.whiteouts,
        "opaque": stats.opaque,
        "bytes": stats.bytes,
        "size": sink.size,
        "digest": "sha256:" + sink.sha.hexdigest(),
        "skipped": stats.skipped,
    }


def run(module: AnsibleModule, sd: Systemd) -> dict[str, Any]:
    p = module.params
    result: dict[str, Any] = dict(changed=False, actions=[], path=p["path"])
    ov = load_overlay(sd, p["path"], result)
    state = p["state"]
    try:
        if state == "inspected":
            result.update(inspect(ov).as_result())
        elif state == "discarded":
            discard(module, sd, ov, result)
        elif state == "committed":
            commit(module, sd, ov, result)
        else:
            export(module, ov, result)
    except up.UpperError as exc:
        raise conv.ConvergeError(str(exc), dict(result, param=exc.param)) from None
    except (OverlayError, CommandError) as exc:
        raise conv.ConvergeError(str(exc), result) from None
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_if=[("state", "committed", ("dest",)), ("state", "exported", ("dest",))],
    )
    try:
        result = run(module, Systemd(module))
    except conv.ConvergeError as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
