# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Make the collection importable as ``ansible_collections.overlayfs.systemd``.

Under ``ansible-test units`` (or an installed collection) nothing is done.
From a plain checkout, a temporary tree ``ansible_collections/overlayfs/systemd``
symlinked to the repository root is put first on ``sys.path``.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _importable() -> bool:
    try:
        mod = importlib.import_module("ansible_collections.overlayfs.systemd.plugins.module_utils._names")
    except ImportError:
        return False
    return os.path.realpath(mod.__file__).startswith(os.path.realpath(REPO_ROOT) + os.sep)


def _install_symlink_tree() -> None:
    root = tempfile.mkdtemp(prefix="overlayfs-systemd-collection-")
    atexit.register(shutil.rmtree, root, True)
    ns = os.path.join(root, "ansible_collections", "overlayfs")
    os.makedirs(ns)
    os.symlink(REPO_ROOT, os.path.join(ns, "systemd"))
    sys.path.insert(0, root)
    for name in [m for m in sys.modules if m == "ansible_collections" or m.startswith("ansible_collections.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


if not _importable():
    _install_symlink_tree()
