"""Artifact store on S3 or an S3-compatible server (`s3://bucket/optional/prefix`).

Same contract as the local store: uploads are staged to a local temporary file (hashed in one
pass), then committed under `<prefix>/sha256/<2 hex>/<64 hex>`. S3 only makes an object
visible once its upload completes, and boto3's managed transfer aborts a failed multipart
upload, so a blob is either absent or complete. A process killed in the middle of a multipart
upload cannot abort it: its parts stay stored (invisible, but billed) until `clean_staging`
(run by `modelreg storage gc`) aborts uploads begun before the staging expiry.
Committing bytes already stored copies the object onto itself, which refreshes its
LastModified: `modelreg storage gc` reads that as the grace period protecting a registration
still in flight. The stored object is reused only after its bytes are read back and hash to
its key; a damaged or replaced object is uploaded over (a PUT replaces an object whole).

Every failure to reach the endpoint, or a refusal of the credentials, is a
`StorageUnavailable` whose message never includes the secret.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO, TypeVar
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    NoCredentialsError,
    PartialCredentialsError,
)

from storage.base import ArtifactStore, BlobInfo, StagedUpload, StoredArtifact, check_key, key_for
from storage.errors import ArtifactNotFound, InvalidKey, StorageError, StorageUnavailable

log = logging.getLogger(__name__)

MB = 1024 * 1024
# Above this a blob is uploaded in parts: memory stays flat whatever the artifact's size.
MULTIPART_THRESHOLD = 16 * MB
MULTIPART_CHUNKSIZE = 8 * MB
# CopyObject is refused above 5 GiB; bigger blobs are refreshed with a multipart copy.
COPY_OBJECT_LIMIT = 5 * 1024 * MB
TOUCH_METADATA = "modelreg-touched"
SHA256_METADATA = "sha256"
CONTENT_TYPE = "application/octet-stream"
KEY_LENGTH = len("sha256/ab/") + 64

_CREDENTIAL_CODES = {
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
    "401",
    "403",
}
_MISSING_CODES = {"NoSuchKey", "NotFound", "404"}
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"}

# The settings `open_store(url, config=...)` reads, with their defaults.
SETTINGS: dict[str, Any] = {
    "S3_ENDPOINT_URL": "",
    "S3_REGION": "us-east-1",
    "S3_ACCESS_KEY_ID": "",
    "S3_SECRET_ACCESS_KEY": "",
    "S3_ADDRESSING_STYLE": "path",
    "S3_MAX_POOL_CONNECTIONS": 20,
    "S3_CONNECT_TIMEOUT": 3.0,
    "S3_READ_TIMEOUT": 30.0,
    "S3_RETRIES": 3,
    "S3_STAGING_DIR": "",
}

T = TypeVar("T")


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> ("bucket", "a/b/"); the prefix is empty or ends with a slash."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"expected s3://bucket/optional/prefix, got {url!r}")
    if parsed.query or parsed.fragment or parsed.params:
        raise ValueError("an s3:// STORAGE_URL takes no query string or fragment")
    parts = [part for part in parsed.path.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise ValueError("an s3:// STORAGE_URL prefix cannot contain '.' or '..'")
    prefix = "/".join(parts)
    return parsed.netloc, f"{prefix}/" if prefix else ""


class S3ArtifactStore(ArtifactStore):
    """Blobs as objects `<prefix>sha256/ab/<digest>` in one bucket, staged in a local folder."""

    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str = "",
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        addressing_style: str = "path",
        max_pool_connections: int = 20,
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
        retries: int = 3,
        staging_dir: str = "",
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunksize: int = MULTIPART_CHUNKSIZE,
        copy_object_limit: int = COPY_OBJECT_LIMIT,
    ) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}"
        self.endpoint_url = endpoint_url or None
        if bool(access_key_id) != bool(secret_access_key):
            raise ValueError("S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together")
        if addressing_style not in ("path", "virtual", "auto"):
            raise ValueError(
                f"S3_ADDRESSING_STYLE must be path, virtual or auto, not {addressing_style!r}"
            )
        self._staging = staging_dir or os.path.join(tempfile.gettempdir(), "modelreg-staging")
        self._copy_object_limit = copy_object_limit
        boto_config = BotoConfig(
            region_name=region or None,
            s3={"addressing_style": addressing_style},
            max_pool_connections=max_pool_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": retries, "mode": "standard"},
        )
        # A private session: boto3's default one is not safe to share between threads.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            region_name=region or None,
        )
        self.client = session.client("s3", endpoint_url=self.endpoint_url, config=boto_config)
        # Part uploads share the client's connection pool, so stay below its size.
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max(1, min(4, max_pool_connections)),
            use_threads=True,
        )

    @classmethod
    def from_config(cls, url: str, config: object | None = None) -> S3ArtifactStore:
        """Build from the S3_* attributes of a Config (defaults for any it lacks)."""
        value = {name: getattr(config, name, default) for name, default in SETTINGS.items()}
        return cls(
            url,
            endpoint_url=value["S3_ENDPOINT_URL"],
            region=value["S3_REGION"],
            access_key_id=value["S3_ACCESS_KEY_ID"],
            secret_access_key=value["S3_SECRET_ACCESS_KEY"],
            addressing_style=value["S3_ADDRESSING_STYLE"],
            max_pool_connections=int(value["S3_MAX_POOL_CONNECTIONS"]),
            connect_timeout=float(value["S3_CONNECT_TIMEOUT"]),
            read_timeout=float(value["S3_READ_TIMEOUT"]),
            retries=int(value["S3_RETRIES"]),
            staging_dir=value["S3_STAGING_DIR"],
        )

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.url!r}, endpoint={self.endpoint_url or 'aws'!r})"

    # ---- keys --------------------------------------------------------------------------

    def staging_dir(self) -> str:
        return self._staging

    def _object_key(self, key: str) -> str:
        return self.prefix + strict_key(key)

    def _call(self, action: str, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except (ClientError, BotoCoreError, OSError) as error:
            raise self._translate(action, error) from error

    def _translate(self, action: str, error: BaseException) -> StorageError:
        return translate_error(action, error, self.bucket)

    # ---- the interface -----------------------------------------------------------------

    def commit(self, staged: StagedUpload) -> StoredArtifact:
        staged.finish()
        sha = staged.sha256
        key = key_for(sha)
        object_key = self._object_key(key)
        head = self._head(object_key, "commit")
        same = (
            head is not None
            and head["ContentLength"] == staged.size
            and head.get("Metadata", {}).get(SHA256_METADATA, sha) == sha
            and self._stored_sha256(object_key) == sha
        )
        if head is not None and not same:
            log.warning("replacing blob %s: its bytes no longer match their sha256", key)
        # If the blob vanished before the copy (a gc sweep), upload it again.
        if not (same and self._touch(object_key, sha, staged.size)):
            self._upload(staged.path, object_key, sha)
        staged.discard()
        return StoredArtifact(key=key, sha256=sha, size=staged.size)

    def _upload(self, path: str, object_key: str, sha: str) -> None:
        """Managed transfer: one PUT below the threshold, else parts, aborted on failure."""
        extra = {
            "ChecksumAlgorithm": "SHA256",
            "ContentType": CONTENT_TYPE,
            "Metadata": {SHA256_METADATA: sha},
        }

        def upload() -> None:
            with create_transfer_manager(self.client, self._transfer) as manager:
                manager.upload(path, self.bucket, object_key, extra_args=extra).result()

        self._call("upload", upload)

    def _touch(self, object_key: str, sha: str, size: int) -> bool:
        """Copy the object onto itself so its LastModified restarts the gc grace period.

        Returns False if the object is gone (the caller uploads it again).
        """
        metadata = {SHA256_METADATA: sha, TOUCH_METADATA: datetime.now(UTC).isoformat()}
        source = {"Bucket": self.bucket, "Key": object_key}
        extra = {
            "MetadataDirective": "REPLACE",
            "Metadata": metadata,
            "ContentType": CONTENT_TYPE,
            "ChecksumAlgorithm": "SHA256",
        }

        def copy() -> None:
            if size <= self._copy_object_limit:
                self.client.copy_object(
                    Bucket=self.bucket, Key=object_key, CopySource=source, **extra
                )
                return
            # CopyObject is limited to 5 GiB: bigger blobs take a multipart copy.
            config = TransferConfig(
                multipart_threshold=self._copy_object_limit,
                multipart_chunksize=max(self._transfer.multipart_chunksize, 64 * MB),
                max_concurrency=self._transfer.max_request_concurrency,
            )
            with create_transfer_manager(self.client, config) as manager:
                manager.copy(source, self.bucket, object_key, extra_args=extra).result()

        try:
            copy()
        except ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                return False
            raise self._translate("refresh", error) from error
        except (BotoCoreError, OSError) as error:
            raise self._translate("refresh", error) from error
        return True

    def _stored_sha256(self, object_key: str) -> str | None:
        """The sha256 of the object's bytes as read back now; None if it is gone."""
        digest = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=object_key)["Body"]
        except ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                return None
            raise self._translate("verify", error) from error
        except (BotoCoreError, OSError) as error:
            raise self._translate("verify", error) from error
        with S3Reader(body, self.bucket) as stream:
            while chunk := stream.read(MULTIPART_CHUNKSIZE):
                digest.update(chunk)
        return digest.hexdigest()

    def _head(self, object_key: str, action: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                return None
            raise self._translate(action, error) from error
        except (BotoCoreError, OSError) as error:
            raise self._translate(action, error) from error

    def open(self, key: str, start: int = 0, length: int | None = None) -> BinaryIO:
        object_key = self._object_key(key)
        extra: dict[str, str] = {}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            extra["Range"] = f"bytes={start}-{end}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=object_key, **extra)
        except ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                raise ArtifactNotFound(key) from None
            raise self._translate("download", error) from error
        except (BotoCoreError, OSError) as error:
            raise self._translate("download", error) from error
        return S3Reader(response["Body"], self.bucket)

    def exists(self, key: str) -> bool:
        return self._head(self._object_key(key), "lookup") is not None

    def size(self, key: str) -> int:
        head = self._head(self._object_key(key), "lookup")
        if head is None:
            raise ArtifactNotFound(key)
        return int(head["ContentLength"])

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=object_key)
        except ClientError as error:
            if _error_code(error) in _MISSING_CODES:
                return
            raise self._translate("delete", error) from error
        except (BotoCoreError, OSError) as error:
            raise self._translate("delete", error) from error

    def iter_blobs(self) -> Iterator[BlobInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=f"{self.prefix}sha256/")
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    key = item["Key"][len(self.prefix) :]
                    try:
                        strict_key(key)
                    except InvalidKey:
                        continue
                    modified = item["LastModified"].astimezone(UTC)
                    yield BlobInfo(key=key, size=int(item["Size"]), modified_at=modified)
        except (ClientError, BotoCoreError, OSError) as error:
            raise self._translate("listing", error) from error

    def check(self) -> None:
        self._call("readiness check", lambda: self.client.head_bucket(Bucket=self.bucket))

    def clean_staging(self, older_than: datetime) -> int:
        """Local staged files, then multipart uploads under the prefix begun before
        `older_than` and never completed (their server died mid-upload): aborted, which frees
        their parts. Credentials that may not list or abort them only skip that part."""
        removed = super().clean_staging(older_than)
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}sha256/"
        )
        try:
            for page in pages:
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"] >= older_than:
                        continue  # may still be in progress
                    try:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                    except ClientError as error:
                        if _error_code(error) in {"NoSuchUpload", *_MISSING_CODES}:
                            continue  # completed or aborted meanwhile
                        raise
                    removed += 1
        except ClientError as error:
            if _error_code(error) in _CREDENTIAL_CODES or _status(error) in (401, 403):
                log.warning(
                    "storage gc: not allowed to list or abort incomplete multipart uploads in "
                    "%r (%s); leaving them to a bucket lifecycle rule",
                    self.bucket,
                    _error_code(error),
                )
                return removed
            raise self._translate("cleaning abandoned uploads", error) from error
        except (BotoCoreError, OSError) as error:
            raise self._translate("cleaning abandoned uploads", error) from error
        return removed


