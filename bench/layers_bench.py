# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A commit that costs the change: the stacked commit next to ping + cp -a of the upper, and the old full copy.

A benchmark that prints figures; it is not a test and not part of make test.
Run it as root on a Linux host or in a bench container (scratch not on an
overlayfs):

    python3 bench/layers_bench.py                      # 20,000 files, 500 MiB base, 10 changed, 1 deleted
    python3 bench/layers_bench.py --files 2000 --size-mib 50

It writes the base as a plain lower directory, mounts an overlay on it by
hand, changes 10 files and deletes 1 through the merged view, then times in
the same run:

- one module round trip: ``ansible localhost -m ping`` (what any module
  call costs before it does anything);
- the reference: ``cp -a`` of the upper alone;
- the stacked commit's work (``_stack.stack_upper``): the overlay
  unmounted, the upper renamed to the new layer (same file system) and the
  overlay mounted on ``dest:base`` with a fresh upper; and the copy path
  (dest on another file system, a tmpfs here): a copy of the upper only;
- the old full copy (``_layercopy.copy_tree`` of the merged view plus
  ``_layercopy.mask_lowers``), which ``squash: true`` still does (without the
  masks), against ``cp -a`` of the merged view;
- ``exported`` (``_oci.write_oci_layer``) against ``tar --xattrs -cf`` of
  the upper;
- the disk use of each dest (``du -sk``) against the upper's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from upper_bench import import_upper, run, scratch, timed


