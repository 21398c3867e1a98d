"""Every EXAMPLES task of every plugin runs, as written, on a real systemd.

The examples are read from the plugin files, the layer directories they name
are created (with a file each; not those the play imports with the layer
module), directories they name for persistent uppers get a tmpfs of their own
(an upper cannot live on the container's overlayfs root), and then all tasks of
one plugin run in order as one play. A failing task fails the test with
Ansible's output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PLUGINS = sorted([*REPO.glob("plugins/modules/*.py"), *REPO.glob("plugins/filter/*.py")])


def examples_of(path: Path) -> list[dict]:
    ns: dict = {}
    source = path.read_text(encoding="utf-8")
    start = source.index("EXAMPLES = r")
    end = source.index('"""', source.index('"""', start) + 3) + 3
    exec(source[start:end], ns)  # noqa: S102 - a plain string literal from our own plugin
    return yaml.safe_load(ns["EXAMPLES"]) or []


def module_args(task: dict) -> dict:
    for key, value in task.items():
        if key.startswith("overlayfs.systemd.") and isinstance(value, dict):
            return value
    return {}


def overlay_args(args: dict) -> list[dict]:
    """The overlay definitions of a task: its arguments, or each item of a bulk module's overlays."""
    if isinstance(args.get("overlays"), list):
        return [dict(args.get("defaults") or {}, **item) for item in args["overlays"]]
    return [args]


@pytest.fixture(scope="module")
def collections_path():
    with tempfile.TemporaryDirectory() as tmp:
        ns = Path(tmp, "ansible_collections", "overlayfs")
        ns.mkdir(parents=True)
        (ns / "systemd").symlink_to(REPO)
        yield tmp


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_examples_run(host, plugin, collections_path):
    tasks = examples_of(plugin)
    assert tasks, f"{plugin} has no EXAMPLES"
    lowers: set[str] = set()
    upper_parents: set[str] = set()
    # Layer directories the play imports itself (overlayfs.systemd.layer) must not exist beforehand.
    imported = {
        task["overlayfs.systemd.layer"]["path"]
        for task in tasks
        if isinstance(task.get("overlayfs.systemd.layer"), dict)
        and task["overlayfs.systemd.layer"].get("state", "present") == "present"
    }
    for task in tasks:
        for args in overlay_args(module_args(task)):
            lowers.update(args.get("lowerdir") or [])
            for key in ("upperdir", "workdir"):
                if args.get(key):
                    upper_parents.add(os.path.dirname(os.path.dirname(args[key])))
    for lower in sorted(lowers - imported):
        host.run_expect([0], "mkdir -p %s && echo %s > %s/from-lower.txt", lower, lower, lower)
    for parent in sorted(upper_parents):
        host.run_expect([0], "mkdir -p %s && (mountpoint -q %s || mount -t tmpfs tmpfs %s)", parent, parent, parent)

    play = [{"name": f"EXAMPLES of {plugin.name}", "hosts": "all", "gather_facts": False, "tasks": tasks}]
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as fh:
        yaml.safe_dump(play, fh, sort_keys=False)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_NOCOLOR="1")
    res = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            f"{host.backend.host},",
            "-c",
            "community.docker.docker",
            "-e",
            "ansible_python_interpreter=/usr/bin/python3",
            fh.name,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    os.unlink(fh.name)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "failed=0" in res.stdout
