# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # The host-wide lock of every module that changes overlays (mount, mounts, upper).
    DOCUMENTATION = r"""
options:
  lock_timeout:
    description:
      - Seconds to wait for the host-wide lock C(/run/lock/overlayfs-systemd.lock) that every changing run
        of this collection takes (an exclusive C(flock); C(/run/lock) is a tmpfs, so the lock never outlives
        a boot, and a run that dies releases it).
      - A run that waited says so in a warning and in RV(lock.waited) (seconds, and RV(lock.waited_for), the
        pid and command line of the run it waited for). When the lock is still held after O(lock_timeout)
        seconds the run fails, naming the holder's pid and command line, before it changed anything.
      - V(0) tries once and fails at once when another run holds the lock.
      - Check mode and read-only runs take no lock and never wait.
    type: float
    default: 120
"""
