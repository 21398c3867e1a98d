"""Print one line per entry of a tree: type, mode, owner, mtime, content, xattrs, hard-link group.

Usage: tree-manifest DIR [--no-root-times]. Content is the SHA-256 of a file,
the target of a symlink, the device number of a device. Extended
attributes: every one but security.* and trusted.overlay.* (what getfattr -d
-m - shows, without the labels a kernel may add). Access times are left out.
"""

import hashlib
import os
import stat
import sys

root = sys.argv[1]
no_root_times = "--no-root-times" in sys.argv[2:]
if not os.path.isdir(root):
    sys.exit("tree-manifest: %s is not a directory" % root)
links = {}
for d, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted([""] + dirs + files if d == root else dirs + files):
        p = os.path.join(d, name) if name else root
        st = os.lstat(p)
        rel = os.path.relpath(p, root)
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as fh:
                content = hashlib.sha256(fh.read()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            content = "-> " + os.readlink(p)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            content = "dev %d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        else:
            content = "-"
        xattrs = []
        for x in sorted(os.listxattr(p, follow_symlinks=False)):
            if not x.startswith(("security.", "trusted.overlay.")):
                xattrs.append("%s=%s" % (x, os.getxattr(p, x, follow_symlinks=False).hex()))
        group = "-"
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            group = links.setdefault((st.st_dev, st.st_ino), rel)
        mtime = "-" if rel == "." and no_root_times else str(st.st_mtime_ns)
        print(
            "%s %o %d:%d %s %s [%s] link=%s"
            % (rel, st.st_mode, st.st_uid, st.st_gid, mtime, content, ",".join(xattrs), group)
        )
