# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Layer directories made from OCI layer tars: the layer module's states, users, removal, images.

- :func:`ensure_present` imports a layer tar (``_unpack.import_layer``) unless
  the directory already records that archive; :func:`ensure_absent` removes
  a layer no overlay uses. They are the module's two states.
- :func:`read_record` reads what a layer directory holds (its root carries
  the ``trusted.overlayfs-systemd.layer`` xattr).
- :func:`layer_users` names the managed units and the live overlays whose
  layers overlap a directory.
- :func:`remove_layer` moves a layer aside and deletes it.
- :func:`write_stack_image` writes layer directories, bottom first, as an
  image archive for ``docker load`` (each one through
  ``_oci.write_oci_layer``, so whiteouts and opaque directories become
  ``.wh.`` entries).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from ansible_collections.overlayfs.systemd.plugins.module_utils import _host, _names
from ansible_collections.overlayfs.systemd.plugins.module_utils import _image as img
from ansible_collections.overlayfs.systemd.plugins.module_utils._info import declared_overlays
from ansible_collections.overlayfs.systemd.plugins.module_utils._mountinfo import (
    MountInfo,
    mount_containing,
    parse_overlay_options,
)
from ansible_collections.overlayfs.systemd.plugins.module_utils._names import is_within
from ansible_collections.overlayfs.systemd.plugins.module_utils._oci import write_oci_layer
from ansible_collections.overlayfs.systemd.plugins.module_utils._unpack import (
    RECORD_XATTR,
    identify_archive,
    import_layer,
    read_record,
)

# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


def record_matches(record: Mapping[str, Any], digest: str | None, diff_id: str | None) -> bool:
    """The recorded layer is the one asked for: every given identity is equal."""
    if digest is not None and record.get("digest") != digest and record.get("diff_id") != digest:
        return False
    return diff_id is None or record.get("diff_id") == diff_id


# ---------------------------------------------------------------------------
# Where a layer may live, who uses it
# ---------------------------------------------------------------------------


def placement_problem(path: str, mounts: Sequence[MountInfo]) -> str | None:
    """Why ``path`` cannot hold an imported layer, or None."""
    if path == "/":
        return "path / cannot be a layer directory"
    m = mount_containing(mounts, os.path.dirname(path))
    if m is not None and m.fstype == "overlay":
        return (
            "path %s is on an overlayfs (mounted at %s), which cannot hold whiteouts or opaque markers; "
            "put layers on another file system (ext4, xfs, btrfs, tmpfs, a volume)" % (path, m.mount_point)
        )
    return None


def _overlaps(a: str, b: str) -> bool:
    return is_within(a, b) or is_within(b, a)


def layer_users(path: str, unit_files: Mapping[str, str], mounts: Sequence[MountInfo]) -> list[dict[str, str]]:
    """Managed overlay units and live overlays that use ``path`` (or a directory overlapping it)."""
    users: list[dict[str, str]] = []
    for point, decl in sorted(declared_overlays(unit_files).items()):
        role = _role(path, decl.layers.lowerdir, decl.layers.upperdir, decl.layers.workdir)
        if role:
            users.append({"unit": decl.unit, "path": point, "as": role, "source": "unit"})
    for m in mounts:
        if m.fstype != "overlay":
            continue
        opts = parse_overlay_options(m.super_options, m.mount_options)
        role = _role(path, opts.lowerdir, opts.upperdir, opts.workdir)
        if role:
            users.append({"unit": "", "path": m.mount_point, "as": role, "source": "mountinfo"})
    return users


def _role(path: str, lowers: Sequence[str], upperdir: str | None, workdir: str | None) -> str:
    if any(_overlaps(path, d) for d in lowers):
        return "lowerdir"
    if upperdir and _overlaps(path, upperdir):
        return "upperdir"
    if workdir and _overlaps(path, workdir):
        return "workdir"
    return ""


def remove_layer(path: str) -> None:
    """Move ``path`` to a hidden sibling (so it never looks half there), then delete it."""
    aside = os.path.join(os.path.dirname(path), ".%s.overlayfs-removed-%d" % (os.path.basename(path), os.getpid()))
    os.rename(path, aside)
    shutil.rmtree(aside)


# ---------------------------------------------------------------------------
# The two states (the module's main() reports what they return)
# ---------------------------------------------------------------------------


@dataclass
class Step:
    """What one run did (or, in check mode, would do)."""

    changed: bool
    result: dict[str, Any]
    before: str = ""
    after: str = ""


def record_text(record: Mapping[str, Any] | None) -> str:
    """The record as diff text, one ``key: value`` line each, sorted."""
    if not record:
        return ""
    return "".join("%s: %s\n" % (k, record[k]) for k in sorted(record))


