# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A bytecode cache for code that Python imports from zip files, installed in the test VM images only.

Every Ansible module runs from a fresh AnsiballZ zip, and zipimport compiles
each ``.py`` in it from source at every import: under software emulation
that is about half of a module call (4.0 s of a ping, 2.1 s with this cache).
This keeps each compiled module, keyed by the Python version, the
module's path inside the zip and its exact source, in a root-only directory,
so identical code compiles once per image. Nothing else changes: the same
source runs, from the same zip. A failed write (a full tmpfs upper) is
ignored; an unreadable entry is compiled again.
"""

from __future__ import annotations

import marshal
import os
import sys
import zipimport

CACHE = "/var/cache/overlayfs-vm-zipcache"
_compile_source = getattr(zipimport, "_compile_source", None)


def _key(pathname: str, source: bytes) -> str:
    import hashlib  # here, not at every interpreter start (the .pth imports this file)

    inner = pathname.split(".zip" + os.sep, 1)[-1]
    return hashlib.sha256(f"{sys.version}\0{inner}\0".encode() + source).hexdigest()


def _cached_compile(pathname: str, source: bytes):
    path = os.path.join(CACHE, _key(pathname, source))
    try:
        with open(path, "rb") as fh:
            return marshal.loads(fh.read())
    except Exception:  # noqa: BLE001 -- missing or unreadable: compile below
        pass
    code = _compile_source(pathname, source)
    tmp = f"{path}.{os.getpid()}"
    try:
        os.makedirs(CACHE, mode=0o700, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(marshal.dumps(code))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
    return code


if _compile_source is not None:
    zipimport._compile_source = _cached_compile
