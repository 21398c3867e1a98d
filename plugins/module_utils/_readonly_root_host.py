# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""Host reads of the readonly_root role: one probe dict, nothing changed.

``probe()`` reads the boot state (is / the overlayroot overlay, where the
real root is), what the next boot will do (the overlayroot config in the real
root), the trial records, and every fact the preflight decides on. The rules
over that dict live in ``_readonly_root``. ``root`` lets the unit tests point
every read at a directory tree.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import parse_mountinfo
from ansible_collections.overlayfs.systemd.plugins.module_utils._readonly_root import (
    PACKAGES,
    ROOT_RO,
    ROOT_RW,
    TRIAL_LINK,
    TRIAL_STATE_DIR,
    cmdline_overlayroot,
    dpkg_installed,
    next_boot_kernel,
    overlayroot_value,
)

OVERLAYROOT_SCRIPT = "usr/share/initramfs-tools/scripts/init-bottom/overlayroot"
Runner = Callable[[Sequence[str]], "tuple[int, str, str]"]


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def mounts_by_point(text: str) -> dict[str, dict[str, str]]:
    """The top-most mount at each mount point: fstype, source, options, root."""
    out: dict[str, dict[str, str]] = {}
    for m in parse_mountinfo(text):
        out[m.mount_point] = {
            "fstype": m.fstype,
            "source": m.source,
            "options": m.mount_options + "," + m.super_options,
            "root": m.root,
        }
    return out


def upper_info(upper: dict[str, str] | None, statvfs: Callable[[str], Any] = os.statvfs) -> dict[str, Any] | None:
    """The tmpfs upper: type, options, size limit, use and free space in KiB (statvfs: also without size=)."""
    if not upper:
        return None
    st = statvfs(ROOT_RW)
    return {
        "fstype": upper["fstype"],
        "options": upper["options"],
        "size_kib": st.f_blocks * st.f_frsize // 1024,
        "used_kib": (st.f_blocks - st.f_bfree) * st.f_frsize // 1024,
        "free_kib": st.f_bavail * st.f_frsize // 1024,
    }


def initramfs(kernel: str, listing: bool, run: Runner, boot: str = "/boot") -> dict[str, Any]:
    """What a kernel's initramfs in boot holds for overlayroot (listed only when asked: seconds on slow hosts).

    ``path`` is where the host has it (/boot/...); ``boot`` lets the unit tests point at a directory.
    """
    path = "/boot/initrd.img-%s" % kernel
    real = os.path.join(boot, "initrd.img-%s" % kernel)
    info: dict[str, Any] = {
        "path": path,
        "exists": os.path.isfile(real),
        "overlayroot": False,
        "busybox": False,
        "grep": False,
    }
    if not info["exists"] or not listing:
        return info
    rc, out, err = run(["lsinitramfs", real])
    if rc != 0:
        info["error"] = "lsinitramfs %s failed (rc %d): %s" % (path, rc, err.strip()[-300:])
    names = out.splitlines()
    info["overlayroot"] = any(n.endswith("scripts/init-bottom/overlayroot") for n in names)
    info["busybox"] = any(re.search(r"(^|/)bin/busybox$", n) for n in names)
    info["grep"] = any(re.search(r"(^|/)bin/grep$", n) for n in names)
    return info


def next_boot(kernel: str, listing: bool, run: Runner, boot: str = "/boot") -> dict[str, Any]:
    """The kernel the next boot runs (newest /boot/vmlinuz-*) and its initramfs; the running kernel's initramfs.

    Listed once when the two kernels are the same (the usual case: no kernel update pending). Without any
    vmlinuz in boot (a container, a boot loader reading elsewhere) the running kernel is the best guess.
    """
    names = os.listdir(boot) if os.path.isdir(boot) else []
    nxt = next_boot_kernel(names) or kernel
    running = initramfs(kernel, listing, run, boot=boot)
    following = running if nxt == kernel else initramfs(nxt, listing, run, boot=boot)
    return {"next_kernel": nxt, "next_boot_initramfs": following, "initramfs": running}


def overlay_module(kernel: str, root: str = "/", proc: bool = True) -> bool:
    """The kernel can mount overlay: registered now (proc), built in, or a module in /lib/modules/KERNEL."""
    if proc and re.search(r"\toverlay$", read(os.path.join(root, "proc/filesystems")) or "", re.M):
        return True
    moddir = os.path.join(root, "lib/modules", kernel)
    if re.search(r"/overlay\.ko", read(os.path.join(moddir, "modules.builtin")) or ""):
        return True
    fsdir = os.path.join(moddir, "kernel/fs/overlayfs")
    return os.path.isdir(fsdir) and any(n.startswith("overlay.ko") for n in os.listdir(fsdir))


def trial_records(lower: str) -> dict[str, Any]:
    state = os.path.join(lower, TRIAL_STATE_DIR)
    return {
        "armed": os.path.islink(os.path.join(lower, TRIAL_LINK)),
        "confirmed": read(os.path.join(state, "trial-confirmed")),
        "confirmed_mtime": _mtime(os.path.join(state, "trial-confirmed")),
        "reverted": read(os.path.join(state, "trial-reverted")),
        "reverted_mtime": _mtime(os.path.join(state, "trial-reverted")),
    }


