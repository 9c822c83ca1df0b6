"""Errors raised by artifact stores. Storage knows nothing of the registry or HTTP."""


class StorageError(Exception):
    """Base class for artifact store failures."""


class ArtifactNotFound(StorageError):
    """No blob under that key."""


class ArtifactTooLarge(StorageError):
    """An upload exceeded the size limit it was staged with."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"artifact exceeds the limit of {limit} bytes")
        self.limit = limit


class InvalidKey(StorageError):
    """A key that is not a content address of this store (never touches the filesystem)."""


class StorageUnavailable(StorageError):
    """The backing store cannot be reached."""
