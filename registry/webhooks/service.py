"""Webhook subscriptions and their delivery log: the use cases behind /webhooks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from registry.db import utcnow
from registry.errors import InvalidInput, NotFound
from registry.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from registry.pagination import Page, paginate
from registry.records import PageOf
from registry.unit_of_work import UnitOfWorkFactory
from registry.webhooks import events, outbox, signing, targets

MAX_EVENTS = 64
MAX_MODELS = 256


@dataclass(frozen=True)
class SubscriptionRecord:
    id: int
    url: str
    events: list[str]
    models: list[str] | None
    description: str
    enabled: bool
    created_at: datetime
    created_by: str
    updated_at: datetime
    secret_rotated_until: datetime | None  # the old secret still signs until then

    @classmethod
    def from_row(cls, row: WebhookSubscription) -> SubscriptionRecord:
        return cls(
            id=row.id,
            url=row.url,
            events=list(row.events),
            models=list(row.models) if row.models is not None else None,
            description=row.description or "",
            enabled=row.enabled,
            created_at=row.created_at,
            created_by=row.created_by,
            updated_at=row.updated_at,
            secret_rotated_until=row.previous_secret_until if row.previous_secret else None,
        )


@dataclass(frozen=True)
class AttemptRecord:
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    webhook_id: int
    message_id: str
    event_type: str
    event_id: int | None
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    finished_at: datetime | None
    payload: str
    attempt_log: list[AttemptRecord] | None = None

    @classmethod
    def from_row(
        cls, row: WebhookDelivery, attempts: list[WebhookAttempt] | None = None
    ) -> DeliveryRecord:
        from registry.webhooks.dispatcher import message_id_of

        return cls(
            id=row.id,
            webhook_id=row.subscription_id,
            message_id=message_id_of(row.id),
            event_type=row.event_type,
            event_id=row.event_id,
            status=row.status,
            attempts=row.attempts,
            created_at=row.created_at,
            next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            last_attempt_at=row.last_attempt_at,
            last_status_code=row.last_status_code,
            last_error=row.last_error,
            finished_at=row.finished_at,
            payload=row.body,
            attempt_log=(
                [AttemptRecord(a.at, a.status_code, a.latency_ms, a.error) for a in attempts]
                if attempts is not None
                else None
            ),
        )


def check_subscription(
    url: str,
    event_patterns: Sequence[str],
    models: Sequence[str] | None,
    policy: targets.TargetPolicy,
    resolve: targets.Resolver,
) -> None:
    """A 422 naming each field that is wrong (the URL is resolved and judged now, and again
    at every send)."""
    problems: dict[str, str] = {}
    try:
        target = targets.parse_target(url, policy)
        targets.judged_address(target, policy, resolve)
    except targets.TargetRefused as refused:
        problems["url"] = str(refused)
    if not event_patterns:
        problems["events"] = "name at least one event (or '*')"
    elif len(event_patterns) > MAX_EVENTS:
        problems["events"] = f"at most {MAX_EVENTS} entries"
    else:
        for pattern in event_patterns:
            problem = events.pattern_problem(pattern)
            if problem is not None:
                problems["events"] = problem
                break
    if models is not None and len(models) > MAX_MODELS:
        problems["models"] = f"at most {MAX_MODELS} names"
    if problems:
        raise InvalidInput("the webhook subscription is not valid", problems)


def create(
    uow: UnitOfWorkFactory,
    *,
    url: str,
    event_patterns: Sequence[str],
    models: Sequence[str] | None,
    description: str,
    actor: str,
) -> tuple[str, SubscriptionRecord]:
    """A new subscription and its signing secret (returned here only)."""
    now = utcnow()
    secret = signing.new_secret()
    with uow(write=True) as work:
        row = WebhookSubscription(
            url=url,
            events=sorted(set(event_patterns)),
            models=sorted(set(models)) if models is not None else None,
            description=description,
            enabled=True,
            secret=secret,
            created_at=now,
            created_by=actor,
            updated_at=now,
        )
        work.session.add(row)
        work.session.flush()
        record = SubscriptionRecord.from_row(row)
        work.commit()
    return secret, record


def list_subscriptions(uow: UnitOfWorkFactory, page: Page) -> PageOf:
    with uow() as work:
        return paginate(
            work.session,
            select(WebhookSubscription),
            WebhookSubscription.id,
            page,
            lambda rows: [SubscriptionRecord.from_row(row) for row in rows],
        )


def get(uow: UnitOfWorkFactory, webhook_id: int) -> SubscriptionRecord:
    with uow() as work:
        return SubscriptionRecord.from_row(_subscription(work.session, webhook_id))


def update(uow: UnitOfWorkFactory, webhook_id: int, changes: dict[str, Any]) -> SubscriptionRecord:
    """Apply the given fields (url, events, models, description, enabled)."""
    with uow(write=True) as work:
        row = _subscription(work.session, webhook_id, lock=True)
        for field in ("url", "description", "enabled"):
            if field in changes:
                setattr(row, field, changes[field])
        if "events" in changes:
            row.events = sorted(set(changes["events"]))
        if "models" in changes:
            models = changes["models"]
            row.models = sorted(set(models)) if models is not None else None
        row.updated_at = utcnow()
        record = SubscriptionRecord.from_row(row)
        work.commit()
    return record


def rotate_secret(
    uow: UnitOfWorkFactory, webhook_id: int, *, grace_seconds: float
) -> tuple[str, SubscriptionRecord]:
    """A new secret; the old one keeps signing (next to the new) for the grace period."""
    now = utcnow()
    secret = signing.new_secret()
    with uow(write=True) as work:
        row = _subscription(work.session, webhook_id, lock=True)
        row.previous_secret = row.secret
        row.previous_secret_until = now + timedelta(seconds=grace_seconds)
        row.secret = secret
        row.updated_at = now
        record = SubscriptionRecord.from_row(row)
        work.commit()
    return secret, record


def delete(uow: UnitOfWorkFactory, webhook_id: int) -> None:
    """The subscription and its delivery log (pending deliveries are dropped)."""
    with uow(write=True) as work:
        row = _subscription(work.session, webhook_id, lock=True)
        # Explicit, not only ON DELETE CASCADE: SQLite enforces it, but a database made
        # without foreign keys would not.
        ids = select(WebhookDelivery.id).where(WebhookDelivery.subscription_id == row.id)
        work.session.execute(
            WebhookAttempt.__table__.delete().where(WebhookAttempt.delivery_id.in_(ids))
        )
        work.session.execute(
            WebhookDelivery.__table__.delete().where(WebhookDelivery.subscription_id == row.id)
        )
        work.session.delete(row)
        work.commit()


def queue_test(uow: UnitOfWorkFactory, webhook_id: int, *, actor: str) -> int:
    """A `webhook.test` delivery for this subscription (sent whatever it subscribed to)."""
    now = utcnow()
    with uow(write=True) as work:
        row = _subscription(work.session, webhook_id)
        delivery_id = outbox.enqueue_for(
            work.session,
            row,
            events.TEST_EVENT,
            {"webhook_id": row.id, "actor": actor, "at": now},
            at=now,
        )
        work.commit()
    return delivery_id


def list_deliveries(
    uow: UnitOfWorkFactory, webhook_id: int, page: Page, *, status: str | None = None
) -> PageOf:
    """Newest first."""
    with uow() as work:
        _subscription(work.session, webhook_id)
        query = select(WebhookDelivery).where(WebhookDelivery.subscription_id == webhook_id)
        if status is not None:
            query = query.where(WebhookDelivery.status == status)
        return paginate(
            work.session,
            query,
            WebhookDelivery.id,
            page,
            lambda rows: [DeliveryRecord.from_row(row) for row in rows],
            descending=True,
        )


def get_delivery(uow: UnitOfWorkFactory, webhook_id: int, delivery_id: int) -> DeliveryRecord:
    with uow() as work:
        row = _delivery(work.session, webhook_id, delivery_id)
        attempts = list(
            work.session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == row.id)
                .order_by(WebhookAttempt.id)
            )
        )
        return DeliveryRecord.from_row(row, attempts)


def retry_delivery(uow: UnitOfWorkFactory, webhook_id: int, delivery_id: int) -> DeliveryRecord:
    """Send a delivery again now, with a fresh retry window (a delivered one too: the
    receiver sees the same webhook-id, and may dedupe it)."""
    now = utcnow()
    with uow(write=True) as work:
        row = _delivery(work.session, webhook_id, delivery_id, lock=True)
        if row.status == "pending" and row.lease_until is not None and row.lease_until > now:
            record = DeliveryRecord.from_row(row)
            work.commit()
            return record  # being sent right now
        row.status = "pending"
        row.next_attempt_at = now
        row.retry_from = now
        row.finished_at = None
        record = DeliveryRecord.from_row(row)
        work.commit()
    return record


_MAX_ID = 2**31 - 1  # the id columns are 32-bit integers; a larger id names nothing


def _subscription(session: Any, webhook_id: int, *, lock: bool = False) -> WebhookSubscription:
    if not 0 < webhook_id <= _MAX_ID:
        raise NotFound(f"no webhook {webhook_id}")
    query = select(WebhookSubscription).where(WebhookSubscription.id == webhook_id)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise NotFound(f"no webhook {webhook_id}")
    return row


def _delivery(
    session: Any, webhook_id: int, delivery_id: int, *, lock: bool = False
) -> WebhookDelivery:
    _subscription(session, webhook_id)
    if not 0 < delivery_id <= _MAX_ID:
        raise NotFound(f"no delivery {delivery_id} of webhook {webhook_id}")
    query = select(WebhookDelivery).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.subscription_id == webhook_id
    )
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise NotFound(f"no delivery {delivery_id} of webhook {webhook_id}")
    return row
