# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""Unpacking an OCI layer tar into a new layer directory, safely.

:func:`import_layer` unpacks a layer tar (plain or gzip) into a hidden
sibling of the layer directory, turning ``.wh.NAME`` into a whiteout
(character device 0/0) and ``.wh..wh..opq`` into
``trusted.overlay.opaque=y``; every member is checked first
(``_image.member_problem``), and no entry is ever created through a symlink
or another non-directory of the archive. Files and directories are fsynced,
the digest and diff_id compared, the record (:data:`RECORD_XATTR`) written,
and only then is the sibling renamed into place. Any refusal removes the
sibling: nothing is left. With ``dry=True`` the same pass reads and checks
the archive and writes nothing (check mode).
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ansible_collections.overlayfs.systemd.plugins.module_utils import _image as img

#: Where a layer directory records the archive it came from (root-only namespace).
RECORD_XATTR = "trusted.overlayfs-systemd.layer"
XATTR_OPAQUE = "trusted.overlay.opaque"

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

#: What import_layer counts, in the order it reports them.
COUNTS = ("entries", "files", "directories", "symlinks", "hardlinks", "specials", "whiteouts", "opaque", "bytes")

_DIR = "dir"
_WHITEOUT = "whiteout"
_OTHER = "other"


@dataclass
class Imported:
    """What one pass over a layer archive found (and, unless dry, made)."""

    digest: str
    diff_id: str
    compression: str
    counts: dict[str, int]
    reserved: list[str] = field(default_factory=list)


def read_record(path: str) -> dict[str, Any] | None:
    """The record of layer directory ``path`` ({'digest', 'diff_id', ...}), or None (no record)."""
    try:
        raw = os.getxattr(path, RECORD_XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT):
            return None
        raise
    return img.parse_layer_record(raw)


def _sniff(fh: BinaryIO) -> str:
    head = fh.read(4)
    fh.seek(0)
    if head[:2] == img.GZIP_MAGIC:
        return "gzip"
    if head == ZSTD_MAGIC:
        raise img.LayerError(
            "the archive is zstd-compressed, which this module cannot read; give the uncompressed tar or gzip",
            "src",
        )
    return "none"


