"""A dispatcher's claim must not grow with the backlog: on SQLite (the embedded default, whose
planner has no statistics to go by) every read of the deliveries goes through an index seek
that stops at the first matching entry, never through a scan of the pending rows."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine, event, insert, update
from sqlalchemy.orm import sessionmaker

import migrations
from registry.db import tune_engine, utcnow
from registry.models import WebhookDelivery, WebhookSubscription
from registry.webhooks.dispatcher import Dispatcher, DispatchSettings
from registry.webhooks.targets import TargetPolicy

BACKLOG = 3_000
INDEXED = ("ix_webhook_deliveries_subscription", "ix_webhook_deliveries_lease", "PRIMARY KEY")


@pytest.fixture
def backlog_engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    tune_engine(engine)
    migrations.upgrade(engine)
    now = utcnow()
    with engine.begin() as connection:
        for subscription_id in (1, 2, 3):
            connection.execute(
                insert(WebhookSubscription),
                {
                    "id": subscription_id,
                    "url": "https://hooks.example.com/in",
                    "events": ["*"],
                    "models": None,
                    "description": "",
                    "enabled": True,
                    "secret": "whsec_test",
                    "created_at": now,
                    "created_by": "test",
                    "updated_at": now,
                },
            )
        # Subscription 3 has nothing pending: "has it one due" must not read the others'.
        connection.execute(
            insert(WebhookDelivery),
            [
                {
                    "subscription_id": 1 + k % 2,
                    "event_type": "version.registered",
                    "body": "{}",
                    "status": "pending",
                    "attempts": 0,
                    "created_at": now,
                    "next_attempt_at": now - timedelta(seconds=1),
                    "retry_from": now,
                }
                for k in range(BACKLOG)
            ],
        )
    yield engine
    engine.dispose()


def _plans_of_a_claim(engine) -> list[tuple[str, list[str]]]:
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "webhook_deliveries" in statement:
            statements.append((statement, parameters))

    settings = DispatchSettings()
    dispatcher = Dispatcher(sessionmaker(engine), settings, TargetPolicy(allow_private=True))
    event.listen(engine, "before_cursor_execute", capture)
    try:
        jobs = dispatcher.claim(4)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert sorted(job.delivery_id for job in jobs) == [1, 2]  # the oldest of each backlog
    raw = engine.raw_connection()
    try:
        return [
            (
                " ".join(sql.split()),
                [row[-1] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params)],
            )
            for sql, params in statements
        ]
    finally:
        raw.close()


@pytest.mark.parametrize("leases", ["none", "ended"])
def test_a_claim_seeks_the_first_due_delivery_instead_of_reading_the_backlog(
    backlog_engine, leases
):
    if leases == "ended":  # every delivery once leased, by a process that died long ago
        with backlog_engine.begin() as connection:
            connection.execute(
                update(WebhookDelivery).values(lease_until=utcnow() - timedelta(hours=1))
            )
    plans = _plans_of_a_claim(backlog_engine)
    assert plans
    leased_checks = 0
    for statement, steps in plans:
        reads = [step for step in steps if "webhook_deliveries" in step]
        assert reads, (statement[:80], steps)
        for step in reads:
            assert step.startswith("SEARCH") and any(index in step for index in INDEXED), (
                statement[:80],
                steps,
            )
        if "lease_until >" in statement:
            # "Is one leased?" seeks the lease range itself: walking the subscription's
            # entries in the covering index would still read its whole backlog.
            leased_checks += 1
            assert any("ix_webhook_deliveries_lease" in s and "lease_until>" in s for s in steps), (
                statement[:80],
                steps,
            )
    assert leased_checks >= 2  # in the claim's query, and again after each lock
