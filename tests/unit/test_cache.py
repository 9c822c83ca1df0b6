"""Unit tests for serving.cache: single-flight, LRU bounds, failures, events, thread safety."""

from __future__ import annotations

import logging
import random
import re
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from serving.cache import LoadedModel, ModelCache, VersionKey

WAIT = 5.0  # upper bound for any synchronisation wait; tests never sleep
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def key(name: str = "m", version: int = 1) -> VersionKey:
    return VersionKey(name, version, f"{name}-{version}".encode().hex().ljust(64, "0"))


A, B, C, D = key("a"), key("b"), key("c"), key("d")


def fitted() -> LinearRegression:
    x = np.arange(20, dtype=float).reshape(-1, 1)
    return LinearRegression().fit(x, np.arange(20, dtype=float))


class Loader:
    """Counting loader; optional per-key gates block it, `fail` makes it raise."""

    def __init__(self, nbytes: int | dict[VersionKey, int] = 100) -> None:
        self.nbytes = nbytes
        self.calls: list[VersionKey] = []
        self.gates: dict[VersionKey, threading.Event] = {}
        self.started: dict[VersionKey, threading.Event] = {}
        self.fail: BaseException | None = None
        self._lock = threading.Lock()

    def gate(self, k: VersionKey) -> threading.Event:
        self.gates[k] = threading.Event()
        self.started[k] = threading.Event()
        return self.gates[k]

    def __call__(self, k: VersionKey) -> LoadedModel:
        with self._lock:
            self.calls.append(k)
        if k in self.gates:
            self.started[k].set()
            assert self.gates[k].wait(WAIT), "test gate never opened"
        if self.fail is not None:
            raise self.fail
        size = self.nbytes if isinstance(self.nbytes, int) else self.nbytes[k]
        return LoadedModel(key=k, model=fitted(), nbytes=size, load_seconds=0.01)


class Events:
    """on_event recorder that can wait for a number of events of one kind."""

    def __init__(self) -> None:
        self.log: list[tuple[str, VersionKey, dict]] = []
        self._cond = threading.Condition()

    def __call__(self, kind: str, k: VersionKey, info: dict) -> None:
        with self._cond:
            self.log.append((kind, k, info))
            self._cond.notify_all()

    def wait_for(self, kind: str, n: int) -> None:
        with self._cond:
            ok = self._cond.wait_for(lambda: sum(e[0] == kind for e in self.log) >= n, WAIT)
        assert ok, f"never saw {n} {kind!r} events: {self.log}"

    def kinds(self) -> list[tuple[str, str]]:
        return [(kind, k.name) for kind, k, _ in self.log]


def run_threads(n: int, target: Callable[[int], Any]) -> tuple[list[Any], list[threading.Thread]]:
    """Start n threads running target(i); results[i] is its return value or raised exception."""
    results: list[Any] = [None] * n

    def body(i: int) -> None:
        try:
            results[i] = target(i)
        except BaseException as exc:  # recorded for assertions
            results[i] = exc

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return results, threads


def join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "thread hung"


def names(cache: ModelCache) -> list[str]:
    return [e["name"] for e in cache.entries()]


# ---------------------------------------------------------------------------- basics


def test_miss_then_hit_returns_same_real_model() -> None:
    loader = Loader()
    cache = ModelCache(loader, max_models=4, max_bytes=10_000)

    first = cache.get_or_load(A)
    second = cache.get_or_load(A)

    assert second is first
    assert loader.calls == [A]
    assert first.key == A
    assert first.model.predict(np.array([[7.0]]))[0] == pytest.approx(7.0)
    assert cache.get(A) is first
    assert cache.get(B) is None  # get() never loads ...
    assert loader.calls == [A]
    s = cache.stats()
    assert (s["hits"], s["misses"], s["loads"]) == (2, 1, 1)  # ... and a get() miss counts nothing


def test_constructor_validates_bounds() -> None:
    with pytest.raises(ValueError):
        ModelCache(Loader(), max_models=0, max_bytes=1)
    with pytest.raises(ValueError):
        ModelCache(Loader(), max_models=1, max_bytes=-1)


