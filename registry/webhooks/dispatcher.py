"""Sends the outbox: claims due deliveries, posts them, records every attempt.

Every process of `modelreg serve` runs one. A delivery is claimed by setting its lease in a
write transaction that holds its subscription's row with FOR UPDATE SKIP LOCKED (PostgreSQL;
SQLite's single writer serializes the same transaction), and a subscription with a leased
delivery is not claimed again: one delivery per subscription is in flight across all
processes and hosts, oldest first, so receivers see a subscription's events in order unless
one of them fails and is retried while later ones go through. A process that dies holding
a lease lets it go when the lease ends, and another sends the delivery again: at least once,
with the same `webhook-id` for the receiver to dedupe.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select
from sqlalchemy.orm import Session, sessionmaker

from registry.db import WRITE_OPTION, utcnow
from registry.models import WebhookAttempt, WebhookDelivery, WebhookSubscription
from registry.webhooks import signing, targets

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 60.0  # seconds between two removals of old finished deliveries
QUEUE_REPORT_SECONDS = 5.0  # between two counts of the pending deliveries (metrics)
LEASE_MARGIN = 30.0  # seconds a lease outlives the longest possible attempt


@dataclass(frozen=True)
class DispatchSettings:
    poll_seconds: float = 1.0
    senders: int = 4
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    backoff_base: float = 5.0
    backoff_max: float = 3600.0
    retry_seconds: float = 24 * 3600.0
    attempts_kept: int = 10
    retention_days: float = 7.0

    @classmethod
    def from_config(cls, config: Any) -> DispatchSettings:
        return cls(
            poll_seconds=config.WEBHOOK_POLL_SECONDS,
            senders=max(1, config.WEBHOOK_SENDERS),
            connect_timeout=config.WEBHOOK_CONNECT_TIMEOUT,
            read_timeout=config.WEBHOOK_READ_TIMEOUT,
            backoff_base=config.WEBHOOK_BACKOFF_BASE_SECONDS,
            backoff_max=config.WEBHOOK_BACKOFF_MAX_SECONDS,
            retry_seconds=config.WEBHOOK_RETRY_SECONDS,
            attempts_kept=max(1, config.WEBHOOK_ATTEMPTS_KEPT),
            retention_days=config.WEBHOOK_LOG_RETENTION_DAYS,
        )

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.connect_timeout + self.read_timeout + LEASE_MARGIN)

    def backoff(self, attempts: int, rng: random.Random) -> float:
        """Seconds before the next try after `attempts` failed ones: exponential, capped,
        with jitter (half fixed, half random) so that receivers coming back are not hit by
        every sender at once."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** min(attempts - 1, 30))
        return ceiling / 2 + rng.random() * ceiling / 2


@dataclass(frozen=True)
class Job:
    """A claimed delivery, with what sending it needs."""

    delivery_id: int
    url: str
    secrets: tuple[str, ...]
    body: str
    created_at: datetime


Outcome = Callable[[str], None]  # "delivered" | "retry" | "failed"


