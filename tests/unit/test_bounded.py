"""Registry lookups with a deadline: one query per key, callers never wait past the timeout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from registry.bounded import BoundedLookups, LookupTimeout
from registry.errors import DependencyUnavailable, NotFound


def test_concurrent_callers_share_one_call():
    lookups = BoundedLookups(workers=2)
    release = threading.Event()
    calls = []

    def slow() -> str:
        calls.append(1)
        release.wait(5)
        return "answer"

    with ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(lookups.call, "k", slow, 5) for _ in range(10)]
        time.sleep(0.1)
        assert lookups.in_flight("k")
        release.set()
        assert [f.result() for f in futures] == ["answer"] * 10
    assert len(calls) == 1 and not lookups.in_flight("k")
    assert lookups.call("k", lambda: "again", 1) == "again"  # a finished call is not reused


def test_a_caller_waits_at_most_the_timeout():
    lookups = BoundedLookups()
    stuck = threading.Event()
    started = time.monotonic()
    with pytest.raises(LookupTimeout) as raised:
        lookups.call("k", lambda: stuck.wait(10), 0.2)
    assert time.monotonic() - started < 1.0
    assert isinstance(raised.value, DependencyUnavailable)
    stuck.set()


def test_errors_reach_every_caller_and_the_next_call_retries():
    lookups = BoundedLookups()

    def missing() -> None:
        raise NotFound("no such model")

    with pytest.raises(NotFound):
        lookups.call("k", missing, 1)
    assert lookups.call("k", lambda: 42, 1) == 42
