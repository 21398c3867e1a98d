# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark: 20 overlays on one bench container, the overlays role against builtin modules.

Prints figures; it is not a test and not part of `make test`. Needs the bench
(`scripts/bench.sh up`) and the test venv; run it under the bench lock:

    flock /tmp/overlayfs-bench.lock .venv/bin/python bench/overlays_bench.py

(a) the role overlayfs.systemd.overlays (one module call for all overlays);
(b) the builtin way, per overlay: ansible.builtin.file for the upper, work
and mount point directories, ansible.builtin.template for the .mount unit,
ansible.builtin.systemd_service to start and enable it (with daemon_reload).
Each is run from nothing, then again with no change; wall time of the
ansible-playbook run, and the ratio ours/theirs.
(c) the reference for a no-op: one ansible.builtin.ping of the same
container, in the same run, timed the same way (the least a playbook run
with one round trip costs). The role's no-op run is printed against it.
Each no-op and ping is run ``--repeat`` times (default 3) and the median
printed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / ".config" / "molecule" / "config.yml"
CONTAINER = "overlayfs-bench-perf"


def expand_env(text: str) -> str:
    """``${NAME:-default}`` and ``${NAME}`` as molecule (and the shell) expand them in its config."""
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), text)


def docker_run_args(name: str, *, image: str | None = None, volumes: list[str] | None = None) -> list[str]:
    """`docker run` arguments for a bench container, from the shared molecule platform settings.

    ``image`` replaces the platform's; ``volumes`` are added to its volumes.
    """
    p = yaml.safe_load(expand_env(BASE.read_text()))["platforms"][0]
    p["image"] = image or p["image"]
    p["volumes"] = p["volumes"] + list(volumes or ())
    args = ["docker", "run", "-d", "--name", name, "--network", p["network_mode"], "--cgroupns", p["cgroupns_mode"]]
    args += ["--stop-signal", p["stop_signal"]]
    args += ["--pull", "never"] if p.get("pull") is False else []
    args += [a for cap in p["capabilities"] for a in ("--cap-add", cap)]
    args += [a for opt in p["security_opts"] for a in ("--security-opt", opt)]
    args += [a for t in p["tmpfs"] for a in ("--tmpfs", t)]
    args += [a for v in p["volumes"] for a in ("-v", v)]
    args += [a for k, v in p["labels"].items() for a in ("--label", "%s=%s" % (k, v))]
    return args + [p["image"], p["command"]]


def overlays(n: int, prefix: str) -> list[dict]:
    return [{"path": "/srv/%s/o%02d" % (prefix, i), "lower": "/opt/bench/lower%02d" % i} for i in range(n)]


def playbooks(n: int, tmp: Path) -> dict[str, Path]:
    ours = [
        {
            "name": "Bench | the overlays role",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Overlays",
                    "ansible.builtin.include_role": {"name": "overlayfs.systemd.overlays"},
                    "vars": {
                        "overlays_list": [{"path": o["path"], "lowerdir": [o["lower"]]} for o in overlays(n, "ours")]
                    },
                }
            ],
        }
    ]
    items = [dict(o, base="/srv/persist/theirs/o%02d" % i) for i, o in enumerate(overlays(n, "theirs"))]
    loop = {"loop": items, "loop_control": {"label": "{{ item.path }}"}}
    theirs = [
        {
            "name": "Bench | builtin modules, per overlay",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Upper directory",
                    "ansible.builtin.file": {"path": "{{ item.base }}/upper", "state": "directory", "mode": "0755"},
                    **loop,
                },
                {
                    "name": "Work directory",
                    "ansible.builtin.file": {"path": "{{ item.base }}/work", "state": "directory", "mode": "0700"},
                    **loop,
                },
                {
                    "name": "Mount point",
                    "ansible.builtin.file": {"path": "{{ item.path }}", "state": "directory", "mode": "0755"},
                    **loop,
                },
                {
                    "name": "Mount unit",
                    "ansible.builtin.template": {
                        "src": str(REPO / "bench" / "templates" / "overlay.mount.j2"),
                        "dest": "/etc/systemd/system/{{ item.path | overlayfs.systemd.unit_name }}",
                        "mode": "0644",
                    },
                    **loop,
                },
                {
                    "name": "Started and enabled",
                    "ansible.builtin.systemd_service": {
                        "name": "{{ item.path | overlayfs.systemd.unit_name }}",
                        "state": "started",
                        "enabled": True,
                        "daemon_reload": True,
                    },
                    **loop,
                },
            ],
        }
    ]
    ping = [
        {
            "name": "Bench | one ping of the same container",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [{"name": "Ping", "ansible.builtin.ping": {}}],
        }
    ]
    out = {}
    for name, play in (("ours", ours), ("theirs", theirs), ("ping", ping)):
        out[name] = tmp / ("%s.yml" % name)
        out[name].write_text(yaml.safe_dump(play, sort_keys=False))
    return out


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def container_target(name: str) -> list[str]:
    """The ansible(-playbook) arguments that reach the bench container ``name`` over the Docker connection."""
    return ["-i", "%s," % name, "-c", "community.docker.docker", "-e", "ansible_python_interpreter=/usr/bin/python3"]