class Dispatcher:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: DispatchSettings,
        policy: targets.TargetPolicy,
        *,
        on_outcome: Outcome | None = None,
        on_queue: Callable[[int, float], None] | None = None,
        resolve: targets.Resolver = targets.system_resolver,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._sessions = session_factory
        self.settings = settings
        self.policy = policy
        self._on_outcome = on_outcome
        self._on_queue = on_queue
        self._resolve = resolve
        self._clock = clock
        self._rng = random.Random()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight = 0
        self._lock = threading.Lock()
        self._pruned_at = 0.0

    # -- the background loop ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._pool = ThreadPoolExecutor(self.settings.senders, thread_name_prefix="webhook")
        self._thread = threading.Thread(target=self._run, name="webhook-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming; wait up to `timeout` for deliveries in flight (an unfinished one
        is sent again by whoever holds it next, once its lease ends)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        reported = -math.inf
        while not self._stopping.is_set():
            try:
                # A round runs every poll_seconds, and when a send ends or a delivery is
                # retried by hand. With every sender busy there is nothing to claim;
                # otherwise one read says whether anything is due, and the claim (a write
                # transaction) runs only when something is.
                with self._lock:
                    free = self.settings.senders - self._in_flight
                if free > 0 and self._anything_due():
                    self._claim_and_submit()
                if time.monotonic() - reported >= QUEUE_REPORT_SECONDS:
                    # Counting a large backlog reads every pending row: not every round.
                    if self._on_queue is not None:
                        self._on_queue(*self.queue_state())
                    reported = time.monotonic()
                self._maybe_prune()
            except Exception:
                log.exception("the webhook dispatcher failed a round; it retries")
            self._wake.wait(self.settings.poll_seconds)
            self._wake.clear()

    def _claim_and_submit(self) -> None:
        with self._lock:
            free = self.settings.senders - self._in_flight
        if free <= 0 or self._pool is None:
            return
        for job in self.claim(free):
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._send_in_pool, job)

    def _send_in_pool(self, job: Job) -> None:
        try:
            self.send(job)
        except Exception:
            log.exception("sending webhook delivery %d failed", job.delivery_id)
        finally:
            with self._lock:
                self._in_flight -= 1
            self._wake.set()  # a slot is free, and this subscription may have more

    # -- one round, callable directly (tests, `POST .../test`) ---------------------------

    def run_once(self, limit: int | None = None) -> int:
        """Claim and send due deliveries in this thread; returns how many were sent."""
        jobs = self.claim(limit or self.settings.senders)
        for job in jobs:
            self.send(job)
        return len(jobs)

    def claim(self, limit: int, *, delivery_id: int | None = None) -> list[Job]:
        """Lease up to `limit` due deliveries, at most one per subscription (or exactly the
        delivery `delivery_id`, if it is pending and not leased)."""
        now = self._clock()
        statements = _CLAIM_ONE if delivery_id is not None else _CLAIM
        parameters = {"now": now, "delivery_id": delivery_id}
        with self._write() as session:
            subscriptions = session.execute(
                statements.subscriptions, {**parameters, "limit": limit}
            ).all()
            jobs = []
            lease_until = now + self.settings.lease
            for subscription in subscriptions:
                # Read again, after the lock: under READ COMMITTED the query above saw the
                # table as it was when it started, and another dispatcher may have leased
                # one of this subscription's deliveries and committed (releasing the row)
                # just before this one locked it.
                mine = {**parameters, "subscription_id": subscription.id}
                if session.scalar(statements.in_flight, mine):
                    continue
                oldest = session.scalar(statements.oldest_due, mine)
                delivery = None
                if oldest is not None:
                    delivery = session.execute(_DELIVERY_TO_SEND, {"id": oldest}).first()
                if delivery is None:
                    continue
                session.execute(_LEASE, {"delivery": oldest, "until": lease_until})
                jobs.append(
                    Job(
                        oldest,
                        subscription.url,
                        secrets_in_use(subscription, now),
                        delivery.body,
                        delivery.created_at,
                    )
                )
            session.commit()
        return jobs

    def send(self, job: Job) -> targets.Response:
        """Post one claimed delivery and record the attempt."""
        timestamp = int(time.time())
        message_id = message_id_of(job.delivery_id)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "modelreg-webhooks",
            **signing.headers(job.secrets, message_id, timestamp, job.body),
        }
        try:
            target = targets.parse_target(job.url, self.policy)
            address = targets.judged_address(target, self.policy, self._resolve)
        except targets.TargetRefused as refused:
            response = targets.Response(None, 0.0, f"refused: {refused}")
        else:
            response = targets.post(
                target,
                address,
                job.body.encode(),
                headers,
                connect_timeout=self.settings.connect_timeout,
                read_timeout=self.settings.read_timeout,
            )
        outcome = self._record(job, response)
        if outcome is not None and self._on_outcome is not None:
            self._on_outcome(outcome)
        return response

    def _record(self, job: Job, response: targets.Response) -> str | None:
        now = self._clock()
        ok = response.status is not None and 200 <= response.status < 300
        error = response.error
        if error is None and not ok:
            error = f"HTTP {response.status}"
        with self._write() as session:
            row = session.execute(_ATTEMPTS_SO_FAR, {"id": job.delivery_id}).first()
            if row is None:
                return None  # its subscription was deleted meanwhile
            attempts = row.attempts + 1
            changes: dict[str, Any] = {
                "attempts": attempts,
                "last_attempt_at": now,
                "last_status_code": response.status,
                "last_error": None if ok else error,
                "lease_until": None,
            }
            if ok:
                outcome = "delivered"
                changes.update(status="delivered", finished_at=now)
            elif now >= row.retry_from + timedelta(seconds=self.settings.retry_seconds):
                outcome = "failed"
                changes.update(status="failed", finished_at=now)
            else:
                outcome = "retry"
                wait = self.settings.backoff(attempts, self._rng)
                changes["next_attempt_at"] = now + timedelta(seconds=wait)
            session.execute(
                _DELIVERIES.update().where(_DELIVERIES.c.id == job.delivery_id).values(changes)
            )
            session.execute(
                _ADD_ATTEMPT,
                {
                    "delivery_id": job.delivery_id,
                    "at": now,
                    "status_code": response.status,
                    "latency_ms": response.latency_ms,
                    "error": None if ok else error,
                },
            )
            session.execute(
                _PRUNE_ATTEMPTS,
                {"delivery_id": job.delivery_id, "kept": self.settings.attempts_kept},
            )
            session.commit()
        if outcome == "failed":
            log.warning(
                "webhook delivery %d failed for good after %d attempts: %s",
                job.delivery_id,
                attempts,
                error,
            )
        return outcome

    # -- housekeeping --------------------------------------------------------------------

    def prune(self) -> int:
        """Remove finished deliveries older than the retention period (the log's bound)."""
        before = self._clock() - timedelta(days=self.settings.retention_days)
        with self._write() as session:
            removed = session.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.status != "pending", WebhookDelivery.finished_at < before
                )
            ).rowcount
            session.commit()
        return removed or 0

    def _maybe_prune(self) -> None:
        if time.monotonic() - self._pruned_at >= PRUNE_INTERVAL:
            self._pruned_at = time.monotonic()
            self.prune()

    def queue_state(self) -> tuple[int, float]:
        """(pending deliveries, age in seconds of the oldest one)."""
        with self._sessions() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(WebhookDelivery.created_at)).where(
                    WebhookDelivery.status == "pending"
                )
            ).one()
        if not count or oldest is None:
            return 0, 0.0
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=self._clock().tzinfo)
        return int(count), max(0.0, (self._clock() - oldest).total_seconds())

    def _anything_due(self) -> bool:
        """Whether a pending delivery's time has come: one read of the first entry of the
        (status, next_attempt_at) index, however long the queue."""
        now = self._clock()
        with self._sessions() as session:
            first = session.scalar(_FIRST_DUE)
        if first is None:
            return False
        if first.tzinfo is None:
            first = first.replace(tzinfo=now.tzinfo)
        return first <= now

    def _write(self) -> Session:
        session = self._sessions()
        session.connection(execution_options={WRITE_OPTION: True})
        return session


