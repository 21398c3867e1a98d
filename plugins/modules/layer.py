#!/usr/bin/python
# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: layer
short_description: Import an OCI layer tar as an overlay layer directory, or remove an unused one
description:
  - V(present) unpacks an OCI image layer tar at O(src) on the managed host (plain or gzip; the output of
    M(overlayfs.systemd.upper) V(exported), or a layer blob of a container image) into the new directory O(path),
    which an overlay can then list in C(lowerdir) (see M(overlayfs.systemd.mount)).
  - C(.wh.NAME) entries become overlay whiteouts (character device 0/0) and C(.wh..wh..opq) makes its directory
    opaque (C(trusted.overlay.opaque=y)), as the kernel expects them in a lower layer. Other C(.wh..wh.) names are
    reserved by the format and skipped (returned in RV(reserved)).
  - The archive is unpacked into a hidden sibling of O(path) (C(.NAME.overlayfs-layer-PID)), every file and
    directory is synced, O(digest) and O(diff_id) are compared, the record is written and only then the sibling
    is renamed to O(path). A refusal or a failure removes the sibling, so nothing is left and O(path) never exists
    half-written.
  - Hostile archives are refused before anything is visible. Refused are absolute names or C(..) components,
    hard links to anything but an earlier file of the archive, symlinks whose relative target climbs above the
    layer root, device nodes other than the whiteout 0/0, set-uid/set-gid files and file capabilities (unless
    O(allow_setuid=true)), C(trusted.overlay.*) or C(user.overlay.*) xattrs, entries that go through a
    non-directory, and a file together with its own whiteout.
  - The layer directory records the archive it holds (its C(digest) and C(diff_id)) in the
    C(trusted.overlayfs-systemd.layer) xattr of its root. Importing the same archive again is no change; a
    different archive at an existing O(path) is refused, because a lower layer must never change under an
    overlay that uses it. Import it at a new path and switch C(lowerdir) to it.
  - V(absent) removes a layer directory this module imported, only when no overlay uses it. Users are the
    C(.mount) units written by M(overlayfs.systemd.mount) (in C(/etc/systemd/system)) whose C(lowerdir),
    C(upperdir) or C(workdir) overlaps O(path), and every overlay mounted now (C(/proc/self/mountinfo)) that
    does. They are named in the error and in RV(users).
author:
  - overlayfs.systemd maintainers (@overlayfs-systemd)
