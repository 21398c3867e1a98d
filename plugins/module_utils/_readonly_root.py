# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""The rules of the readonly_root role, as pure functions over a probe of the host.

The probe (``_readonly_root_host.probe``) is a plain dict of what the host
has: the boot state, the real root's overlayroot config, the initramfs, RAM,
the trial records. Everything here takes that dict and the declaration and
returns data: the preflight checks, ``readonly_root_facts``, the problems the
verification after a boot finds. Messages name the variable, the value and
the fix; the role prints them as they are.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ROOT_RO = "/media/root-ro"
ROOT_RW = "/media/root-rw"
SIZE_UNIT = "overlayfs-readonly-root-tmpfs-size.service"
TRIAL_TIMER = "overlayfs-readonly-root-trial.timer"
TRIAL_LINK = "etc/systemd/system/timers.target.wants/" + TRIAL_TIMER
TRIAL_STATE_DIR = "var/lib/overlayfs-readonly-root"
TRIAL_COMMAND = "/usr/local/sbin/overlayfs-readonly-root-trial"
# Every check the preflight evaluates, in the order it reports them (the
# choices of readonly_root_preflight_waive).
CHECK_NAMES = (
    "os_family",
    "persistent_paths",
    "tmpfs_size",
    "persistent_base",
    "overlayroot_package",
    "initramfs",
    "overlay_module",
    "ram",
    "machine_id",
    "ssh_host_keys",
    "kernel_cmdline",
)
# What the overlayroot backend needs in the real root, installed by readonly_root_manage_packages: busybox
# gives overlayroot's initramfs script its grep, e2fsprogs its initramfs hook (Debian 13 fails without).
PACKAGES = ("overlayroot", "busybox", "e2fsprogs")
# The preflight checks the package step fixes (left to it, not refused, when it runs).
PACKAGE_CHECKS = ("overlayroot_package", "initramfs")
_PATH_RE = re.compile(r"^/[A-Za-z0-9._@+-][A-Za-z0-9._@+/-]*$")
_RESERVED_RE = re.compile(r"^/(proc|sys|dev|run|boot|media/root-r[ow])(/|$)")
_DOTS_RE = re.compile(r"(^|/)\.\.?(/|$)")
_UNITS = {"k": 1024, "m": 1048576, "g": 1073741824}


@dataclass(frozen=True)
class Declaration:
    """What the role was asked for (its variables, normalised)."""

    state: str = "enabled"
    tmpfs_size: str = "25%"
    min_free_ram: str = "256M"
    persistent_base: str = "/persist"
    persistent_device: str = ""
    persistent_paths: tuple[str, ...] = ()
    upper_warn_percent: int = 90
    preflight_waive: tuple[str, ...] = ()
    overlayroot: str = ""
    unit_names: Mapping[str, str] = field(default_factory=dict)
    manage_packages: bool = False


