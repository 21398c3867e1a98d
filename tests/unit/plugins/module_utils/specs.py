# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Specs the module_utils tests start from."""

from __future__ import annotations

from ansible_collections.overlayfs.systemd.plugins.module_utils import _spec as sp

BASE = {"path": "/srv/app", "lowerdir": ["/opt/app/v2", "/opt/app/base"]}


def spec_of(**kw):
    params = dict(BASE)
    params.update(kw)
    return sp.build_spec(params)


def resolved(**kw):
    return sp.resolve_ownership(spec_of(**kw), 0, 0, 0o755)
