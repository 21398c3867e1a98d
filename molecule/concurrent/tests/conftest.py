"""The side-effect tests (marker side_effect) check what side_effect.yml left; molecule's first verify comes
before it. There they are deselected, not skipped, and pytest's header says so; once side_effect.yml has begun
(its first task writes side-effect.started), they run and fail without their results."""

from __future__ import annotations

import os

STARTED = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ""), "side-effect.started")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "side_effect: checks what side_effect.yml left (run after it has begun)")


def pytest_report_header(config) -> str:
    if os.path.exists(STARTED):
        return "side effect begun: the side_effect tests run"
    return "side effect not begun yet (molecule's first verify): the side_effect tests are deselected"


def pytest_collection_modifyitems(config, items) -> None:
    if os.path.exists(STARTED):
        return
    keep = [i for i in items if i.get_closest_marker("side_effect") is None]
    dropped = [i for i in items if i.get_closest_marker("side_effect") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