def size_kib(size: Any, mem_total_kib: int) -> int:
    """A tmpfs size (bytes with k/M/G, or a percentage of RAM) in KiB, rounded up to 4 KiB pages; -1 if invalid."""
    s = str(size).strip()
    if re.fullmatch(r"[0-9]+%", s):
        return ((mem_total_kib // 4) * int(s[:-1]) // 100) * 4
    m = re.fullmatch(r"([0-9]+)([kKmMgG]?)", s)
    if not m:
        return -1
    nbytes = int(m.group(1)) * _UNITS.get(m.group(2).lower(), 1)
    return ((nbytes + 4095) // 4096) * 4


def overlayroot_value(conf: str | None, local_conf: str | None) -> str:
    """The overlayroot= value the initramfs reads: etc/overlayroot.conf, then etc/overlayroot.local.conf."""
    value = ""
    for text in (conf or "", local_conf or ""):
        for line in text.splitlines():
            m = re.match(r"\s*overlayroot=(.*)$", line)
            if m:
                try:
                    words = shlex.split(m.group(1), comments=True)
                except ValueError:
                    words = [m.group(1)]
                value = words[0] if words else ""
    return value


def version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Order of kernel versions as sort -V has them: digit runs by number, the rest by text."""
    return tuple((int(t), "") if t.isdigit() else (-1, t) for t in re.split(r"([0-9]+)", version) if t)


def next_boot_kernel(boot_names: Sequence[str]) -> str | None:
    """The kernel the next boot runs: the newest /boot/vmlinuz-* by version, what Debian's boot loader boots."""
    versions = [n[len("vmlinuz-") :] for n in boot_names if n.startswith("vmlinuz-") and len(n) > len("vmlinuz-")]
    return max(versions, key=version_key) if versions else None


def dpkg_installed(status: str, names: Sequence[str]) -> dict[str, str | None]:
    """Per package of names: its version when dpkg's status file has it installed, else None."""
    out: dict[str, str | None] = dict.fromkeys(names)
    for stanza in status.split("\n\n"):
        keys = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.M))
        if keys.get("Package") in out and keys.get("Status", "").endswith(" installed"):
            out[keys["Package"]] = keys.get("Version", "")
    return out


def cmdline_overlayroot(cmdline: str) -> str | None:
    """The overlayroot= word of a kernel command line (None without one)."""
    for word in cmdline.split():
        if word.startswith("overlayroot="):
            return word.split("=", 1)[1]
    return None


def parse_record(text: str | None) -> dict[str, Any] | None:
    """A trial record: key=value lines, a blank line, then the journal tail."""
    if text is None:
        return None
    head, journal = (text.split("\n\n", 1) + [""])[:2]
    record: dict[str, Any] = {}
    for line in head.splitlines():
        key, eq, value = line.partition("=")
        if eq:
            record[key.strip()] = value.strip()
    record["journal"] = journal.rstrip("\n").splitlines()
    return record


def lower_label(p: Mapping[str, Any]) -> str:
    return "" if p["lower"] == "/" else p["lower"]


def bad_paths(paths: Sequence[str], base: str) -> list[str]:
    """Declared persistent paths the role cannot bind (unsafe characters, reserved trees, the base itself)."""
    base_re = re.compile("^" + re.escape(base) + "(/|$)")
    found = [p for p in paths if not _PATH_RE.match(p)]
    found += [p for p in paths if _RESERVED_RE.match(p)]
    found += [p for p in paths if base_re.match(p)]
    found += [p for p in paths if _DOTS_RE.search(p)]
    return list(dict.fromkeys(found))


def _check(name: str, ok: bool, msg: str) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "msg": msg}


def _declaration_checks(p: Mapping[str, Any], d: Declaration) -> list[dict[str, Any]]:
    size = size_kib(d.tmpfs_size, p["mem_total_kib"])
    reserve = size_kib(d.min_free_ram, p["mem_total_kib"])
    bad = bad_paths(d.persistent_paths, d.persistent_base)
    return [
        _check(
            "os_family",
            "debian" in p["os_family_ids"],
            "os_family: the overlayroot backend needs Debian or Ubuntu (this host: %s)" % " ".join(p["os_family_ids"]),
        ),
        _check(
            "persistent_paths",
            not bad,
            "persistent_paths: readonly_root_persistent_paths %s must be absolute paths of letters, digits and "
            ". _ @ + - outside /proc, /sys, /dev, /run, /boot, /media/root-ro, /media/root-rw and "
            "readonly_root_persistent_base %s" % (", ".join(bad), d.persistent_base),
        ),
        _check(
            "tmpfs_size",
            size > 0 and reserve >= 0,
            "tmpfs_size: readonly_root_tmpfs_size %s / readonly_root_min_free_ram %s must be a size in bytes with "
            "k, M or G, or a percentage of RAM" % (d.tmpfs_size, d.min_free_ram),
        ),
    ]


