# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The attributes every module of the collection documents the same way.

A module adds ``extends_documentation_fragment: [overlayfs.systemd.attributes]``
and keeps only ``support`` (when not full) and ``details`` in its own
``attributes:`` block; its keys win over the ones here.
``overlayfs.systemd.attributes.files`` adds ``safe_file_operations`` for the
modules that write files.
"""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/overlayfs.systemd.overlayfs) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - overlayfs.systemd.overlayfs
  platform:
    description: Target OS/families that can be operated against.
    support: full
    platforms: linux
    details: Linux hosts whose init system is systemd.
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
  idempotent:
    description: When run twice in a row outside check mode, with the same arguments, the second invocation
      indicates no change.
    support: full
"""

    FILES = r"""
options: {}
attributes:
  safe_file_operations:
    description: Uses Ansible's strict file operation functions to ensure proper permissions and avoid data corruption.
    support: full
"""
