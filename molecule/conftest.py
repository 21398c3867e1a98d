"""Shared pytest-testinfra helpers for every molecule scenario.

Scenarios' tests live in ``molecule/<scenario>/tests/``; pytest loads this
file because it sits in a parent directory. ``reboot`` restarts the bench
container the way ``molecule/shared/reboot.yml`` does, so a test can write
through an overlay, reboot, and check what survived.
"""

from __future__ import annotations

import subprocess
import time

import pytest


def _container(host) -> str:
    # testinfra's ansible backend keeps the inventory host name; for the
    # docker connection it is the container name.
    return host.backend.host


def wait_for_systemd(host, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        res = subprocess.run(
            ["docker", "exec", _container(host), "systemctl", "is-system-running", "--wait"],
            capture_output=True,
            text=True,
            check=False,
        )
        state = res.stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"systemd did not settle within {timeout}s (last state: {state!r})")


def reboot_container(host) -> str:
    name = _container(host)
    subprocess.run(["docker", "stop", "--time", "60", name], check=True, capture_output=True)
    subprocess.run(["docker", "start", name], check=True, capture_output=True)
    return wait_for_systemd(host)


@pytest.fixture
def reboot():
    """Return a callable that reboots the container behind a testinfra host."""
    return reboot_container
