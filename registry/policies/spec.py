"""A policy body, validated: what PUT .../policy accepts, field by field."""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise
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
class Canary:
    """A progressive canary: the candidate's share walks `steps` (percent), each held for
    `bake_seconds` and `min_requests` candidate requests while the guardrails hold."""

    steps: tuple[int, ...]
    bake_seconds: float
    min_requests: int
    max_error_rate_delta: float
    max_p99_ratio: float
    max_mean_shift: float | None  # |candidate mean - control mean| / control std
    # How much higher the candidate's mean per-row loss on labelled rows may be, judged by
    # the always-valid confidence interval; None: outcomes are not a guardrail.
    max_metric_delta: float | None = None
    monitor_alerts: str = "ignore"  # "abort": a firing monitor alert on the candidate aborts

    def as_dict(self) -> dict[str, Any]:
        return {
            "steps": list(self.steps),
            "bake_seconds": self.bake_seconds,
            "min_requests": self.min_requests,
            "guardrails": {
                "max_error_rate_delta": self.max_error_rate_delta,
                "max_p99_ratio": self.max_p99_ratio,
                "max_mean_shift": self.max_mean_shift,
                "max_metric_delta": self.max_metric_delta,
                "monitor_alerts": self.monitor_alerts,
            },
        }


@dataclass(frozen=True, slots=True)
class PolicySpec:
    variants: tuple[Variant, ...]
    sticky: dict[str, str] | None  # {"header": name} or {"field": name}
    shadows: tuple[Shadow, ...]
    canary: Canary | None = None

    def versions(self) -> list[int]:
        return [v.version for v in self.variants] + [s.version for s in self.shadows]

    def as_dict(self) -> dict[str, Any]:
        return {
            "variants": [{"version": v.version, "weight": v.weight} for v in self.variants],
            "sticky": self.sticky,
            "shadows": [{"version": s.version, "sample": s.sample} for s in self.shadows],
            "canary": self.canary.as_dict() if self.canary else None,
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
    canary = _canary(body.get("canary"), len(variants))
    return PolicySpec(tuple(variants), _sticky(body.get("sticky")), tuple(shadows), canary)


CANARY_KEYS = frozenset({"steps", "bake_seconds", "min_requests", "guardrails"})
GUARDRAIL_KEYS = frozenset(
    {
        "max_error_rate_delta",
        "max_p99_ratio",
        "max_mean_shift",
        "max_metric_delta",
        "monitor_alerts",
    }
)
MONITOR_ALERT_ACTIONS = ("ignore", "abort")


def _canary(value: Any, variants: int) -> Canary | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput("invalid policy", {"canary": "an object"})
    unknown = sorted(set(value) - CANARY_KEYS)
    if unknown:
        raise InvalidInput("invalid policy", {f"canary.{unknown[0]}": "unknown field"})
    if variants != 2:
        raise InvalidInput(
            "invalid policy",
            {"variants": "a canary has exactly two variants: the control and the candidate"},
        )
    steps = value.get("steps", [5, 25, 50, 100])
    if (
        not isinstance(steps, list)
        or not 1 <= len(steps) <= 20
        or any(isinstance(x, bool) or not isinstance(x, int) or not 0 < x <= 100 for x in steps)
        or any(a >= b for a, b in pairwise(steps))
        or steps[-1] != 100
    ):
        raise InvalidInput(
            "invalid policy",
            {"canary.steps": "1 to 20 increasing whole percentages, ending at 100"},
        )
    guardrails = value.get("guardrails") or {}
    if not isinstance(guardrails, dict):
        raise InvalidInput("invalid policy", {"canary.guardrails": "an object"})
    unknown = sorted(set(guardrails) - GUARDRAIL_KEYS)
    if unknown:
        raise InvalidInput("invalid policy", {f"canary.guardrails.{unknown[0]}": "unknown field"})
    shift = guardrails.get("max_mean_shift")
    metric_delta = guardrails.get("max_metric_delta")
    alerts = guardrails.get("monitor_alerts", "ignore")
    if alerts not in MONITOR_ALERT_ACTIONS:
        raise InvalidInput(
            "invalid policy", {"canary.guardrails.monitor_alerts": '"ignore" or "abort"'}
        )
    return Canary(
        steps=tuple(steps),
        bake_seconds=_number(
            value.get("bake_seconds", 600),
            "canary.bake_seconds",
            0.1,
            7 * 86400,
            "seconds from 0.1 to a week",
        ),
        min_requests=int(
            _number(
                value.get("min_requests", 500), "canary.min_requests", 0, 10**9, "a count from 0"
            )
        ),
        max_error_rate_delta=_number(
            guardrails.get("max_error_rate_delta", 0.01),
            "canary.guardrails.max_error_rate_delta",
            0,
            1,
            "a rate from 0 to 1",
        ),
        max_p99_ratio=_number(
            guardrails.get("max_p99_ratio", 2.0),
            "canary.guardrails.max_p99_ratio",
            1,
            1000,
            "a ratio from 1",
        ),
        max_mean_shift=None
        if shift is None
        else _number(shift, "canary.guardrails.max_mean_shift", 0, 1e6, "a number from 0"),
        max_metric_delta=None
        if metric_delta is None
        else _number(
            metric_delta, "canary.guardrails.max_metric_delta", 0, 1e12, "a number from 0"
        ),
        monitor_alerts=alerts,
    )