def test_loader_returning_wrong_key_is_a_load_failure() -> None:
    cache = ModelCache(lambda k: LoadedModel(B, fitted(), 1, 0.0), max_models=2, max_bytes=100)
    with pytest.raises(ValueError, match="returned"):
        cache.get_or_load(A)
    assert cache.entries() == []
    assert cache.failures()[0]["error"] == "ValueError"


# ---------------------------------------------------------------------------- single-flight


def test_single_flight_50_concurrent_cold_requests_load_once() -> None:
    loader = Loader()
    gate = loader.gate(A)
    events = Events()
    cache = ModelCache(loader, max_models=4, max_bytes=10_000, on_event=events)
    barrier = threading.Barrier(50)

    def request(_: int) -> LoadedModel:
        barrier.wait(WAIT)
        return cache.get_or_load(A)

    results, threads = run_threads(50, request)
    events.wait_for("miss", 50)  # every caller has registered as leader or waiter
    assert cache.get(A) is None  # still loading: nothing cached yet
    gate.set()
    join(threads)

    assert loader.calls == [A]
    assert all(isinstance(r, LoadedModel) for r in results), results
    assert all(r is results[0] for r in results)
    assert results[0].model.predict(np.array([[3.0]]))[0] == pytest.approx(3.0)
    s = cache.stats()
    assert (s["misses"], s["coalesced"], s["loads"], s["hits"]) == (1, 49, 1, 0)
    misses = [info for kind, _, info in events.log if kind == "miss"]
    assert sorted(m["coalesced"] for m in misses) == [False] + [True] * 49


def test_other_keys_are_served_and_loaded_while_one_load_blocks() -> None:
    loader = Loader()
    gate = loader.gate(A)
    cache = ModelCache(loader, max_models=4, max_bytes=10_000)
    cache.get_or_load(B)

    results, threads = run_threads(1, lambda _: cache.get_or_load(A))
    assert loader.started[A].wait(WAIT)
    assert cache.get_or_load(B).key == B  # hit while A's loader is blocked
    assert cache.get_or_load(C).key == C  # a different cold key loads meanwhile
    assert cache.stats()["loads"] == 2
    gate.set()
    join(threads)
    assert results[0].key == A


def test_failure_reaches_every_waiter_then_next_call_retries() -> None:
    loader = Loader()
    gate = loader.gate(A)
    loader.fail = boom = OSError("artifact store down")
    events = Events()
    cache = ModelCache(loader, max_models=4, max_bytes=10_000, on_event=events)

    results, threads = run_threads(10, lambda _: cache.get_or_load(A))
    events.wait_for("miss", 10)
    gate.set()
    join(threads)

    assert all(r is boom for r in results), results
    assert loader.calls == [A]
    assert cache.get(A) is None  # nothing cached
    s = cache.stats()
    assert (s["misses"], s["coalesced"], s["loads"], s["load_failures"]) == (1, 9, 0, 1)
    assert s["models"] == 0 and s["bytes"] == 0

    loader.fail = None
    loaded = cache.get_or_load(A)  # retried, not a cached failure
    assert loader.calls == [A, A]
    assert loaded.key == A and cache.get(A) is loaded


def test_failures_recorded_and_cleared_by_a_good_load() -> None:
    loader = Loader()
    wall = [1_700_000_000.25]
    cache = ModelCache(loader, max_models=4, max_bytes=10_000, wall_clock=lambda: wall[0])

    loader.fail = RuntimeError("corrupt pickle")
    with pytest.raises(RuntimeError):
        cache.get_or_load(A)
    wall[0] += 60
    loader.fail = KeyError("b")
    with pytest.raises(KeyError):
        cache.get_or_load(B)

    assert cache.failures() == [
        {
            "name": "b",
            "version": 1,
            "sha256": B.sha256,
            "error": "KeyError",
            "detail": "'b'",
            "at": "2023-11-14T22:14:20.250Z",
        },
        {
            "name": "a",
            "version": 1,
            "sha256": A.sha256,
            "error": "RuntimeError",
            "detail": "corrupt pickle",
            "at": "2023-11-14T22:13:20.250Z",
        },
    ]

    loader.fail = ValueError("still corrupt")  # a second failure replaces the first record
    with pytest.raises(ValueError):
        cache.get_or_load(A)
    assert [(f["name"], f["error"]) for f in cache.failures()] == [
        ("a", "ValueError"),
        ("b", "KeyError"),
    ]

    loader.fail = None
    cache.get_or_load(A)
    assert [f["name"] for f in cache.failures()] == ["b"]
    assert cache.stats()["load_failures"] == 3