def build_base(lower: str, files: int, total: int) -> None:
    block = os.urandom(1 << 20)
    size = total // files
    for i in range(files):
        d = os.path.join(lower, "d%03d" % (i // 100))
        if i % 100 == 0:
            os.makedirs(d)
        with open(os.path.join(d, "f%05d" % i), "wb") as fh:
            off = (i * 4093) % (len(block) - size - 1) if size < len(block) else 0
            left = size
            while left:
                chunk = block[off : off + min(left, len(block) - off)]
                fh.write(chunk)
                left -= len(chunk)
                off = 0


def change(merged: str, files: int, changed: int) -> None:
    """Rewrite the start of ``changed`` files spread over the base, delete the last one."""
    step = files // (changed + 1)
    for i in range(changed):
        k = i * step
        with open(os.path.join(merged, "d%03d" % (k // 100), "f%05d" % k), "r+b") as fh:
            fh.write(b"changed %d\n" % i)
    os.unlink(os.path.join(merged, "d%03d" % ((files - 1) // 100), "f%05d" % (files - 1)))


def du_kib(path: str) -> int:
    return int(subprocess.run(["du", "-sk", path], capture_output=True, text=True, check=True).stdout.split()[0])


def mount_overlay(lowers: list[str], upper: str, work: str, merged: str) -> None:
    opts = "lowerdir=%s,upperdir=%s,workdir=%s" % (":".join(lowers), upper, work)
    run(["mount", "-t", "overlay", "overlay", "-o", opts, merged])


def ping() -> None:
    ansible = shutil.which("ansible") or os.path.join(os.path.dirname(sys.executable), "ansible")
    subprocess.run(
        [ansible, "localhost", "-c", "local", "-m", "ansible.builtin.ping"],
        check=True,
        capture_output=True,
        env=dict(os.environ, ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false"),
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--size-mib", type=int, default=500)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--dir", default="/var/tmp/overlayfs-layers-bench")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root: the benchmark mounts an overlay", file=sys.stderr)
        return 2
    import_upper()  # puts this checkout on sys.path as the collection
    from ansible_collections.overlayfs.systemd.plugins.module_utils import _layercopy, _oci, _stack  # noqa: PLC0415

    base = args.dir
    mounts = scratch(base)
    if mounts is None:
        return 2
    lower, upper, work, merged, other = (os.path.join(base, n) for n in ("base", "upper", "work", "merged", "tmpfs"))
    for d in (lower, upper, work, merged, other):
        os.makedirs(d)
    run(["mount", "-t", "tmpfs", "-o", "mode=0700", "tmpfs", other])
    mounts.append(other)
    t0 = time.monotonic()
    build_base(lower, args.files, args.size_mib << 20)
    os.sync()
    fstype = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", base], capture_output=True, text=True, check=False)
    print(
        "layers bench: base %d files, %d MiB, %d changed + 1 deleted, scratch %s (%s); base written in %.1f s"
        % (
            args.files,
            args.size_mib,
            args.changed,
            base,
            fstype.stdout.strip(),
            args.size_mib and time.monotonic() - t0,
        )
    )
    mount_overlay([lower], upper, work, merged)
    mounts.append(merged)
    change(merged, args.files, args.changed)
    os.sync()
    upper_kib = du_kib(upper)

    t_ping = timed("one module round trip: ansible -m ping", ping, False)
    t_cp_upper = timed("reference: cp -a upper", lambda: run(["cp", "-a", upper, base + "/ref-upper"]), False)
    t_copy = timed(
        "stacked commit, copy path (dest on tmpfs)", lambda: _stack.copy_upper(upper, other + "/k2-copy"), False
    )
    copy_kib = du_kib(other + "/k2-copy")

    def full_copy() -> None:
        _layercopy.copy_tree(merged, base + "/full")
        _layercopy.mask_lowers(base + "/full", [lower])

    t_full = timed("old commit: copy_tree(merged) + mask_lowers", full_copy, False)
    full_kib = du_kib(base + "/full")
    shutil.rmtree(base + "/full")
    t_squash = timed(
        "squash: _layercopy.copy_tree(merged)", lambda: _layercopy.copy_tree(merged, base + "/squash"), False
    )
    t_cp_merged = timed("reference: cp -a merged", lambda: run(["cp", "-a", merged, base + "/ref-merged"]), False)
    shutil.rmtree(base + "/squash")
    shutil.rmtree(base + "/ref-merged")

    def export() -> None:
        with open(base + "/ours.tar", "wb") as fh:
            _oci.write_oci_layer(upper, fh, "none")

    t_export = timed("exported: _oci.write_oci_layer(upper)", export, False)
    t_tar = timed(
        "reference: tar --xattrs -cf upper",
        lambda: run(["tar", "--xattrs", "-cf", base + "/ref.tar", "-C", upper, "."]),
        False,
    )

    def stacked() -> None:
        run(["umount", merged])
        mounts.remove(merged)
        _stack.stack_upper(upper, base + "/k2")
        os.mkdir(upper)
        shutil.rmtree(work)
        os.mkdir(work)
        mount_overlay([base + "/k2", lower], upper, work, merged)
        mounts.append(merged)

    t_stack = timed("stacked commit, rename path (umount, rename, mount)", stacked, False)
    stack_kib = du_kib(base + "/k2")

    print()
    goal = 1.5 * (t_ping + t_cp_upper)
    print("%-46s %9s   %-30s %9s  %s" % ("", "ours s", "reference", "ref s", "ratio"))
    rows = [
        ("stacked commit (rename) + one ping", t_stack + t_ping, "1.5 x (ping + cp -a upper)", goal),
        ("stacked commit (copy) + one ping", t_copy + t_ping, "1.5 x (ping + cp -a upper)", goal),
        ("old full-copy commit + one ping", t_full + t_ping, "1.5 x (ping + cp -a upper)", goal),
        ("squash: copy of the merged view", t_squash, "cp -a merged", t_cp_merged),
        ("exported (no compression)", t_export, "tar --xattrs -cf upper", t_tar),
    ]
    for label, t, ref, tr in rows:
        print("%-46s %9.3f   %-30s %9.3f  %.2f" % (label, t, ref, tr, tr / t))
    print("ratio = reference time / our time (goal >= 1.0)")
    print()
    print(
        "disk use of dest: upper %d KiB; rename %d KiB (%.2f x); copy %d KiB (%.2f x); old full copy %d KiB (%.1f x)"
        % (upper_kib, stack_kib, stack_kib / upper_kib, copy_kib, copy_kib / upper_kib, full_kib, full_kib / upper_kib)
    )
    print("goal: dest <= 1.1 x the upper's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
