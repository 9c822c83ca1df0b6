"""Traffic policies over HTTP: PUT/GET/DELETE /models/<name>/aliases/<alias>/policy and its
per-variant statistics. Views parse, call one service and dump; the services commit."""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Response

from registry import schemas
from registry.access import requires
from registry.endpoints import BODY_ERRORS, JsonSchema, endpoint, json_answer, request_body
from registry.errors import InvalidInput, NotFound
from registry.http import app_services, current_actor, json_body, json_response
from registry.names import validate_alias, validate_model_name
from registry.policies import service

bp = Blueprint("policies", __name__)

_OBJECT = {"type": "object", "additionalProperties": True}
POLICY_IN = JsonSchema(
    "PolicyIn",
    {
        "type": "object",
        "required": ["variants"],
        "additionalProperties": False,
        "properties": {
            "variants": {
                "type": "array",
                "minItems": 1,
                "maxItems": 10,
                "items": {
                    "type": "object",
                    "required": ["version", "weight"],
                    "additionalProperties": False,
                    "properties": {
                        "version": {"type": "integer", "minimum": 1},
                        "weight": {"type": "number", "minimum": 0, "maximum": 1_000_000},
                    },
                },
            },
            "sticky": {
                "description": '`{"header": "X-Unit-Id"}`, `{"field": "customer_id"}` or null',
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["header"],
                        "additionalProperties": False,
                        "properties": {"header": {"type": "string", "maxLength": 64}},
                    },
                    {
                        "type": "object",
                        "required": ["field"],
                        "additionalProperties": False,
                        "properties": {"field": {"type": "string", "maxLength": 128}},
                    },
                ],
            },
            "shadows": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "required": ["version"],
                    "additionalProperties": False,
                    "properties": {
                        "version": {"type": "integer", "minimum": 1},
                        "sample": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    },
                },
            },
            "reason": {"type": "string", "maxLength": schemas.MAX_REASON},
            "expected_revision": {"type": "integer", "minimum": 0},
        },
    },
)
POLICY_OUT = JsonSchema(
    "Policy",
    {
        "type": "object",
        "description": "The alias's policy: `state` is `active` or `none`; `control` is the "
        "alias's version; each variant with its `share` and `buckets` (of 10,000).",
        "additionalProperties": True,
        "properties": {
            "model": {"type": "string"},
            "alias": {"type": "string"},
            "control": {"type": ["integer", "null"]},
            "revision": {"type": "integer"},
            "state": {"type": "string", "enum": ["active", "none"]},
            "variants": {"type": ["array", "null"], "items": _OBJECT},
            "sticky": {"type": ["object", "null"], "additionalProperties": True},
            "shadows": {"type": "array", "items": _OBJECT},
        },
    },
)
POLICY_STATS = JsonSchema(
    "PolicyStats",
    {
        "type": "object",
        "description": "This process's counters since the policy's revision took effect: per "
        "variant and shadow requests, errors, latency quantiles, a prediction summary; for "
        "shadows the agreement with the primary; a sample-ratio-mismatch test.",
        "additionalProperties": True,
        "properties": {
            "variants": {"type": "array", "items": _OBJECT},
            "shadows": {"type": "array", "items": _OBJECT},
            "sample_ratio": {"type": ["object", "null"], "additionalProperties": True},
            "outcome": {
                "type": "object",
                "description": "Labelled outcomes since the experiment began, from every "
                "process: per variant its live metrics; per candidate a comparison with the "
                "control on the per-row loss (squared error, log loss or 0/1 error) by an "
                "always-valid sequential test (mSPRT): verdict better | worse | "
                "inconclusive, difference (candidate - control), confidence interval, "
                "p-value, labels per arm. Safe to watch continuously.",
                "additionalProperties": True,
                "properties": {
                    "since": {"type": "string", "format": "date-time"},
                    "control": {"type": "integer"},
                    "alpha": {"type": "number"},
                    "loss": {"type": ["string", "null"]},
                    "variants": {"type": "array", "items": _OBJECT},
                    "comparisons": {"type": "array", "items": _OBJECT},
                },
            },
        },
    },
)
_EXAMPLE = {
    "variants": [{"version": 3, "weight": 90}, {"version": 4, "weight": 10}],
    "sticky": {"header": "X-Unit-Id"},
    "shadows": [{"version": 5, "sample": 0.2}],
    "reason": "try v4 on 10% of customers",
    "expected_revision": 0,
}


def _names(name: str, alias: str) -> tuple[str, str]:
    validate_model_name(name)
    validate_alias(alias)
    return name, alias