# ---------------------------------------------------------------------------- LRU


def test_lru_by_count() -> None:
    cache = ModelCache(Loader(), max_models=2, max_bytes=10_000)
    for k in (A, B, C):
        cache.get_or_load(k)
    assert names(cache) == ["c", "b"]
    assert cache.get(A) is None
    s = cache.stats()
    assert (s["models"], s["bytes"], s["evictions"]) == (2, 200, 1)


def test_lru_by_bytes_evicts_as_many_as_needed() -> None:
    loader = Loader({A: 100, B: 100, C: 100, D: 200})
    cache = ModelCache(loader, max_models=10, max_bytes=250)
    cache.get_or_load(A)
    cache.get_or_load(B)
    cache.get_or_load(C)  # 300 > 250: A goes
    assert names(cache) == ["c", "b"]
    cache.get_or_load(D)  # 400 > 250: B goes, 300 > 250: C goes
    assert names(cache) == ["d"]
    s = cache.stats()
    assert (s["models"], s["bytes"], s["evictions"]) == (1, 200, 3)


def test_hit_moves_entry_to_mru() -> None:
    cache = ModelCache(Loader(), max_models=2, max_bytes=10_000)
    a = cache.get_or_load(A)
    cache.get_or_load(B)
    assert names(cache) == ["b", "a"]
    assert cache.get_or_load(A) is a  # hit: A becomes MRU
    assert names(cache) == ["a", "b"]
    cache.get_or_load(C)  # B is now LRU and goes
    assert names(cache) == ["c", "a"]
    cache.get(A)  # get() counts as use too
    cache.get_or_load(D)
    assert names(cache) == ["d", "a"]
    assert cache.entries()[1]["hits"] == 2


def test_oversize_newest_entry_is_kept_alone() -> None:
    cache = ModelCache(Loader({A: 50, B: 500}), max_models=5, max_bytes=100)
    cache.get_or_load(A)
    big = cache.get_or_load(B)
    assert names(cache) == ["b"]
    assert cache.get(B) is big
    s = cache.stats()
    assert s["bytes"] == 500 > s["max_bytes"]
    assert s["models"] == 1


def test_just_loaded_model_is_never_lost_to_a_concurrent_eviction() -> None:
    loader = Loader()
    gate_a, gate_b = loader.gate(A), loader.gate(B)
    cache = ModelCache(loader, max_models=1, max_bytes=10_000)
    b_returned = threading.Event()
    a_done = threading.Event()

    def request_b(_: int) -> tuple[LoadedModel, float]:
        loaded = cache.get_or_load(B)
        b_returned.set()
        assert a_done.wait(WAIT)  # A's load evicts B before this request predicts
        return loaded, float(loaded.model.predict(np.array([[5.0]]))[0])

    def request_a(_: int) -> LoadedModel:
        loaded = cache.get_or_load(A)
        a_done.set()
        return loaded

    res_b, threads_b = run_threads(1, request_b)
    res_a, threads_a = run_threads(1, request_a)
    assert loader.started[A].wait(WAIT) and loader.started[B].wait(WAIT)
    gate_b.set()
    assert b_returned.wait(WAIT)
    gate_a.set()
    join(threads_a + threads_b)

    loaded_b, prediction = res_b[0]
    assert loaded_b.key == B
    assert prediction == pytest.approx(5.0)
    assert cache.get(B) is None  # evicted from the cache ...
    assert names(cache) == ["a"] and cache.get(A) is res_a[0]  # ... by A's load
    assert cache.stats()["evictions"] == 1


# ---------------------------------------------------------------------------- eviction