def _unit_keys(text: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and not line.lstrip().startswith(("#", ";")):
            keys.setdefault(key.strip(), value.strip())
    return keys


def bind_units(lower: str) -> dict[str, dict[str, str]]:
    """The persistent-path bind units the role wrote in the real root (its Description, Documentation and bind)."""
    unit_dir = os.path.join(lower, "etc/systemd/system")
    out: dict[str, dict[str, str]] = {}
    names = sorted(os.listdir(unit_dir)) if os.path.isdir(unit_dir) else []
    for name in names:
        path = os.path.join(unit_dir, name)
        if not name.endswith(".mount") or os.path.islink(path):
            continue
        keys = _unit_keys(read(path) or "")
        ours = (
            keys.get("Description", "").startswith("Persistent ")
            and keys.get("Documentation", "").endswith("/docs/kiosk.md")
            and keys.get("Options") == "bind"
            and "Where" in keys
            and "What" in keys
        )
        if ours:
            out[name] = {"where": keys["Where"], "what": keys["What"]}
    return out


def _os_family_ids(text: str) -> list[str]:
    rel = dict((k, v.strip('"')) for k, v in (line.split("=", 1) for line in text.splitlines() if "=" in line))
    return [rel.get("ID", "")] + rel.get("ID_LIKE", "").split()


def _host_keys(lower: str) -> list[str]:
    keydir = os.path.join(lower, "etc/ssh")
    names = os.listdir(keydir) if os.path.isdir(keydir) else []
    return sorted(n for n in names if re.fullmatch(r"ssh_host_\w+_key", n))


def _links(lower: str, rels: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for rel in rels:
        try:
            out[rel] = os.readlink(os.path.join(lower, rel))
        except OSError:
            out[rel] = None
    return out


def probe(
    *, args: dict[str, Any], run: Runner, kernel: str | None = None, offline: str | None = None, boot: str = "/boot"
) -> dict[str, Any]:
    """Everything the role decides on, read from this host (see the module's RETURN for the keys).

    ``offline`` (the reason, from ``_offline.offline_reason``): an image root where systemd does not run.
    Then nothing of the build host's running system is read (its mounts, PID 1, kernel command line,
    /proc/filesystems): the kernel is the image's newest /boot/vmlinuz-*, nothing is mounted or booted.
    """
    mounts = {} if offline else mounts_by_point(read("/proc/self/mountinfo") or "")
    if offline and kernel is None:
        kernel = next_boot_kernel(os.listdir(boot) if os.path.isdir(boot) else [])
    kernel = kernel or os.uname().release
    root = mounts.get("/", {})
    booted = root.get("fstype") == "overlay" and ROOT_RO in mounts
    lower = ROOT_RO if booted else "/"
    mem = re.search(r"^MemTotal:\s+(\d+) kB", read("/proc/meminfo") or "", re.M)
    device = args["persistent_device"]
    container = False if offline else run(["systemd-detect-virt", "--container"])[0] == 0
    return {
        "offline": offline,
        "kernel": kernel,
        "os_family_ids": _os_family_ids(read("/etc/os-release") or ""),
        "files": {rel: read(os.path.join(lower, rel)) for rel in args["files"]},
        "links": _links(lower, args["links"]),
        "container": container,
        "pid1": "" if offline else (read("/proc/1/comm") or "").strip(),
        "root": {"fstype": root.get("fstype", ""), "source": root.get("source", "")},
        "overlay_booted": booted,
        "lower": lower,
        "lower_rw": booted and "rw" in mounts[ROOT_RO]["options"].split(",")[:1],
        "upper": upper_info(mounts.get(ROOT_RW) if booted else None),
        "overlayroot_installed": os.path.isfile(os.path.join(lower, OVERLAYROOT_SCRIPT)),
        "busybox_installed": os.path.isfile(os.path.join(lower, "bin/busybox")),
        "next_boot_overlayroot": overlayroot_value(
            read(os.path.join(lower, "etc/overlayroot.conf")), read(os.path.join(lower, "etc/overlayroot.local.conf"))
        ),
        "cmdline_overlayroot": None if offline else cmdline_overlayroot(read("/proc/cmdline") or ""),
        # /boot as mounted now, not the lower's: a /boot partition is mounted there, also in the overlay.
        **next_boot(kernel, args["list_initramfs"], run, boot=boot),
        "packages": dpkg_installed(read(os.path.join(lower, "var/lib/dpkg/status")) or "", PACKAGES),
        "overlay_module": overlay_module(kernel, proc=not offline),
        "mem_total_kib": int(mem.group(1)) if mem else 0,
        "machine_id": (read(os.path.join(lower, "etc/machine-id")) or "").strip(),
        "sshd": os.path.exists(os.path.join(lower, "usr/sbin/sshd")),
        "host_keys": _host_keys(lower),
        "persistent_base_mount": mounts.get(args["persistent_base"]),
        "persistent_device_exists": not offline and bool(device) and os.path.exists(device),
        "mounts": {p: mounts[p] for p in args["persistent_paths"] if p in mounts},
        "trial": trial_records(lower),
        "bind_units": bind_units(lower),
    }


def writable(paths: Sequence[str]) -> dict[str, str | None]:
    """Per path: None when a test file can be made (and removed) there, else the error."""
    out: dict[str, str | None] = {}
    for path in paths:
        try:
            fd, name = tempfile.mkstemp(prefix=".readonly-root-verify.", dir=path)
            os.close(fd)
            os.unlink(name)
            out[path] = None
        except OSError as exc:
            out[path] = str(exc)
    return out
