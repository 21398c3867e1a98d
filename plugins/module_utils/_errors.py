# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""The one failure type of the rules: a parameter or the host breaks a rule.

Pure files raise :class:`OverlayError` (and its subclasses); the host phases
turn it into the module failure (``_converge.ModuleFailure``).
"""

from __future__ import annotations

from typing import Any


class OverlayError(ValueError):
    """A parameter or the host violates a rule.

    ``param`` names the culprit; ``hint`` is the way out, kept apart from
    ``message`` so a caller with another way out can say its own. ``str()``
    is the message followed by the hint.
    """

    def __init__(self, message: str, param: str | None = None, hint: str | None = None) -> None:
        super().__init__("%s %s" % (message, hint) if hint else message)
        self.message = message
        self.param = param
        self.hint = hint


class UnsafePathError(OverlayError):
    pass


class BusyError(OverlayError):
    """Processes or mounts use an overlay the run must stop; ``holders`` lists the processes."""

    def __init__(self, message: str, holders: list[dict[str, Any]], hint: str | None = None) -> None:
        super().__init__(message, "apply", hint)
        self.holders = holders


class ModuleFailure(Exception):
    """A refused or failed module run; ``result`` is what the module returns with the failure (``msg`` apart)."""

    def __init__(self, msg: str, result: dict[str, Any]) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result
