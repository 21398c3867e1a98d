# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Unit files: rendering an overlay's units and reading managed units back.

Idempotence compares rendered text with the file on disk, header ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ansible_collections.overlayfs.systemd.plugins.module_utils._errors import OverlayError
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import (
    escape_layer,
    split_unescaped,
    unescape_layer,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import (
    UNIT_NAME_MAX,
    overlay_id,
    persistent_dirs,
    prepare_unit_name,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._spec import (
    ALLOWED_FLAGS,
    FEATURES,
    UNIT_RE,
    OverlaySpec,
)

#: First line of every unit file this collection writes. Comparisons ignore it.
HEADER = "# Managed by overlayfs.systemd - do not edit; changes are overwritten."

HEADER_PREFIX = "# Managed by overlayfs.systemd"


#: Prefix of the bookkeeping keys in [Unit]; systemd ignores X- keys.
X_PREFIX = "X-OverlayfsSystemd-"


INSTALL_BIN = "/usr/bin/install"


TARGET_WANTED_BY = "multi-user.target"


def escape_unit_value(s: str) -> str:
    """Double ``%`` so systemd's specifier expansion leaves the value alone."""
    return s.replace("%", "%%")


def _map_backslash_pairs(text: str, pair: str) -> str:
    """``text`` with every escaped backslash (``\\\\``) replaced by ``pair``; other escapes kept."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            out.append(pair if text[i + 1] == "\\" else text[i : i + 2])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def options_unit_text(options: str) -> str:
    """The ``Options=`` text that systemd turns into the mount option string ``options``.

    systemd's option filter (252 and 257) splits ``Options=`` at unescaped
    commas, turns ``\\\\`` into ``\\`` and joins the words again escaping
    commas: ``\\,`` and ``\\:`` reach mount(8) unchanged, but the kernel's
    ``\\\\`` (a literal backslash in a layer path) must be written twice.
    ``%`` is not doubled here (:func:`escape_unit_value`).
    """
    return _map_backslash_pairs(options, "\\" * 4)


def options_from_unit_text(text: str) -> str:
    """What systemd passes to ``mount -o`` for an ``Options=`` text (the inverse of :func:`options_unit_text`)."""
    return _map_backslash_pairs(text, "\\")


def quote_unit_word(s: str) -> str:
    """Quote one word for ExecStart=/RequiresMountsFor= (quotes, ``\\``, ``%``)."""
    return '"%s"' % escape_unit_value(s.replace("\\", "\\\\").replace('"', '\\"'))


def render_options(spec: OverlaySpec) -> list[str]:
    """The overlay's mount options in a fixed order (unit-file % not yet doubled)."""
    if spec.lower_add:
        opts = ["lowerdir+=" + x for x in spec.lowerdir]
    else:
        opts = ["lowerdir=" + ":".join(escape_layer(x) for x in spec.lowerdir)]
    if spec.upperdir is not None and spec.workdir is not None:
        opts.append("upperdir=" + escape_layer(spec.upperdir))
        opts.append("workdir=" + escape_layer(spec.workdir))
    fm = spec.feature_map
    for name, kind in FEATURES:
        if name not in fm:
            continue
        value = fm[name]
        if kind == "choice":
            opts.append("%s=%s" % (name, value))
        elif kind == "onoff":
            opts.append("%s=%s" % (name, "on" if value else "off"))
        elif value:
            opts.append(name)
    opts.extend(spec.flags)
    return opts


def render_tmpfs_options(spec: OverlaySpec) -> list[str]:
    opts = ["mode=%04o" % spec.tmpfs_mode, "uid=0", "gid=0", "nosuid", "nodev"]
    if spec.tmpfs_size:
        opts.append("size=" + spec.tmpfs_size)
    if spec.tmpfs_nr_inodes:
        opts.append("nr_inodes=" + spec.tmpfs_nr_inodes)
    return opts


def _x_keys(spec: OverlaySpec, role: str) -> list[str]:
    lines = [
        "%sId=%s" % (X_PREFIX, spec.id),
        "%sRole=%s" % (X_PREFIX, role),
        "%sPath=%s" % (X_PREFIX, escape_unit_value(spec.path)),
        "%sUpper=%s" % (X_PREFIX, spec.upper),
    ]
    if spec.upperdir is not None and spec.workdir is not None:
        lines.append("%sUpperdir=%s" % (X_PREFIX, escape_unit_value(spec.upperdir)))
        lines.append("%sWorkdir=%s" % (X_PREFIX, escape_unit_value(spec.workdir)))
    if role == "overlay":
        record = json.dumps(declaration(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        lines.append("%sDeclaration=%s" % (X_PREFIX, escape_unit_value(record)))
    return lines


def declaration(spec: OverlaySpec) -> dict[str, Any]:
    """The normalised declaration the overlay unit records: the mount parameters that render its units again.

    Runtime choices (state, enabled, apply, purge, allow_nonempty_mountpoint)
    are not part of it. For a tmpfs upper the upper root's owner and mode are
    the resolved numeric ones the prepare service uses.
    """
    kinds = dict(FEATURES)
    decl: dict[str, Any] = {
        "path": spec.path,
        "upper": spec.upper,
        "lowerdir": list(spec.lowerdir),
        "description": spec.description,
        "before": list(spec.before),
        "after": list(spec.after),
        "requires": list(spec.requires),
        "wanted_by": list(spec.wanted_by),
        "flags": list(spec.flags),
    }
    decl.update({k: v for k, v in spec.features if not (kinds[k] == "switch" and v is False)})
    if spec.timeout is not None:
        decl["timeout"] = spec.timeout
    if spec.upper == "persistent" and not spec.default_layout:
        decl.update(upperdir=spec.upperdir, workdir=spec.workdir)
    if spec.upper == "tmpfs":
        decl.update(tmpfs_size=spec.tmpfs_size, tmpfs_mode="%04o" % spec.tmpfs_mode)
        if spec.tmpfs_nr_inodes is not None:
            decl["tmpfs_nr_inodes"] = spec.tmpfs_nr_inodes
        if spec.upper_uid is not None and spec.upper_gid is not None and spec.upper_mode is not None:
            decl.update(mode="%04o" % spec.upper_mode, owner=str(spec.upper_uid), group=str(spec.upper_gid))
    return decl


def _section(name: str, lines: Iterable[str]) -> str:
    return "[%s]\n%s\n" % (name, "\n".join(lines))


def render_units(spec: OverlaySpec) -> dict[str, str]:
    """Render every unit file of the overlay: name -> full text (with header)."""
    if spec.upper != "tmpfs" or spec.tmpfs_dir is None or spec.upperdir is None or spec.workdir is None:
        return {spec.unit: _render_overlay_unit(spec)}
    if spec.upper_uid is None or spec.upper_gid is None or spec.upper_mode is None:
        raise OverlayError("the upper root's owner and mode must be resolved before rendering", "mode")
    return {
        spec.unit: _render_overlay_unit(spec),
        spec.tmpfs_unit: _render_tmpfs_unit(spec, spec.tmpfs_dir),
        spec.prepare_unit: _render_prepare_unit(
            spec, spec.upperdir, spec.workdir, (spec.upper_mode, spec.upper_uid, spec.upper_gid)
        ),
    }


def _render_overlay_unit(spec: OverlaySpec) -> str:
    unit_lines = ["Description=%s" % escape_unit_value(spec.description)] + _x_keys(spec, "overlay")
    mounts_for = list(spec.lowerdir)
    if spec.upper == "tmpfs" and spec.tmpfs_dir is not None:
        mounts_for.append(spec.tmpfs_dir)
        unit_lines += ["Requires=%s" % spec.prepare_unit, "After=%s" % spec.prepare_unit]
    elif spec.upperdir is not None and spec.workdir is not None:
        mounts_for += [spec.upperdir, spec.workdir]
    unit_lines.append("RequiresMountsFor=%s" % " ".join(quote_unit_word(x) for x in mounts_for))
    if spec.upper == "persistent" and spec.upperdir is not None:
        # systemd >= 256 would create a missing upperdir, empty, and mount:
        # a lost persistent upper (disk not mounted, directory deleted) must
        # fail the unit instead.
        unit_lines.append("AssertPathIsDirectory=%s" % escape_unit_value(spec.upperdir))
    unit_lines += ["Requires=%s" % u for u in spec.requires]
    unit_lines += ["After=%s" % u for u in spec.after]
    unit_lines.append("Before=local-fs.target")
    unit_lines += ["Before=%s" % u for u in spec.before]
    mount_lines = [
        "What=overlay",
        "Where=%s" % escape_unit_value(spec.path),
        "Type=overlay",
        "Options=%s" % escape_unit_value(options_unit_text(",".join(render_options(spec)))),
    ]
    if spec.timeout is not None:
        mount_lines.append("TimeoutSec=%s" % spec.timeout)
    wanted = ["local-fs.target"] + [u for u in spec.wanted_by if u != "local-fs.target"]
    return "%s\n%s\n%s\n%s" % (
        HEADER,
        _section("Unit", unit_lines),
        _section("Mount", mount_lines),
        _section("Install", ["WantedBy=%s" % u for u in wanted]),
    )


def _helper_unit(spec: OverlaySpec, role: str, what: str, unit_lines: list[str], body: tuple[str, list[str]]) -> str:
    """A unit of the overlay's tmpfs upper: [Unit] with ``what`` described and our keys, then ``body``."""
    description = "Description=%s overlay %s" % (what, escape_unit_value(spec.path))
    unit = _section("Unit", [description] + _x_keys(spec, role) + ["DefaultDependencies=no"] + unit_lines)
    return "%s\n%s\n%s" % (HEADER, unit, _section(*body))


def _render_tmpfs_unit(spec: OverlaySpec, tmpfs_dir: str) -> str:
    options = escape_unit_value(",".join(render_tmpfs_options(spec)))
    return _helper_unit(
        spec,
        "tmpfs",
        "tmpfs upper layer of",
        ["Conflicts=umount.target", "Before=umount.target", "After=swap.target local-fs-pre.target"],
        ("Mount", ["What=tmpfs", "Where=%s" % escape_unit_value(tmpfs_dir), "Type=tmpfs", "Options=%s" % options]),
    )


def _render_prepare_unit(spec: OverlaySpec, upperdir: str, workdir: str, owner: tuple[int, int, int]) -> str:
    """The service creating upper and work on the fresh tmpfs; ``owner`` is (mode, uid, gid) of the upper root."""
    mode, uid, gid = owner
    order = ["BindsTo=%s" % spec.tmpfs_unit, "After=%s" % spec.tmpfs_unit, "Before=%s" % spec.unit]
    service = [
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=%s -d -m %04o -o %d -g %d %s" % (INSTALL_BIN, mode, uid, gid, quote_unit_word(upperdir)),
        "ExecStart=%s -d -m 0700 -o 0 -g 0 %s" % (INSTALL_BIN, quote_unit_word(workdir)),
    ]
    return _helper_unit(
        spec,
        "prepare",
        "Create upper and work directories of",
        order + ["Conflicts=shutdown.target", "Before=shutdown.target"],
        ("Service", service),
    )


def strip_header(text: str | None) -> str | None:
    """Drop our header comment (any version of it) so comparisons ignore it."""
    if text is None:
        return None
    first, nl, rest = text.partition("\n")
    if first.startswith(HEADER_PREFIX):
        return rest
    return text


@dataclass(frozen=True)
class Section:
    """One ``[name]`` section: its body as written and its assignments in file order (``%%`` undone)."""

    lines: tuple[str, ...]
    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class UnitFile:
    """A unit file parsed once (the only unit-file parser of the collection)."""

    sections: Mapping[str, Section]

    def body(self, name: str) -> str | None:
        """The raw body of section ``name`` (None if missing); what comparisons of a section use."""
        sec = self.sections.get(name)
        return None if sec is None else "\n".join(sec.lines)

    def entries(self, name: str) -> tuple[tuple[str, str], ...]:
        """(key, value) assignments of section ``name`` in file order."""
        sec = self.sections.get(name)
        return () if sec is None else sec.entries

    def values(self, name: str) -> dict[str, str]:
        """Assignments of section ``name`` as a dict (the last one wins)."""
        return dict(self.entries(name))

    @property
    def managed(self) -> dict[str, str]:
        """The ``X-OverlayfsSystemd-*`` keys of [Unit], prefix dropped; {} for units we did not write."""
        return {k[len(X_PREFIX) :]: v for k, v in self.entries("Unit") if k.startswith(X_PREFIX)}


def parse_unit(text: str | None) -> UnitFile:
    """Parse unit-file text (None: no file). Comments (``#``, ``;``), blank and broken lines are not assignments."""
    lines: dict[str, list[str]] = {}
    entries: dict[str, list[tuple[str, str]]] = {}
    current: str | None = None
    for line in (text or "").splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            current = s[1:-1]
            lines.setdefault(current, [])
            entries.setdefault(current, [])
            continue
        if current is None:
            continue
        lines[current].append(line)
        if not s or s.startswith(("#", ";")) or "=" not in s:
            continue
        key, dummy, value = s.partition("=")
        entries[current].append((key.strip(), value.strip().replace("%%", "%")))
    return UnitFile({name: Section(tuple(lines[name]), tuple(entries[name])) for name in lines})


def is_managed(text: str | None) -> bool:
    return bool(text) and (bool(parse_unit(text).managed) or (text or "").startswith(HEADER_PREFIX))


def check_target_name(name: str, param: str = "target") -> str:
    """A target unit name such as ``overlays.target``; refuse anything else."""
    if not UNIT_RE.match(name) or not name.endswith(".target") or len(name.encode("utf-8")) > UNIT_NAME_MAX:
        raise OverlayError(
            "%s %r is not a target unit name; give a name such as overlays.target (letters, digits, "
            "':', '_', '.', '-', '@', ending in .target)" % (param, name),
            param,
        )
    return name


def render_target(name: str, mount_units: Sequence[str]) -> str:
    """Render the aggregate target that requires and orders after every overlay's mount unit.

    Services declare ``After=<name>`` and ``Requires=<name>``; the target is
    wanted by multi-user.target (never by local-fs.target, which the overlay
    units already precede, so the target cannot take part in an ordering
    cycle of the early boot).
    """
    lines = ["Description=Overlays declared by overlayfs.systemd", "%sRole=target" % X_PREFIX]
    lines += ["Requires=%s" % u for u in mount_units]
    lines += ["After=%s" % u for u in mount_units]
    return "%s\n%s\n%s" % (HEADER, _section("Unit", lines), _section("Install", ["WantedBy=%s" % TARGET_WANTED_BY]))


def read_declaration(
    text: str, tmpfs_text: str | None = None, prepare_text: str | None = None, enabled: bool = True
) -> dict[str, Any]:
    """The mount module parameters of the managed overlay unit ``text``: its recorded declaration.

    Units written before the declaration was recorded (0.1.0) have no
    ``X-OverlayfsSystemd-Declaration`` key; their parameters are recovered
    from the unit texts (:func:`legacy_params_from_unit`) until the mount
    module rewrites them. ``enabled`` is not in the files; pass what systemd
    reports. Raises OverlayError for a unit this collection did not write.
    """
    keys = parse_unit(text).managed
    if "Declaration" not in keys:
        return legacy_params_from_unit(text, tmpfs_text, prepare_text, enabled)
    if not keys.get("Path") or keys.get("Role") != "overlay":
        raise OverlayError("the unit was not written by overlayfs.systemd (no %sPath key)" % X_PREFIX, "path")
    try:
        decl = json.loads(keys["Declaration"])
    except ValueError:
        decl = None
    if not isinstance(decl, dict) or decl.get("path") != keys["Path"]:
        raise OverlayError(
            "the %sDeclaration key of the unit for %s is damaged; apply the overlay with overlayfs.systemd.mount "
            "again to rewrite it" % (X_PREFIX, keys["Path"]),
            "path",
        )
    return dict(decl, state="mounted", enabled=enabled)


def legacy_params_from_unit(
    text: str, tmpfs_text: str | None = None, prepare_text: str | None = None, enabled: bool = True
) -> dict[str, Any]:
    """The mount module parameters that render a managed overlay unit without a declaration again.

    Only for units written before the declaration was recorded. The inverse
    of :func:`render_units` for those units: the layers and
    upper kind come from the ``X-OverlayfsSystemd-*`` keys and ``Options=``,
    the tmpfs size and inode limit from the tmpfs unit, the upper root's
    owner and mode from the prepare service (tmpfs uppers). ``enabled`` is
    not in the files; pass what systemd reports. Raises OverlayError for a
    unit this collection did not write.
    """
    unit = parse_unit(text)
    keys = unit.managed
    if not keys.get("Path") or keys.get("Role") != "overlay":
        raise OverlayError("the unit was not written by overlayfs.systemd (no %sPath key)" % X_PREFIX, "path")
    path = keys["Path"]
    oid = overlay_id(path)
    upper = keys.get("Upper", "persistent")
    params: dict[str, Any] = {"path": path, "upper": upper, "state": "mounted", "enabled": enabled}
    before, after, requires, wanted_by = [], [], [], []
    for key, value in unit.entries("Unit"):
        if key == "Description":
            params["description"] = value
        elif key == "Requires" and value != prepare_unit_name(oid):
            requires.append(value)
        elif key == "After" and value != prepare_unit_name(oid):
            after.append(value)
        elif key == "Before" and value != "local-fs.target":
            before.append(value)
    flags: list[str] = []
    kinds = dict(FEATURES)
    for key, value in unit.entries("Mount"):
        if key == "TimeoutSec":
            params["timeout"] = value
        if key != "Options":
            continue
        for opt in split_unescaped(options_from_unit_text(value), ","):
            name, eq, val = opt.partition("=")
            if name == "lowerdir":
                params["lowerdir"] = [unescape_layer(x) for x in split_unescaped(val, ":") if x]
            elif name in kinds and kinds[name] == "choice":
                params[name] = val
            elif name in kinds and kinds[name] == "onoff":
                params[name] = val == "on"
            elif name in kinds:
                params[name] = True
            elif name in ALLOWED_FLAGS and not eq:
                flags.append(name)
    params["flags"] = flags
    for key, value in unit.entries("Install"):
        if key == "WantedBy" and value != "local-fs.target":
            wanted_by.append(value)
    params.update(before=before, after=after, requires=requires, wanted_by=wanted_by)
    if upper == "persistent":
        if (keys.get("Upperdir"), keys.get("Workdir")) != persistent_dirs(oid):
            params.update(upperdir=keys.get("Upperdir"), workdir=keys.get("Workdir"))
    if upper == "tmpfs":
        params["tmpfs_size"] = None
        for key, value in parse_unit(tmpfs_text).entries("Mount"):
            if key != "Options":
                continue
            for opt in value.split(","):
                name, dummy, val = opt.partition("=")
                if name == "size":
                    params["tmpfs_size"] = val
                elif name == "nr_inodes":
                    params["tmpfs_nr_inodes"] = val
                elif name == "mode":
                    params["tmpfs_mode"] = val
        for key, value in parse_unit(prepare_text).entries("Service"):
            words = value.split()
            if key == "ExecStart" and "-o" in words and words[-1].strip('"') == keys.get("Upperdir"):
                params.update(
                    mode=words[words.index("-m") + 1],
                    owner=words[words.index("-o") + 1],
                    group=words[words.index("-g") + 1],
                )
    return params