def timed_run(playbook: Path, env: dict) -> tuple[float, str]:
    argv = [str(Path(sys.executable).with_name("ansible-playbook")), *container_target(CONTAINER), str(playbook)]
    t0 = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise SystemExit("%s failed:\n%s\n%s" % (playbook.name, res.stdout[-5000:], res.stderr[-2000:]))
    recap = [x for x in res.stdout.splitlines() if CONTAINER in x and "ok=" in x]
    return wall, recap[-1].split(":", 1)[1].strip() if recap else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20, help="number of overlays (default 20)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each no-op and of the ping (median, default 3)")
    ap.add_argument("--skip-builtin", action="store_true", help="leave out (b), the builtin modules (slow)")
    args = ap.parse_args()
    whos = ("ours",) if args.skip_builtin else ("ours", "theirs")
    sh("docker", "rm", "-f", "-v", CONTAINER, check=False)
    sh(*docker_run_args(CONTAINER))
    try:
        for _attempt in range(120):
            state = sh("docker", "exec", CONTAINER, "systemctl", "is-system-running", "--wait", check=False)
            if state.stdout.strip() in ("running", "degraded"):
                break
            time.sleep(0.5)
        lowers = " ".join("/opt/bench/lower%02d" % i for i in range(args.n))
        sh("docker", "exec", CONTAINER, "sh", "-c", "for d in %s; do mkdir -p $d; echo x > $d/f; done" % lowers)
        env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(REPO / ".cache" / "collections"),
            ANSIBLE_PIPELINING="1",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_GATHERING="explicit",
        )
        with tempfile.TemporaryDirectory() as tmp:
            books = playbooks(args.n, Path(tmp))
            figures = {}
            for who in whos:
                figures[(who, "first run")] = timed_run(books[who], env)
            for who in whos + ("ping",):
                runs = sorted((timed_run(books[who], env) for dummy in range(max(args.repeat, 1))), key=lambda r: r[0])
                figures[(who, "no change")] = runs[len(runs) // 2]
        mounted = sh("docker", "exec", CONTAINER, "sh", "-c", "findmnt -rn -t overlay -o TARGET | grep -c /srv/")
    finally:
        sh("docker", "rm", "-f", "-v", CONTAINER, check=False)
    print("%d overlays on one bench container (%s overlays mounted at the end)" % (args.n, mounted.stdout.strip()))
    if not args.skip_builtin:
        print("%-10s %-28s %-28s %s" % ("run", "(a) role overlays", "(b) builtin modules", "ours/theirs"))
        for run in ("first run", "no change"):
            ours, theirs = figures[("ours", run)][0], figures[("theirs", run)][0]
            print("%-10s %-28s %-28s %.3f" % (run, "%.1f s" % ours, "%.1f s" % theirs, ours / theirs))
    noop, ping = figures[("ours", "no change")][0], figures[("ping", "no change")][0]
    print(
        "no-op converge %.2f s against one ping %.2f s of the same container: %.2f x (goal <= 1.5 x)"
        % (noop, ping, noop / ping)
    )
    for (who, run), (wall, recap) in figures.items():
        print("  %-6s %-9s %5.1f s  %s" % (who, run, wall, recap))


if __name__ == "__main__":
    main()