def _persistent_base_check(p: Mapping[str, Any], d: Declaration) -> dict[str, Any]:
    base_mount = p["persistent_base_mount"]
    if d.persistent_device:
        if not p["persistent_device_exists"]:
            msg = "readonly_root_persistent_device %s does not exist" % d.persistent_device
        else:
            msg = (
                "%s is not mounted at %s and the running root is the overlay: set readonly_root_state=disabled, "
                "reboot, then add persistent paths" % (d.persistent_device, d.persistent_base)
            )
        ok = p["persistent_device_exists"] and (not p["overlay_booted"] or base_mount is not None)
        return _check("persistent_base", ok, "persistent_base: " + msg)
    found = base_mount["fstype"] if base_mount else "not a mount point"
    return _check(
        "persistent_base",
        base_mount is not None and base_mount["fstype"] not in ("overlay", "tmpfs"),
        "persistent_base: %s must be a mount point of a persistent file system of its own (found: %s); or set "
        "readonly_root_persistent_device" % (d.persistent_base, found),
    )


def initramfs_ready(ini: Mapping[str, Any]) -> bool:
    """The initramfs has what overlayroot needs at boot: its script, and busybox (or a grep)."""
    return bool(ini["exists"] and ini["overlayroot"] and (ini["busybox"] or ini["grep"]) and "error" not in ini)


def package_plan(p: Mapping[str, Any]) -> dict[str, Any]:
    """What the package step (readonly_root_manage_packages) does on this host: nothing when all is there.

    ``install``: the backend's packages dpkg does not have installed. ``rebuild``: the kernel whose initramfs
    to rebuild (``update-initramfs -u -k``, ``-c`` when it has none), the one the next boot runs, when its
    initramfs lacks overlayroot's script or busybox; None otherwise, also when it cannot be listed (no fix
    here). ``fixes``: the preflight checks that this plan makes pass. Nothing on a box running the overlay:
    what it installed would be in the tmpfs upper, gone at the next boot.
    """
    ini = p["next_boot_initramfs"]
    kernel = p["next_kernel"]
    # On the overlay, installs and an initramfs would land in the tmpfs upper: nothing to do there.
    install = [] if p["overlay_booted"] else [name for name in PACKAGES if p["packages"].get(name) is None]
    ready = p["overlay_booted"] or kernel is None or "error" in ini or initramfs_ready(ini)
    rebuild = None if ready else kernel
    fixes = (["overlayroot_package"] if "overlayroot" in install else []) + (["initramfs"] if rebuild else [])
    return {
        "install": install,
        "rebuild": rebuild,
        "create": rebuild is not None and not ini["exists"],
        "initramfs": ini["path"],
        "fixes": fixes,
    }


def split_failing(
    checks: Sequence[Mapping[str, Any]], d: Declaration, plan: Mapping[str, Any]
) -> dict[str, list[Mapping[str, Any]]]:
    """The failing checks: unmet (the role refuses), waived (readonly_root_preflight_waive), deferred.

    Deferred: with readonly_root_manage_packages on an enabling run, what the package step fixes; the role
    runs the preflight again after it, without deferring.
    """
    failing = [c for c in checks if not c["ok"]]
    waived = [c for c in failing if c["name"] in d.preflight_waive]
    defer = plan["fixes"] if d.manage_packages and d.state == "enabled" else []
    deferred = [c for c in failing if c["name"] not in d.preflight_waive and c["name"] in defer]
    unmet = [c for c in failing if c not in waived and c not in deferred]
    return {"unmet": unmet, "waived": waived, "deferred": deferred}


def _initramfs_msg(p: Mapping[str, Any]) -> str:
    ini = p["next_boot_initramfs"]
    kernel = p["next_kernel"]
    msg = "initramfs: %s" % ini["path"]
    if kernel is None:
        msg = "initramfs: no /boot/vmlinuz-*: no kernel for the next boot to run"
    elif not ini["exists"]:
        msg += " does not exist for the kernel %s the next boot runs" % kernel
    elif "error" in ini:
        msg += " could not be listed: %s" % ini["error"]
    else:
        msg += " lacks what overlayroot needs at boot:"
        if not ini["overlayroot"]:
            msg += " overlayroot's script (scripts/init-bottom/overlayroot)"
        if not (ini["busybox"] or ini["grep"]):
            msg += (
                " busybox (no bin/busybox, no bin/grep: overlayroot's script fails on a missing grep and the"
                " machine boots WITHOUT the overlay, silently)"
            )
    return msg + "; " + _packages_fix(p)