def test_evict_and_evict_where() -> None:
    events = Events()
    cache = ModelCache(Loader(), max_models=10, max_bytes=10_000, on_event=events)
    m1, m2, m3, other = key("m", 1), key("m", 2), key("m", 3), key("other", 1)
    for k in (m1, m2, m3, other):
        cache.get_or_load(k)

    assert cache.evict(m3) is True
    assert cache.evict(m3) is False
    assert cache.evict(key("never", 1)) is False
    assert cache.evict_where(lambda k: k.name == "m") == 2
    assert cache.evict_where(lambda k: k.name == "m") == 0
    assert [(e["name"], e["version"]) for e in cache.entries()] == [("other", 1)]
    s = cache.stats()
    assert (s["evictions"], s["models"], s["bytes"]) == (3, 1, 100)
    evicts = [(k.version, info) for kind, k, info in events.log if kind == "evict"]
    assert sorted(v for v, _ in evicts) == [1, 2, 3]
    assert all(info == {"reason": "manual", "bytes": 100} for _, info in evicts)


def test_evict_where_predicate_error_evicts_nothing() -> None:
    cache = ModelCache(Loader(), max_models=10, max_bytes=10_000)
    cache.get_or_load(A)
    cache.get_or_load(B)

    def predicate(k: VersionKey) -> bool:
        if k == B:
            raise RuntimeError("bad predicate")
        return True

    with pytest.raises(RuntimeError):
        cache.evict_where(predicate)
    assert sorted(names(cache)) == ["a", "b"]


def test_evict_during_inflight_load_leaves_load_alone() -> None:
    loader = Loader()
    gate = loader.gate(A)
    cache = ModelCache(loader, max_models=4, max_bytes=10_000)

    results, threads = run_threads(1, lambda _: cache.get_or_load(A))
    assert loader.started[A].wait(WAIT)
    assert cache.evict(A) is False
    assert cache.evict_where(lambda k: True) == 0
    gate.set()
    join(threads)

    assert cache.get(A) is results[0]  # the completed load was inserted normally
    assert cache.stats()["evictions"] == 0


# ---------------------------------------------------------------------------- introspection


def test_entries_fields_and_timestamps() -> None:
    wall = [1_700_000_000.0]
    cache = ModelCache(Loader(), max_models=4, max_bytes=10_000, wall_clock=lambda: wall[0])
    cache.get_or_load(A)
    wall[0] += 1.5
    cache.get_or_load(B)
    wall[0] += 30
    cache.get_or_load(A)

    assert cache.entries() == [
        {
            "name": "a",
            "version": 1,
            "sha256": A.sha256,
            "bytes": 100,
            "load_seconds": 0.01,
            "loaded_at": "2023-11-14T22:13:20.000Z",
            "hits": 1,
            "last_used_at": "2023-11-14T22:13:51.500Z",
        },
        {
            "name": "b",
            "version": 1,
            "sha256": B.sha256,
            "bytes": 100,
            "load_seconds": 0.01,
            "loaded_at": "2023-11-14T22:13:21.500Z",
            "hits": 0,
            "last_used_at": "2023-11-14T22:13:21.500Z",
        },
    ]


def test_entries_with_real_clock_are_iso_utc() -> None:
    cache = ModelCache(Loader(), max_models=4, max_bytes=10_000)
    cache.get_or_load(A)
    (entry,) = cache.entries()
    assert ISO_Z.match(entry["loaded_at"]) and ISO_Z.match(entry["last_used_at"])


def test_stats_counters_exact() -> None:
    loader = Loader()
    cache = ModelCache(loader, max_models=2, max_bytes=1_000)
    cache.get_or_load(A)  # miss, load
    cache.get_or_load(A)  # hit
    cache.get(A)  # hit
    cache.get(B)  # nothing
    cache.get_or_load(B)  # miss, load
    cache.get_or_load(C)  # miss, load, evicts A (lru)
    loader.fail = RuntimeError("x")
    with pytest.raises(RuntimeError):
        cache.get_or_load(D)  # miss, load failure
    cache.evict(B)  # manual eviction

    assert cache.stats() == {
        "hits": 2,
        "misses": 4,
        "coalesced": 0,
        "loads": 3,
        "load_failures": 1,
        "evictions": 2,
        "models": 1,
        "bytes": 100,
        "max_models": 2,
        "max_bytes": 1_000,
    }