def _change_options(body: dict[str, Any]) -> tuple[str, int | None]:
    reason = body.pop("reason", "")
    if not isinstance(reason, str) or len(reason) > schemas.MAX_REASON:
        raise InvalidInput(
            "invalid reason", {"reason": f"a string of at most {schemas.MAX_REASON}"}
        )
    expected = body.pop("expected_revision", None)
    if expected is not None and (
        isinstance(expected, bool) or not isinstance(expected, int) or expected < 0
    ):
        raise InvalidInput(
            "invalid expected_revision", {"expected_revision": "a non-negative integer"}
        )
    return reason, expected


@endpoint(
    summary="Set an alias's traffic policy",
    tag="policies",
    body=request_body(POLICY_IN, examples={"ab": {"value": _EXAMPLE}}),
    responses={200: json_answer("The policy in force, with its new revision.", POLICY_OUT)},
    errors=(*BODY_ERRORS, 404, 409),
    description="Weighted variants (the alias's version, the control, must be one of them), "
    "an optional sticky unit key and shadows. Every version is loaded, verified and its input "
    "example predicted first, as for a promotion: 422 and nothing changes otherwise. 409 when "
    "`expected_revision` is not the current revision. Seen by every serving process within "
    "the alias refresh period.",
)
@bp.put("/models/<name>/aliases/<alias>/policy")
@requires("operator")
def put_policy(name: str, alias: str) -> Response:
    name, alias = _names(name, alias)
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidInput("the policy must be a JSON object", {"body": "expected an object"})
    reason, expected = _change_options(body)
    deps = app_services()
    return json_response(
        service.set_policy(
            deps.uow,
            name,
            alias,
            body,
            actor=current_actor(),
            reason=reason,
            expected_revision=expected,
            check=deps.check_version,
        )
    )


@endpoint(
    summary="Get an alias's traffic policy",
    tag="policies",
    responses={200: json_answer("The policy (`state` `none` when there is none).", POLICY_OUT)},
    errors=(401, 403, 404, 422, 503),
)
@bp.get("/models/<name>/aliases/<alias>/policy")
def get_policy(name: str, alias: str) -> Response:
    name, alias = _names(name, alias)
    return json_response(service.get_policy(app_services().uow, name, alias))


@endpoint(
    summary="Clear an alias's traffic policy",
    tag="policies",
    body=request_body(
        JsonSchema(
            "PolicyClear",
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "reason": {"type": "string", "maxLength": schemas.MAX_REASON},
                    "expected_revision": {"type": "integer", "minimum": 0},
                },
            },
        ),
        required=False,
    ),
    responses={200: json_answer("The alias without a policy.", POLICY_OUT)},
    errors=(*BODY_ERRORS, 404, 409),
    description="All of the alias's traffic goes back to its version. 404 when it has no policy.",
)
@bp.delete("/models/<name>/aliases/<alias>/policy")
@requires("operator")
def delete_policy(name: str, alias: str) -> Response:
    name, alias = _names(name, alias)
    body = json_body(required=False) or {}
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", {"body": "expected an object"})
    reason, expected = _change_options(body)
    if body:
        raise InvalidInput("invalid body", {sorted(body)[0]: "unknown field"})
    return json_response(
        service.clear_policy(
            app_services().uow,
            name,
            alias,
            actor=current_actor(),
            reason=reason,
            expected_revision=expected,
        )
    )


@endpoint(
    summary="Per-variant statistics of an alias's policy",
    tag="policies",
    responses={200: json_answer("This process's counters.", POLICY_STATS)},
    errors=(401, 403, 404, 422, 503),
    description="Counted in the process that answers, since the policy's current revision "
    "took effect there; Prometheus has the same counts of every process "
    "(`modelreg_policy_requests_total`, `modelreg_policy_shadow_total`).",
)
@bp.get("/models/<name>/aliases/<alias>/policy/stats")
def policy_stats(name: str, alias: str) -> Response:
    name, alias = _names(name, alias)
    deps = app_services()
    current = service.get_policy(deps.uow, name, alias)
    if current["state"] != "active":
        raise NotFound(f"alias '{alias}' of '{name}' has no policy")
    resolution = deps.dataplane.resolve(name, alias)
    shadows = deps.dataplane.shadows
    if shadows is not None:
        shadows.publish()  # copies offered since the shadow process's last report
    stats = deps.dataplane.policy_stats.view(name, resolution.policy)
    return json_response(
        {
            "model": name,
            "alias": alias,
            "policy_revision": current["revision"],
            "process": os.getpid(),
            "shadow_queue": shadows.pending() if shadows is not None else 0,
            **stats,
            "outcome": service.outcome_comparison(deps.uow, current),
        }
    )
