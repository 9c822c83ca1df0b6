"""JSON merge-patch for string maps (RFC 7386): a null value removes the key."""

from __future__ import annotations

from collections.abc import Mapping

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
