"""Monitoring over HTTP: reference profiles, a version's windows, labels, the monitor.

Views parse, call one service and dump; the services commit (registry/monitoring/service.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, request
from marshmallow import fields, validate

from registry import schemas
from registry.access import requires
from registry.endpoints import BODY_ERRORS, JsonSchema, endpoint, json_answer, request_body
from registry.errors import InvalidInput, NotFound, TooLarge, UnsupportedMediaType
from registry.http import app_services, current_actor, json_body, json_response
from registry.monitoring import service
from registry.monitoring.reference import parse_reference
from registry.names import Reference, is_model_name
from registry.names import parse_reference as parse_ref

bp = Blueprint("monitoring", __name__)

MONITORING_KEY = "modelreg.monitoring"
REFERENCE_TYPES = ("text/csv", "application/json")
_OBJECT = {"type": "object", "additionalProperties": True}
PROFILE = JsonSchema(
    "Profile",
    {
        "type": "object",
        "description": "Per feature: type, missing rate, range, quantile bins or categories; "
        "the predictions' distribution and the reference metric.",
        "additionalProperties": True,
        "properties": {"features": {"type": "array", "items": _OBJECT}},
    },
)
REPORT = JsonSchema(
    "MonitoringReport",
    {
        "type": "object",
        "description": "Per window and variant: drift and data quality per feature, "
        "prediction drift, refused inputs, live metrics; the alert states.",
        "additionalProperties": True,
        "properties": {
            "windows": {"type": "array", "items": _OBJECT},
            "alerts": {"type": "array", "items": _OBJECT},
        },
    },
)
MONITOR = JsonSchema(
    "Monitor",
    {
        "type": "object",
        "description": "Thresholds (defaults where absent), `fire_after`, `resolve_after`, "
        "`on_alert` (`none` or `rollback`), `alias`, `payload_sample`; a PUT may carry "
        "`reason` and `expected_revision` (compare-and-set).",
        "additionalProperties": True,
        "properties": {"reason": {"type": "string", "maxLength": schemas.MAX_REASON}},
    },
)


class LabelSchema(schemas.StrictSchema):
    request_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    row = fields.Integer(load_default=0, validate=validate.Range(min=0, max=1_000_000))
    label = fields.Raw(required=True, allow_none=False)


class FeedbackSchema(schemas.StrictSchema):
    labels = fields.List(
        fields.Nested(LabelSchema),
        required=True,
        validate=validate.Length(min=1, max=service.MAX_LABELS_PER_REQUEST),
    )


class FeedbackOut(schemas.Schema):
    accepted = fields.Integer(required=True)
    matched = fields.Integer(
        required=True, metadata={"description": "Labels that meet a logged prediction."}
    )


class MonitoringQuery(schemas.StrictSchema):
    since = fields.String(
        metadata={"description": "ISO 8601 time or epoch seconds (default: 24 windows ago)."},
        validate=validate.Length(max=64),
    )
    window = fields.Integer(
        metadata={"description": "Window width in seconds: a multiple of the server's."},
        validate=validate.Range(min=1, max=366 * 86400),
    )


def _monitoring() -> Any:
    return current_app.extensions[MONITORING_KEY]


def validate_model_name(name: str) -> None:
    """A name no model can have is not found (as on the registry's routes)."""
    if not is_model_name(name):
        raise NotFound(f"no model named {name!r}: not a valid model name")


def _ref(ref: str) -> Reference:
    reference = parse_ref(ref)
    if reference is None:
        raise NotFound(f"{ref!r} is not a version number, an alias or 'latest'")
    return reference


def _since(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            "since must be a time", {"since": "ISO 8601 (2026-01-01T00:00:00Z) or epoch seconds"}
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_reference_body(limit: int) -> bytes:
    if request.mimetype not in REFERENCE_TYPES:
        raise UnsupportedMediaType(
            "send the reference as text/csv or application/json",
            {"Content-Type": "expected text/csv or application/json"},
        )
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(
            "the reference is too large",
            {"reference": f"over {limit} bytes (MONITOR_MAX_REFERENCE_BYTES)"},
        )
    request.max_content_length = limit
    return request.get_data(cache=False)


@endpoint(
    summary="Set a version's reference data (profiled)",
    tag="monitoring",
    body={
        "required": True,
        # text/csv is accepted too (see the description); documented as JSON only, like
        # MLflow's /invocations, because stock client generators cannot model a CSV body.
        "content": {"application/json": {"schema": {"type": "array", "items": _OBJECT}}},
    },
    parameters=(
        {
            "in": "query",
            "name": "target",
            "schema": {"type": "string", "maxLength": 128},
            "description": "The target column, if the reference has one.",
        },
    ),
    responses={200: json_answer("The new profile.", PROFILE)},
    errors=(*BODY_ERRORS, 404),
    description="The rows as a JSON array of objects, or as `text/csv` with a header row. "
    "Replaces any earlier profile of the version. References over 100,000 rows "
    "are sampled (the profile says so).",
)
@bp.put("/models/<name>/versions/<ref>/reference")
@requires("publisher")
def put_reference(name: str, ref: str) -> Response:
    validate_model_name(name)
    deps = app_services()
    raw = read_reference_body(deps.config.MONITOR_MAX_REFERENCE_BYTES)
    target = request.args.get("target") or None
    table = parse_reference(raw, content_type=request.mimetype)
    profile = service.set_reference(
        deps.uow,
        name,
        _ref(ref),
        table,
        target,
        _monitoring().predict_reference,
        actor=current_actor(),
    )
    return json_response(profile)


@endpoint(
    summary="Get a version's reference profile",
    tag="monitoring",
    responses={200: json_answer("The profile.", PROFILE)},
    errors=(401, 403, 404, 503),
)
@bp.get("/models/<name>/versions/<ref>/profile")
def get_profile(name: str, ref: str) -> Response:
    validate_model_name(name)
    return json_response(service.get_profile(app_services().uow, name, _ref(ref)))


@endpoint(
    summary="A version's monitoring windows",
    tag="monitoring",
    query=MonitoringQuery(),
    responses={200: json_answer("Windows, newest last, and alert states.", REPORT)},
    errors=(401, 403, 404, 422, 503),
)
@bp.get("/models/<name>/versions/<ref>/monitoring")
def get_monitoring(name: str, ref: str) -> Response:
    validate_model_name(name)
    args = schemas.load(MonitoringQuery(), request.args.to_dict())
    report = service.monitoring_report(
        app_services().uow,
        name,
        _ref(ref),
        since=_since(args.get("since")),
        window=args.get("window"),
        default_window=_monitoring().window_seconds,
    )
    return json_response(report)


@endpoint(
    summary="Post ground-truth labels for logged predictions",
    tag="monitoring",
    body=request_body(
        FeedbackSchema,
        examples={"one": {"value": {"labels": [{"request_id": "0f3c2a", "row": 0, "label": 3.2}]}}},
    ),
    responses={200: json_answer("Stored labels.", FeedbackOut)},
    errors=(*BODY_ERRORS, 404),
    description="Labels are keyed by the predict answer's `X-Request-ID` and the row; "
    "posting one again replaces it.",
)
@bp.post("/models/<name>/feedback")
@requires("publisher")
def post_feedback(name: str) -> Response:
    validate_model_name(name)
    data = schemas.load(FeedbackSchema(), json_body())
    result = service.post_feedback(app_services().uow, name, data["labels"], actor=current_actor())
    return json_response(result)


@endpoint(
    summary="Get a model's monitor",
    tag="monitoring",
    responses={200: json_answer("The monitor (defaults when none was set).", MONITOR)},
    errors=(401, 403, 404, 503),
)
@bp.get("/models/<name>/monitor")
def get_monitor(name: str) -> Response:
    validate_model_name(name)
    return json_response(service.get_monitor(app_services().uow, name))


@endpoint(
    summary="Set a model's monitor",
    tag="monitoring",
    body=request_body(
        MONITOR,
        examples={
            "rollback": {
                "value": {
                    "thresholds": {"psi_alert": 0.25},
                    "fire_after": 2,
                    "resolve_after": 3,
                    "on_alert": "rollback",
                    "reason": "guard production",
                }
            }
        },
    ),
    responses={200: json_answer("The monitor and its new revision.", MONITOR)},
    errors=(*BODY_ERRORS, 404, 409),
    description="409 when `expected_revision` is not the current revision. The new "
    "thresholds judge every window not judged yet (windows already judged keep their "
    "verdict); the process that answers judges at its next flush (a few seconds), and the "
    "leader of several processes within `MONITOR_EVALUATE_SECONDS`.",
)
@bp.put("/models/<name>/monitor")
@requires("operator")
def put_monitor(name: str) -> Response:
    validate_model_name(name)
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidInput("the monitor must be a JSON object", {"body": "expected an object"})
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > schemas.MAX_REASON:
        raise InvalidInput(
            "invalid reason", {"reason": f"a string of at most {schemas.MAX_REASON}"}
        )
    expected = body.get("expected_revision")
    if expected is not None and (isinstance(expected, bool) or not isinstance(expected, int)):
        raise InvalidInput("invalid expected_revision", {"expected_revision": "an integer"})
    result = service.set_monitor(
        app_services().uow,
        name,
        {k: v for k, v in body.items() if k not in ("reason", "expected_revision")},
        actor=current_actor(),
        reason=reason,
        expected_revision=expected,
    )
    # Windows are judged once: the new thresholds judge every window not judged yet, and
    # this process (the leader on SQLite) judges at its next flush, not in up to 30 s.
    _monitoring().worker.evaluate_soon()
    return json_response(result)
