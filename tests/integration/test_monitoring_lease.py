"""The monitoring job's lease on SQLite and PostgreSQL: one holder at a time, renewed by its
holder, taken over once it expires."""

from __future__ import annotations

import time

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

import migrations
from registry.db import tune_engine
from registry.monitoring.store import take_lease


def test_one_holder_renewal_and_takeover(database_url):
    engine = create_engine(database_url)
    tune_engine(engine)
    try:
        migrations.upgrade(engine)
        sessions = sessionmaker(bind=engine)
        assert take_lease(sessions, "monitoring", "a", 0.5) is True
        assert take_lease(sessions, "monitoring", "b", 0.5) is False
        assert take_lease(sessions, "monitoring", "a", 0.5) is True  # renewed by its holder
        assert take_lease(sessions, "other-job", "b", 0.5) is True  # leases are per job
        time.sleep(0.6)
        assert take_lease(sessions, "monitoring", "b", 5) is True  # expired: taken over
        assert take_lease(sessions, "monitoring", "a", 5) is False
    finally:
        engine.dispose()
