"""JSON merge-patch for string maps (RFC 7386): a null value removes the key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from registry.errors import InvalidInput
from registry.schemas import MAX_TAGS


def merge_tags(current: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_TAGS and len(merged) > len(current):
        # The patch is bounded by the schema; the merged map must be too.
        raise InvalidInput(
            "too many tags",
            {"tags": f"at most {MAX_TAGS} tags (the patch would make {len(merged)})"},
        )
    return merged


def apply_edits(
    row: Any, description: str | None, tags: Mapping[str, str | None] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Set a model's or version's description and merge its tags; returns what changed
    as (before, after) for the audit trail (both empty when nothing did)."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    if description is not None and description != row.description:
        before["description"], after["description"] = row.description, description
        row.description = description
    if tags is not None:
        merged = merge_tags(row.tags or {}, tags)
        if merged != (row.tags or {}):
            before["tags"], after["tags"] = dict(row.tags or {}), merged
            row.tags = merged
    return before, after
