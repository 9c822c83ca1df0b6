"""JSON merge-patch for string maps (RFC 7386): a null value removes the key."""

from __future__ import annotations

from collections.abc import Mapping


def merge_tags(current: Mapping[str, str], patch: Mapping[str, str | None]) -> dict[str, str]:
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged
