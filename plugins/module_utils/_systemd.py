# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
"""One thin wrapper around systemctl, journalctl and mount(8) for modules.

Every call is an argv list run through ``module.run_command`` with
``LC_ALL=C``. Failures raise :class:`CommandError` carrying the command, rc,
stdout and stderr; only a module's ``main()`` turns them into ``fail_json``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class CommandError(Exception):
    """A command failed; carries everything needed for a useful error."""

    def __init__(self, cmd: Sequence[str], rc: int, stdout: str, stderr: str) -> None:
        self.cmd = list(cmd)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        super().__init__("%s failed (rc=%d): %s" % (" ".join(self.cmd), rc, (stderr or stdout).strip() or "no output"))


def parse_show(output: str, units: Sequence[str]) -> dict[str, dict[str, str]]:
    """Parse ``systemctl show -p A,B u1 u2`` output (blocks separated by blank lines).

    Blocks are matched to units by their ``Id=`` when present, otherwise by
    position.
    """
    blocks: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    for line in output.splitlines():
        if not line.strip():
            if cur:
                blocks.append(cur)
                cur = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            cur[key] = value
    if cur:
        blocks.append(cur)
    result: dict[str, dict[str, str]] = {}
    for i, block in enumerate(blocks):
        name = block.get("Id")
        if name not in units:
            name = units[i] if i < len(units) else None
        if name is not None:
            result[name] = block
    return result


_UTIL_LINUX_RE = re.compile(r"util-linux[^0-9]*(\d+)\.(\d+)")


class Systemd:
    """systemctl/journalctl/mount wrapper bound to one AnsibleModule."""

    #: Why systemd cannot be asked (an offline run, ``_offline_host.OfflineSystemd``); None: it runs.
    offline: str | None = None

    def __init__(self, module: Any) -> None:
        self.module = module
        self.systemctl = module.get_bin_path("systemctl", required=True)
        self.journalctl = module.get_bin_path("journalctl", required=False)
        self.mount_bin = module.get_bin_path("mount", required=False)
        self.commands: list[list[str]] = []
        self._prefetched: dict[str, dict[str, str]] | None = None

    def run(self, argv: Sequence[str], check: bool = True) -> tuple[int, str, str]:
        cmd = [str(a) for a in argv]
        self.commands.append(cmd)
        rc, out, err = self.module.run_command(cmd, environ_update={"LC_ALL": "C"}, check_rc=False)
        if check and rc != 0:
            raise CommandError(cmd, rc, out, err)
        return rc, out, err

    def _ctl(self, *args: str) -> tuple[int, str, str]:
        return self.run([self.systemctl] + list(args))

    def daemon_reload(self) -> None:
        self._ctl("daemon-reload")

    def start(self, unit: str) -> None:
        self._ctl("start", unit)

    def stop(self, unit: str) -> None:
        self._ctl("stop", unit)

    def reload(self, unit: str) -> None:
        self._ctl("reload", unit)

    def enable(self, unit: str) -> None:
        self._ctl("enable", unit)

    def reenable(self, unit: str) -> None:
        self._ctl("reenable", unit)

    def disable(self, unit: str) -> None:
        self._ctl("disable", unit)

    def show(self, units: Sequence[str], props: Sequence[str]) -> dict[str, dict[str, str]]:
        """Properties of ``units``: {unit: {prop: value}}; ``Id`` is always queried."""
        if not units:
            return {}
        wanted = list(props) if "Id" in props else ["Id"] + list(props)
        cache = self._prefetched
        if cache is not None and all(u in cache and all(p in cache[u] for p in wanted) for u in units):
            return {u: {p: cache[u][p] for p in wanted} for u in units}
        dummy, out, dummy_err = self._ctl("show", "-p", ",".join(wanted), "--", *units)
        return parse_show(out, list(units))

    @contextmanager
    def prefetched(self, units: Sequence[str], props: Sequence[str]) -> Iterator[None]:
        """Within: ``show`` of any of ``units`` and ``props`` answers from one ``systemctl show`` made here.

        For reading many overlays' facts before anything changes; leave it
        before acting (the answers would go stale).
        """
        found = self.show(list(dict.fromkeys(units)), props)
        self._prefetched = {u: dict(p) for u, p in found.items()}
        try:
            yield
        finally:
            self._prefetched = None

    def journal_tail(self, unit: str, lines: int = 20) -> str:
        """The last journal lines of ``unit``; best effort, never raises."""
        if not self.journalctl:
            return ""
        try:
            rc, out, err = self.run(
                [self.journalctl, "-u", unit, "-n", str(lines), "--no-pager", "-o", "short-iso"], check=False
            )
        except Exception:  # pragma: no cover - run_command itself failing
            return ""
        return out if rc == 0 else ""

    def util_linux_version(self) -> tuple[int, int] | None:
        """(major, minor) of mount(8)'s util-linux, None if unknown; asked once per module run."""
        if not hasattr(self, "_util_linux"):
            self._util_linux = self._ask_util_linux()
        return self._util_linux

    def _ask_util_linux(self) -> tuple[int, int] | None:
        if not self.mount_bin:
            return None
        rc, out, dummy = self.run([self.mount_bin, "--version"], check=False)
        if rc != 0:
            return None
        m = _UTIL_LINUX_RE.search(out)
        return (int(m.group(1)), int(m.group(2))) if m else None
