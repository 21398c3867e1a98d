# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    # Offline runs of mount and mounts: an image root where systemd does not run.
    DOCUMENTATION = r"""
options: {}
notes:
  - "Offline runs (baking an image, for example through the C(community.general.chroot) connection): the module
    decides as systemd does. C(SYSTEMD_OFFLINE) set to a true value means offline and a false value online;
    otherwise a run whose C(/) is not the root of PID 1 (a chroot) or a host without the directory
    C(/run/systemd/system) (C(sd_booted())) is offline. Offline, the module writes the unit files, the upper and
    work directories, and enables units by writing the symlinks of their C([Install]) section
    (C(local-fs.target.wants/), C(multi-user.target.wants/) for the target, C(.requires/) for C(RequiredBy=)), as
    C(systemctl enable) does without a daemon. It runs no C(systemctl) at all: no C(daemon-reload), nothing is
    started, stopped or reloaded, and C(/proc/self/mountinfo) is not read (in a chroot it shows the build host).
    The result says C(offline=true) and the run warns once."
  - "Offline, C(state=mounted) is kept as declared (the units are written and enabled, and the aggregate target
    requires the overlay) and the overlay mounts at the image's next boot; nothing is mounted now, C(mounted) is
    false. C(state=absent) removes the units and their links without stopping anything. Check mode, diff mode and
    idempotence work offline as online; the choice of the C(lowerdir+=) form ignores the build host's kernel."
"""
