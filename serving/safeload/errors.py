"""The refusal every post-load check raises."""

from __future__ import annotations

from registry.errors import InvalidInput


class MalformedModel(InvalidInput):
    title = "Artifact holds a malformed model"


def refuse(what: str, reason: str) -> MalformedModel:
    return MalformedModel(
        f"the artifact's {what} is malformed: {reason}", {"artifact": f"{what}: {reason}"}
    )
