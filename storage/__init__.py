"""Where artifact bytes live, chosen by URL scheme."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from storage.base import ArtifactStore, BlobInfo, StagedUpload, StoredArtifact, key_for
from storage.errors import (
    ArtifactNotFound,
    ArtifactTooLarge,
    InvalidKey,
    StorageError,
    StorageUnavailable,
)

__all__ = [
    "ArtifactNotFound",
    "ArtifactStore",
    "ArtifactTooLarge",
    "BlobInfo",
    "InvalidKey",
    "StagedUpload",
    "StorageError",
    "StorageUnavailable",
    "StoredArtifact",
    "key_for",
    "open_store",
]


def open_store(url: str, **options: object) -> ArtifactStore:
    """Build the store for `file:///path` or a plain path (S3 arrives with scale-out)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        from storage.local import LocalArtifactStore

        path = unquote(parsed.path) if parsed.scheme == "file" else url
        return LocalArtifactStore(path)
    raise ValueError(f"unsupported STORAGE_URL scheme: {parsed.scheme!r}")
