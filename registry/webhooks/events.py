"""The event types a subscription can ask for, and the payload each delivery carries.

Every audit event has a webhook type. `*` means every registry event; `version.*` every
event of a family. Token events are sent only to subscriptions naming them explicitly (a
token's name is sensitive enough not to flow by default). The policy and canary
families are reserved so that a subscription made now receives them once they exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

# audit event type (registry/services) -> webhook event type
FROM_AUDIT: dict[str, str] = {
    "create": "model.created",
    "update": "model.updated",
    "delete": "model.deleted",
    "register": "version.registered",
    "update_version": "version.updated",
    "archive": "version.archived",
    "restore": "version.restored",
    "delete_version": "version.deleted",
    "promote": "alias.promoted",
    "rollback": "alias.rolled_back",
    "delete_alias": "alias.deleted",
    "alert_fired": "monitor.alert_fired",
    "alert_resolved": "monitor.alert_resolved",
    "policy_set": "policy.set",
    "policy_cleared": "policy.cleared",
    "canary_step": "canary.advanced",
    "canary_aborted": "canary.aborted",
    "canary_completed": "canary.completed",
}
TOKEN_EVENTS = ("token.created", "token.revoked")
RESERVED_EVENTS: tuple[str, ...] = ()
TEST_EVENT = "webhook.test"  # POST /webhooks/<id>/test; sent whatever the subscription asks
REGISTRY_EVENTS = tuple(FROM_AUDIT.values())
KNOWN_EVENTS = (*REGISTRY_EVENTS, *TOKEN_EVENTS, *RESERVED_EVENTS)
FAMILIES = tuple(sorted({event.split(".", 1)[0] for event in KNOWN_EVENTS}))


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` is not an event a subscription can ask for, or None."""
    if pattern == "*" or pattern in KNOWN_EVENTS:
        return None
    if pattern.endswith(".*") and pattern[:-2] in FAMILIES:
        return None
    return (
        f"unknown event {pattern!r}: use '*', a family ('{FAMILIES[0]}.*', ...) or one of "
        + ", ".join(KNOWN_EVENTS)
    )


def matches(patterns: Iterable[str], event_type: str) -> bool:
    """Whether a subscription's patterns ask for `event_type`."""
    family = event_type.split(".", 1)[0]
    for pattern in patterns:
        if pattern == event_type or pattern == f"{family}.*":
            return True
        if pattern == "*" and family != "token":
            return True
    return False


def model_matches(models: Sequence[str] | None, model: str | None) -> bool:
    """A subscription limited to models hears only of them (and of nothing model-less but
    its own test pings)."""
    if models is None:
        return True
    return model is not None and model in models


def payload(event_type: str, at: datetime, data: dict[str, Any]) -> str:
    """The delivery body: `{"type", "timestamp", "data"}` (Standard Webhooks' shape)."""
    return orjson.dumps(
        {"type": event_type, "timestamp": _iso(at), "data": data},
        option=orjson.OPT_NON_STR_KEYS,
        default=_default,
    ).decode()


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    raise TypeError(f"not serializable: {type(value).__name__}")
