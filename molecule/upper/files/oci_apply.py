"""Apply an OCI image layer tar onto a directory, honouring .wh. whiteouts and .wh..wh..opq.

Usage: oci-apply LAYER.tar[.gz] DIR. A test helper: whiteouts first (an
opaque marker empties its directory, .wh.<name> removes <name>), then the
other entries are extracted with numeric owners, and the PAX xattrs and
nanosecond mtimes are applied (tarfile restores neither), directories last.
"""

import os
import shutil
import sys
import tarfile

layer, root = sys.argv[1], sys.argv[2]


def remove(p):
    if os.path.isdir(p) and not os.path.islink(p):
        shutil.rmtree(p)
    elif os.path.lexists(p):
        os.unlink(p)


with tarfile.open(layer, "r:*") as tf:
    members = tf.getmembers()
    rest = []
    for m in members:
        parent, _sep, name = m.name.rstrip("/").rpartition("/")
        target_dir = os.path.join(root, parent)
        if name == ".wh..wh..opq":
            for child in os.listdir(target_dir):
                remove(os.path.join(target_dir, child))
        elif name.startswith(".wh."):
            remove(os.path.join(target_dir, name[4:]))
        else:
            rest.append(m)
    for m in rest:
        p = os.path.join(root, m.name.rstrip("/"))
        if not (m.isdir() and os.path.isdir(p)):
            remove(p)
    # Python before 3.11.4 (Debian 12's 3.11.2) has no extraction filters
    trusted = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    tf.extractall(root, members=rest, numeric_owner=True, **trusted)
    for m in sorted(rest, key=lambda m: m.isdir()):
        p = os.path.join(root, m.name.rstrip("/"))
        for key, value in m.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                os.setxattr(p, key[13:], value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
        if "mtime" in m.pax_headers:
            sec, _dot, frac = m.pax_headers["mtime"].partition(".")
            ns = int(sec) * 10**9 + int((frac + "000000000")[:9])
            os.utime(p, ns=(ns, ns), follow_symlinks=False)