def _check_parent(path: str, check_mode: bool) -> None:
    parent = os.path.dirname(path)
    existing = parent
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if os.path.realpath(existing) != existing or not os.path.isdir(existing):
        raise img.LayerError(
            "path %s: %s is a symlink or not a directory; give the real path of the layer directory" % (path, existing),
            "path",
        )
    if existing != parent and not check_mode:
        os.makedirs(parent, 0o755)


def ensure_present(
    path: str, src: str, *, digest: str | None, diff_id: str | None, allow_setuid: bool, check_mode: bool
) -> Step:
    """Import ``src`` at ``path`` unless ``path`` already holds that archive."""
    if os.path.lexists(path):
        record = read_record(path)
        if record is None:
            raise img.LayerError(
                "path %s exists and was not imported by overlayfs.systemd.layer (no %s record); "
                "choose a new path for the layer" % (path, RECORD_XATTR),
                "path",
            )
        wanted_digest, wanted_diff_id = digest, diff_id
        if digest is None and diff_id is None:
            wanted_digest, dummy = identify_archive(src)
        if record_matches(record, wanted_digest, wanted_diff_id):
            return Step(False, dict(record))
        raise img.LayerError(
            "path %s already holds the layer %s, not %s; a layer never changes in place (an overlay may use it): "
            "import the new one at another path and switch lowerdir to it, or remove this one with state=absent"
            % (path, record.get("digest"), wanted_digest or wanted_diff_id),
            "path",
        )
    problem = placement_problem(path, _host.read_mounts())
    if problem is not None:
        raise img.LayerError(problem, "path")
    _check_parent(path, check_mode)
    got = import_layer(src, path, digest=digest, diff_id=diff_id, allow_setuid=allow_setuid, dry=check_mode)
    record = {"digest": got.digest, "diff_id": got.diff_id}
    result = dict(record, compression=got.compression, counts=got.counts, reserved=got.reserved)
    shown = dict(record, **{"counts.%s" % k: v for k, v in got.counts.items()})
    return Step(True, result, before="", after=record_text(shown))


def ensure_absent(path: str, *, check_mode: bool) -> Step:
    """Remove layer ``path`` when nothing uses it; name the users otherwise."""
    if not os.path.lexists(path):
        return Step(False, {"users": []})
    record = read_record(path)
    if record is None:
        raise img.LayerError(
            "path %s was not imported by overlayfs.systemd.layer (no %s record); nothing was removed"
            % (path, RECORD_XATTR),
            "path",
        )
    users = layer_users(path, _host.unit_files(_names.ROOTS.unit_dir), _host.read_mounts())
    if users:
        names = ", ".join("%s (%s, %s)" % (u["unit"] or "mounted at " + u["path"], u["path"], u["as"]) for u in users)
        raise img.LayerError(
            "layer %s is in use by %s; switch those overlays to other layers first, nothing was removed"
            % (path, names),
            "path",
            extra={"users": users, "digest": record.get("digest"), "diff_id": record.get("diff_id")},
        )
    if not check_mode:
        remove_layer(path)
    return Step(True, dict(record, users=[]), before=record_text(record), after="")


# ---------------------------------------------------------------------------
# A stack of layer directories as an image archive
# ---------------------------------------------------------------------------


def blob_from_dir(
    layer_dir: str, out_path: str, *, compression: str = "none", epoch: int | None = None
) -> img.LayerBlob:
    """Write layer directory ``layer_dir`` (whiteouts, opaque dirs) as an OCI layer tar at ``out_path``."""
    with open(out_path, "xb") as fh:
        raw = img.HashingWriter(fh)
        stats = write_oci_layer(layer_dir, raw, compression, epoch)  # type: ignore[arg-type]
        os.fsync(fh.fileno())
    return img.LayerBlob(out_path, raw.digest, stats.diff_id, raw.size, gzip=compression == "gzip")


def write_stack_image(
    layer_dirs: Sequence[str],
    out: BinaryIO,
    scratch: str,
    *,
    repo_tag: str,
    compression: str = "none",
    epoch: int | None = None,
) -> dict[str, Any]:
    """Write ``layer_dirs`` (bottom first: the lowest lower ... the upper) as one image archive to ``out``.

    Each directory becomes one layer blob in ``scratch`` (removed afterwards).
    """
    blobs = []
    try:
        for i, d in enumerate(layer_dirs):
            out_path = os.path.join(scratch, "layer-%03d.tar" % i)
            blobs.append(blob_from_dir(d, out_path, compression=compression, epoch=epoch))
        return img.write_image_archive(out, blobs, repo_tag=repo_tag)
    finally:
        for b in blobs:
            os.unlink(b.path)