def _packages_fix(p: Mapping[str, Any]) -> str:
    """How to get the backend's packages and initramfs: offline (an image root) the role installs nothing."""
    kernel = p["next_kernel"] or "VERSION"
    if p.get("offline"):
        return (
            "fix (offline, an image root: the role installs no packages there): install %s into the image root "
            "and run update-initramfs -u -k %s in it, as the image build does, then run the role again"
            % (" ".join(PACKAGES), kernel)
        )
    return (
        "fix: set readonly_root_manage_packages: true (the default), or apt-get install %s, then "
        "update-initramfs -u -k %s" % (" ".join(PACKAGES), kernel)
    )


def _offline_unjudged(p: Mapping[str, Any], check: dict[str, Any], what: str) -> dict[str, Any]:
    """Offline, a check of the running system (``what``: its RAM) has nothing to judge: passed, saying so; the
    first run on the booted image judges it."""
    if not p.get("offline") or check["ok"]:
        return check
    return _check(
        check["name"],
        True,
        "%s: not judged offline (%s is the build host's, not the image's); the first run on the booted image "
        "judges it" % (check["name"], what),
    )


def _enabling_checks(p: Mapping[str, Any], d: Declaration) -> list[dict[str, Any]]:
    size = size_kib(d.tmpfs_size, p["mem_total_kib"])
    reserve = size_kib(d.min_free_ram, p["mem_total_kib"])
    lower = lower_label(p)
    machine_id = p["machine_id"]
    return [
        _check(
            "overlayroot_package",
            p["overlayroot_installed"],
            "overlayroot_package: the overlayroot package is not installed in the real root; " + _packages_fix(p),
        ),
        _check(
            "initramfs",
            p["next_kernel"] is not None and initramfs_ready(p["next_boot_initramfs"]),
            _initramfs_msg(p),
        ),
        _check(
            "overlay_module",
            p["overlay_module"],
            "overlay_module: no overlay file system for the running kernel %s (not in /proc/filesystems, no "
            "/lib/modules/%s/kernel/fs/overlayfs/overlay.ko*)" % (p["kernel"], p["kernel"]),
        ),
        _offline_unjudged(
            p,
            _check(
                "ram",
                size > 0 and size + reserve <= p["mem_total_kib"],
                "ram: readonly_root_tmpfs_size %s (%d KiB) plus readonly_root_min_free_ram %s (%d KiB) exceeds the "
                "RAM (%d KiB): a full tmpfs upper would starve the system; choose a smaller size"
                % (d.tmpfs_size, size, d.min_free_ram, reserve, p["mem_total_kib"]),
            ),
            "the RAM",
        ),
        _check(
            "machine_id",
            re.fullmatch(r"[0-9a-f]{32}", machine_id) is not None,
            "machine_id: %s/etc/machine-id is %s in the real root: every boot would make a new one (new DHCP "
            "client id, a new address, a lockout); run systemd-machine-id-setup on the writable root first"
            % (lower, "empty" if machine_id == "" else "not a machine id"),
        ),
        _check(
            "ssh_host_keys",
            not p["sshd"] or len(p["host_keys"]) > 0,
            "ssh_host_keys: no SSH host keys in %s/etc/ssh: sshd would get new keys every boot and the controller "
            "would refuse the changed host; run ssh-keygen -A on the writable root first" % lower,
        ),
        _check(
            "kernel_cmdline",
            p["cmdline_overlayroot"] is None or p["cmdline_overlayroot"].startswith("tmpfs"),
            "kernel_cmdline: the kernel command line sets overlayroot=%s, which overrides "
            "/etc/overlayroot.local.conf; remove it from the boot loader configuration" % p["cmdline_overlayroot"],
        ),
    ]


def preflight(p: Mapping[str, Any], d: Declaration) -> list[dict[str, Any]]:
    """Every check with name, ok and a message naming the need and the fix.

    Enabling is checked fully. Disabling is the way back: it is checked only
    for what it writes, and a persistent disk that is gone never stops it.
    """
    checks = _declaration_checks(p, d)
    if d.persistent_paths and d.state == "enabled":
        checks.append(_persistent_base_check(p, d))
    if d.state == "enabled":
        checks += _enabling_checks(p, d)
    return checks


