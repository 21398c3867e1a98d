# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real-boot test helpers: drive scripts/vm.sh machines and run playbooks on them over SSH.

A ``Machine`` is one qemu VM made by ``scripts/vm.sh new`` from a cached image;
``play()`` runs ansible-playbook against it on the 127.0.0.1 port forward with
the ansible.posix.json callback and returns the parsed result.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VM_SH = os.path.join(REPO, "scripts", "vm.sh")
PLAYBOOK = os.path.join(REPO, "tests", "vm", "playbooks", "readonly_root.yml")
COLLECTIONS = os.path.join(REPO, ".cache", "collections")


def _link_collection() -> None:
    ns = os.path.join(COLLECTIONS, "ansible_collections", "overlayfs")
    os.makedirs(ns, exist_ok=True)
    link = os.path.join(ns, "systemd")
    if os.path.realpath(link) != REPO:
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(REPO, link)


_link_collection()

# The release under test (scripts/vm.sh builds its images): bookworm is Debian 12, trixie Debian 13.
SUITE = os.environ.get("OVERLAYFS_VM_SUITE", "bookworm")
RELEASES = {"bookworm": "Debian 12", "trixie": "Debian 13"}
_ONLY_ON = pytest.StashKey[list]()
# The machines whose tests are a chain of boots in file order; each is a marker (pytest -m kiosk, -m fallback)
# so that make test runs each chain as a job of its own, beside the others.
CHAINS = ("kiosk", "fallback")
# Each machine's timings (s), printed at the end of the run: boots and plays, by label.
TIMINGS: dict[str, dict[str, float]] = {}
# OVERLAYFS_VM_PLAYS=DIR keeps each play's JSON output there (its tasks' start and end times: a profile).
PLAYS_DIR = os.environ.get("OVERLAYFS_VM_PLAYS", "")


def pytest_configure(config) -> None:
    for chain in CHAINS:
        config.addinivalue_line("markers", f"{chain}: a test of the {chain} machine's chain of boots (-m {chain})")
    config.addinivalue_line("markers", "only_on(suite, why): run on that Debian suite only, deselected on the others")


def pytest_collection_modifyitems(config, items) -> None:
    """Mark the chains (make test runs each chain and the other machines as separate jobs: -m kiosk, -m fallback,
    -m 'not kiosk and not fallback'); deselect a test marked only_on another release (it is not this release's to
    run), saying why."""
    kept, other = [], []
    for item in items:
        for chain in CHAINS:
            if chain in item.fixturenames:
                item.add_marker(getattr(pytest.mark, chain))
        only = item.get_closest_marker("only_on")
        (other if only is not None and only.args[0] != SUITE else kept).append(item)
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = kept
    config.stash[_ONLY_ON] = [
        f"{item.nodeid}: runs on {RELEASES[m.args[0]]} only ({m.args[1]})"
        for item in other
        for m in [item.get_closest_marker("only_on")]
    ]


def pytest_report_collectionfinish(config, items) -> list[str]:
    """The tests left to the other release, one line each, at the top of the run's output."""
    return [f"not on {RELEASES[SUITE]}: {line}" for line in config.stash.get(_ONLY_ON, [])]


