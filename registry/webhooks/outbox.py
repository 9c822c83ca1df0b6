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

# Core statements on the tables, built once. Every registry change runs them inside its own
# transaction: the ORM's unit of work and bulk machinery (objects, states, a statement per
# row to read the ids back) cost about 1 ms of CPU per change with four subscriptions here,
# for rows this code only writes.
_DELIVERIES = WebhookDelivery.__table__
_SUBSCRIPTIONS = WebhookSubscription.__table__
_ENABLED = select(_SUBSCRIPTIONS.c.id, _SUBSCRIPTIONS.c.events, _SUBSCRIPTIONS.c.models).where(
    _SUBSCRIPTIONS.c.enabled.is_(True)
)
_INSERT = insert(_DELIVERIES)
_INSERT_RETURNING_ID = insert(_DELIVERIES).returning(_DELIVERIES.c.id)


def enqueue(
    session: Session,
    event_type: str,
    data: dict[str, Any],
    *,
    at: datetime,
    model: str | None,
    event_id: int | None = None,
) -> int:
    """A delivery for each enabled subscription asking for this event; returns how many."""
    subscriptions = [
        subscription_id
        for subscription_id, wanted, models in session.execute(_ENABLED)
        if events.matches(wanted, event_type) and events.model_matches(models, model)
    ]
    if subscriptions:
        body = events.payload(event_type, at, data)
        rows = [_row(s, event_type, event_id, body, at) for s in subscriptions]
        session.execute(_INSERT, rows)  # one executemany: nothing is read back
    return len(subscriptions)


def enqueue_for(
    session: Session,
    subscription: WebhookSubscription,
    event_type: str,
    data: dict[str, Any],
    *,
    at: datetime,
) -> int:
    """One delivery for this subscription alone, whatever it asked for (a test ping);
    returns its id."""
    row = _row(subscription.id, event_type, None, events.payload(event_type, at, data), at)
    return session.execute(_INSERT_RETURNING_ID, row).scalar_one()


def _row(
    subscription_id: int, event_type: str, event_id: int | None, body: str, at: datetime
) -> dict[str, Any]:
    return {
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