def upper_usage(p: Mapping[str, Any], warn_percent: int) -> dict[str, Any] | None:
    """The tmpfs upper's size, use and free space, and whether it is over readonly_root_upper_warn_percent."""
    up = p.get("upper")
    if not up:
        return None
    size = up["size_kib"]
    used = up["used_kib"]
    percent = round(100.0 * used / size, 1) if size else 100.0
    return {
        "size_kib": size,
        "used_kib": used,
        "free_kib": up.get("free_kib", size - used),
        "use_percent": percent,
        "warn_percent": warn_percent,
        "over_warn": percent >= warn_percent,
    }


def trial_facts(p: Mapping[str, Any]) -> dict[str, Any]:
    """The trial boot's state: armed (next overlay boot is a trial), running, confirmed, reverted, or none."""
    trial = p.get("trial") or {}
    confirmed = parse_record(trial.get("confirmed"))
    reverted = parse_record(trial.get("reverted"))
    out: dict[str, Any] = {"state": None, "reason": None, "journal": [], "boot_id": None, "date": None}
    if trial.get("armed"):
        out["state"] = "running" if p["overlay_booted"] else "armed"
        last = None
    elif confirmed and reverted:
        last = (
            ("confirmed", confirmed) if trial["confirmed_mtime"] >= trial["reverted_mtime"] else ("reverted", reverted)
        )
    elif confirmed or reverted:
        last = ("confirmed", confirmed) if confirmed else ("reverted", reverted)
    else:
        last = None
    if last:
        out["state"] = last[0]
        out["reason"] = last[1].get("reason")
        out["boot_id"] = last[1].get("boot_id")
        out["date"] = last[1].get("date")
        out["journal"] = last[1]["journal"]
    return out


def _next_state(value: str) -> str:
    return "enabled" if value.startswith("tmpfs") else "disabled"


def facts(p: Mapping[str, Any], d: Declaration, configured: str | None = None) -> dict[str, Any]:
    """readonly_root_facts: what runs now and what the next boot does (configured: the value just written)."""
    conf = p["next_boot_overlayroot"] if configured is None else configured
    nxt = p["cmdline_overlayroot"] if p["cmdline_overlayroot"] is not None else conf
    return {
        "backend": "overlayroot",
        # An image root where systemd does not run: the files are written for the image's boots, nothing runs.
        "offline": p.get("offline") is not None,
        "current": {
            "state": "enabled" if p["overlay_booted"] else "disabled",
            "root_fstype": p["root"]["fstype"],
            "real_root": p["lower"],
            "upper_size_kib": p["upper"]["size_kib"] if p["upper"] else None,
            "upper": upper_usage(p, d.upper_warn_percent),
        },
        "next_boot": {
            "state": _next_state(nxt),
            "overlayroot": conf,
            "kernel_cmdline_overlayroot": p["cmdline_overlayroot"],
        },
        "reboot_required": p["overlay_booted"] != nxt.startswith("tmpfs"),
        "persistent_paths": list(d.persistent_paths),
        "persistent": persistent_report(p, d),
        "dropped_paths": dropped_paths(p, d),
        "trial": trial_facts(p),
        "preflight_waived": list(d.preflight_waive),
    }


def persistent_report(p: Mapping[str, Any], d: Declaration) -> list[dict[str, Any]]:
    """For every declared path: is it bound from the persistent file system now."""
    base_mount = p["persistent_base_mount"]
    out = []
    for path in d.persistent_paths:
        m = p["mounts"].get(path)
        bound = m is not None and base_mount is not None and m["source"] == base_mount["source"]
        out.append({"path": path, "bound": bound, "source": m["source"] if m else None})
    return out


def dropped_paths(p: Mapping[str, Any], d: Declaration) -> list[dict[str, Any]]:
    """Bind units this role wrote for paths no longer declared: what to remove, and where their data stays."""
    out = []
    for unit, info in sorted((p.get("bind_units") or {}).items()):
        if info["where"] in d.persistent_paths:
            continue
        out.append(
            {
                "path": info["where"],
                "unit": unit,
                "data": info["what"],
                "bound": info["where"] in p["mounts"],
                "link": "etc/systemd/system/local-fs.target.wants/" + unit,
            }
        )
    return out


