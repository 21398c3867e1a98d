# Copyright (c) overlayfs.systemd contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# PRIVATE module_utils of the overlayfs.systemd collection.
# This file is not a public API: names and signatures may change in any release.
# It runs on the managed host, so it uses the Python standard library only.
"""OCI images as data: digests, layer member rules, reproducible entries, image archives.

- Digests: ``sha256:<hex>`` strings, checked with :func:`parse_digest`;
  :class:`HashingReader` hashes a stream while it is read, so one pass over
  a layer blob gives its ``digest`` (the blob as stored, maybe gzip) and its
  ``diff_id`` (the uncompressed tar), as the OCI image spec defines them.
- Member rules: :func:`member_problem` says why one tar member may not be
  unpacked into a layer directory (absolute or ``..`` names, links leaving
  the layer, device nodes other than whiteouts, set-id bits, overlay xattrs);
  :func:`whiteout_target` maps the OCI ``.wh.`` names to what they mean.
- Reproducible entries: :func:`clamp_mtime` and :func:`normalise_tarinfo`.
- :func:`write_image_archive` writes layer blobs, bottom first, as one tar
  that ``docker load`` accepts (``manifest.json``) and that is also an OCI
  image layout (``oci-layout``, ``index.json``, ``blobs/sha256/``).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import re
import stat
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

#: OCI image layer whiteout markers (image-spec layer.md).
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
#: Names starting with this are reserved for the layer format itself.
RESERVED_PREFIX = ".wh..wh."

#: xattrs that must never come from an archive: the kernel acts on them
#: (redirects, metacopy, whiteouts, opaque markers are made by us from
#: ``.wh.`` names only).
FORBIDDEN_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")
#: File capabilities grant privileges like a set-uid bit does.
CAPABILITY_XATTR = "security.capability"

PAX_XATTR_PREFIX = "SCHILY.xattr."

GZIP_MAGIC = b"\x1f\x8b"

MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_REPO_TAG_RE = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

CHUNK = 1 << 20


class LayerError(ValueError):
    """An archive or a layer cannot be handled as asked.

    ``param`` names the culprit, ``hint`` the fix, ``extra`` result keys for the caller (``users``).
    """

    def __init__(
        self, message: str, param: str | None = None, hint: str | None = None, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.param = param
        self.hint = hint
        self.extra = extra or {}


# ---------------------------------------------------------------------------
# Digests
# ---------------------------------------------------------------------------


def parse_digest(value: str | None, param: str) -> str | None:
    """A ``sha256:<64 hex>`` digest (a bare 64-hex value gets the prefix), or None."""
    if value is None:
        return None
    v = value.strip().lower()
    if re.fullmatch(r"[0-9a-f]{64}", v):
        v = "sha256:" + v
    if not _DIGEST_RE.match(v):
        raise LayerError("%s %r is not a sha256 digest; give it as sha256:<64 hex digits>" % (param, value), param)
    return v


def digest_hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            buf = fh.read(CHUNK)
            if not buf:
                return "sha256:" + h.hexdigest()
            h.update(buf)


class HashingReader(io.RawIOBase):
    """A read-only stream that hashes (sha256) and counts every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        self._hash.update(data)
        self.size += n
        return n

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size) if size is not None and size >= 0 else self._raw.read()
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read (and hash) what is left: tar padding after the end-of-archive blocks counts too."""
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


class HashingWriter:
    """A write-only sink that hashes (sha256) and counts every byte it forwards to ``raw`` (never closes it)."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, b: Any) -> int:
        self._raw.write(b)
        self._hash.update(b)
        n = len(memoryview(b))
        self.size += n
        return n

    def flush(self) -> None:
        self._raw.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


# ---------------------------------------------------------------------------
# Member rules (pure: TarInfo in, reason or meaning out)
# ---------------------------------------------------------------------------


def clean_name(name: str) -> str | None:
    """The member name relative to the layer root (``./a//b/`` -> ``a/b``), or None if it leaves the root.

    Absolute names and any ``..`` component are refused outright (never
    "fixed"), like a careful unpacker does.
    """
    if name.startswith("/") or "\0" in name:
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def symlink_escapes(rel: str, target: str) -> bool:
    """True if symlink ``rel`` -> ``target``, read inside the layer root, points above that root.

    An absolute target means the root of the merged view (the layer root
    here), which is where a layer's absolute links point once stacked.
    """
    if target.startswith("/"):
        return False
    depth = 0
    for p in posixpath.dirname(rel).split("/") + target.split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            depth -= 1
            if depth < 0:
                return True
        else:
            depth += 1
    return False