requirements:
  - Linux; root (the module creates device nodes, sets owners and C(trusted.*) xattrs).
  - O(path) on a file system that holds character devices and C(trusted.*) xattrs (ext4, xfs, btrfs, tmpfs);
    an overlayfs (for example a container's root) is refused before anything is unpacked.
version_added: 0.1.0
attributes:
  check_mode:
    details: V(present) reads the whole archive, applies every check and compares the digests, and writes
      nothing; a hostile archive or a digest mismatch fails in check mode too. V(absent) reports the users
      or the removal it would do.
  diff_mode:
    details: The layer directory's record (digest, diff_id and entry counts) before and after.
  idempotent:
    details: V(present) compares the recorded digest with O(digest), O(diff_id) or, when neither is given, the
      digest of O(src) (read once, not unpacked).
  safe_file_operations:
    details: A layer becomes visible by one rename of a complete, synced directory; a removed layer is first
      renamed to a hidden sibling, then deleted.
extends_documentation_fragment:
  - overlayfs.systemd.attributes
  - overlayfs.systemd.attributes.files
options:
  path:
    description:
      - The layer directory, an absolute path. Its parent is created (mode 0755) when missing; no component
        of it may be a symlink.
    type: path
    required: true
  state:
    description:
      - V(present) imports O(src) into O(path).
      - V(absent) removes O(path) when no overlay uses it. A directory this module did not import is refused.
    type: str
    choices: [present, absent]
    default: present
  src:
    description:
      - The layer tar on the managed host (plain or gzip, detected from its first bytes). Required with
        V(present). Copy it there first (C(ansible.builtin.copy)).
    type: path
  digest:
    description:
      - The expected digest of O(src) as stored (C(sha256:<hex>); the OCI descriptor's digest). A gzip blob's
        digest differs from its C(diff_id); either is accepted here.
      - A mismatch fails and leaves nothing.
    type: str
  diff_id:
    description:
      - The expected sha256 of the uncompressed tar (the C(rootfs.diff_ids) entry of an image config).
    type: str
  allow_setuid:
    description:
      - Accept set-uid/set-gid files and file capabilities (C(security.capability)) in the archive. Mount the
        overlay with C(nosuid) unless you trust the layer.
    type: bool
    default: false
notes:
  - The layer is immutable once imported. Do not change it while an overlay uses it (the kernel calls that
    undefined behaviour); import the next version at a new O(path).
seealso:
  - module: overlayfs.systemd.upper
  - module: overlayfs.systemd.mount
  - name: OCI image layer specification
    description: The tar format, whiteouts and opaque markers.
    link: https://github.com/opencontainers/image-spec/blob/main/layer.md
"""

EXAMPLES = r"""
# On the golden box: the kiosk's changes, exported as a layer tar.
- name: A kiosk overlay with a persistent upper
  overlayfs.systemd.mount:
    path: /srv/kiosk
    lowerdir:
      - /opt/kiosk/base
    state: mounted

- name: Export its changes as a layer tar
  overlayfs.systemd.upper:
    path: /srv/kiosk
    state: exported
    dest: /root/kiosk-2.tar
    force: true
  register: kiosk_2

# On each box of the fleet: bring the tar there first (ansible.builtin.copy or
# ansible.builtin.get_url), then import it, checked against the export's digest.
- name: Import it
  overlayfs.systemd.layer:
    path: /var/lib/overlayfs/layers/kiosk-2
    src: /root/kiosk-2.tar
    digest: "{{ kiosk_2.archive.digest }}"

- name: Run the kiosk on the new layer from the next boot on
  overlayfs.systemd.mount:
    path: /srv/kiosk
    lowerdir:
      - /var/lib/overlayfs/layers/kiosk-2
      - /opt/kiosk/base
    apply: next_boot

- name: Garbage-collect the layer the fleet no longer uses (refused while an overlay uses it)
  overlayfs.systemd.layer:
    path: /var/lib/overlayfs/layers/kiosk-1
    state: absent
"""

RETURN = r"""
path:
  description: The layer directory.
  returned: always
  type: str
  sample: /var/lib/overlayfs/layers/kiosk-2
digest:
  description: The sha256 digest of the archive as stored (V(present)), or the recorded one (V(absent)).
  returned: when known
  type: str
  sample: sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945
diff_id:
  description: The sha256 of the uncompressed tar.
  returned: when known
  type: str
  sample: sha256:4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945
compression:
  description: How O(src) was compressed, V(none) or V(gzip).
  returned: when O(src) was read
  type: str
  sample: gzip
counts:
  description:
    - What the archive holds, C(entries) being every tar member; C(whiteouts) and C(opaque) count the
      markers made from C(.wh.) names, C(bytes) the regular files' size.
  returned: when O(src) was read
  type: dict
  sample: {entries: 14, files: 9, directories: 3, symlinks: 0, hardlinks: 1, specials: 0, whiteouts: 1,
    opaque: 1, bytes: 40960}
reserved:
  description: Reserved C(.wh..wh.) entries that were skipped.
  returned: when O(src) was read
  type: list
  elements: str
  sample: []
users:
  description:
    - The overlays that use O(path) (V(absent) refuses then). C(unit) is the managed unit (empty for a mount
      seen only in mountinfo), C(path) the mount point, C(as) V(lowerdir), V(upperdir) or V(workdir),
      C(source) V(unit) or V(mountinfo).
  returned: with V(absent)
  type: list
  elements: dict
  sample: [{unit: srv-kiosk.mount, path: /srv/kiosk, as: lowerdir, source: unit}]
diff:
  description: The record before and after.
  returned: in diff mode, when changed
  type: dict
  sample: {before: "", after: "digest: sha256:...\n", before_header: /var/lib/overlayfs/layers/kiosk-2,
    after_header: /var/lib/overlayfs/layers/kiosk-2}
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.overlayfs.systemd.plugins.module_utils import _image as img
from ansible_collections.overlayfs.systemd.plugins.module_utils import _layer as lay
from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import OverlayError
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import normalize_path

ARGUMENT_SPEC: dict[str, Any] = dict(
    path=dict(type="path", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    src=dict(type="path"),
    digest=dict(type="str"),
    diff_id=dict(type="str"),
    allow_setuid=dict(type="bool", default=False),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        supports_check_mode=True,
        required_if=[("state", "present", ("src",))],
    )
    p = module.params
    result: dict[str, Any] = dict(changed=False, path=p["path"])
    try:
        path = normalize_path(p["path"], "path")
        result["path"] = path
        if p["state"] == "present":
            step = lay.ensure_present(
                path,
                p["src"],
                digest=img.parse_digest(p["digest"], "digest"),
                diff_id=img.parse_digest(p["diff_id"], "diff_id"),
                allow_setuid=p["allow_setuid"],
                check_mode=module.check_mode,
            )
        else:
            step = lay.ensure_absent(path, check_mode=module.check_mode)
    except (img.LayerError, OverlayError) as exc:
        extra = dict(getattr(exc, "extra", None) or {})
        module.fail_json(msg=str(exc), param=exc.param, hint=getattr(exc, "hint", None), **dict(result, **extra))
    except OSError as exc:
        module.fail_json(msg="layer %s: %s" % (result["path"], exc), **result)
    result.update(step.result)
    result["changed"] = step.changed
    if step.changed and module._diff:
        result["diff"] = dict(before=step.before, after=step.after, before_header=path, after_header=path)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