class _Unpacker:
    """Applies checked tar members to a fresh private directory ``root`` (no path through a symlink)."""

    def __init__(self, root: str, *, dry: bool, allow_setuid: bool) -> None:
        self.root = root
        self.dry = dry
        self.allow_setuid = allow_setuid
        self.kinds: dict[str, str] = {"": _DIR}
        self.dir_meta: dict[str, tarfile.TarInfo] = {}
        self.opaque: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.reserved: list[str] = []

    def _real(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def _parents(self, rel: str, name: str) -> None:
        """Create the missing parents of ``rel`` (0755, root); refuse a parent that is not a directory."""
        parts = rel.split("/")[:-1]
        for i in range(len(parts)):
            p = "/".join(parts[: i + 1])
            kind = self.kinds.get(p)
            if kind == _DIR:
                continue
            if kind is not None:
                raise img.LayerError(
                    "member %r goes through %s, which the archive made a %s, not a directory"
                    % (name, p, "whiteout" if kind == _WHITEOUT else "non-directory"),
                    "src",
                )
            if not self.dry:
                os.mkdir(self._real(p), 0o755)
            self.kinds[p] = _DIR

    def _replace(self, rel: str, name: str, new_is_dir: bool) -> bool:
        """Make room for ``rel``; True when an existing directory is kept (a second entry for it)."""
        kind = self.kinds.get(rel)
        if kind is None:
            return False
        if kind == _WHITEOUT:
            raise img.LayerError(
                "the archive holds both %s and its whiteout; a whiteout only hides lower layers" % rel, "src"
            )
        if kind == _DIR:
            if new_is_dir:
                return True
            raise img.LayerError("member %r replaces the directory %s with a non-directory" % (name, rel), "src")
        if not self.dry:
            os.unlink(self._real(rel))
        del self.kinds[rel]
        return False

    def add(self, ti: tarfile.TarInfo, tf: tarfile.TarFile) -> None:
        problem = img.member_problem(ti, allow_setuid=self.allow_setuid)
        if problem is not None:
            raise img.LayerError(problem, "src", hint="the archive was refused; nothing was unpacked")
        rel = img.clean_name(ti.name) or ""
        self.counts["entries"] += 1
        marker = img.whiteout_target(rel)
        if marker is not None:
            self._marker(marker, ti.name)
            return
        if ti.isdir():
            if rel and not self._replace(rel, ti.name, True):
                self._parents(rel, ti.name)
                if not self.dry:
                    os.mkdir(self._real(rel), 0o700)
                self.kinds[rel] = _DIR
                self.counts["directories"] += 1
            self.dir_meta[rel] = ti
            return
        self._replace(rel, ti.name, False)
        self._parents(rel, ti.name)
        if ti.ischr() and ti.devmajor == 0 and ti.devminor == 0:
            self._whiteout(rel)
            return
        dest = self._real(rel)
        if ti.islnk():
            target = img.clean_name(ti.linkname) or ""
            if self.kinds.get(target) != _OTHER:
                raise img.LayerError(
                    "hard link %r -> %r: the target is not a file earlier in the archive" % (ti.name, ti.linkname),
                    "src",
                )
            if not self.dry:
                os.link(self._real(target), dest, follow_symlinks=False)
            self.kinds[rel] = _OTHER
            self.counts["hardlinks"] += 1
            return
        if ti.isreg():
            self._file(ti, tf, dest)
            self.counts["files"] += 1
            self.counts["bytes"] += ti.size
        elif ti.issym():
            if not self.dry:
                os.symlink(ti.linkname, dest)
            self.counts["symlinks"] += 1
        else:  # a FIFO (devices other than 0/0 were refused)
            if not self.dry:
                os.mkfifo(dest, 0o600)
            self.counts["specials"] += 1
        if not self.dry:
            self._meta(ti, dest)
        self.kinds[rel] = _OTHER

    def _marker(self, marker: tuple[str, str], name: str) -> None:
        kind, target = marker
        if kind == "reserved":
            self.reserved.append(target)
            return
        if kind == "opaque":
            if self.kinds.get(target, _DIR) != _DIR:
                raise img.LayerError("opaque marker %r inside a non-directory" % name, "src")
            if target not in self.kinds:
                self._parents(target + "/x", name)
                if not self.dry:
                    os.mkdir(self._real(target), 0o755)
                self.kinds[target] = _DIR
            self.opaque.add(target)
            self.counts["opaque"] += 1
            return
        if target in self.kinds:
            raise img.LayerError(
                "the archive holds both %s and its whiteout; a whiteout only hides lower layers" % target, "src"
            )
        self._parents(target, name)
        self._whiteout(target)

    def _whiteout(self, rel: str) -> None:
        if not self.dry:
            os.mknod(self._real(rel), stat.S_IFCHR | 0o600, os.makedev(0, 0))
        self.kinds[rel] = _WHITEOUT
        self.counts["whiteouts"] += 1

    def _file(self, ti: tarfile.TarInfo, tf: tarfile.TarFile, dest: str) -> None:
        src = tf.extractfile(ti)
        if self.dry:
            if src is not None:
                while src.read(img.CHUNK):
                    pass
            return
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while src is not None:
                buf = src.read(img.CHUNK)
                if not buf:
                    break
                view = memoryview(buf)
                while view:
                    view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _meta(self, ti: tarfile.TarInfo, dest: str) -> None:
        """Owner, xattrs, mode, times: chown first (it clears set-id bits and capabilities)."""
        os.chown(dest, ti.uid, ti.gid, follow_symlinks=False)
        is_link = ti.issym()
        if not is_link:
            for name, value in img.member_xattrs(ti).items():
                os.setxattr(dest, name, value, follow_symlinks=False)
            os.chmod(dest, stat.S_IMODE(ti.mode))
        ns = img.mtime_ns(ti)
        os.utime(dest, ns=(ns, ns), follow_symlinks=False)

    def finish(self) -> None:
        """Directory metadata deepest first, opaque markers, then fsync every directory."""
        if self.dry:
            return
        dirs = sorted((r for r, k in self.kinds.items() if k == _DIR), key=lambda r: (-r.count("/"), r))
        dirs.remove("")
        dirs.append("")
        for rel in dirs:
            real = self._real(rel)
            ti = self.dir_meta.get(rel)
            if ti is not None:
                self._meta(ti, real)
            elif rel:
                os.chmod(real, 0o755)
            if rel in self.opaque:
                os.setxattr(real, XATTR_OPAQUE, b"y", follow_symlinks=False)
        for rel in dirs:
            fsync_dir(self._real(rel))


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def staging_name(path: str) -> str:
    parent, base = os.path.split(path)
    return os.path.join(parent, ".%s.overlayfs-layer-%d" % (base, os.getpid()))


def read_archive(
    fh: BinaryIO, unpacker: _Unpacker | None, *, digest: str | None, diff_id: str | None
) -> tuple[str, str, str]:
    """Stream ``fh`` through ``unpacker`` (None: only hash it); (compression, digest, diff_id) after checking."""
    compression = _sniff(fh)
    raw = img.HashingReader(fh)
    gz: gzip.GzipFile | None = None
    tar_stream: img.HashingReader = raw
    if compression == "gzip":
        gz = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
        tar_stream = img.HashingReader(gz)  # type: ignore[arg-type]
    try:
        with tarfile.open(fileobj=tar_stream, mode="r|") as tf:  # type: ignore[call-overload]
            for ti in tf:
                if unpacker is not None:
                    unpacker.add(ti, tf)
        tar_stream.drain()
        raw.drain()
    except (tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
        raise img.LayerError("src is not a readable layer tar: %s" % exc, "src") from None
    got_digest, got_diff_id = raw.digest, tar_stream.digest
    if digest is not None and digest not in (got_digest, got_diff_id):
        raise img.LayerError(
            "digest mismatch: the archive is %s (diff_id %s), not the expected %s; nothing was imported"
            % (got_digest, got_diff_id, digest),
            "digest",
        )
    if diff_id is not None and diff_id != got_diff_id:
        raise img.LayerError(
            "diff_id mismatch: the uncompressed tar is %s, not the expected %s; nothing was imported"
            % (got_diff_id, diff_id),
            "diff_id",
        )
    return compression, got_digest, got_diff_id


def import_layer(
    src: str,
    path: str,
    *,
    digest: str | None = None,
    diff_id: str | None = None,
    allow_setuid: bool = False,
    dry: bool = False,
) -> Imported:
    """Unpack layer tar ``src`` as the new layer directory ``path`` (must not exist); see the module docstring."""
    stage = staging_name(path)
    if not dry:
        if os.path.lexists(stage):
            shutil.rmtree(stage)
        os.mkdir(stage, 0o700)
    unpacker = _Unpacker(stage, dry=dry, allow_setuid=allow_setuid)
    try:
        with open(src, "rb") as fh:
            compression, got_digest, got_diff_id = read_archive(fh, unpacker, digest=digest, diff_id=diff_id)
        unpacker.finish()
        if not dry:
            os.setxattr(stage, RECORD_XATTR, img.layer_record(got_digest, got_diff_id), follow_symlinks=False)
            fsync_dir(stage)
            os.rename(stage, path)
            fsync_dir(os.path.dirname(path) or "/")
    except BaseException:
        if not dry and os.path.lexists(stage):
            shutil.rmtree(stage)
        raise
    counts = {k: unpacker.counts[k] for k in COUNTS}
    return Imported(got_digest, got_diff_id, compression, counts, sorted(unpacker.reserved))


def identify_archive(src: str) -> tuple[str, str]:
    """(digest, diff_id) of a layer tar, reading it once."""
    with open(src, "rb") as fh:
        dummy, digest, diff_id = read_archive(fh, None, digest=None, diff_id=None)
    return digest, diff_id
