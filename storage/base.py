"""The artifact store interface: content-addressed blobs, written by staging then committing.

Uploads are staged to a local temporary file while their sha256 and size are computed in one
pass (never held in memory), then committed under `sha256/<2 hex>/<64 hex>`. Committing bytes
that are already stored is a no-op apart from refreshing the blob's modification time, which
`modelreg storage gc` uses as the grace period protecting registrations still in flight.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from storage.errors import ArtifactTooLarge, InvalidKey

COPY_CHUNK = 1024 * 1024
_KEY_RE = re.compile(r"^sha256/([0-9a-f]{2})/([0-9a-f]{64})$")


def key_for(sha256: str) -> str:
    """The content address of a blob with this digest."""
    return f"sha256/{sha256[:2]}/{sha256}"


def check_key(key: str) -> str:
    """Reject anything that is not a well-formed content address (no traversal possible)."""
    match = _KEY_RE.fullmatch(key)
    if match is None or match.group(2)[:2] != match.group(1):
        raise InvalidKey(f"not a content address: {key!r}")
    return key


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    key: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int
    modified_at: datetime


class StagedUpload:
    """A writable temporary file that hashes and counts what is written to it.

    It is also readable after `seek(0)` (the multipart parser rewinds it), and removes its
    file on `discard()` unless a store has taken it over with `commit()`.
    """

    def __init__(self, directory: str, max_bytes: int | None = None) -> None:
        os.makedirs(directory, exist_ok=True)
        fd, self.path = tempfile.mkstemp(prefix="upload-", suffix=".part", dir=directory)
        self._file: BinaryIO = os.fdopen(fd, "w+b")
        self._hash = hashlib.sha256()
        self.size = 0
        self.max_bytes = max_bytes
        self.committed = False

    def write(self, data: bytes) -> int:
        self.size += len(data)
        if self.max_bytes is not None and self.size > self.max_bytes:
            raise ArtifactTooLarge(self.max_bytes)
        self._hash.update(data)
        return self._file.write(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def finish(self) -> None:
        """Flush to disk before the file is moved or uploaded."""
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def close(self) -> None:
        # The multipart parser and FileStorage may call close(); keep the file until
        # discard() or commit() decides its fate.
        self._file.flush()

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> StagedUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


class ArtifactStore(ABC):
    """Where artifact bytes live. Implementations are chosen by URL scheme."""

    url: str

    @abstractmethod
    def staging_dir(self) -> str:
        """A local folder for staged uploads (on the same filesystem as the blobs if local)."""

    def stage(self, max_bytes: int | None = None) -> StagedUpload:
        return StagedUpload(self.staging_dir(), max_bytes)

    @abstractmethod
    def commit(self, staged: StagedUpload) -> StoredArtifact:
        """Store the staged bytes under their content address; idempotent."""

    def put(self, stream: BinaryIO, max_bytes: int | None = None) -> StoredArtifact:
        """Stage a readable stream chunk by chunk and commit it."""
        with self.stage(max_bytes) as staged:
            while chunk := stream.read(COPY_CHUNK):
                staged.write(chunk)
            return self.commit(staged)

    @abstractmethod
    def open(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        """A readable binary stream of the blob, or of `length` bytes from `start` (a ranged
        download); raises ArtifactNotFound."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int:
        """The stored size in bytes; raises ArtifactNotFound."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove a blob; deleting a missing blob is not an error."""

    @abstractmethod
    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every committed blob, for garbage collection."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageUnavailable unless the store answers (readiness probe)."""

    def clean_staging(self, older_than: datetime) -> int:
        """Remove staged files abandoned by crashed requests; returns how many."""
        removed = 0
        directory = self.staging_dir()
        if not os.path.isdir(directory):
            return 0
        cutoff = older_than.timestamp()
        for entry in os.scandir(directory):
            if not entry.name.endswith(".part"):
                continue
            try:  # an upload may be committed (moved away) while we look at it
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


class LimitedReader(io.RawIOBase):
    """At most `length` bytes of a stream (a byte range of a local file)."""

    def __init__(self, raw: BinaryIO, length: int) -> None:
        super().__init__()
        self._raw = raw
        self._left = length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")[: self._left]
        if not view:
            return 0
        count = self._raw.readinto(view)  # type: ignore[attr-defined]
        self._left -= count or 0
        return count or 0

    def close(self) -> None:
        self._raw.close()
        super().close()
