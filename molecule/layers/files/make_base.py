"""Write the kiosk's base layer as a tar with fixed times and owners (the same bytes on every run).

Usage: make-base OUT.tar. Holds: etc/motd, etc/old.conf, cache/stale,
data/a, data/b (hard link of data/a), a symlink, a file owned by 1000:1000.
"""

import io
import sys
import tarfile

MTIME = 1_700_000_000
ENTRIES = [
    ("etc", None, 0o755, 0, 0),
    ("etc/motd", b"kiosk v1\n", 0o644, 0, 0),
    ("etc/old.conf", b"old=1\n", 0o644, 0, 0),
    ("cache", None, 0o755, 0, 0),
    ("cache/stale", b"stale\n", 0o644, 0, 0),
    ("data", None, 0o755, 1000, 1000),
    ("data/a", b"shared\n", 0o640, 1000, 1000),
]

with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as tf:
    for name, data, mode, uid, gid in ENTRIES:
        ti = tarfile.TarInfo(name)
        ti.mode, ti.uid, ti.gid, ti.mtime = mode, uid, gid, MTIME
        if data is None:
            ti.type = tarfile.DIRTYPE
            tf.addfile(ti)
        else:
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    link = tarfile.TarInfo("data/b")
    link.type, link.linkname, link.mtime = tarfile.LNKTYPE, "data/a", MTIME
    link.mode, link.uid, link.gid = 0o640, 1000, 1000
    tf.addfile(link)
    sym = tarfile.TarInfo("etc/issue")
    sym.type, sym.linkname, sym.mtime = tarfile.SYMTYPE, "motd", MTIME
    tf.addfile(sym)