@dataclass(frozen=True)
class _ClaimStatements:
    """A claim's statements, built once with bound parameters (`now`, `limit`,
    `subscription_id`, `delivery_id`): building and keying them anew cost more CPU than
    running them, in every round of every process."""

    subscriptions: Any  # enabled subscriptions with a due delivery and none leased, locked
    in_flight: Any  # whether the subscription has a leased delivery
    oldest_due: Any  # the id of its oldest due delivery that is not leased


def _claim_statements(*, one: bool) -> _ClaimStatements:
    now = bindparam("now")
    delivery = WebhookDelivery
    leased = exists().where(
        delivery.subscription_id == WebhookSubscription.id,
        delivery.status == "pending",
        delivery.lease_until > now,
    )
    due = and_(
        delivery.subscription_id == WebhookSubscription.id,
        delivery.status == "pending",
        delivery.next_attempt_at <= now,
    )
    if one:
        due = and_(due, delivery.id == bindparam("delivery_id"))
    # Found through the (subscription, status, id) index: the first entry that is due,
    # however long the backlog (and "has one due" is the same lookup).
    oldest_due = select(func.min(delivery.id)).where(due).scalar_subquery()
    subscriptions = (
        select(
            WebhookSubscription.id,
            WebhookSubscription.url,
            WebhookSubscription.secret,
            WebhookSubscription.previous_secret,
            WebhookSubscription.previous_secret_until,
        )
        .where(WebhookSubscription.enabled.is_(True), oldest_due.is_not(None), ~leased)
        .order_by(oldest_due)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    subscription_id = bindparam("subscription_id")
    in_flight = select(
        exists().where(
            delivery.subscription_id == subscription_id,
            delivery.status == "pending",
            delivery.lease_until > now,
        )
    )
    oldest = select(func.min(delivery.id)).where(
        delivery.subscription_id == subscription_id,
        delivery.status == "pending",
        delivery.next_attempt_at <= now,
        or_(delivery.lease_until.is_(None), delivery.lease_until <= now),
    )
    if one:
        oldest = oldest.where(delivery.id == bindparam("delivery_id"))
    return _ClaimStatements(subscriptions, in_flight, oldest)


_CLAIM = _claim_statements(one=False)
_CLAIM_ONE = _claim_statements(one=True)

# The rest of a round, in Core on the tables and built once: the ORM's identity map and
# flush, and building each statement anew, cost more than running them.
_DELIVERIES = WebhookDelivery.__table__
_FIRST_DUE = select(func.min(_DELIVERIES.c.next_attempt_at)).where(
    _DELIVERIES.c.status == "pending"
)
_DELIVERY_TO_SEND = select(_DELIVERIES.c.body, _DELIVERIES.c.created_at).where(
    _DELIVERIES.c.id == bindparam("id")
)
_LEASE = (
    _DELIVERIES.update()
    .where(_DELIVERIES.c.id == bindparam("delivery"))
    .values(lease_until=bindparam("until"))
)
_ATTEMPTS_SO_FAR = select(_DELIVERIES.c.attempts, _DELIVERIES.c.retry_from).where(
    _DELIVERIES.c.id == bindparam("id")
)
_ADD_ATTEMPT = insert(WebhookAttempt.__table__)
# A delivery's attempts beyond the newest `kept`: the delivery log's bound.
_PRUNE_ATTEMPTS = delete(WebhookAttempt).where(
    WebhookAttempt.delivery_id == bindparam("delivery_id"),
    WebhookAttempt.id.not_in(
        select(WebhookAttempt.id)
        .where(WebhookAttempt.delivery_id == bindparam("delivery_id"))
        .order_by(WebhookAttempt.id.desc())
        .limit(bindparam("kept"))
        .scalar_subquery()
    ),
)


def secrets_in_use(subscription: Any, now: datetime) -> tuple[str, ...]:
    """The current secret, and the previous one during its grace period (`subscription`:
    a row or object with `secret`, `previous_secret` and `previous_secret_until`)."""
    if (
        subscription.previous_secret
        and subscription.previous_secret_until is not None
        and now < subscription.previous_secret_until
    ):
        return (subscription.secret, subscription.previous_secret)
    return (subscription.secret,)


def message_id_of(delivery_id: int) -> str:
    """`webhook-id`: the same on every attempt, so receivers can dedupe."""
    return f"msg_{delivery_id}"