def pytest_terminal_summary(terminalreporter) -> None:
    """Each machine's timings, one line each, at the end of the run's output (make test's log keeps them)."""
    for name, timings in TIMINGS.items():
        terminalreporter.write_line(f"{name} timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))


def vm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    # stdin from /dev/null: ssh would otherwise share (and may leave non-blocking) the caller's stdin.
    return subprocess.run([VM_SH, *args], capture_output=True, text=True, check=check, stdin=subprocess.DEVNULL)


@dataclass
class PlayResult:
    rc: int
    stats: dict
    failures: list[str]
    facts: dict | None
    output: str
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> int:
        return self.stats.get("changed", 0)


@dataclass
class Machine:
    name: str
    timings: dict[str, float] = field(default_factory=dict)

    def ssh(self, command: str, check: bool = True) -> str:
        res = vm("ssh", self.name, command, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"{command!r} on {self.name}: rc {res.returncode}\n{res.stdout}\n{res.stderr}")
        return res.stdout

    def boot(self) -> None:
        start = time.monotonic()
        res = vm("boot", self.name, check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        self.timings.setdefault("boot", time.monotonic() - start)

    def stop(self) -> None:
        vm("stop", self.name, check=False)

    def wait(self, seconds: int) -> float:
        """Wait until SSH answers again (after a reboot from inside the guest); the seconds it took."""
        start = time.monotonic()
        res = vm("wait", self.name, str(seconds), check=False)
        assert res.returncode == 0, res.stderr[-3000:]
        return time.monotonic() - start

    def disk(self) -> str:
        """The machine's system disk (a raw ext4 image), to loop-mount while the machine is off."""
        return vm("disk", self.name).stdout.strip()

    def detach_persist_disk(self) -> None:
        """The next boots have no persistent disk (a dead disk); the machine must be off."""
        vm("detach", self.name)

    def power_cut(self) -> None:
        res = vm("kill", self.name, check=False)
        assert res.returncode == 0, res.stderr[-3000:]

    def console(self) -> str:
        return vm("console", self.name).stdout

    def wait_console(self, text: str, seconds: int) -> float:
        """Wait until the serial console of the current boot shows ``text``; the seconds it took."""
        start = time.monotonic()
        while text not in self.console():
            assert time.monotonic() - start < seconds, f"no {text!r} on the console in {seconds}s"
            time.sleep(2)
        return time.monotonic() - start

    def findmnt(self, path: str) -> dict | None:
        out = self.ssh(f"findmnt --json --mountpoint {path} || true")
        return json.loads(out)["filesystems"][0] if out.strip() else None

    def boot_id(self) -> str:
        return self.ssh("cat /proc/sys/kernel/random/boot_id").strip()

    def play(
        self, variables: dict, check_mode: bool = False, label: str = "", tags: str = "", chroot: str = ""
    ) -> PlayResult:
        """The role over SSH on the running machine; with ``chroot``, on the image root mounted there
        (community.general.chroot: no systemd runs in it, the role runs offline)."""
        with tempfile.TemporaryDirectory(prefix="overlayfs-vm-play.") as tmp:
            inventory = os.path.join(tmp, "inventory.ini")
            if chroot:
                host = f"vm ansible_connection=community.general.chroot ansible_host={chroot}"
            else:
                port = vm("port", self.name).stdout.strip()
                key = vm("key").stdout.strip()
                host = f"vm ansible_host=127.0.0.1 ansible_port={port} ansible_user=root"
                host += f" ansible_ssh_private_key_file={key}"
            with open(inventory, "w", encoding="utf-8") as fh:
                fh.write(f"{host} ansible_python_interpreter=/usr/bin/python3\n")
            extra = os.path.join(tmp, "vars.json")
            with open(extra, "w", encoding="utf-8") as fh:
                json.dump(variables, fh)
            cmd = [
                "ansible-playbook",
                "-i",
                inventory,
                PLAYBOOK,
                "-e",
                f"@{extra}",
                "-e",
                # Keep-alives: a connection to a boot that is gone fails within 30 s instead of hanging.
                "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                " -o ServerAliveInterval=5 -o ServerAliveCountMax=6'",
            ]
            if check_mode:
                cmd += ["--check", "--diff"]
            if tags:
                cmd += ["--tags", tags]
            env = {
                **os.environ,
                "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
                "ANSIBLE_PIPELINING": "1",
                "ANSIBLE_HOST_KEY_CHECKING": "0",
                "ANSIBLE_NOCOLOR": "1",
                # This checkout, never another copy of the collection installed on the machine.
                "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS,
            }
            start = time.monotonic()
            # stdin from /dev/null: ansible-playbook refuses a non-blocking stdin (left so by an ssh elsewhere).
            res = subprocess.run(
                cmd, capture_output=True, text=True, env=env, check=False, cwd=REPO, stdin=subprocess.DEVNULL
            )
            seconds = time.monotonic() - start
        if label:
            self.timings[label] = seconds
        if PLAYS_DIR:
            os.makedirs(PLAYS_DIR, exist_ok=True)
            slug = re.sub(r"[^A-Za-z0-9]+", "-", label or "play").strip("-")
            out = os.path.join(PLAYS_DIR, f"{SUITE}-{self.name}-{time.strftime('%H%M%S')}-{slug}.json")
            with open(out, "w", encoding="utf-8") as fh:
                fh.write(res.stdout)
        try:
            data = json.loads(res.stdout)
        except json.JSONDecodeError as exc:
            msg = f"ansible-playbook gave no JSON (rc {res.returncode}):\n{res.stdout}\n{res.stderr}"
            raise AssertionError(msg) from exc
        failures, facts, warnings = [], None, []
        for play in data.get("plays", []):
            for task in play.get("tasks", []):
                result = task.get("hosts", {}).get("vm", {})
                if result.get("failed"):
                    # A failed command's own words (its stderr), not only "non-zero return code".
                    stderr = f": {result['stderr']}" if result.get("stderr") else ""
                    failures.append(str(result.get("msg", result)) + stderr)
                warnings += [str(w) for w in result.get("warnings", []) or []]
                for item in result.get("results", []) or []:
                    if item.get("failed"):
                        failures.append(str(item.get("msg", item)))
                if task.get("task", {}).get("name") == "Facts for the test" and "readonly_root_facts" in result:
                    facts = result["readonly_root_facts"]
        stats = data.get("stats", {}).get("vm", {})
        return PlayResult(res.returncode, stats, failures, facts, res.stdout + res.stderr, seconds, warnings)


def machine(name: str, variant: str, boot: bool = True):
    res = vm("new", name, variant, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    m = Machine(name)
    TIMINGS[name] = m.timings
    if boot:
        m.boot()
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def kiosk():
    """A VM of the good image (busybox in the initramfs), with an empty disk labelled persist."""
    yield from machine("kiosk", "good")


@pytest.fixture(scope="module")
def fallback():
    """A second VM of the good image, for the chain from an unconfirmed trial to a dead persistent disk."""
    yield from machine("fallback", "good")


@pytest.fixture
def baked():
    """A VM of the good image, NOT booted: the test bakes its disk (loop-mounted) first, then boots it."""
    yield from machine("baked", "good", boot=False)


@pytest.fixture
def nobusybox():
    """A VM of the image whose initramfs lacks busybox (overlayroot's script would fail on grep); one test only."""
    yield from machine("nobusybox", "nobusybox")


@pytest.fixture
def bare():
    """A VM of the image without overlayroot and busybox, apt's only source a local archive of them; one test."""
    yield from machine("bare", "bare")