class S3Reader(io.RawIOBase):
    """A GetObject body as a closeable, non-seekable binary stream.

    `read(n)` returns at most n bytes straight from the socket; failures while streaming
    (the endpoint going away mid-download) become StorageUnavailable like any other.
    """

    def __init__(self, body: Any, bucket: str) -> None:
        super().__init__()
        self._body = body
        self._bucket = bucket

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        try:
            if size is None or size < 0:
                return self._body.read()
            return self._body.read(size)
        except (ClientError, BotoCoreError, OSError) as error:
            raise translate_error("download", error, self._bucket) from error

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._body.close()
            finally:
                super().close()


def strict_key(key: str) -> str:
    """check_key, plus an exact length: its `$` also matches before a trailing newline."""
    if len(key) != KEY_LENGTH:
        raise InvalidKey(f"not a content address: {key!r}")
    return check_key(key)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "") or _status(error))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def translate_error(action: str, error: BaseException, bucket: str) -> StorageError:
    """Map a boto/network failure to a storage error with a short message and no secret."""
    if isinstance(error, ClientError):
        code, status = _error_code(error), _status(error)
        if code in _CREDENTIAL_CODES or status in (401, 403):
            return StorageUnavailable(
                f"S3 refused the credentials during {action} ({code}): check "
                "S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY and the bucket policy"
            )
        if code == "NoSuchBucket" or (action == "readiness check" and status == 404):
            return StorageUnavailable(f"S3 bucket {bucket!r} does not exist")
        if status >= 500 or code in _TRANSIENT_CODES:
            return StorageUnavailable(f"S3 failed during {action} ({code}, HTTP {status})")
        return StorageError(f"S3 rejected the {action} ({code}, HTTP {status})")
    if isinstance(error, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return StorageUnavailable(f"no usable S3 credentials for {action} ({type(error).__name__})")
    if isinstance(error, ChecksumError | FlexibleChecksumError):
        return StorageError(f"S3 {action} failed its checksum")
    name = type(error).__name__
    return StorageUnavailable(f"S3 endpoint unreachable during {action} ({name})")
