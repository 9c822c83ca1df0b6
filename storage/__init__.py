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


def open_store(url: str, config: object | None = None) -> ArtifactStore:
    """Build the store for `file:///path`, a plain path, or `s3://bucket/prefix`.

    `config` (a Config) carries the S3_* settings; file stores need none, so
    `open_store(url)` keeps working for them.
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        from storage.local import LocalArtifactStore

        path = unquote(parsed.path) if parsed.scheme == "file" else url
        return LocalArtifactStore(path)
    if parsed.scheme == "s3":
        from storage.s3 import S3ArtifactStore  # boto3 is imported only when S3 is used

        return S3ArtifactStore.from_config(url, config)
    raise ValueError(f"unsupported STORAGE_URL scheme: {parsed.scheme!r}")
