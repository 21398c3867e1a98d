# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
name: unit_name
short_description: The systemd unit name of a mount point
description:
  - Returns the name systemd gives the mount unit of a path, exactly as C(systemd-escape --path --suffix=mount)
    computes it (for example C(/var/lib/foo-bar) gives C(var-lib-foo\x2dbar.mount)).
  - It is the same code the M(overlayfs.systemd.mount) module names its units with, so a service can depend on
    an overlay by name, for example C(Requires={{ '/srv/kiosk-data' | overlayfs.systemd.unit_name }}).
  - Build unit names only with this filter and pass them on as opaque strings. Typing an escaped name into a
    YAML double-quoted string silently turns C(\x2d) back into C(-).
author:
  - overlayfs.systemd maintainers (@overlayfs-systemd)
options:
  _input:
    description:
      - An absolute path. Redundant and trailing slashes are removed as systemd does; C(.) and C(..) components,
        control characters and relative paths are refused.
    type: path
    required: true
  suffix:
    description: The unit type suffix, without the dot.
    type: str
    default: mount
"""

EXAMPLES = r"""
- name: A service that needs the kiosk overlay
  ansible.builtin.copy:
    dest: /etc/systemd/system/kiosk-app.service
    mode: "0644"
    content: |
      [Unit]
      Requires={{ '/srv/kiosk-data' | overlayfs.systemd.unit_name }}
      After={{ '/srv/kiosk-data' | overlayfs.systemd.unit_name }}
      [Service]
      ExecStart=/usr/bin/kiosk-app

- name: The automount unit of a path
  ansible.builtin.debug:
    msg: "{{ '/mnt/my share' | overlayfs.systemd.unit_name(suffix='automount') }}"  # mnt-my\x20share.automount
"""

RETURN = r"""
_value:
  description: The unit name, at most 255 bytes; a longer one is an error, never a truncated name.
  type: str
  sample: var-lib-foo\x2dbar.mount
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    normalize_path,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    unit_name as _unit_name,
)


def unit_name(path: str, suffix: str = "mount") -> str:
    """Escape ``path`` into its systemd unit name (``systemd-escape --path --suffix=SUFFIX``)."""
    if not isinstance(path, str):
        raise AnsibleFilterError(f"unit_name: expected a path string, got {type(path).__name__}")
    try:
        return _unit_name(normalize_path(path, "unit_name input"), suffix=suffix, param="unit_name input")
    except OverlayError as exc:
        raise AnsibleFilterError(f"unit_name: {exc}") from exc


class FilterModule:
    """overlayfs.systemd filters."""

    def filters(self):
        return {"unit_name": unit_name}
