"""A model's monitor: thresholds (with defaults), hysteresis and the reaction to an alert.

    {"thresholds": {"psi_warn": 0.1, "psi_alert": 0.25, "js_warn": 0.1, "js_alert": 0.2,
                    "missing_increase": 0.1, "out_of_range": 0.1, "min_rows": 200,
                    "alpha": 0.01, "error_ratio": 1.5, "accuracy_drop": 0.1,
                    "min_labels": 50},
     "fire_after": 2, "resolve_after": 3,
     "on_alert": "none" | "rollback", "alias": "production",
     "payload_sample": null | 0..1}

A window is bad when a feature's drift reaches `psi_alert` (or `js_alert`), when a feature
breaches data quality (missing rate up by `missing_increase`, or `out_of_range` of its rows
outside the reference range), or when the live error metric exceeds `error_ratio` times the
reference one (accuracy: falls by `accuracy_drop`). `fire_after` consecutive bad windows fire
the alert, `resolve_after` consecutive good ones resolve it; windows with too few rows count
as neither.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from registry.errors import InvalidInput
from registry.monitoring.drift import Thresholds
from registry.names import alias_problem

ON_ALERT = ("none", "rollback")


@dataclass(frozen=True, slots=True)
class MetricThresholds:
    error_ratio: float = 1.5
    accuracy_drop: float = 0.1
    min_labels: int = 50


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    thresholds: Thresholds = field(default_factory=Thresholds)
    metrics: MetricThresholds = field(default_factory=MetricThresholds)
    fire_after: int = 2
    resolve_after: int = 3
    on_alert: str = "none"
    alias: str = "production"
    payload_sample: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "thresholds": {**asdict(self.thresholds), **asdict(self.metrics)},
            "fire_after": self.fire_after,
            "resolve_after": self.resolve_after,
            "on_alert": self.on_alert,
            "alias": self.alias,
            "payload_sample": self.payload_sample,
        }


_TOP = {"thresholds", "fire_after", "resolve_after", "on_alert", "alias", "payload_sample"}
_FLOATS = {"psi_warn", "psi_alert", "js_warn", "js_alert", "missing_increase", "out_of_range",
           "alpha", "error_ratio", "accuracy_drop"}  # fmt: skip
_INTS = {"min_rows", "min_labels"}


def parse_monitor(body: dict[str, Any]) -> MonitorConfig:
    """A monitor from its JSON (stored or sent); 422 naming every bad field."""
    errors: dict[str, str] = {}
    if not isinstance(body, dict):
        raise InvalidInput("the monitor must be a JSON object", {"body": "expected an object"})
    for key in body:
        if key not in _TOP and key not in ("reason", "expected_revision"):
            errors[key] = "unknown field"
    raw = body.get("thresholds") or {}
    if not isinstance(raw, dict):
        errors["thresholds"] = "expected an object"
        raw = {}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        where = f"thresholds.{key}"
        if key in _FLOATS:
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                errors[where] = "must be a non-negative number"
            else:
                values[key] = float(value)
        elif key in _INTS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                errors[where] = "must be an integer >= 1"
            else:
                values[key] = value
        else:
            errors[where] = "unknown threshold"
    if values.get("alpha", 0.01) >= 1 or values.get("alpha", 0.01) <= 0:
        errors["thresholds.alpha"] = "must be between 0 and 1"
    for low, high in (("psi_warn", "psi_alert"), ("js_warn", "js_alert")):
        defaults = Thresholds()
        if values.get(low, getattr(defaults, low)) > values.get(high, getattr(defaults, high)):
            errors[f"thresholds.{low}"] = f"must not exceed {high}"
    counts: dict[str, int] = {}
    for key in ("fire_after", "resolve_after"):
        value = body.get(key, 2 if key == "fire_after" else 3)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            errors[key] = "must be an integer from 1 to 1000"
        else:
            counts[key] = value
    on_alert = body.get("on_alert", "none")
    if on_alert not in ON_ALERT:
        errors["on_alert"] = f"one of {', '.join(ON_ALERT)}"
    alias = body.get("alias", "production")
    if alias_problem(alias) is not None:
        errors["alias"] = "an alias name"
    sample = body.get("payload_sample")
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, int | float) or not 0 <= sample <= 1
    ):
        errors["payload_sample"] = "a number from 0 to 1, or null for the server's setting"
    if errors:
        first = next(iter(errors.items()))
        raise InvalidInput(f"{first[0]}: {first[1]}", errors)
    drift = {k: v for k, v in values.items() if k in Thresholds.__dataclass_fields__}
    metric = {k: v for k, v in values.items() if k in MetricThresholds.__dataclass_fields__}
    return MonitorConfig(
        thresholds=Thresholds(**drift),
        metrics=MetricThresholds(**metric),
        fire_after=counts.get("fire_after", 2),
        resolve_after=counts.get("resolve_after", 3),
        on_alert=on_alert,
        alias=alias,
        payload_sample=None if sample is None else float(sample),
    )
