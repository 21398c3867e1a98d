# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every module documents the shared attributes, and what they claim is true (the action group)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from ansible_collections.overlayfs.systemd.plugins.doc_fragments.attributes import ModuleDocFragment

ROOT = Path(__file__).resolve().parents[4]
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def documentation(name: str) -> dict:
    mod = importlib.import_module("ansible_collections.overlayfs.systemd.plugins.modules." + name)
    return yaml.safe_load(mod.DOCUMENTATION)


@pytest.mark.parametrize("name", MODULES)
def test_module_extends_the_attributes_fragment_and_has_version_added(name):
    doc = documentation(name)
    assert "overlayfs.systemd.attributes" in doc.get("extends_documentation_fragment", [])
    assert doc.get("version_added"), "%s: version_added missing" % name


def test_the_action_group_the_fragment_names_holds_every_module():
    membership = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["attributes"]["action_group"]["membership"]
    groups = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["action_groups"]
    for fqcn in membership:
        group = fqcn.split(".", 2)[2]
        assert sorted(groups[group]) == MODULES, fqcn
