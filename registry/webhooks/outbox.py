"""The outbox: deliveries written in the same transaction as the change they announce.

A committed change is therefore always announced (the row is there, whatever happens to the
process next) and a rolled-back one never is (the row goes with it). The dispatcher sends
the rows later; nothing here touches the network.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from registry.models import Event, WebhookDelivery, WebhookSubscription
from registry.webhooks import events


def enqueue(
    session: Session,
    event_type: str,
    data: dict[str, Any],
    *,
    at: datetime,
    model: str | None,
    event_id: int | None = None,
    only: WebhookSubscription | None = None,
) -> list[int]:
    """A delivery for each enabled subscription asking for this event (or for `only`);
    returns their ids."""
    if only is not None:
        subscriptions = [only.id]
    else:
        # Three columns, not the subscription objects: this runs in every registry change.
        subscriptions = [
            subscription_id
            for subscription_id, wanted, models in session.execute(
                select(
                    WebhookSubscription.id, WebhookSubscription.events, WebhookSubscription.models
                ).where(WebhookSubscription.enabled.is_(True))
            )
            if events.matches(wanted, event_type) and events.model_matches(models, model)
        ]
    if not subscriptions:
        return []
    body = events.payload(event_type, at, data)
    # One multi-row INSERT through Core: the rows are written, never read back here, so the
    # ORM's unit of work (an object, its state and its flush per row) is cost without use,
    # paid inside the editing request.
    rows = [
        {
            "subscription_id": subscription_id,
            "event_type": event_type,
            "event_id": event_id,
            "body": body,
            "status": "pending",
            "attempts": 0,
            "created_at": at,
            "next_attempt_at": at,
            "retry_from": at,
        }
        for subscription_id in subscriptions
    ]
    inserted = session.execute(
        insert(WebhookDelivery).returning(WebhookDelivery.id, sort_by_parameter_order=True), rows
    )
    return list(inserted.scalars())


def enqueue_audit_event(session: Session, event: Event, model: str) -> None:
    """Called by the repository for every audit event it records (same session)."""
    event_type = events.FROM_AUDIT.get(event.type)
    if event_type is None:
        return
    if event.id is None:
        session.flush()  # the id is the receivers' reference to the audit trail
    enqueue(
        session,
        event_type,
        {
            "event_id": event.id,
            "model": model,
            "version": event.version,
            "alias": event.alias,
            "actor": event.actor,
            "reason": event.reason or "",
            "at": event.at,
            "audit_type": event.type,
            "before": event.before,
            "after": event.after,
        },
        at=event.at,
        model=model,
        event_id=event.id,
    )
