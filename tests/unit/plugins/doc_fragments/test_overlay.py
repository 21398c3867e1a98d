# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The overlay options fragment: written once, the same options for mount and for every item of mounts."""

from __future__ import annotations

import re

import yaml

from ansible_collections.overlayfs.systemd.plugins.doc_fragments.overlay import ModuleDocFragment
from ansible_collections.overlayfs.systemd.plugins.modules import mount


def options() -> dict:
    return yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]


def items() -> dict:
    doc = yaml.safe_load(ModuleDocFragment.ITEMS)["options"]["overlays"]
    assert set(doc) == {"suboptions"}  # the mounts module keeps its own description of overlays
    return doc["suboptions"]


def test_documents_every_option_of_the_mount_argument_spec():
    assert set(options()) == set(mount.ARGUMENT_SPEC)


def test_items_are_the_same_options_with_the_same_types_and_defaults():
    top, sub = options(), items()
    assert set(sub) == set(top)
    for name, spec in top.items():
        for key in ("type", "elements", "choices", "default", "required"):
            assert sub[name].get(key) == spec.get(key), (name, key)


def test_every_option_reference_of_an_item_points_into_the_list():
    text = yaml.safe_dump(items())
    refs = re.findall(r"O\(([^)=]+)", text)
    assert refs, "the sub-options refer to each other"
    assert all(r.startswith("overlays[].") for r in refs), refs
    assert set(r[len("overlays[].") :] for r in refs) <= set(options())
