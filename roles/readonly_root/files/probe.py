# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Read-only probe of a host for the readonly_root role (run by ansible.builtin.script).

Prints one JSON object: the boot state (is / the overlayroot overlay, where the
real root is), what the next boot will do (overlayroot config read from the
real root), and every fact the role's preflight decides on. Changes nothing.
Usage: python3 probe.py '<json: {"persistent_base": str, "persistent_device": str, "paths": [str],
"files": [str], "links": [str], "list_initramfs": bool}>'
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

ROOT_RO = "/media/root-ro"
ROOT_RW = "/media/root-rw"
OVERLAYROOT_SCRIPT = "usr/share/initramfs-tools/scripts/init-bottom/overlayroot"


def unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mountinfo() -> dict[str, dict]:
    """The top-most mount at each mount point: fstype, source, options."""
    mounts: dict[str, dict] = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields = left.split()
            fstype, source, super_opts = (right.split(" ") + ["", "", ""])[:3]
            mounts[unescape(fields[4])] = {
                "fstype": fstype,
                "source": unescape(source),
                "options": fields[5] + "," + super_opts,
                "root": unescape(fields[3]),
            }
    return mounts


def read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def overlayroot_value(lower: str) -> str:
    """The overlayroot= value the initramfs will read from the real root (conf, then local.conf)."""
    value = ""
    for name in ("etc/overlayroot.conf", "etc/overlayroot.local.conf"):
        text = read(os.path.join(lower, name)) or ""
        for line in text.splitlines():
            m = re.match(r"\s*overlayroot=(.*)$", line)
            if m:
                try:
                    words = shlex.split(m.group(1), comments=True)
                except ValueError:
                    words = [m.group(1)]
                value = words[0] if words else ""
    return value


def cmdline_overlayroot() -> str | None:
    for word in (read("/proc/cmdline") or "").split():
        if word.startswith("overlayroot="):
            return word.split("=", 1)[1]
    return None


def upper_info(upper: dict | None) -> dict | None:
    """The tmpfs upper: type, options and its size limit in KiB (from statvfs: also without size=)."""
    if not upper:
        return None
    st = os.statvfs(ROOT_RW)
    return {
        "fstype": upper["fstype"],
        "options": upper["options"],
        "size_kib": st.f_blocks * st.f_frsize // 1024,
        "used_kib": (st.f_blocks - st.f_bfree) * st.f_frsize // 1024,
    }


def initramfs(kernel: str, listing: bool) -> dict:
    """What the running kernel's initramfs holds for overlayroot (listed only when asked: seconds on slow hosts)."""
    path = f"/boot/initrd.img-{kernel}"
    info = {"path": path, "exists": os.path.isfile(path), "overlayroot": False, "busybox": False, "grep": False}
    if not info["exists"] or not listing:
        return info
    try:
        res = subprocess.run(
            ["lsinitramfs", path],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except OSError as exc:
        info["error"] = f"lsinitramfs: {exc}"
        return info
    if res.returncode != 0:
        info["error"] = f"lsinitramfs {path} failed (rc {res.returncode}): {res.stderr.strip()[-300:]}"
    names = res.stdout.splitlines()
    info["overlayroot"] = any(n.endswith("scripts/init-bottom/overlayroot") for n in names)
    info["busybox"] = any(re.search(r"(^|/)bin/busybox$", n) for n in names)
    info["grep"] = any(re.search(r"(^|/)bin/grep$", n) for n in names)
    return info


def overlay_module(kernel: str) -> bool:
    filesystems = read("/proc/filesystems") or ""
    if re.search(r"\toverlay$", filesystems, re.M):
        return True
    moddir = f"/lib/modules/{kernel}"
    if re.search(r"/overlay\.ko", read(f"{moddir}/modules.builtin") or ""):
        return True
    fsdir = f"{moddir}/kernel/fs/overlayfs"
    return os.path.isdir(fsdir) and any(n.startswith("overlay.ko") for n in os.listdir(fsdir))


def in_container() -> bool:
    res = subprocess.run(["systemd-detect-virt", "--container"], capture_output=True, text=True, check=False)
    return res.returncode == 0


def main() -> None:
    args = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    base = args.get("persistent_base", "/persist")
    device = args.get("persistent_device", "")
    mounts = mountinfo()
    kernel = os.uname().release
    root = mounts.get("/", {})
    booted = root.get("fstype") == "overlay" and ROOT_RO in mounts
    lower = ROOT_RO if booted else "/"
    upper = mounts.get(ROOT_RW) if booted else None
    meminfo = read("/proc/meminfo") or ""
    mem = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M)
    machine_id = (read(os.path.join(lower, "etc/machine-id")) or "").strip()
    keydir = os.path.join(lower, "etc/ssh")
    host_keys = sorted(
        n for n in (os.listdir(keydir) if os.path.isdir(keydir) else []) if re.fullmatch(r"ssh_host_\w+_key", n)
    )
    os_release = dict(
        (k, v.strip('"'))
        for k, v in (line.split("=", 1) for line in (read("/etc/os-release") or "").splitlines() if "=" in line)
    )
    files = {}
    for rel in args.get("files", []):
        files[rel] = read(os.path.join(lower, rel))
    links = {}
    for rel in args.get("links", []):
        try:
            links[rel] = os.readlink(os.path.join(lower, rel))
        except OSError:
            links[rel] = None
    out = {
        "kernel": kernel,
        "os_family_ids": [os_release.get("ID", "")] + os_release.get("ID_LIKE", "").split(),
        "files": files,
        "links": links,
        "container": in_container(),
        "pid1": (read("/proc/1/comm") or "").strip(),
        "root": {"fstype": root.get("fstype", ""), "source": root.get("source", "")},
        "overlay_booted": booted,
        "lower": lower,
        "lower_rw": booted and "rw" in mounts[ROOT_RO]["options"].split(",")[:1],
        "upper": upper_info(upper),
        "overlayroot_installed": os.path.isfile(os.path.join(lower, OVERLAYROOT_SCRIPT)),
        "busybox_installed": os.path.isfile(os.path.join(lower, "bin/busybox")),
        "next_boot_overlayroot": overlayroot_value(lower),
        "cmdline_overlayroot": cmdline_overlayroot(),
        "initramfs": initramfs(kernel, args.get("list_initramfs", True)),
        "overlay_module": overlay_module(kernel),
        "mem_total_kib": int(mem.group(1)) if mem else 0,
        "machine_id": machine_id,
        "sshd": os.path.exists(os.path.join(lower, "usr/sbin/sshd")),
        "host_keys": host_keys,
        "persistent_base_mount": mounts.get(base),
        "persistent_device_exists": bool(device) and os.path.exists(device),
        "mounts": {p: mounts[p] for p in args.get("paths", []) if p in mounts},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
