"""Versions side by side: one row per field, marked where the versions differ."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from registry.records import VersionRecord


@dataclass(frozen=True, slots=True)
class Row:
    section: str
    key: str
    values: tuple[str, ...]  # one per version, "" where a version has no such field
    differs: bool


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.6g}"
    return json.dumps(value, sort_keys=True, default=str)


def _section(name: str, maps: Sequence[Mapping[str, Any]]) -> list[Row]:
    keys = sorted({key for mapping in maps for key in mapping})
    rows = []
    for key in keys:
        values = tuple(_text(mapping.get(key)) for mapping in maps)
        rows.append(Row(name, key, values, len(set(values)) > 1))
    return rows


def compare_versions(records: Sequence[VersionRecord]) -> list[Row]:
    """Metrics, params, tags, signature, lineage and the record's own fields, in that order."""
    general = [
        {
            "format": r.format,
            "status": r.status,
            "size": r.size,
            "sha256": r.sha256,
            "acceleration": (r.acceleration or {}).get("kind", "") if r.acceleration else "",
            "aliases": ", ".join(r.aliases),
            "created_by": r.created_by,
        }
        for r in records
    ]
    return [
        *_section("metrics", [r.metrics for r in records]),
        *_section("params", [r.params for r in records]),
        *_section("tags", [r.tags for r in records]),
        *_section("signature", [r.signature or {} for r in records]),
        *_section("lineage", [r.source for r in records]),
        *_section("record", general),
    ]
