"""Webhook subscriptions and their delivery log (admin role)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request
from marshmallow import Schema, fields, validate

from registry import schemas
from registry.access import requires
from registry.api_docs import page_of
from registry.endpoints import BODY_ERRORS, endpoint, json_answer, no_body, request_body
from registry.http import app_services, current_actor, json_body, json_response
from registry.pagination import make_page
from registry.webhooks import service, targets

bp = Blueprint("webhooks", __name__)

DELIVERY_STATUSES = ("pending", "delivered", "failed")
_EVENTS_HELP = (
    "Event types (`version.registered`, `alias.promoted`, ...), a family (`alias.*`) or `*` "
    "for every registry event; token events (`token.created`, `token.revoked`) only when named."
)


class WebhookCreateSchema(schemas.StrictSchema):
    url = fields.String(required=True, validate=validate.Length(min=1, max=2048))
    events = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        required=True,
        validate=validate.Length(min=1, max=service.MAX_EVENTS),
        metadata={"description": _EVENTS_HELP},
    )
    models = fields.List(
        fields.String(validate=validate.Length(min=1, max=128)),
        allow_none=True,
        load_default=None,
        validate=validate.Length(min=1, max=service.MAX_MODELS),
        metadata={"description": "Only changes of these models (default: all)."},
    )
    description = fields.String(load_default="", validate=validate.Length(max=1000))


class WebhookUpdateSchema(schemas.StrictSchema):
    url = fields.String(validate=validate.Length(min=1, max=2048))
    events = fields.List(
        fields.String(validate=validate.Length(min=1, max=64)),
        validate=validate.Length(min=1, max=service.MAX_EVENTS),
    )
    models = fields.List(
        fields.String(validate=validate.Length(min=1, max=128)),
        allow_none=True,
        validate=validate.Length(min=1, max=service.MAX_MODELS),
    )
    description = fields.String(validate=validate.Length(max=1000))
    enabled = fields.Boolean()


class WebhookOut(Schema):
    id = fields.Integer(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    models = fields.List(fields.String(), required=True, allow_none=True)
    description = fields.String(required=True)
    enabled = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    created_by = fields.String(required=True)
    updated_at = fields.DateTime(required=True)
    secret_rotated_until = fields.DateTime(
        required=True,
        allow_none=True,
        metadata={"description": "The previous secret also signs deliveries until then."},
    )


WebhookCreatedOut = WebhookOut.from_dict(
    {
        "secret": fields.String(
            required=True,
            metadata={"description": "The signing secret (`whsec_...`): shown this once."},
        )
    },
    name="WebhookCreatedSchema",
)


class AttemptOut(Schema):
    at = fields.DateTime(required=True)
    status_code = fields.Integer(required=True, allow_none=True)
    latency_ms = fields.Float(required=True)
    error = fields.String(required=True, allow_none=True)


class DeliveryOut(Schema):
    id = fields.Integer(required=True)
    webhook_id = fields.Integer(required=True)
    message_id = fields.String(required=True, metadata={"description": "The `webhook-id`."})
    event_type = fields.String(required=True)
    event_id = fields.Integer(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATUSES))
    attempts = fields.Integer(required=True)
    created_at = fields.DateTime(required=True)
    next_attempt_at = fields.DateTime(required=True, allow_none=True)
    last_attempt_at = fields.DateTime(required=True, allow_none=True)
    last_status_code = fields.Integer(required=True, allow_none=True)
    last_error = fields.String(required=True, allow_none=True)
    finished_at = fields.DateTime(required=True, allow_none=True)


class DeliveryDetailOut(DeliveryOut):
    payload = fields.String(required=True, metadata={"description": "The exact body sent."})
    attempt_log = fields.List(fields.Nested(AttemptOut), required=True)


class DeliveryQuerySchema(schemas.ListQuerySchema):
    status = fields.String(validate=validate.OneOf(DELIVERY_STATUSES))


_webhook_out = WebhookOut()
_delivery_out = DeliveryOut()
_delivery_detail_out = DeliveryDetailOut()


def _policy() -> targets.TargetPolicy:
    return targets.TargetPolicy.from_config(app_services().config)


def _page(key_type: type = int) -> Any:
    config = app_services().config
    return make_page(
        request.args.get("limit", type=int),
        request.args.get("cursor"),
        default=config.DEFAULT_PAGE_SIZE,
        maximum=config.MAX_PAGE_SIZE,
        key_type=key_type,
    )


@endpoint(
    summary="Subscribe a URL to registry events",
    tag="webhooks",
    body=request_body(WebhookCreateSchema),
    responses={
        201: json_answer("The subscription, with its secret (shown once).", WebhookCreatedOut)
    },
    errors=BODY_ERRORS,
    description="The URL must be https and resolve to public addresses, unless its host is "
    "in WEBHOOK_ALLOWED_HOSTS (or WEBHOOK_ALLOW_PRIVATE_TARGETS is on); a 422 names the field "
    "and the reason otherwise.",
)
@bp.post("/webhooks")
@requires("admin")
def create_webhook() -> Response:
    data = schemas.load(WebhookCreateSchema(), json_body())
    service.check_subscription(
        data["url"], data["events"], data["models"], _policy(), targets.system_resolver
    )
    secret, record = service.create(
        app_services().uow,
        url=data["url"],
        event_patterns=data["events"],
        models=data["models"],
        description=data["description"],
        actor=current_actor(),
    )
    return json_response(
        {**_webhook_out.dump(record), "secret": secret},
        201,
        {"Location": f"/webhooks/{record.id}"},
    )


@endpoint(
    summary="List webhook subscriptions (never their secrets)",
    tag="webhooks",
    query=schemas.ListQuerySchema(only=("limit", "cursor")),
    responses={
        200: json_answer("The subscriptions.", page_of("WebhookList", "webhooks", WebhookOut))
    },
    errors=(401, 403, 422, 503),
)
@bp.get("/webhooks")
@requires("admin")
def list_webhooks() -> Response:
    result = service.list_subscriptions(app_services().uow, _page())
    return json_response(
        {"webhooks": _webhook_out.dump(result.items, many=True), "next_cursor": result.next_cursor}
    )


@endpoint(
    summary="Get a webhook subscription",
    tag="webhooks",
    responses={200: json_answer("The subscription.", WebhookOut)},
    errors=(401, 403, 404, 503),
)
@bp.get("/webhooks/<int:webhook_id>")
@requires("admin")
def get_webhook(webhook_id: int) -> Response:
    return json_response(_webhook_out.dump(service.get(app_services().uow, webhook_id)))


@endpoint(
    summary="Change a webhook subscription (or disable and enable it)",
    tag="webhooks",
    body=request_body(WebhookUpdateSchema),
    responses={200: json_answer("The subscription.", WebhookOut)},
    errors=(*BODY_ERRORS, 404),
    description="A disabled subscription gets no new deliveries; its pending ones wait and "
    "are sent once it is enabled again.",
)
@bp.patch("/webhooks/<int:webhook_id>")
@requires("admin")
def update_webhook(webhook_id: int) -> Response:
    changes = schemas.load(WebhookUpdateSchema(), json_body())
    uow = app_services().uow
    current = service.get(uow, webhook_id)
    if {"url", "events", "models"} & changes.keys():
        service.check_subscription(
            changes.get("url", current.url),
            changes.get("events", current.events),
            changes.get("models", current.models),
            _policy(),
            targets.system_resolver,
        )
    return json_response(_webhook_out.dump(service.update(uow, webhook_id, changes)))


@endpoint(
    summary="Rotate a webhook's signing secret",
    tag="webhooks",
    responses={
        200: json_answer("The subscription, with its new secret (shown once).", WebhookCreatedOut)
    },
    errors=(401, 403, 404, 503),
    description="Deliveries are signed with both the new and the old secret for "
    "WEBHOOK_SECRET_GRACE_SECONDS, so receivers can switch without losing any.",
)
@bp.post("/webhooks/<int:webhook_id>/rotate-secret")
@requires("admin")
def rotate_webhook_secret(webhook_id: int) -> Response:
    config = app_services().config
    secret, record = service.rotate_secret(
        app_services().uow, webhook_id, grace_seconds=config.WEBHOOK_SECRET_GRACE_SECONDS
    )
    return json_response({**_webhook_out.dump(record), "secret": secret})


@endpoint(
    summary="Delete a webhook subscription and its delivery log",
    tag="webhooks",
    responses={204: no_body("Deleted; its pending deliveries are dropped.")},
    errors=(401, 403, 404, 503),
)
@bp.delete("/webhooks/<int:webhook_id>")
@requires("admin")
def delete_webhook(webhook_id: int) -> Response:
    service.delete(app_services().uow, webhook_id)
    return Response(status=204)


@endpoint(
    summary="Send a test event (webhook.test) now",
    tag="webhooks",
    responses={
        200: json_answer("The delivery, with its attempt.", DeliveryDetailOut),
        202: json_answer("Queued behind a delivery in flight to the same URL.", DeliveryDetailOut),
    },
    errors=(401, 403, 404, 503),
    description="Sent from this request, whatever events the subscription asks for; a failed "
    "test is retried like any delivery.",
)
@bp.post("/webhooks/<int:webhook_id>/test")
@requires("admin")
def test_webhook(webhook_id: int) -> Response:
    services = app_services()
    delivery_id = service.queue_test(services.uow, webhook_id, actor=current_actor())
    jobs = services.webhooks.claim(1, delivery_id=delivery_id)
    for job in jobs:
        services.webhooks.send(job)
    record = service.get_delivery(services.uow, webhook_id, delivery_id)
    return json_response(_delivery_detail_out.dump(record), 200 if jobs else 202)


@endpoint(
    summary="A webhook's deliveries, newest first",
    tag="webhooks",
    query=DeliveryQuerySchema(only=("limit", "cursor", "status")),
    responses={
        200: json_answer(
            "A page of deliveries.", page_of("DeliveryList", "deliveries", DeliveryOut)
        )
    },
    errors=(401, 403, 404, 422, 503),
)
@bp.get("/webhooks/<int:webhook_id>/deliveries")
@requires("admin")
def list_deliveries(webhook_id: int) -> Response:
    query = schemas.load(DeliveryQuerySchema(), request.args.to_dict(), prefix="query")
    result = service.list_deliveries(
        app_services().uow, webhook_id, _page(), status=query.get("status")
    )
    return json_response(
        {
            "deliveries": _delivery_out.dump(result.items, many=True),
            "next_cursor": result.next_cursor,
        }
    )


@endpoint(
    summary="One delivery, with its payload and attempts",
    tag="webhooks",
    responses={200: json_answer("The delivery.", DeliveryDetailOut)},
    errors=(401, 403, 404, 503),
)
@bp.get("/webhooks/<int:webhook_id>/deliveries/<int:delivery_id>")
@requires("admin")
def get_delivery(webhook_id: int, delivery_id: int) -> Response:
    record = service.get_delivery(app_services().uow, webhook_id, delivery_id)
    return json_response(_delivery_detail_out.dump(record))


@endpoint(
    summary="Send a delivery again",
    tag="webhooks",
    responses={202: json_answer("Queued; the dispatcher sends it within a second.", DeliveryOut)},
    errors=(401, 403, 404, 503),
    description="With a fresh retry window; the receiver sees the same `webhook-id`.",
)
@bp.post("/webhooks/<int:webhook_id>/deliveries/<int:delivery_id>/retry")
@requires("admin")
def retry_delivery(webhook_id: int, delivery_id: int) -> Response:
    record = service.retry_delivery(app_services().uow, webhook_id, delivery_id)
    app_services().webhooks.wake()
    return json_response(_delivery_out.dump(record), 202)
