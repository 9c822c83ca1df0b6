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

from sqlalchemy import and_, delete, exists, func, or_, select
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
        with self._write() as session:
            leased = exists().where(
                WebhookDelivery.subscription_id == WebhookSubscription.id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.lease_until > now,
            )
            due = and_(
                WebhookDelivery.subscription_id == WebhookSubscription.id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
            )
            if delivery_id is not None:
                due = and_(due, WebhookDelivery.id == delivery_id)
            # Found through the (subscription, status, id) index: the first entry that is
            # due, however long the backlog (and "has one due" is the same lookup).
            oldest_due = select(func.min(WebhookDelivery.id)).where(due).scalar_subquery()
            subscriptions = session.scalars(
                select(WebhookSubscription)
                .where(WebhookSubscription.enabled.is_(True), oldest_due.is_not(None), ~leased)
                .order_by(oldest_due)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            jobs = []
            for subscription in subscriptions:
                # Read again, after the lock: under READ COMMITTED the query above saw the
                # table as it was when it started, and another dispatcher may have leased
                # one of this subscription's deliveries and committed (releasing the row)
                # just before this one locked it.
                if session.scalar(select(in_flight(subscription.id, now))):
                    continue
                oldest = session.scalar(oldest_due_of(subscription.id, now, delivery_id))
                delivery = session.get(WebhookDelivery, oldest) if oldest is not None else None
                if delivery is None:
                    continue
                delivery.lease_until = now + self.settings.lease
                jobs.append(
                    Job(
                        delivery.id,
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
            delivery = session.get(WebhookDelivery, job.delivery_id)
            if delivery is None:
                return None  # its subscription was deleted meanwhile
            delivery.attempts += 1
            delivery.last_attempt_at = now
            delivery.last_status_code = response.status
            delivery.last_error = None if ok else error
            delivery.lease_until = None
            if ok:
                outcome = "delivered"
                delivery.status = "delivered"
                delivery.finished_at = now
            elif now >= delivery.retry_from + timedelta(seconds=self.settings.retry_seconds):
                outcome = "failed"
                delivery.status = "failed"
                delivery.finished_at = now
            else:
                outcome = "retry"
                wait = self.settings.backoff(delivery.attempts, self._rng)
                delivery.next_attempt_at = now + timedelta(seconds=wait)
            session.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    at=now,
                    status_code=response.status,
                    latency_ms=response.latency_ms,
                    error=None if ok else error,
                )
            )
            session.flush()
            keep = (
                select(WebhookAttempt.id)
                .where(WebhookAttempt.delivery_id == delivery.id)
                .order_by(WebhookAttempt.id.desc())
                .limit(self.settings.attempts_kept)
            )
            session.execute(
                delete(WebhookAttempt).where(
                    WebhookAttempt.delivery_id == delivery.id,
                    WebhookAttempt.id.not_in(keep.scalar_subquery()),
                )
            )
            session.commit()
        if outcome == "failed":
            log.warning(
                "webhook delivery %d failed for good after %d attempts: %s",
                job.delivery_id,
                delivery.attempts,
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
            first = session.scalar(
                select(func.min(WebhookDelivery.next_attempt_at)).where(
                    WebhookDelivery.status == "pending"
                )
            )
        if first is None:
            return False
        if first.tzinfo is None:
            first = first.replace(tzinfo=now.tzinfo)
        return first <= now

    def _write(self) -> Session:
        session = self._sessions()
        session.connection(execution_options={WRITE_OPTION: True})
        return session


def in_flight(subscription_id: int, now: datetime) -> Any:
    """Whether a delivery of this subscription is leased (being sent) right now."""
    return exists().where(
        WebhookDelivery.subscription_id == subscription_id,
        WebhookDelivery.status == "pending",
        WebhookDelivery.lease_until > now,
    )


def oldest_due_of(subscription_id: int, now: datetime, delivery_id: int | None) -> Any:
    query = select(func.min(WebhookDelivery.id)).where(
        WebhookDelivery.subscription_id == subscription_id,
        WebhookDelivery.status == "pending",
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until <= now),
    )
    if delivery_id is not None:
        query = query.where(WebhookDelivery.id == delivery_id)
    return query


def secrets_in_use(subscription: WebhookSubscription, now: datetime) -> tuple[str, ...]:
    """The current secret, and the previous one during its grace period."""
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
