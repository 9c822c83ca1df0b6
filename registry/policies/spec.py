"""A policy body, validated: what PUT .../policy accepts, field by field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from registry.errors import InvalidInput
from registry.names import MAX_VERSION

MAX_VARIANTS = 10
MAX_SHADOWS = 3
HEADER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")
FIELD_RE = re.compile(r"[^\x00-\x1f]{1,128}")
KNOWN_KEYS = frozenset({"variants", "sticky", "shadows", "canary"})


@dataclass(frozen=True, slots=True)
class Variant:
    version: int
    weight: float


@dataclass(frozen=True, slots=True)
class Shadow:
    version: int
    sample: float


@dataclass(frozen=True, slots=True)
class PolicySpec:
    variants: tuple[Variant, ...]
    sticky: dict[str, str] | None  # {"header": name} or {"field": name}
    shadows: tuple[Shadow, ...]

    def versions(self) -> list[int]:
        return [v.version for v in self.variants] + [s.version for s in self.shadows]

    def as_dict(self) -> dict[str, Any]:
        return {
            "variants": [{"version": v.version, "weight": v.weight} for v in self.variants],
            "sticky": self.sticky,
            "shadows": [{"version": s.version, "sample": s.sample} for s in self.shadows],
        }


def _version(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_VERSION:
        raise InvalidInput("invalid policy", {field: "a version number (a positive integer)"})
    return value


def _number(value: Any, field: str, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidInput("invalid policy", {field: what})
    return float(value)


def _list(body: dict[str, Any], key: str, most: int, required: bool) -> list[Any]:
    value = body.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or (not value and required) or len(value) > most:
        least = 1 if required else 0
        raise InvalidInput("invalid policy", {key: f"a list of {least} to {most} objects"})
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise InvalidInput("invalid policy", {f"{key}[{i}]": "an object"})
    return value


def _sticky(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or not {"header", "field"} & set(value):
        raise InvalidInput(
            "invalid policy",
            {"sticky": 'null, {"header": "<request header>"} or {"field": "<input field>"}'},
        )
    ((kind, name),) = value.items()
    pattern = HEADER_RE if kind == "header" else FIELD_RE
    if not isinstance(name, str) or pattern.fullmatch(name) is None:
        what = "a header name (letters, digits, '-')" if kind == "header" else "a field name"
        raise InvalidInput("invalid policy", {f"sticky.{kind}": what})
    return {kind: name.lower() if kind == "header" else name}


def parse_policy(body: Any) -> PolicySpec:
    """The policy in `body` (reason and expected_revision already taken out)."""
    if not isinstance(body, dict):
        raise InvalidInput("the policy must be a JSON object", {"body": "expected an object"})
    unknown = sorted(set(body) - KNOWN_KEYS)
    if unknown:
        raise InvalidInput("invalid policy", {unknown[0]: "unknown field"})
    if body.get("canary") is not None:
        raise InvalidInput(
            "invalid policy",
            {
                "canary": "progressive canaries are not available on this server yet; set the "
                "weights yourself"
            },
        )
    variants = []
    for i, item in enumerate(_list(body, "variants", MAX_VARIANTS, required=True)):
        extra = sorted(set(item) - {"version", "weight"})
        if extra:
            raise InvalidInput("invalid policy", {f"variants[{i}].{extra[0]}": "unknown field"})
        variants.append(
            Variant(
                _version(item.get("version"), f"variants[{i}].version"),
                _number(
                    item.get("weight"),
                    f"variants[{i}].weight",
                    0,
                    1e6,
                    "a weight from 0 to 1,000,000",
                ),
            )
        )
    seen = [v.version for v in variants]
    if len(set(seen)) != len(seen):
        raise InvalidInput("invalid policy", {"variants": "each version at most once"})
    if sum(v.weight for v in variants) <= 0:
        raise InvalidInput("invalid policy", {"variants": "the weights must not all be zero"})
    shadows = []
    for i, item in enumerate(_list(body, "shadows", MAX_SHADOWS, required=False)):
        extra = sorted(set(item) - {"version", "sample"})
        if extra:
            raise InvalidInput("invalid policy", {f"shadows[{i}].{extra[0]}": "unknown field"})
        version = _version(item.get("version"), f"shadows[{i}].version")
        if version in seen:
            raise InvalidInput(
                "invalid policy", {f"shadows[{i}].version": "is a variant; a shadow is not"}
            )
        seen.append(version)
        sample = _number(
            item.get("sample", 1.0), f"shadows[{i}].sample", 0, 1, "a sample rate from 0 to 1"
        )
        if sample <= 0:
            raise InvalidInput("invalid policy", {f"shadows[{i}].sample": "greater than 0"})
        shadows.append(Shadow(version, sample))
    if len(set(seen)) != len(seen):
        raise InvalidInput("invalid policy", {"shadows": "each version at most once"})
    return PolicySpec(tuple(variants), _sticky(body.get("sticky")), tuple(shadows))
