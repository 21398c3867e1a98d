# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Files, symbolic links and removals under one root directory, planned by content and applied in one go.

The readonly_root role writes its configuration, units and enablement links into
the real root (``/``, or ``/media/root-ro`` from inside the overlay). One
module call does what a loop of template and file tasks did, one task per item:
under software emulation each of those cost seconds. ``plan`` compares the
wanted state with what the root holds (content, mode, owner; link targets);
``apply`` writes only the differences, each file atomically.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ansible_collections.overlayfs.systemd.plugins.module_utils import _host
from ansible_collections.overlayfs.systemd.plugins.module_utils._readonly_root_host import Runner


@dataclass(frozen=True)
class Change:
    kind: str  # file | link | absent (relative to the root) | seed | directory (absolute)
    dest: str
    before: str | None  # file content, link target, or a description of what is removed; None: nothing there
    after: str | None
    mode: int = 0o644


def _relative(dest: str, param: str) -> str:
    rel = os.path.normpath(dest.lstrip("/"))
    if rel in (".", "") or rel.startswith("../") or rel == "..":
        raise ValueError("%s: %r is not a path inside root; give a path relative to root" % (param, dest))
    return rel


def _mode(value: str | int, dest: str) -> int:
    try:
        mode = value if isinstance(value, int) else int(str(value), 8)
    except ValueError:
        raise ValueError("files: mode %r of %s is not an octal mode such as '0644'" % (value, dest)) from None
    if not 0 <= mode <= 0o7777:
        raise ValueError("files: mode %r of %s is not an octal mode such as '0644'" % (value, dest))
    return mode


