"""Reading uploaded zip and tar.gz archives without trusting their layout.

Nothing is extracted to disk under a member's own name: members are read by name into memory
or a caller's file, after every member of the archive was checked. Refused: more members or
more inflated bytes than the zip-bomb settings allow (MAX_ARTIFACT_MEMBERS,
MAX_UNPACKED_ARTIFACT_BYTES, and a bound on the inflation ratio above a floor), absolute
paths, `..` segments, backslashes and NUL in names, and anything that is not a plain file or
a directory (symlinks, hard links, devices, FIFOs).
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO

from registry.errors import InvalidInput

CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_members: int
    max_unpacked_bytes: int
    # Inflated size against the upload's size, once past the floor: real models barely
    # compress, a bomb inflates a thousandfold (the same rule as skops files).
    max_ratio: float = 200.0
    ratio_floor_bytes: int = 64 * 1024**2


class UnsafeArchive(InvalidInput):
    title = "Archive refused"


def refuse(reason: str) -> UnsafeArchive:
    return UnsafeArchive(f"the archive was refused: {reason}", {"artifact": reason})


class Archive:
    """The checked members of an archive (plain files by normalized path) and their bytes."""

    def __init__(self, sizes: dict[str, int], read: dict[str, object]) -> None:
        self.sizes = sizes
        self._openers = read

    def read(self, name: str, max_bytes: int) -> bytes:
        size = self.sizes[name]
        if size > max_bytes:
            raise refuse(f"{name} is {size} bytes (limit {max_bytes})")
        with self._openers[name]() as member:  # type: ignore[operator]
            data = member.read(max_bytes + 1)
        if len(data) != size:
            raise refuse(f"{name} is not the size its entry declares")
        return data

    def copy(self, name: str, target: BinaryIO) -> None:
        with self._openers[name]() as member:  # type: ignore[operator]
            shutil.copyfileobj(member, target, CHUNK)


def member_path(raw: str) -> str | None:
    """The normalized relative path of a member (None for the archive root), or a refusal."""
    if "\\" in raw or "\x00" in raw:
        raise refuse(f"member name {raw[:100]!r} has a backslash or NUL")
    path = PurePosixPath(raw)
    if path.is_absolute():
        raise refuse(f"member {raw[:100]!r} has an absolute path")
    parts = [p for p in path.parts if p != "."]
    if ".." in parts:
        raise refuse(f"member {raw[:100]!r} leaves the archive (path traversal)")
    return "/".join(parts) or None


def _check_totals(count: int, total: int, stored_size: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise refuse(f"more than {limits.max_members} members")
    if total > limits.max_unpacked_bytes:
        raise refuse(f"unpacks to more than {limits.max_unpacked_bytes} bytes")
    if total > limits.ratio_floor_bytes and total > limits.max_ratio * max(stored_size, 1):
        raise refuse(f"inflates more than {limits.max_ratio:g} times (a compression bomb)")


@contextmanager
def open_archive(path: str, stored_size: int, limits: ArchiveLimits) -> Iterator[Archive]:
    """A zip (by its magic number) or else a gzip-compressed tar, every member checked."""
    with open(path, "rb") as file:
        magic = file.read(4)
    if magic.startswith(b"PK\x03\x04") or magic.startswith(b"PK\x05\x06"):
        with _zip(path, stored_size, limits) as archive:
            yield archive
    elif magic.startswith(b"\x1f\x8b"):
        with _tar_gz(path, stored_size, limits) as archive:
            yield archive
    else:
        raise refuse("not a zip or tar.gz file")


@contextmanager
def _zip(path: str, stored_size: int, limits: ArchiveLimits) -> Iterator[Archive]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise refuse(f"not a readable zip ({error})") from None
    with archive:
        members = archive.infolist()
        # zipfile never inflates a member past its declared size (it checks length and CRC),
        # so the declared sizes bound what reading costs.
        _check_totals(len(members), sum(m.file_size for m in members), stored_size, limits)
        sizes: dict[str, int] = {}
        openers: dict[str, object] = {}
        for info in members:
            name = member_path(info.filename)
            mode = info.external_attr >> 16
            if info.is_dir() or name is None:
                continue
            if stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits: a plain file
                raise refuse(f"member {name[:100]!r} is not a plain file (a link or device)")
            if name in sizes:
                raise refuse(f"member {name[:100]!r} appears twice")
            sizes[name] = info.file_size
            openers[name] = lambda info=info: _zip_member(archive, info)
        yield Archive(sizes, openers)


@contextmanager
def _zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[BinaryIO]:
    try:
        with archive.open(info) as member:
            yield member  # type: ignore[misc]
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as error:
        raise refuse(f"member {info.filename[:100]!r} is unreadable ({error})") from None


@contextmanager
def _tar_gz(path: str, stored_size: int, limits: ArchiveLimits) -> Iterator[Archive]:
    # Inflate once into a bounded temporary file: tarfile then reads headers (pax headers
    # included) from at most MAX_UNPACKED_ARTIFACT_BYTES, and random access costs no
    # inflating again.
    ratio_bound = max(limits.ratio_floor_bytes, int(limits.max_ratio * max(stored_size, 1)))
    inflate_limit = min(limits.max_unpacked_bytes, ratio_bound)
    with tempfile.TemporaryFile(prefix="unpack-", dir=os.path.dirname(path) or None) as tar_file:
        try:
            with gzip.open(path, "rb") as source:
                copied = 0
                while chunk := source.read(CHUNK):
                    copied += len(chunk)
                    if copied > inflate_limit:
                        raise refuse(f"unpacks to more than {inflate_limit} bytes")
                    tar_file.write(chunk)
        except (OSError, EOFError, zlib.error) as error:
            raise refuse(f"not a readable gzip file ({error})") from None
        tar_file.seek(0)
        try:
            archive = tarfile.open(fileobj=tar_file, mode="r:")  # noqa: SIM115 - with below
            members = archive.getmembers()
        except (tarfile.TarError, OSError, EOFError) as error:
            raise refuse(f"not a readable tar file ({error})") from None
        with archive:
            _check_totals(len(members), sum(m.size for m in members), stored_size, limits)
            sizes: dict[str, int] = {}
            openers: dict[str, object] = {}
            for info in members:
                name = member_path(info.name)
                if info.isdir() or name is None:
                    continue
                if not info.isreg():
                    raise refuse(f"member {name[:100]!r} is not a plain file (a link or device)")
                if name in sizes:
                    raise refuse(f"member {name[:100]!r} appears twice")
                sizes[name] = info.size
                openers[name] = lambda info=info: _tar_member(archive, info)
            yield Archive(sizes, openers)


@contextmanager
def _tar_member(archive: tarfile.TarFile, info: tarfile.TarInfo) -> Iterator[BinaryIO]:
    member = archive.extractfile(info)
    if member is None:
        raise refuse(f"member {info.name[:100]!r} is not a plain file")
    with member:
        yield member  # type: ignore[misc]
