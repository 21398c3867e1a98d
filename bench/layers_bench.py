# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A commit that costs the change: the stacked commit next to ping + cp -a of the upper, and the old full copy.

A benchmark that prints figures; it is not a test and not part of make test.
Run it as root on a Linux host (scratch not on an overlayfs), or from the
test venv against one bench container it starts (``--container``, under the
bench lock):

    python3 bench/layers_bench.py                      # 20,000 files, 500 MiB base, 10 changed, 1 deleted
    python3 bench/layers_bench.py --files 2000 --size-mib 50
    flock /tmp/overlayfs-bench.lock .venv/bin/python bench/layers_bench.py --container
    flock /tmp/overlayfs-bench.lock .venv/bin/python bench/layers_bench.py --container overlayfs-systemd/debian13:test

``--container [IMAGE]`` (default overlayfs-systemd/debian12:test) starts one
container as molecule does (the platform of .config/molecule/config.yml:
systemd as PID 1, no --privileged, no network, plus an anonymous volume for
the scratch directory, since the container's root is an overlayfs), copies
this checkout's plugins and bench in (``docker cp``), runs the measurements
below in it (``docker exec``) and times the module round trip as one
``ansible -i NAME, -c community.docker.docker -m ansible.builtin.ping all``
of that container from the controller. The container goes at the end, also
on failure. Both modes print the same table.

It writes the base as a plain lower directory, mounts an overlay on it by
hand, changes 10 files and deletes 1 through the merged view, then times in
the same run:

- one module round trip: ``ansible localhost -m ping`` (what any module
  call costs before it does anything; in a container, the ping of it);
- the reference: ``cp -a`` of the upper alone;
- the stacked commit's work (``_stack.stack_upper``): the overlay
  unmounted, the upper renamed to the new layer (same file system) and the
  overlay mounted on ``dest:base`` with a fresh upper; and the copy path
  (dest on another file system, a tmpfs here): a copy of the upper only;
- the old full copy (``_layercopy.copy_tree`` of the merged view plus
  ``_layercopy.mask_lowers``), and what ``squash: true`` does
  (``copy_tree`` of the merged view, with its worker threads and with none)
  against ``cp -a`` of the merged view;
- ``exported`` (``_oci.write_oci_layer``) against ``tar --xattrs -cf`` of
  the upper;
- the disk use of each dest (``du -sk``) against the upper's.

No copy is removed before the last measurement: ext4 skips recently freed
inodes when it allocates, so a copy made just after a large removal pays
for it (the first run of this bench measured that, not the copy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

from upper_bench import import_upper, run, scratch, timed

IMAGE = "overlayfs-systemd/debian12:test"
CONTAINER = "overlayfs-bench-layers"
#: In the container: this checkout's copy, and the scratch volume (not on the root overlayfs).
INSIDE, SCRATCH = "/opt/overlayfs-bench", "/var/tmp/overlayfs-bench-scratch"
#: The line that carries the figures measured in the container to the controller.
MARK = "LAYERS-BENCH-FIGURES "


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


def ping(argv: list[str]) -> None:
    ansible = shutil.which("ansible") or os.path.join(os.path.dirname(sys.executable), "ansible")
    subprocess.run(
        [ansible, *argv, "-m", "ansible.builtin.ping"],
        check=True,
        capture_output=True,
        env=dict(
            os.environ,
            ANSIBLE_LOCALHOST_WARNING="false",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
            ANSIBLE_PIPELINING="1",
        ),
    )


def measure(args: argparse.Namespace, fig: dict, *, with_ping: bool) -> int:
    """The measurements into ``fig`` (the local ping only ``with_ping``); returns the exit status."""
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
    fig["scratch"] = "%s (%s)" % (base, fstype.stdout.strip())
    print(
        "layers bench: base %d files, %d MiB, %d changed + 1 deleted, scratch %s; base written in %.1f s"
        % (args.files, args.size_mib, args.changed, fig["scratch"], time.monotonic() - t0),
        flush=True,
    )
    mount_overlay([lower], upper, work, merged)
    mounts.append(merged)
    change(merged, args.files, args.changed)
    os.sync()
    fig["upper_kib"] = du_kib(upper)

    if with_ping:
        fig["ping"] = timed("one module round trip: ansible -m ping", lambda: ping(["localhost", "-c", "local"]), False)
    fig["cp_upper"] = timed("reference: cp -a upper", lambda: run(["cp", "-a", upper, base + "/ref-upper"]), False)
    fig["copy"] = timed(
        "stacked commit, copy path (dest on tmpfs)", lambda: _stack.copy_upper(upper, other + "/k2-copy"), False
    )
    fig["copy_kib"] = du_kib(other + "/k2-copy")

    def full_copy() -> None:
        _layercopy.copy_tree(merged, base + "/full")
        _layercopy.mask_lowers(base + "/full", [lower])

    fig["full"] = timed("old commit: copy_tree(merged) + mask_lowers", full_copy, False)
    fig["full_kib"] = du_kib(base + "/full")
    copied: dict[str, int] = {}
    threads = max(1, min(_layercopy.WORKERS, len(os.sched_getaffinity(0))))
    fig["workers"], fig["cpus"] = threads, len(os.sched_getaffinity(0))
    fig["default_workers"], fig["load"] = [_layercopy.default_workers()], [os.getloadavg()[0]]
    copies = {
        "squash_serial": (
            "squash: copy_tree(merged), no worker",
            lambda d: copied.update(_layercopy.copy_tree(merged, d, workers=0)),
        ),
        "cp_merged": ("reference: cp -a merged", lambda d: run(["cp", "-a", merged, d])),
        "squash": (
            "squash: copy_tree(merged), %d workers" % threads,
            lambda d: _layercopy.copy_tree(merged, d, workers=threads),
        ),
    }
    runs: dict[str, list[float]] = {k: [] for k in copies}
    for r in range(args.repeat):  # each run in another order: none always comes first
        keys = list(copies)[r % len(copies) :] + list(copies)[: r % len(copies)]
        for k in keys:
            label, fn = copies[k]
            runs[k].append(
                timed("%s (run %d)" % (label, r + 1), lambda fn=fn, d="%s/%s-%d" % (base, k, r): fn(d), False)
            )
    for k, ts in runs.items():
        fig[k] = statistics.median(ts)
    fig["runs"], fig["copied_files"] = runs, copied["files"]
    fig["default_workers"].append(_layercopy.default_workers())
    fig["load"].append(os.getloadavg()[0])

    def export() -> None:
        with open(base + "/ours.tar", "wb") as fh:
            _oci.write_oci_layer(upper, fh, "none")

    fig["export"] = timed("exported: _oci.write_oci_layer(upper)", export, False)
    fig["tar"] = timed(
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

    fig["stack"] = timed("stacked commit, rename path (umount, rename, mount)", stacked, False)
    fig["stack_kib"] = du_kib(base + "/k2")
    return 0


def report(fig: dict) -> None:
    print()
    goal = 1.5 * (fig["ping"] + fig["cp_upper"])
    print("%-46s %9s   %-30s %9s  %s" % ("", "ours s", "reference", "ref s", "ratio"))
    rows = [
        ("stacked commit (rename) + one ping", fig["stack"] + fig["ping"], "1.5 x (ping + cp -a upper)", goal),
        ("stacked commit (copy) + one ping", fig["copy"] + fig["ping"], "1.5 x (ping + cp -a upper)", goal),
        ("old full-copy commit + one ping", fig["full"] + fig["ping"], "1.5 x (ping + cp -a upper)", goal),
        ("squash: copy of the merged view, no worker", fig["squash_serial"], "cp -a merged", fig["cp_merged"]),
        ("squash, %d worker threads" % fig["workers"], fig["squash"], "cp -a merged", fig["cp_merged"]),
        ("exported (no compression)", fig["export"], "tar --xattrs -cf upper", fig["tar"]),
    ]
    for label, t, ref, tr in rows:
        print("%-46s %9.3f   %-30s %9.3f  %.2f" % (label, t, ref, tr, tr / t))
    print("ratio = reference time / our time (goal >= 1.0)")
    print(
        "squash rows: median of %d runs each (s): %s"
        % (
            len(fig["runs"]["squash"]),
            "; ".join("%s %s" % (k, " ".join("%.2f" % t for t in ts)) for k, ts in fig["runs"].items()),
        )
    )
    n = fig["copied_files"]
    print(
        "squash files/s: no worker %.0f, %d workers %.0f, cp -a %.0f (%d files)"
        % (n / fig["squash_serial"], fig["workers"], n / fig["squash"], n / fig["cp_merged"], n)
    )
    print(
        "copy_tree's own choice (default_workers) before / after the squash runs: %s workers (%d CPUs, load %s)"
        % (" / ".join(map(str, fig["default_workers"])), fig["cpus"], " / ".join("%.2f" % x for x in fig["load"]))
    )
    print()
    upper_kib, stack_kib, copy_kib, full_kib = (fig[k] for k in ("upper_kib", "stack_kib", "copy_kib", "full_kib"))
    print(
        "disk use of dest: upper %d KiB; rename %d KiB (%.2f x); copy %d KiB (%.2f x); old full copy %d KiB (%.1f x)"
        % (upper_kib, stack_kib, stack_kib / upper_kib, copy_kib, copy_kib / upper_kib, full_kib, full_kib / upper_kib)
    )
    print("goal: dest <= 1.1 x the upper's")


def docker(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *argv], capture_output=True, text=True, check=check)


def in_container(args: argparse.Namespace) -> int:
    """The whole bench in one new container of ``args.container``; the ping from here. Removes the container."""
    from overlays_bench import docker_run_args  # noqa: PLC0415 - reads the molecule config with PyYAML (controller only)

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    docker("rm", "-f", "-v", CONTAINER, check=False)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # so that the finally below runs
    try:
        started = docker(*docker_run_args(CONTAINER, image=args.container, volumes=[SCRATCH])[1:], check=False)
        if started.returncode != 0:
            print("docker run %s failed: %s" % (args.container, started.stderr.strip()), file=sys.stderr)
            return 2
        for _attempt in range(120):
            state = docker("exec", CONTAINER, "systemctl", "is-system-running", "--wait", check=False)
            if state.stdout.strip() in ("running", "degraded"):
                break
            time.sleep(0.5)
        docker("exec", CONTAINER, "mkdir", "-p", INSIDE)
        tar = subprocess.Popen(
            ["tar", "-C", repo, "--exclude=__pycache__", "-cf", "-", "plugins", "bench"], stdout=subprocess.PIPE
        )
        subprocess.run(["docker", "cp", "-", "%s:%s" % (CONTAINER, INSIDE)], stdin=tar.stdout, check=True)
        if tar.wait() != 0:
            raise SystemExit("tar of %s failed" % repo)
        kernel = docker("exec", CONTAINER, "uname", "-r").stdout.strip()
        print("container %s of %s (kernel %s), cp %s" % (CONTAINER, args.container, kernel, cp_version()), flush=True)
        fig = {"ping": timed("one module round trip: ansible -m ping (docker)", ping_container, False)}
        argv = ["docker", "exec", CONTAINER, "python3", INSIDE + "/bench/layers_bench.py", "--figures"]
        argv += ["--files", str(args.files), "--size-mib", str(args.size_mib), "--changed", str(args.changed)]
        argv += ["--repeat", str(args.repeat)]
        argv += ["--dir", SCRATCH + "/run"]
        with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as inner:
            for line in inner.stdout:
                if line.startswith(MARK):
                    fig.update(json.loads(line[len(MARK) :]))
                else:
                    print(line, end="", flush=True)
        if inner.returncode != 0 or "stack" not in fig:
            print("the bench in the container failed (rc %s)" % inner.returncode, file=sys.stderr)
            return inner.returncode or 1
    finally:
        docker("rm", "-f", "-v", CONTAINER, check=False)
    report(fig)
    return 0


def ping_container() -> None:
    from overlays_bench import container_target  # noqa: PLC0415 - controller only, like docker_run_args

    ping([*container_target(CONTAINER), "all"])


def cp_version() -> str:
    out = docker("exec", CONTAINER, "cp", "--version", check=False).stdout
    return out.splitlines()[0] if out else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--size-mib", type=int, default=500)
    ap.add_argument("--changed", type=int, default=10)
    ap.add_argument("--dir", default="/var/tmp/overlayfs-layers-bench")
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of the squash copies and cp -a merged (median, default 3)"
    )
    ap.add_argument(
        "--container",
        nargs="?",
        const=IMAGE,
        metavar="IMAGE",
        help="run in one new bench container of IMAGE (default %s), the ping from here" % IMAGE,
    )
    ap.add_argument("--figures", action="store_true", help=argparse.SUPPRESS)  # the run in the container
    args = ap.parse_args()
    if args.container:
        return in_container(args)
    if os.geteuid() != 0:
        print("run as root: the benchmark mounts an overlay", file=sys.stderr)
        return 2
    fig: dict = {}
    rc = measure(args, fig, with_ping=not args.figures)
    if rc == 0 and args.figures:
        print(MARK + json.dumps(fig), flush=True)
    elif rc == 0:
        report(fig)
    return rc


if __name__ == "__main__":
    sys.exit(main())