def _root_problems(p: Mapping[str, Any], d: Declaration) -> list[str]:
    size = size_kib(d.tmpfs_size, p["mem_total_kib"])
    cmd = p["cmdline_overlayroot"]
    if d.state != "enabled":
        if p["overlay_booted"]:
            return [
                "/ is still the overlay although overlayroot=%s in the real root; the kernel command line has %s"
                % (
                    json.dumps(p["next_boot_overlayroot"]),
                    ("overlayroot=" + cmd) if cmd is not None else "no overlayroot=",
                )
            ]
        return []
    if not p["overlay_booted"]:
        ini = p["initramfs"]
        return [
            "/ is %s (%s), not the overlayroot overlay. The real root says overlayroot=%s, the kernel command line %s; "
            "the initramfs %s %s overlayroot's script and %s busybox/grep. overlayroot's initramfs script reports why "
            "on the console of the boot"
            % (
                p["root"]["fstype"],
                p["root"]["source"],
                json.dumps(p["next_boot_overlayroot"]),
                ("overlayroot=" + cmd) if cmd is not None else "has no overlayroot=",
                ini["path"],
                "has" if ini["overlayroot"] else "LACKS",
                "has" if (ini["busybox"] or ini["grep"]) else "LACKS",
            )
        ]
    up = p["upper"]
    if up is None or up["fstype"] != "tmpfs":
        return ["the overlay's upper %s is %s, not a tmpfs" % (ROOT_RW, up["fstype"] if up else "not mounted")]
    if abs(up["size_kib"] - size) > 4:
        return [
            "the tmpfs upper has %d KiB, not the declared readonly_root_tmpfs_size %s (%d KiB): %s did not run or "
            "failed (systemctl status %s)" % (up["size_kib"], d.tmpfs_size, size, SIZE_UNIT, SIZE_UNIT)
        ]
    return []


def verify(p: Mapping[str, Any], d: Declaration, writable: Mapping[str, str | None]) -> tuple[list[str], list[str]]:
    """Problems and warnings of the running boot against the declaration.

    ``writable``: per persistent path, None when a test file could be made
    there, else the error. With readonly_root_state=disabled a persistent disk
    that is gone is a warning naming the disk, not a problem: the way back
    must work when the disk has died.
    """
    problems = _root_problems(p, d)
    warnings: list[str] = []
    disk_gone = bool(d.persistent_device) and not p["persistent_device_exists"]
    for entry in persistent_report(p, d):
        path = entry["path"]
        if not entry["bound"]:
            msg = "persistent path %s is not bind-mounted from %s (%s); systemctl status %s" % (
                path,
                d.persistent_base,
                "not a mount point" if entry["source"] is None else "mounted from " + entry["source"],
                d.unit_names.get(path, path),
            )
            if d.state == "disabled" and (disk_gone or p["persistent_base_mount"] is None):
                warnings.append(msg)
            else:
                problems.append(msg)
        elif writable.get(path):
            problems.append("persistent path %s is not writable: %s" % (path, writable[path]))
    if disk_gone and d.persistent_paths:
        warnings.insert(
            0,
            "readonly_root_persistent_device %s does not exist: the persistent paths %s are not bound, their "
            "applications write to %s; replace the disk, then run the role again"
            % (
                d.persistent_device,
                ", ".join(d.persistent_paths),
                "the tmpfs" if p["overlay_booted"] else "the real root",
            ),
        )
    usage = upper_usage(p, d.upper_warn_percent)
    if usage and usage["over_warn"]:
        warnings.append(
            "the tmpfs upper %s is %.1f%% full (%d of %d KiB, readonly_root_upper_warn_percent %d): writes to / "
            "fail with ENOSPC when it is full; a reboot empties it"
            % (ROOT_RW, usage["use_percent"], usage["used_kib"], usage["size_kib"], d.upper_warn_percent)
        )
    return problems, warnings
