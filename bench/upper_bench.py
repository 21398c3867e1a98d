# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Throughput of the upper module's commit copy and OCI export, next to cp -a and tar.

A benchmark that prints figures; it is not a test and not part of make test.
Run it as root on a Linux host (no container needed):

    python3 bench/upper_bench.py                  # 20,000 files, 1 GiB, on disk under /var/tmp
    python3 bench/upper_bench.py --tmpfs          # the same on a tmpfs of its own
    python3 bench/upper_bench.py --files 2000 --size-mib 100 --cold

It mounts an overlay by hand in a scratch directory (one small lower, an
upper and work directory next to it), writes the tree through the merged
view (so the upper holds it, plus a few whiteouts and an opaque directory),
then times, in the same run and on the same tree:

- commit: ``_layercopy.copy_tree(merged, dest)`` (what ``state: committed``
  copies) against ``cp -a merged dest``;
- export: ``_oci.write_oci_layer(upper)`` (``state: exported``) against
  ``tar --xattrs -cf`` of the merged view, uncompressed and with gzip.

The ratio is reference time / our time (above 1: faster than the reference).
``--cold`` drops the page cache before each measurement.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_upper():
    """Import the collection's copy and export code from this checkout (a symlinked ansible_collections tree)."""
    root = tempfile.mkdtemp(prefix="upper-bench-coll-")
    atexit.register(shutil.rmtree, root, True)
    os.makedirs(os.path.join(root, "ansible_collections", "overlayfs"))
    os.symlink(REPO, os.path.join(root, "ansible_collections", "overlayfs", "systemd"))
    sys.path.insert(0, root)
    from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy, _oci  # noqa: PLC0415

    return types.SimpleNamespace(copy_tree=_layercopy.copy_tree, write_oci_layer=_oci.write_oci_layer)


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True)


def drop_caches(cold: bool) -> None:
    os.sync()
    if cold:
        with open("/proc/sys/vm/drop_caches", "w", encoding="ascii") as fh:
            fh.write("3\n")


def build_tree(merged: str, lower: str, files: int, total: int) -> tuple[int, int]:
    """Write ``files`` files of ``total`` bytes through the merged view; returns (files, bytes)."""
    block = os.urandom(1 << 20)
    per_dir = 100
    sizes = [total // files] * files
    for i in range(total - sum(sizes)):
        sizes[i % files] += 1
    written = 0
    for i, size in enumerate(sizes):
        d = os.path.join(merged, "d%03d" % (i // per_dir))
        if i % per_dir == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%05d" % i), "wb") as fh:
            left = size
            off = (i * 4093) % (len(block) - 1)
            while left:
                chunk = block[off : off + left] or block[: min(left, len(block))]
                fh.write(chunk)
                left -= len(chunk)
                off = 0
        written += size
        if i % 1000 == 0:
            os.setxattr(os.path.join(d, "f%05d" % i), "user.bench", b"%d" % i)
    # a few deletions (whiteouts) and a replaced directory (opaque)
    for name in os.listdir(os.path.join(lower, "gone")):
        os.unlink(os.path.join(merged, "gone", name))
    shutil.rmtree(os.path.join(merged, "replaced"))
    os.makedirs(os.path.join(merged, "replaced"))
    with open(os.path.join(merged, "replaced", "new"), "w", encoding="ascii") as fh:
        fh.write("new\n")
    return files, written


def timed(label: str, fn, cold: bool) -> float:
    drop_caches(cold)
    t0 = time.monotonic()
    fn()
    os.sync()
    dt = time.monotonic() - t0
    print("  %-44s %8.2f s" % (label, dt), flush=True)
    return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--dir", default="/var/tmp/overlayfs-upper-bench")
    ap.add_argument("--tmpfs", action="store_true", help="mount a tmpfs at --dir for the whole run")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each measurement")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark mounts an overlay", file=sys.stderr)
        return 2
    up = import_upper()
    base = args.dir
    if os.path.lexists(base):
        print("%s exists; remove it or give --dir" % base, file=sys.stderr)
        return 2
    os.makedirs(base)
    mounts: list[str] = []

    def cleanup() -> None:
        for m in reversed(mounts):
            subprocess.run(["umount", m], check=False)
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(cleanup)
    if args.tmpfs:
        run(["mount", "-t", "tmpfs", "-o", "size=%dM,mode=0700" % (args.size_mib * 6 + 512), "tmpfs", base])
        mounts.append(base)
    lower, upper, work, merged = (os.path.join(base, n) for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        os.makedirs(d)
    for d in ("gone", "replaced"):
        os.makedirs(os.path.join(lower, d))
        for i in range(10):
            with open(os.path.join(lower, d, "old%d" % i), "w", encoding="ascii") as fh:
                fh.write("old\n")
    run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work),
            merged,
        ]
    )
    mounts.append(merged)
    fstype = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", base], capture_output=True, text=True, check=False)
    print(
        "upper bench: %d files, %d MiB, scratch %s (%s)%s"
        % (args.files, args.size_mib, base, fstype.stdout.strip(), ", cold cache" if args.cold else "")
    )
    t0 = time.monotonic()
    nfiles, nbytes = build_tree(merged, lower, args.files, args.size_mib << 20)
    os.sync()
    print("  %-44s %8.2f s" % ("build the tree through the merged view", time.monotonic() - t0))
    mib = nbytes / (1 << 20)

    rows = []
    t_ours = timed(
        "commit copy: _layercopy.copy_tree(merged)", lambda: up.copy_tree(merged, base + "/c-ours"), args.cold
    )
    t_ref = timed("reference: cp -a merged", lambda: run(["cp", "-a", merged, base + "/c-cp"]), args.cold)
    rows.append(("commit (copy of the merged view)", t_ours, "cp -a", t_ref))
    shutil.rmtree(base + "/c-ours")
    shutil.rmtree(base + "/c-cp")

    for comp, tar_flag in (("none", "-cf"), ("gzip", "-czf")):
        out_ours = base + "/ours.tar" + (".gz" if comp == "gzip" else "")
        out_ref = base + "/ref.tar" + (".gz" if comp == "gzip" else "")

        def ours(out=out_ours, comp=comp):
            with open(out, "wb") as fh:
                up.write_oci_layer(upper, fh, comp)

        t_ours = timed("export %s: _oci.write_oci_layer(upper)" % comp, ours, args.cold)
        t_ref = timed(
            "reference: tar --xattrs %s merged" % tar_flag,
            lambda out=out_ref, flag=tar_flag: run(["tar", "--xattrs", flag, out, "-C", merged, "."]),
            args.cold,
        )
        rows.append(("export (%s)" % comp, t_ours, "tar %s" % tar_flag, t_ref))
        os.unlink(out_ours)
        os.unlink(out_ref)

    print()
    head = ("", "ours s", "MiB/s", "files/s", "reference", "ref s", "MiB/s", "ratio")
    print("%-34s %9s %9s %10s   %-12s %9s %9s  %s" % head)
    for label, t, ref, tr in rows:
        print(
            "%-34s %9.2f %9.1f %10.0f   %-12s %9.2f %9.1f  %.2f"
            % (label, t, mib / t, nfiles / t, ref, tr, mib / tr, tr / t)
        )
    print("ratio = reference time / our time (above 1: faster than the reference)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
