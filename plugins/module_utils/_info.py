# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Pure rules of the ``mount_info`` report: declared overlays versus live ones.

The overlays this collection declared are read from the text of its unit
files (:func:`declared_overlays`), the live ones from parsed mountinfo (the
parsing and unescaping live in ``_overlay``). :func:`build_report` joins
both with the units' systemd properties into one entry per overlay and
lists the drift between unit and live mount. Everything here takes data and
returns data; the one measurement (``statvfs`` of a tmpfs) is passed in as a
function.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import (
    OverlayError,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import (
    MountInfo,
    OverlayOptions,
    mount_at,
    mount_containing,
    parse_overlay_options,
    split_unescaped,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    unit_name,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import (
    ALLOWED_FLAGS,
    VERIFIED_FLAGS,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._units import (
    is_managed,
    options_from_unit_text,
    parse_unit,
)

#: The systemd properties the report reads, in one ``systemctl show`` call.
SHOW_PROPS = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "NeedDaemonReload",
    "FragmentPath",
    "AssertResult",
)

#: Overlay features the kernel shows on its own (defaults from its build
#: configuration or module parameters); compared only when the unit sets them.
KERNEL_SHOWN = ("uuid", "redirect_dir", "index", "xino", "metacopy", "nfs_export")

#: Characters the kernel octal-escapes in mountinfo option values.
_MOUNTINFO_ESCAPED = ", \t\n\\"


# ---------------------------------------------------------------------------
# What the unit files declare
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeclaredOverlay:
    """One overlay declared by a unit file this collection wrote."""

    path: str
    unit: str
    upper: str
    layers: OverlayOptions
    units: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    @property
    def flags(self) -> set[str]:
        """Generic mount flags in ``Options=`` (``ro``, ``nosuid``...)."""
        flags = {k for k in self.layers.options if k in ALLOWED_FLAGS}
        return flags | {"ro"} if self.layers.readonly else flags

    @property
    def features(self) -> dict[str, str | None]:
        """Overlay feature options in ``Options=`` (``index=on``, ``userxattr``...)."""
        return {k: v for k, v in self.layers.options.items() if k not in ALLOWED_FLAGS}


def parse_unit_options(value: str) -> OverlayOptions:
    """Parse an overlay ``Options=`` value as written in a unit file.

    The unit keeps the overlay escapes (``\\,`` ``\\:`` ``\\\\``), a literal
    backslash's ``\\\\`` written twice for systemd's option filter
    (``_units.options_unit_text``); after undoing that filter, each
    comma-separated piece is re-encoded the way mountinfo shows it (octal
    escapes) and handed to ``_overlay.parse_overlay_options``, so both
    sources go through one parser.
    """
    pieces = split_unescaped(options_from_unit_text(value), ",")
    encoded = ",".join("".join("\\%03o" % ord(c) if c in _MOUNTINFO_ESCAPED else c for c in p) for p in pieces)
    return parse_overlay_options(encoded)


def declared_overlays(unit_files: Mapping[str, str]) -> dict[str, DeclaredOverlay]:
    """The overlays declared by this collection's unit files, by mount point.

    ``unit_files`` maps file names in the unit directory to their text.
    Files without our marks, and our tmpfs and prepare units, are not
    overlays; the latter are attached to their overlay through their id.
    A managed overlay unit that cannot be read completely is still listed,
    with the reason in ``problems``.
    """
    by_id: dict[str, list[str]] = {}
    overlays: dict[str, tuple[str, dict[str, str]]] = {}
    for name in sorted(unit_files):
        text = unit_files[name]
        if not is_managed(text):
            continue
        keys = parse_unit(text).managed
        oid = keys.get("Id", "")
        if keys.get("Role", "overlay") == "overlay" and name.endswith(".mount"):
            overlays[name] = (oid, keys)
        elif oid:
            by_id.setdefault(oid, []).append(name)
    result: dict[str, DeclaredOverlay] = {}
    for name, (oid, keys) in overlays.items():
        mount = parse_unit(unit_files[name]).values("Mount")
        problems: list[str] = []
        path = keys.get("Path") or mount.get("Where") or ""
        if not path.startswith("/"):
            continue  # no mount point: nothing to report it under
        if "Options" in mount:
            layers = parse_unit_options(mount["Options"])
        else:
            layers = OverlayOptions()
            problems.append("unit %s has no Options=, so no layers" % name)
        upper = keys.get("Upper") or ("none" if layers.upperdir is None else "persistent")
        result[path] = DeclaredOverlay(
            path=path,
            unit=name,
            upper=upper,
            layers=layers,
            units=tuple([name] + sorted(by_id.get(oid, []))),
            problems=tuple(problems),
        )
    return result


# ---------------------------------------------------------------------------
# Live mounts
# ---------------------------------------------------------------------------


def overlay_mount_points(mounts: Sequence[MountInfo]) -> list[str]:
    """Mount points whose top-most mount is an overlay."""
    points = {m.mount_point for m in mounts if m.fstype == "overlay"}
    return sorted(p for p in points if (top := mount_at(mounts, p)) is not None and top.fstype == "overlay")


def infer_upper(upperdir: str | None, mounts: Sequence[MountInfo]) -> str:
    """Upper kind of a live overlay: ``none`` without upper, ``tmpfs`` if its upper is on a tmpfs."""
    if upperdir is None:
        return "none"
    holder = mount_containing(mounts, upperdir) if upperdir.startswith("/") else None
    return "tmpfs" if holder is not None and holder.fstype == "tmpfs" else "persistent"


def upper_tmpfs(upperdir: str | None, mounts: Sequence[MountInfo]) -> MountInfo | None:
    """The tmpfs mount holding ``upperdir`` (None if it is not on a tmpfs)."""
    if upperdir is None or not upperdir.startswith("/"):
        return None
    holder = mount_containing(mounts, upperdir)
    return holder if holder is not None and holder.fstype == "tmpfs" else None


def tmpfs_usage(mount_point: str, st: os.statvfs_result) -> dict[str, Any]:
    """Size and use of a tmpfs from its ``statvfs`` numbers, like ``df``.

    ``percent`` is used / size with one decimal; an unlimited tmpfs
    (``size=0``, no blocks) reports 0.
    """
    size = st.f_blocks * st.f_frsize
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    inodes_used = st.f_files - st.f_ffree
    return {
        "path": mount_point,
        "size": size,
        "used": used,
        "available": st.f_bavail * st.f_frsize,
        "percent": round(100.0 * used / size, 1) if size else 0.0,
        "inodes": st.f_files,
        "inodes_used": inodes_used,
        "inodes_percent": round(100.0 * inodes_used / st.f_files, 1) if st.f_files else 0.0,
    }


def live_options(live: MountInfo, opts: OverlayOptions) -> dict[str, str | None]:
    """Every option of a live overlay but its layers and ``rw``/``ro``: mount flags, then features."""
    result: dict[str, str | None] = {k: None for k in live.mount_options.split(",") if k and k not in ("rw", "ro")}
    result.update({k: v for k, v in opts.options.items() if k != "rw"})
    return result


# ---------------------------------------------------------------------------
# Drift
# ---------------------------------------------------------------------------


def _paths(items: Iterable[str]) -> str:
    return "[%s]" % ", ".join(items)


def _layer_drift(decl: DeclaredOverlay, live: OverlayOptions) -> list[str]:
    want = decl.layers
    out = []
    for key, have, wanted in (
        ("lowerdir", live.lowerdir, want.lowerdir),
        ("datadir", live.datadir, want.datadir),
    ):
        if list(have) != list(wanted):
            out.append("%s differs: live %s, unit %s" % (key, _paths(have), _paths(wanted)))
    for key, have_one, wanted_one in (
        ("upperdir", live.upperdir, want.upperdir),
        ("workdir", live.workdir, want.workdir),
    ):
        if have_one != wanted_one:
            out.append("%s differs: live %s, unit %s" % (key, have_one or "(none)", wanted_one or "(none)"))
    return out


def _option_drift(decl: DeclaredOverlay, live_mount: MountInfo, live: OverlayOptions) -> list[str]:
    out = []
    live_all = set(live_mount.mount_options.split(",")) | set(live.options)
    # Verified flags must agree both ways; an overlay without upper is always read-only.
    have = live_all & set(VERIFIED_FLAGS)
    if live.readonly:
        have.add("ro")
    want = decl.flags & set(VERIFIED_FLAGS)
    if decl.upper == "none":
        have.discard("ro")
        want.discard("ro")
    for flag in sorted(want - have):
        out.append("flag %s is in the unit but not on the live mount" % flag)
    for flag in sorted(have - want):
        what = "read-only" if flag == "ro" else "flag %s" % flag
        out.append("%s on the live mount, not in the unit" % what)
    # Other flags (atime, sync): the kernel shows its defaults, so only what the unit sets counts.
    for flag in sorted(decl.flags - set(VERIFIED_FLAGS) - live_all):
        out.append("flag %s is in the unit but not on the live mount" % flag)
    wanted_features = decl.features
    for key, value in sorted(wanted_features.items()):
        if value is None:
            if key not in live.options:
                out.append("option %s is in the unit but not on the live mount" % key)
        elif key in live.options and live.options[key] != value:
            out.append("option %s=%s in the unit, %s=%s live" % (key, value, key, live.options[key]))
    for key, value in sorted(live.options.items()):
        if key in wanted_features or key in KERNEL_SHOWN or key in ALLOWED_FLAGS or key == "rw":
            continue
        out.append("option %s on the live mount, not in the unit" % (key if value is None else "%s=%s" % (key, value)))
    return out


def _state_drift(decl: DeclaredOverlay, props: Mapping[str, Mapping[str, str]], mounted: bool) -> list[str]:
    out = []
    main = props.get(decl.unit, {})
    if not mounted and main.get("UnitFileState") in ("enabled", "enabled-runtime"):
        out.append("not mounted, but %s is enabled (mounted at boot)" % decl.unit)
    if not mounted and decl.upper == "persistent" and main.get("AssertResult") == "no":
        out.append(
            "%s refused to start: its persistent upper %s is missing (AssertPathIsDirectory=); "
            "restore it, then systemctl start %s" % (decl.unit, decl.layers.upperdir, decl.unit)
        )
    for name in decl.units:
        p = props.get(name, {})
        if p.get("LoadState") in ("error", "bad-setting", "masked"):
            out.append("unit %s is not loadable (LoadState=%s)" % (name, p["LoadState"]))
        if p.get("ActiveState") == "failed":
            out.append("unit %s failed (SubState=%s); see journalctl -u %s" % (name, p.get("SubState"), name))
        if p.get("NeedDaemonReload") == "yes":
            out.append(
                "unit %s changed on disk but not reloaded (NeedDaemonReload=yes); run systemctl daemon-reload" % name
            )
    return out


def drift(
    decl: DeclaredOverlay,
    top: MountInfo | None,
    props: Mapping[str, Mapping[str, str]],
) -> list[str]:
    """Human-readable differences between a managed overlay's units and the live host.

    ``top``: the top-most mount at the overlay's path (None if none);
    ``props``: systemd properties by unit name (empty if unknown).
    """
    out = list(decl.problems)
    mounted = top is not None and top.fstype == "overlay"
    if top is not None and not mounted:
        out.append(
            "%s is mounted with %s (source %s), not the overlay of %s" % (decl.path, top.fstype, top.source, decl.unit)
        )
    if mounted and top is not None:
        live = parse_overlay_options(top.super_options, top.mount_options)
        out += _layer_drift(decl, live)
        out += _option_drift(decl, top, live)
    out += _state_drift(decl, props, mounted)
    return out


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------


@dataclass
class OverlayReport:
    """One entry of ``mount_info``'s ``overlays``; ``layers`` is flattened into it."""

    path: str
    mounted: bool
    managed: bool
    upper: str
    layers: OverlayOptions = field(default_factory=OverlayOptions)
    unit: str | None = None
    unit_path: str | None = None
    active_state: str | None = None
    sub_state: str | None = None
    enabled: bool | None = None
    tmpfs: dict[str, Any] | None = None
    drift: list[str] = field(default_factory=list)
    drift_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The returned entry: ``lowerdir``, ``datadir``, ``upperdir``, ``workdir``, ``options``, ``readonly``
        from ``layers``, the other fields as they are."""
        out = asdict(self)
        out.update(out.pop("layers"))
        return out


def select_paths(
    mounts: Sequence[MountInfo],
    declared: Mapping[str, DeclaredOverlay],
    paths: Sequence[str] | None = None,
    managed_only: bool = False,
) -> list[str]:
    """Sorted mount points to report: live overlays and declared ones, filtered."""
    found = set(declared) if managed_only else set(declared) | set(overlay_mount_points(mounts))
    if paths:
        found &= set(paths)
    return sorted(found)


def mount_unit(path: str) -> str | None:
    """systemd's unit name for a mount point (None if the name would be over 255 bytes)."""
    try:
        return unit_name(path)
    except OverlayError:
        return None


def units_to_show(selected: Sequence[str], declared: Mapping[str, DeclaredOverlay]) -> list[str]:
    """Every unit whose properties the report needs, for one ``systemctl show`` call."""
    names: list[str] = []
    for path in selected:
        decl = declared.get(path)
        own = list(decl.units) if decl is not None else [mount_unit(path)]
        names += [n for n in own if n is not None and n not in names]
    return names


def build_report(
    selected: Sequence[str],
    mounts: Sequence[MountInfo],
    declared: Mapping[str, DeclaredOverlay],
    props: Mapping[str, Mapping[str, str]],
    unit_dir: str,
    statvfs: Callable[[str], os.statvfs_result | None],
    layer_drift: Callable[[DeclaredOverlay, OverlayOptions], list[dict[str, Any]]] | None = None,
) -> list[OverlayReport]:
    """One :class:`OverlayReport` per selected mount point.

    Layers come from the live mount when an overlay is mounted there,
    otherwise from the unit. ``statvfs`` measures a tmpfs mount point
    (``os.statvfs``; an OSError or None means no figures). ``layer_drift``
    gives a mounted managed overlay's upper/work drift ({key, message} each,
    ``_liveguard.layer_drift``).
    """
    result = []
    for path in selected:
        decl = declared.get(path)
        top = mount_at(mounts, path)
        mounted = top is not None and top.fstype == "overlay"
        unit = decl.unit if decl is not None else mount_unit(path)
        p = props.get(unit or "", {})
        if mounted and top is not None:
            layers = parse_overlay_options(top.super_options, top.mount_options)
            options = live_options(top, layers)
        else:
            layers = decl.layers if decl is not None else OverlayOptions()
            options = dict(layers.options)
        entry = OverlayReport(
            path=path,
            mounted=mounted,
            managed=decl is not None,
            upper=decl.upper if decl is not None else infer_upper(layers.upperdir, mounts),
            layers=replace(layers, options=options, readonly=layers.readonly or layers.upperdir is None),
            unit=unit,
        )
        if decl is not None:
            entry.unit_path = os.path.join(unit_dir, decl.unit)
        else:
            entry.unit_path = p.get("FragmentPath") or None
        if p:
            entry.active_state = p.get("ActiveState") or None
            entry.sub_state = p.get("SubState") or None
            entry.enabled = p.get("UnitFileState") in ("enabled", "enabled-runtime")
        if mounted and entry.upper == "tmpfs":
            holder = upper_tmpfs(layers.upperdir, mounts)
            try:
                st = statvfs(holder.mount_point) if holder is not None else None
            except OSError:
                st = None  # unmounted meanwhile, or not reachable: no figures
            if holder is not None and st is not None:
                entry.tmpfs = tmpfs_usage(holder.mount_point, st)
        if decl is not None:
            entry.drift = drift(decl, top, props)
            if mounted and layer_drift is not None:
                found = layer_drift(decl, layers)
                entry.drift += [d["message"] for d in found]
                entry.drift_keys = [d["key"] for d in found]
        result.append(entry)
    return result
