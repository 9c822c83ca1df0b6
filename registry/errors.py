"""Domain errors. They carry no HTTP status: `registry.problems` maps each class to one."""

from __future__ import annotations

from typing import Any


class ModelregError(Exception):
    """Base class: `detail` is safe to show to a client; `errors` names fields and reasons."""

    title = "Error"

    def __init__(self, detail: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class NotFound(ModelregError):
    title = "Not found"


class AlreadyExists(ModelregError):
    title = "Already exists"


class Conflict(ModelregError):
    title = "Conflict"


class InvalidInput(ModelregError):
    """The request is well-formed but its content is not acceptable (422)."""

    title = "Invalid input"


class MalformedRequest(ModelregError):
    """The request cannot be parsed at all (400)."""

    title = "Malformed request"


class TooLarge(ModelregError):
    title = "Payload too large"


class UnsupportedMediaType(ModelregError):
    title = "Unsupported media type"


class PromotionRefused(InvalidInput):
    """The target version failed its pre-promotion check; the alias did not move."""

    title = "Promotion refused"


class ArtifactIntegrityError(ModelregError):
    """Stored bytes do not match the sha256/size recorded at registration."""

    title = "Artifact integrity check failed"


class DependencyUnavailable(ModelregError):
    """The database or the artifact store cannot be reached (503)."""

    title = "Service unavailable"


class Unauthenticated(ModelregError):
    title = "Unauthorized"


class Forbidden(ModelregError):
    title = "Forbidden"
