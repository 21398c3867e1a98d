# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The import rules of plugins/module_utils (the map in CONTRIBUTING.md), checked on the source."""

from __future__ import annotations

import ast
import os

import pytest

MODULE_UTILS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "module_utils")

#: Pure rules: data in, data out; no ansible import, no host file below them.
PURE = {
    "_errors",
    "_names",
    "_mountinfo",
    "_spec",
    "_units",
    "_plan",
    "_facts",
    "_preflight",
    "_info",
    "_readonly_root",
    "_liveguard",
    "_restarts",
    "_leftovers",
    "_offline",
    "_journal",
}
#: The host: files, /proc and the unit directory (_host); systemctl and mount (_systemd).
HOST = {"_host", "_systemd", "_readonly_root_host", "_hostlock", "_offline_host", "_rootfiles"}
#: Layer files: inspection, OCI export and image archives, copying, stacking (paths as arguments).
LAYER_FILES = {"_upper", "_oci", "_layercopy", "_image", "_stack", "_unpack"}
#: The phases the modules run: they may use everything below them.
PHASES = {"_converge", "_bulk", "_upper_states", "_upper_overlay", "_commit", "_layer", "_commit_resume"}

MAY_IMPORT = {
    **{m: PURE for m in PURE},
    **{m: PURE | HOST for m in HOST},
    **{m: PURE | LAYER_FILES for m in LAYER_FILES},
    **{m: PURE | HOST | LAYER_FILES | PHASES for m in PHASES},
}


def imports(name):
    """(collection module_utils imported, other ansible modules imported) by module_utils/``name``.py."""
    with open(os.path.join(MODULE_UTILS, name + ".py"), encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    ours, ansible = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("ansible_collections.overlayfs.systemd.plugins.module_utils"):
                tail = node.module.rsplit(".", 1)[1]
                ours |= {a.name for a in node.names} if tail == "module_utils" else {tail}
            elif node.module.startswith("ansible"):
                ansible.add(node.module)
    return ours, ansible


def test_every_file_has_a_layer():
    files = {f[:-3] for f in os.listdir(MODULE_UTILS) if f.endswith(".py") and f != "__init__.py"}
    assert files == set(MAY_IMPORT)


@pytest.mark.parametrize("name", sorted(MAY_IMPORT))
def test_imports_follow_the_layers(name):
    ours, ansible = imports(name)
    assert ours - {name} <= MAY_IMPORT[name], "%s imports %s" % (name, sorted(ours - MAY_IMPORT[name]))
    if name in PURE | LAYER_FILES:
        assert not ansible, "%s imports %s" % (name, sorted(ansible))


@pytest.mark.parametrize("name", sorted(MAY_IMPORT))
def test_private_header(name):
    with open(os.path.join(MODULE_UTILS, name + ".py"), encoding="utf-8") as fh:
        head = fh.read(600)
    assert "# PRIVATE module_utils of the overlayfs.systemd collection." in head
