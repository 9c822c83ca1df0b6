"""The reference resolver's alias refresh: a busy alias is read again in the background before
its bound, so a request never waits on the registry for it; a read that started before the
alias was forgotten here (moved by this process) does not bring back what it read."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

from registry.bounded import BoundedLookups
from registry.errors import DependencyUnavailable
from registry.names import Reference
from registry.records import VersionRecord
from serving.resolver import REFRESH_AHEAD, ReferenceResolver

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ALIAS = Reference(alias="production")


def _record(version: int, status: str = "ready") -> VersionRecord:
    return VersionRecord(
        name="price",
        version=version,
        status=status,
        format="skops",
        sha256=f"{version:064x}",
        size=1,
        artifact_key=f"price/{version}",
        description="",
        tags={},
        metrics={},
        params={},
        source={},
        input_example=None,
        signature=None,
        created_at=NOW,
        created_by="t",
        updated_at=NOW,
    )


class Registry:
    """What the alias names; counts reads; a read can be held until released, or fail."""

    def __init__(self) -> None:
        self.version = 1
        self.reads = 0
        self.hold: threading.Event | None = None
        self.started = threading.Event()
        self.down = False
        self.policy: dict | None = None  # the alias's policy, with its variants' statuses
        self.statuses: dict[int, str] = {}  # the variants' statuses, as the registry has them

    def fetch(self, name: str, ref: Reference) -> VersionRecord:
        self.reads += 1
        if self.down:
            raise DependencyUnavailable("the registry database is down")
        version = self.version if ref.version is None else ref.version
        self.started.set()
        if self.hold is not None:
            assert self.hold.wait(10)
        record = _record(version, self.statuses.get(version, "ready"))
        if ref.alias is not None and self.policy is not None:
            record = dataclasses.replace(
                record, policy={**self.policy, "statuses": dict(self.statuses)}
            )
        return record


def _resolver(registry: Registry, clock: list[float]) -> tuple[ReferenceResolver, BoundedLookups]:
    lookups = BoundedLookups(workers=2, name="test-lookup")
    resolver = ReferenceResolver(
        registry.fetch, refresh_seconds=1.0, lookups=lookups, clock=lambda: clock[0]
    )
    return resolver, lookups


def _wait_idle(lookups: BoundedLookups) -> None:
    for _ in range(500):
        if not lookups.busy():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the background read did not finish")


def _held_read_ahead() -> tuple[Registry, ReferenceResolver, BoundedLookups]:
    """An alias read once, then 0.85 s later a read-ahead of it that is held (running)."""
    registry, clock = Registry(), [100.0]
    resolver, lookups = _resolver(registry, clock)
    resolver.resolve("price", ALIAS)
    registry.hold = threading.Event()
    registry.started.clear()
    clock[0] += 0.85
    assert resolver.peek("price", ALIAS).spec.version == 1
    assert registry.started.wait(5)
    return registry, resolver, lookups


def test_a_busy_alias_is_read_again_in_the_background_before_its_bound():
    registry, clock = Registry(), [100.0]
    resolver, lookups = _resolver(registry, clock)
    assert resolver.resolve("price", ALIAS).spec.version == 1
    assert registry.reads == 1
    clock[0] += REFRESH_AHEAD * 0.9  # young: answered from memory, nothing read
    assert resolver.peek("price", ALIAS).spec.version == 1
    assert registry.reads == 1

    registry.version = 2  # another process moves the alias
    clock[0] = 100.0 + 0.85  # past the refresh-ahead point, inside the bound
    assert resolver.peek("price", ALIAS).spec.version == 1  # answered at once
    _wait_idle(lookups)
    assert registry.reads == 2
    # The background read landed: past the old bound the fast path still answers (no
    # registry wait), with the new mapping, read 0.85 s after the first.
    clock[0] = 100.0 + 1.5
    resolution = resolver.peek("price", ALIAS)
    assert resolution is not None and resolution.spec.version == 2 and not resolution.stale
    clock[0] = 100.0 + 0.85 + 1.0  # that read is as old as the bound now: asked again
    assert resolver.peek("price", ALIAS) is None


def test_only_one_background_read_runs_per_alias():
    registry, resolver, lookups = _held_read_ahead()
    for _ in range(50):
        assert resolver.peek("price", ALIAS).spec.version == 1
    registry.hold.set()
    _wait_idle(lookups)
    assert registry.reads == 2


def test_a_read_that_started_before_the_alias_was_forgotten_is_not_kept():
    registry, resolver, lookups = _held_read_ahead()
    resolver.forget_alias("price", "production")  # this process moved the alias
    registry.version = 3
    registry.hold.set()
    _wait_idle(lookups)
    # What the read found (version 1, read before the move) was not kept: the next
    # request reads the alias again and sees the move.
    assert resolver.peek("price", ALIAS) is None
    registry.hold = None
    assert resolver.resolve("price", ALIAS).spec.version == 3


def test_a_background_read_that_fails_unexpectedly_is_logged_and_the_mapping_kept(caplog):
    registry, clock = Registry(), [100.0]
    resolver, lookups = _resolver(registry, clock)
    resolver.resolve("price", ALIAS)

    def broken(name: str, ref: Reference) -> VersionRecord:
        raise RuntimeError("a bug in the fetch")

    resolver._fetch = broken
    clock[0] += 0.85
    with caplog.at_level("ERROR", logger="registry.bounded"):
        assert resolver.peek("price", ALIAS).spec.version == 1
        _wait_idle(lookups)
    assert "a background registry lookup failed" in caplog.text
    assert "a bug in the fetch" in caplog.text
    assert resolver.peek("price", ALIAS).spec.version == 1  # still within its bound


def test_a_request_after_a_forget_does_not_join_a_read_that_started_before_it():
    registry, resolver, lookups = _held_read_ahead()
    resolver.forget_alias("price", "production")  # this process moved the alias to v3
    registry.version = 3
    answers: list[int] = []
    request = threading.Thread(
        target=lambda: answers.append(resolver.resolve("price", ALIAS).spec.version)
    )
    request.start()  # its own read: the held one was started before the move
    threading.Event().wait(0.2)
    registry.hold.set()
    request.join(10)
    _wait_idle(lookups)
    assert answers == [3]
    assert resolver.peek("price", ALIAS).spec.version == 3


def test_a_read_that_started_before_a_model_was_forgotten_brings_back_none_of_it():
    registry, resolver, lookups = _held_read_ahead()
    resolver.forget_model("price")  # deleted here
    registry.hold.set()
    _wait_idle(lookups)
    assert resolver.pinned("price", 1) is None
    assert not resolver.knows_model("price")
    assert resolver.peek("price", ALIAS) is None


def test_a_failed_read_ahead_backs_off_instead_of_reading_on_every_request():
    registry, clock = Registry(), [100.0]
    resolver, lookups = _resolver(registry, clock)
    resolver.resolve("price", ALIAS)
    registry.down = True
    clock[0] += 0.85
    for _ in range(200):
        assert resolver.peek("price", ALIAS).spec.version == 1
        _wait_idle(lookups)
    assert registry.reads == 2  # the first read and one failed read-ahead
    # Past the bound, within the backoff: the last known mapping, marked stale, unasked.
    clock[0] = 100.0 + 1.2
    stale = resolver.peek("price", ALIAS)
    assert stale is not None and stale.stale and stale.spec.version == 1
    assert registry.reads == 2


def test_an_alias_read_follows_its_variants_statuses():
    registry, clock = Registry(), [100.0]
    registry.policy = {
        "spec": {
            "variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
            "ranges": [[0, 0, 5000], [1, 5000, 10000]],
        },
        "salt": "s",
        "revision": 1,
    }
    registry.statuses = {2: "ready"}
    resolver, lookups = _resolver(registry, clock)
    assert resolver.resolve("price", ALIAS).policy.versions == (1, 2)
    first = resolver.resolve("price", Reference(version=2))
    assert resolver.pinned("price", 2) is first

    def read_again() -> None:
        clock[0] += 0.85
        resolver.peek("price", ALIAS)
        _wait_idle(lookups)

    read_again()  # unchanged: the same object stays (routed answers keyed by it stay valid)
    assert resolver.pinned("price", 2) is first
    registry.statuses = {2: "archived"}  # archived through another process
    read_again()
    assert resolver.pinned("price", 2) is None  # its next request reads it again
    assert resolver.resolve("price", Reference(version=2)).spec.status == "archived"
    registry.statuses = {}  # deleted through another process
    read_again()
    assert resolver.pinned("price", 2) is None and resolver.gone("price", 2)
    resolver.forget_model("price")  # a model made again under the name starts afresh
    assert not resolver.gone("price", 2)