def _read_file(path: str) -> tuple[str | None, int | None, bool]:
    """Content (None if no regular file), permission bits, and whether owner/group are root."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None, True
    if not stat.S_ISREG(st.st_mode):
        return "(%s)" % ("a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"), None, True
    with open(path, "rb") as fh:
        text = fh.read().decode("utf-8", "surrogateescape")
    return text, stat.S_IMODE(st.st_mode), st.st_uid == 0 and st.st_gid == 0


def _describe(path: str) -> str | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "link to %s" % os.readlink(path)
    return "directory" if stat.S_ISDIR(st.st_mode) else "file"


def plan(
    root: str,
    files: list[dict[str, Any]],
    links: list[dict[str, str]],
    absent: list[str],
    read_file: Callable[[str], tuple[str | None, int | None, bool]] = _read_file,
    describe: Callable[[str], str | None] = _describe,
) -> list[Change]:
    """What must change under ``root`` so it holds ``files`` and ``links`` and none of ``absent``."""
    changes: list[Change] = []
    seen: set[str] = set()
    for f in files:
        dest = _relative(f["dest"], "files")
        mode = _mode(f.get("mode") or "0644", dest)
        seen.add(dest)
        content, cur_mode, root_owned = read_file(os.path.join(root, dest))
        if content != f["content"] or cur_mode != mode or not root_owned:
            changes.append(Change("file", dest, content, f["content"], mode))
    for link in links:
        dest = _relative(link["dest"], "links")
        if dest in seen:
            raise ValueError("links: %s is also in files; name each path once" % dest)
        seen.add(dest)
        before = describe(os.path.join(root, dest))
        if before != "link to %s" % link["src"]:
            changes.append(Change("link", dest, before, link["src"]))
    for item in absent:
        dest = _relative(item, "absent")
        if dest in seen:
            raise ValueError("absent: %s is also in files or links; name each path once" % dest)
        before = describe(os.path.join(root, dest))
        if before == "directory":
            raise ValueError("absent: %s is a directory; this module removes files and links only" % dest)
        if before is not None:
            changes.append(Change("absent", dest, before, None))
    return changes


def plan_seeds(
    seeds: list[dict[str, str]], directories: list[str], exists: Callable[[str], bool] = os.path.lexists
) -> list[Change]:
    """Directories to create once: each seed's ``dest`` (a copy of ``source`` when that is a directory, else
    empty) unless it exists, and each of ``directories`` unless it exists. Absolute paths, never under root."""
    changes: list[Change] = []
    for seed in seeds:
        for key in ("dest", "source"):
            if not os.path.isabs(seed[key]):
                raise ValueError("seeds: %s %r is not an absolute path" % (key, seed[key]))
        if not exists(seed["dest"]):
            source = seed["source"] if os.path.isdir(seed["source"]) else None
            changes.append(Change("seed", os.path.normpath(seed["dest"]), None, source, 0o755))
    for d in directories:
        if not os.path.isabs(d):
            raise ValueError("directories: %r is not an absolute path" % d)
        if not exists(d):
            changes.append(Change("directory", os.path.normpath(d), None, None, 0o755))
    return changes


def _seed(run: Runner, ch: Change) -> None:
    """Copy the source directory to a hidden name next to ``dest``, then rename it into place: a killed run
    leaves no half copy under ``dest`` that a later run would take for done."""
    _parents("/", ch.dest)
    if ch.after is None:
        os.mkdir(ch.dest, 0o755)
        return
    tmp = os.path.join(os.path.dirname(ch.dest), ".%s.partial" % os.path.basename(ch.dest)[:100])
    if os.path.lexists(tmp):
        rc, _out, err = run(["rm", "-rf", "--one-file-system", tmp])
        if rc != 0:
            raise OSError("removing the partial copy %s failed: %s" % (tmp, err.strip()))
    rc, _out, err = run(["cp", "-a", "--no-target-directory", ch.after, tmp])
    if rc != 0:
        raise OSError("cp -a %s %s failed (rc %d): %s" % (ch.after, tmp, rc, err.strip()[-300:]))
    os.rename(tmp, ch.dest)


def remount(run: Runner, mount_point: str, mode: str, attempts: int = 5) -> None:
    """``mount -o remount,rw|ro``; read-only is retried (a writer may still be closing), then raises."""
    err = ""
    tries = attempts if mode == "ro" else 1
    for attempt in range(tries):
        if attempt:
            time.sleep(0.5 * attempt)
        rc, _out, err = run(["mount", "-o", "remount,%s" % mode, mount_point])
        if rc == 0:
            return
    raise OSError("mount -o remount,%s %s failed: %s" % (mode, mount_point, err.strip()))


def _parents(root: str, dest: str) -> None:
    """Create the missing parent directories of ``dest`` (0755, root-owned)."""
    parent = os.path.dirname(os.path.join(root, dest))
    if not os.path.isdir(parent):
        os.makedirs(parent, mode=0o755)


def apply(module: Any, root: str, changes: list[Change], run: Runner) -> None:
    """Write ``changes`` under ``root``: files atomically (fsynced), links replaced atomically, removals;
    seeds and directories at their absolute paths."""
    for ch in changes:
        path = os.path.join(root, ch.dest)
        if ch.kind == "seed":
            _seed(run, ch)
        elif ch.kind == "directory":
            os.makedirs(ch.dest, mode=0o755, exist_ok=True)
        elif ch.kind == "file":
            _parents(root, ch.dest)
            data = (ch.after or "").encode("utf-8", "surrogateescape")
            _host.write_file(module=module, path=path, mode=ch.mode, write=lambda fd, d=data: _host.write_all(fd, d))
            os.chown(path, 0, 0)
        elif ch.kind == "link":
            _parents(root, ch.dest)
            tmp = os.path.join(os.path.dirname(path), ".%s.tmp" % os.path.basename(path)[:100])
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(ch.after or "", tmp)
            os.lchown(tmp, 0, 0)
            os.replace(tmp, path)
        else:
            os.unlink(path)
    if changes:
        os.sync()


def diffs(root: str, changes: list[Change]) -> list[dict[str, str]]:
    """One --diff entry per change, in Ansible's before/after form."""
    out = []
    for ch in changes:
        path = os.path.join(root, ch.dest)
        if ch.kind in ("seed", "directory"):
            after = "directory%s\n" % (" (a copy of %s)" % ch.after if ch.after else "")
            out.append(dict(before_header=ch.dest, after_header=ch.dest, before="", after=after))
        elif ch.kind == "file":
            before = ch.before or ""
            if ch.before is not None and ch.before == ch.after:
                before = "%s(mode or owner differs)\n" % before
            out.append(dict(before_header=path, after_header=path, before=before, after=ch.after or ""))
        else:
            before = "%s\n" % ch.before if ch.before else ""
            after = "link to %s\n" % ch.after if ch.kind == "link" else ""
            out.append(dict(before_header=path, after_header=path, before=before, after=after))
    return out
