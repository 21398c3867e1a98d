# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The VM images' bytecode cache for zip imports (tests/vm/image/overlayfs_vm_zipcache.py)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import zipfile
import zipimport

import pytest

SOURCE = os.path.join(os.path.dirname(__file__), "..", "..", "vm", "image", "overlayfs_vm_zipcache.py")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The cache module loaded from its file, writing under tmp_path, counting real compiles."""
    spec = importlib.util.spec_from_file_location("overlayfs_vm_zipcache_under_test", SOURCE)
    mod = importlib.util.module_from_spec(spec)
    # Loading it patches zipimport: undone after the test.
    monkeypatch.setattr(zipimport, "_compile_source", zipimport._compile_source)
    spec.loader.exec_module(mod)
    compiled = []
    real = mod._compile_source

    def counting(pathname, source):
        compiled.append(pathname)
        return real(pathname, source)

    monkeypatch.setattr(mod, "_compile_source", counting)
    monkeypatch.setattr(mod, "CACHE", str(tmp_path / "cache"))
    mod.compiled = compiled
    return mod


def import_from_zip(tmp_path, name: str, zipname: str, source: str):
    path = tmp_path / zipname
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"pkg_{name}/__init__.py", "")
        zf.writestr(f"pkg_{name}/mod.py", source)
    sys.path.insert(0, str(path))
    try:
        for key in [k for k in sys.modules if k.startswith(f"pkg_{name}")]:
            del sys.modules[key]
        importlib.invalidate_caches()
        return importlib.import_module(f"pkg_{name}.mod")
    finally:
        sys.path.remove(str(path))
        for key in [k for k in sys.modules if k.startswith(f"pkg_{name}")]:
            del sys.modules[key]


def test_loading_it_replaces_zipimports_compile(cache):
    assert zipimport._compile_source is cache._cached_compile


def test_the_same_source_in_another_zip_compiles_once(cache, tmp_path):
    first = import_from_zip(tmp_path, "a", "one.zip", "VALUE = 41 + 1\n")
    assert first.VALUE == 42
    assert len(cache.compiled) == 2  # the package and the module
    assert len(os.listdir(cache.CACHE)) == 2
    # A fresh AnsiballZ zip elsewhere with the same files: nothing compiled, the same result.
    again = import_from_zip(tmp_path, "a", "two.zip", "VALUE = 41 + 1\n")
    assert again.VALUE == 42
    assert len(cache.compiled) == 2
    assert again.__file__.endswith(os.path.join("two.zip", "pkg_a", "mod.py"))


def test_changed_source_is_compiled_again(cache, tmp_path):
    assert import_from_zip(tmp_path, "b", "one.zip", "VALUE = 1\n").VALUE == 1
    assert import_from_zip(tmp_path, "b", "two.zip", "VALUE = 2\n").VALUE == 2
    assert len(cache.compiled) == 3  # the package once, each module source once


def test_an_unreadable_entry_is_compiled_again(cache, tmp_path):
    import_from_zip(tmp_path, "c", "one.zip", "VALUE = 3\n")
    for name in os.listdir(cache.CACHE):
        (tmp_path / "cache" / name).write_bytes(b"not marshal data")
    assert import_from_zip(tmp_path, "c", "two.zip", "VALUE = 3\n").VALUE == 3
    assert len(cache.compiled) == 4


def test_a_cache_that_cannot_be_written_still_imports(cache, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory would go")
    monkeypatch.setattr(cache, "CACHE", str(blocker / "cache"))
    assert import_from_zip(tmp_path, "d", "one.zip", "VALUE = 4\n").VALUE == 4
    once = len(cache.compiled)
    assert import_from_zip(tmp_path, "d", "two.zip", "VALUE = 4\n").VALUE == 4
    assert len(cache.compiled) == 2 * once  # nothing kept: compiled again, as without the cache