def whiteout_target(rel: str) -> tuple[str, str] | None:
    """(kind, path) for an OCI marker name: ('opaque', dir) or ('whiteout', name); None for other names.

    ``a/.wh..wh..opq`` makes ``a`` opaque; ``a/.wh.b`` deletes ``a/b``.
    Other ``.wh..wh.`` names are reserved and yield ('reserved', rel).
    """
    parent, dummy, base = rel.rpartition("/")
    if base == OPAQUE_MARKER:
        return ("opaque", parent)
    if base.startswith(RESERVED_PREFIX):
        return ("reserved", rel)
    if base.startswith(WHITEOUT_PREFIX):
        name = base[len(WHITEOUT_PREFIX) :]
        return ("whiteout", "%s/%s" % (parent, name) if parent else name)
    return None


def member_xattrs(ti: tarfile.TarInfo) -> dict[str, bytes]:
    """The ``SCHILY.xattr.*`` PAX records of a member, as raw bytes."""
    out: dict[str, bytes] = {}
    for key, value in (ti.pax_headers or {}).items():
        if key.startswith(PAX_XATTR_PREFIX):
            out[key[len(PAX_XATTR_PREFIX) :]] = value.encode("utf-8", "surrogateescape")
    return out


def member_problem(ti: tarfile.TarInfo, *, allow_setuid: bool, allow_devices: bool = False) -> str | None:
    """Why tar member ``ti`` may not be unpacked into a layer directory, or None.

    Refused: names that leave the layer (absolute, ``..``), hard links whose
    target is not inside the layer, symlinks whose relative target climbs
    above the layer root, device nodes other than the whiteout char 0/0
    (unless ``allow_devices``), set-uid/set-gid files and file capabilities
    (unless ``allow_setuid``), overlay xattrs (the kernel acts on them), member types
    a layer has no use for, and an empty whiteout name.
    """
    rel = clean_name(ti.name)
    if rel is None:
        return "member %r leaves the layer (absolute name or '..')" % ti.name
    if rel == "" and not ti.isdir():
        return "member %r has no name inside the layer" % ti.name
    marker = whiteout_target(rel)
    if marker is not None and marker[0] == "whiteout" and marker[1].rpartition("/")[2] == "":
        return "member %r is a whiteout without a name" % ti.name
    if ti.islnk():
        target = clean_name(ti.linkname)
        if not target:
            return "hard link %r -> %r points out of the layer" % (ti.name, ti.linkname)
    elif ti.issym():
        if symlink_escapes(rel, ti.linkname):
            return "symlink %r -> %r points above the layer root" % (ti.name, ti.linkname)
    elif ti.ischr() or ti.isblk():
        if not (ti.ischr() and ti.devmajor == 0 and ti.devminor == 0) and not allow_devices:
            return "member %r is a %s device %d:%d (only the whiteout char 0:0 is allowed)" % (
                ti.name,
                "character" if ti.ischr() else "block",
                ti.devmajor,
                ti.devminor,
            )
    elif not (ti.isreg() or ti.isdir() or ti.isfifo()):
        return "member %r has tar type %r, which a layer cannot hold" % (ti.name, ti.type)
    if ti.mode & (stat.S_ISUID | stat.S_ISGID) and not ti.isdir() and not allow_setuid:
        return "member %r is set-uid/set-gid (mode %04o); set allow_setuid: true to accept it" % (ti.name, ti.mode)
    for name in member_xattrs(ti):
        if name == CAPABILITY_XATTR and not allow_setuid:
            return "member %r carries file capabilities (%s); set allow_setuid: true to accept it" % (ti.name, name)
        if name.startswith(FORBIDDEN_XATTR_PREFIXES):
            return "member %r carries the overlay xattr %s, which the kernel would act on" % (ti.name, name)
    return None


# ---------------------------------------------------------------------------
# Reproducible entries
# ---------------------------------------------------------------------------


def mtime_ns(ti: tarfile.TarInfo) -> int:
    """A member's mtime in nanoseconds, exact from the PAX ``mtime`` record when there is one."""
    raw = (ti.pax_headers or {}).get("mtime")
    if raw:
        sec, dummy, frac = str(raw).partition(".")
        try:
            neg = sec.startswith("-")
            whole = int(sec or "0")
            part = int((frac + "000000000")[:9]) if frac else 0
            return whole * 1_000_000_000 + (-part if neg else part)
        except ValueError:
            pass
    return int(ti.mtime * 1_000_000_000)


def clamp_mtime(mtime_ns: int, epoch: int | None) -> int:
    """The mtime (ns) to record: ``min(mtime, epoch)`` when an epoch (SOURCE_DATE_EPOCH style) is given."""
    if epoch is None:
        return mtime_ns
    return min(mtime_ns, epoch * 1_000_000_000)


def normalise_tarinfo(ti: tarfile.TarInfo, epoch: int | None) -> tarfile.TarInfo:
    """Make one entry independent of the writer: no user/group names, clamped mtime, sorted PAX records."""
    ti.uname = ti.gname = ""
    headers = dict(ti.pax_headers or {})
    if epoch is not None:
        ns = clamp_mtime(mtime_ns(ti), epoch)
        ti.mtime = ns // 1_000_000_000
        headers["mtime"] = "%d.%09d" % divmod(ns, 1_000_000_000)
        headers.pop("atime", None)
        headers.pop("ctime", None)
    ti.pax_headers = dict(sorted(headers.items()))
    return ti