# ---------------------------------------------------------------------------- events


def test_on_event_sequence() -> None:
    loader = Loader()
    events = Events()
    ticks = iter([10.0, 12.5, 20.0, 20.25, 30.0, 31.0])
    cache = ModelCache(
        loader, max_models=1, max_bytes=10_000, on_event=events, clock=lambda: next(ticks)
    )
    cache.get_or_load(A)
    cache.get_or_load(A)
    cache.get_or_load(B)  # evicts A
    cache.evict(B)
    loader.fail = TimeoutError("slow store")
    with pytest.raises(TimeoutError):
        cache.get_or_load(C)

    assert events.log == [
        ("miss", A, {"coalesced": False}),
        ("load", A, {"seconds": 2.5, "bytes": 100}),
        ("hit", A, {}),
        ("miss", B, {"coalesced": False}),
        ("load", B, {"seconds": 0.25, "bytes": 100}),
        ("evict", A, {"reason": "lru", "bytes": 100}),
        ("evict", B, {"reason": "manual", "bytes": 100}),
        ("miss", C, {"coalesced": False}),
        ("load_failed", C, {"error": "TimeoutError", "seconds": 1.0}),
    ]


def test_raising_on_event_is_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def broken(kind: str, k: VersionKey, info: dict) -> None:
        raise RuntimeError(f"metrics down during {kind}")

    loader = Loader()
    cache = ModelCache(loader, max_models=1, max_bytes=10_000, on_event=broken)
    with caplog.at_level(logging.ERROR, logger="serving.cache"):
        a = cache.get_or_load(A)
        assert cache.get_or_load(A) is a
        assert cache.get(A) is a
        cache.get_or_load(B)
        assert cache.evict(B) is True
        loader.fail = OSError("gone")
        with pytest.raises(OSError):  # the loader's error, not the hook's
            cache.get_or_load(C)

    assert cache.stats()["loads"] == 2
    logged = [r for r in caplog.records if r.name == "serving.cache"]
    # miss, load, hit, hit, miss, load, evict(lru), evict(manual), miss, load_failed
    assert len(logged) == 10
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in logged)


def test_raising_on_event_does_not_strand_waiters() -> None:
    loader = Loader()
    gate = loader.gate(A)
    seen = Events()

    def hook(kind: str, k: VersionKey, info: dict) -> None:
        seen(kind, k, info)
        raise RuntimeError("hook")

    cache = ModelCache(loader, max_models=2, max_bytes=10_000, on_event=hook)
    results, threads = run_threads(5, lambda _: cache.get_or_load(A))
    seen.wait_for("miss", 5)
    gate.set()
    join(threads)
    assert loader.calls == [A]
    assert all(r is results[0] and isinstance(r, LoadedModel) for r in results)


# ---------------------------------------------------------------------------- thread safety


def test_concurrent_mixed_workload_keeps_bookkeeping_consistent() -> None:
    keys = [key("k", v) for v in range(6)]
    sizes = {k: 10 * (k.version + 1) for k in keys}
    loader = Loader(sizes)
    cache = ModelCache(loader, max_models=3, max_bytes=120)
    start = threading.Barrier(8)

    def worker(i: int) -> int:
        rng = random.Random(i)
        start.wait(WAIT)
        for _ in range(300):
            k = rng.choice(keys)
            op = rng.random()
            if op < 0.8:
                assert cache.get_or_load(k).key == k
            elif op < 0.9:
                got = cache.get(k)
                assert got is None or got.key == k
            else:
                cache.evict(k)
        return i

    results, threads = run_threads(8, worker)
    join(threads)
    assert results == list(range(8))

    s = cache.stats()
    entries = cache.entries()
    assert s["models"] == len(entries) <= 3
    assert s["bytes"] == sum(e["bytes"] for e in entries) <= 120
    assert s["loads"] == s["misses"] == len(loader.calls)
    assert s["load_failures"] == 0
    assert s["hits"] + s["misses"] + s["coalesced"] > 0
    assert s["loads"] - s["evictions"] == s["models"]
