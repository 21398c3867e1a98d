# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proof on the bench's real Docker engine: an overlay's stack saved as an image, loaded, run.

Run as root, under the bench lock, with the bench image built
(``scripts/bench.sh up``):

    flock /tmp/overlayfs-bench.lock python3 bench/image_load.py

Steps: the bench image's root file system is exported (``docker export``)
into a base layer directory; an overlay is mounted by hand on it; through
the merged view a file is changed, one deleted, a directory replaced
(opaque) and a hard link made; then ``_layer.write_stack_image([base,
upper])`` writes the image archive, ``docker load`` loads it and ``docker
run --network none`` prints what the container sees. The script compares
that with what the merged view shows, prints both, exits 1 on any
difference, and removes its image, container and scratch files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

from upper_bench import import_upper

PROBE = (
    "cat /etc/motd; "
    "test -e /etc/issue && echo issue-present || echo issue-gone; "
    "ls -A /etc/apt/apt.conf.d | tr '\\n' ' '; echo; "
    "stat -c '%h %i' /etc/motd /etc/motd.link | awk '{print $1}' | tr '\\n' ' '; echo; "
    '[ "$(stat -c %i /etc/motd)" = "$(stat -c %i /etc/motd.link)" ] && echo hardlink-kept || echo hardlink-broken'
)


def sh(argv: list[str], **kw) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--image", default="overlayfs-systemd/debian12:test", help="base image (its root fs)")
    ap.add_argument("--tag", default="overlayfs-systemd/image-load-proof:1")
    ap.add_argument("--dir", default="/var/tmp", help="scratch parent (not an overlayfs)")
    args = ap.parse_args()
    import_upper()
    from ansible_collections.overlayfs.systemd.plugins.module_utils import _layer  # noqa: PLC0415

    scratch = tempfile.mkdtemp(prefix="overlayfs-image-load-", dir=args.dir)
    base, upper, work, merged = (os.path.join(scratch, n) for n in ("base", "upper", "work", "merged"))
    for d in (base, upper, work, merged):
        os.mkdir(d)
    cid = sh(["docker", "create", args.image, "/bin/true"]).strip()
    mounted = loaded = False
    try:
        with subprocess.Popen(["docker", "export", cid], stdout=subprocess.PIPE) as exp:
            subprocess.run(["tar", "-x", "--numeric-owner", "-C", base], stdin=exp.stdout, check=True)
        sh(
            [
                "mount",
                "-t",
                "overlay",
                "overlay",
                "-o",
                "lowerdir=%s,upperdir=%s,workdir=%s" % (base, upper, work),
                merged,
            ]
        )
        mounted = True
        sh(
            [
                "sh",
                "-ec",
                "echo 'kiosk v2' > etc/motd; rm etc/issue; rm -r etc/apt/apt.conf.d; mkdir etc/apt/apt.conf.d; "
                "echo 'APT::Sandbox::User \"root\";' > etc/apt/apt.conf.d/99fresh; ln etc/motd etc/motd.link",
            ],
            cwd=merged,
        )
        expected = sh(["chroot", merged, "sh", "-c", PROBE])
        t0 = time.monotonic()
        archive = os.path.join(scratch, "image.tar")
        with open(archive, "wb") as fh:
            ident = _layer.write_stack_image([base, upper], fh, scratch, repo_tag=args.tag)
        t_write = time.monotonic() - t0
        t0 = time.monotonic()
        print(sh(["docker", "load", "-i", archive]).strip())
        loaded = True
        t_load = time.monotonic() - t0
        got = sh(["docker", "run", "--rm", "--network", "none", args.tag, "sh", "-c", PROBE])
        print(
            "image %s: %s (%d layers, archive %.1f MiB, written in %.1f s, docker load %.1f s)"
            % (args.tag, ident["image_id"], len(ident["layers"]), os.path.getsize(archive) / 2**20, t_write, t_load)
        )
        for layer in ident["layers"]:
            print("  layer diff_id %s  %.1f MiB" % (layer["diff_id"], layer["size"] / 2**20))
        print("--- merged view of the overlay (chroot):\n%s--- docker run of the loaded image:\n%s" % (expected, got))
        if got != expected or "issue-gone" not in got or "hardlink-kept" not in got or "99fresh" not in got:
            print("MISMATCH")
            return 1
        print("SAME: changed file, deleted file, opaque directory and hard link as in the merged view")
        return 0
    finally:
        if loaded:
            subprocess.run(["docker", "rmi", "-f", args.tag], check=False, capture_output=True)
        subprocess.run(["docker", "rm", "-f", cid], check=False, capture_output=True)
        if mounted:
            subprocess.run(["umount", merged], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