# ---------------------------------------------------------------------------
# Image archives (docker load, OCI image layout)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerBlob:
    """A layer blob on disk with its identity."""

    path: str
    digest: str
    diff_id: str
    size: int
    gzip: bool = False


def check_repo_tag(value: str, param: str) -> str:
    if not _REPO_TAG_RE.match(value):
        raise LayerError(
            "%s %r is not a repository:tag for docker load (lower-case name, then ':' and a tag)" % (param, value),
            param,
        )
    return value


def image_config(layers: Sequence[LayerBlob], *, created: str, architecture: str, cmd: Sequence[str]) -> bytes:
    """The image configuration JSON (canonical: sorted keys, no spaces)."""
    cfg = {
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {"Cmd": list(cmd)} if cmd else {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": created, "created_by": "overlayfs.systemd"} for dummy in layers],
    }
    return canonical_json(cfg)


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def image_documents(
    layers: Sequence[LayerBlob], *, repo_tag: str, created: str, architecture: str, cmd: Sequence[str] = ()
) -> dict[str, bytes]:
    """Every small file of the archive besides the layer blobs, by archive path."""
    config = image_config(layers, created=created, architecture=architecture, cmd=cmd)
    config_digest = sha256_of(config)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {
                    "mediaType": MEDIA_LAYER_GZIP if layer.gzip else MEDIA_LAYER_TAR,
                    "digest": layer.digest,
                    "size": layer.size,
                }
                for layer in layers
            ],
        }
    )
    manifest_digest = sha256_of(manifest)
    index = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {
                        "io.containerd.image.name": "docker.io/library/" + repo_tag
                        if "/" not in repo_tag.split(":")[0]
                        else repo_tag,
                        "org.opencontainers.image.ref.name": repo_tag.rpartition(":")[2],
                    },
                }
            ],
        }
    )
    docker_manifest = canonical_json(
        [
            {
                "Config": "blobs/sha256/" + digest_hex(config_digest),
                "RepoTags": [repo_tag],
                "Layers": ["blobs/sha256/" + digest_hex(layer.digest) for layer in layers],
            }
        ]
    )
    return {
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
        "blobs/sha256/" + digest_hex(config_digest): config,
        "blobs/sha256/" + digest_hex(manifest_digest): manifest,
        "index.json": index,
        "manifest.json": docker_manifest,
    }


def _entry(name: str, size: int, mode: int = 0o644, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mode = mode
    ti.type = kind
    ti.mtime = 0
    ti.uname = ti.gname = ""
    return ti


def write_image_archive(
    out: BinaryIO,
    layers: Sequence[LayerBlob],
    *,
    repo_tag: str,
    created: str = "1970-01-01T00:00:00Z",
    architecture: str = "amd64",
    cmd: Sequence[str] = (),
) -> dict[str, Any]:
    """Write ``layers`` (bottom first) as one image archive to ``out``; returns the image identity.

    The same content always gives the same bytes: entries sorted, times 0,
    no owner names. A blob used twice (the same digest) is stored once.
    """
    if not layers:
        raise LayerError("an image needs at least one layer", "lowerdir")
    docs = image_documents(layers, repo_tag=repo_tag, created=created, architecture=architecture, cmd=cmd)
    blobs: dict[str, LayerBlob | bytes] = {}
    for layer in layers:
        blobs.setdefault("blobs/sha256/" + digest_hex(layer.digest), layer)
    for name, data in docs.items():
        blobs.setdefault(name, data)
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for d in ("blobs", "blobs/sha256"):
            tf.addfile(_entry(d, 0, 0o755, tarfile.DIRTYPE))
        for name in sorted(blobs):
            item = blobs[name]
            if isinstance(item, bytes):
                tf.addfile(_entry(name, len(item)), io.BytesIO(item))
            else:
                with open(item.path, "rb") as fh:
                    tf.addfile(_entry(name, item.size), fh)
    config_name = json.loads(docs["manifest.json"])[0]["Config"]
    return {
        "image_id": "sha256:" + config_name.rpartition("/")[2],
        "repo_tag": repo_tag,
        "layers": [{"digest": layer.digest, "diff_id": layer.diff_id, "size": layer.size} for layer in layers],
    }


def layer_record(digest: str, diff_id: str, extra: Mapping[str, Any] | None = None) -> bytes:
    """What a layer directory records about the archive it was unpacked from (canonical JSON)."""
    data: dict[str, Any] = {"digest": digest, "diff_id": diff_id}
    data.update(extra or {})
    return canonical_json(data)


def parse_layer_record(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, dict) or not _DIGEST_RE.match(str(data.get("digest", ""))):
        return None
    return data
