"""Artifact store on the local filesystem (`file:///path/to/artifacts`)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from storage.base import (
    COPY_CHUNK,
    ArtifactStore,
    BlobInfo,
    LimitedReader,
    StagedUpload,
    StoredArtifact,
    check_key,
    key_for,
)
from storage.errors import ArtifactNotFound, StorageError, StorageUnavailable

log = logging.getLogger(__name__)


class LocalArtifactStore(ArtifactStore):
    """Blobs under `<root>/sha256/ab/<digest>`, staged in `<root>/.staging`.

    Staging inside the root keeps the final `os.replace` on one filesystem, so a blob is
    either absent or complete: a crash mid-upload leaves only a `.part` file in staging.
    A blob already stored under the key is reused only if its bytes still hash to it;
    otherwise (a damaged file) the staged bytes replace it, with the same `os.replace`.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()
        self._staging = self.root / ".staging"

    def staging_dir(self) -> str:
        return str(self._staging)

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):  # defence in depth; check_key already forbids it
            raise StorageError("key escapes the store root")
        return path

    def commit(self, staged: StagedUpload) -> StoredArtifact:
        staged.finish()
        sha = staged.sha256
        key = key_for(sha)
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        holds = _holds(dest, sha, staged.size)
        if holds:
            os.utime(dest)  # refresh the gc grace period for the registration in flight
            staged.discard()
        else:
            if holds is not None:
                log.warning("replacing blob %s: its bytes no longer match their sha256", key)
            os.replace(staged.path, dest)
            staged.committed = True
            _fsync_dir(dest.parent)
        return StoredArtifact(key=key, sha256=sha, size=staged.size)

    def open(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        try:
            file = open(self._path(key), "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            raise ArtifactNotFound(key) from None
        if start:
            file.seek(start)
        return file if length is None else LimitedReader(file, length)  # type: ignore[return-value]

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ArtifactNotFound(key) from None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def iter_blobs(self) -> Iterator[BlobInfo]:
        base = self.root / "sha256"
        if not base.is_dir():
            return
        for prefix in sorted(base.iterdir()):
            if not prefix.is_dir():
                continue
            for blob in sorted(prefix.iterdir()):
                key = f"sha256/{prefix.name}/{blob.name}"
                try:
                    check_key(key)
                    stat = blob.stat()
                except (StorageError, FileNotFoundError):
                    continue
                modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
                yield BlobInfo(key=key, size=stat.st_size, modified_at=modified)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise StorageUnavailable(f"artifact folder is not writable: {self.root.name}")
        except OSError as exc:
            raise StorageUnavailable(f"artifact folder unavailable: {exc.strerror}") from None


def _holds(path: Path, sha256: str, size: int) -> bool | None:
    """Whether the file holds exactly the bytes of this digest and size; None: no file."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            if os.fstat(file.fileno()).st_size != size:
                return False
            while chunk := file.read(COPY_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return None
    return digest.hexdigest() == sha256


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
