"""In-memory LRU cache of loaded models for one serving process.

Models are keyed by immutable identity (`VersionKey`: name, version, sha256), never by alias, so
an alias move can never make the cache serve the wrong bytes: the caller resolves the alias
first and asks for the exact version.

Locking (see the style guide):

* one `threading.Lock` guards all bookkeeping (the LRU `OrderedDict`, counters, failures);
* a cold key gets a per-key in-flight record; the first caller (the "leader") runs the loader
  OUTSIDE the lock, concurrent callers for the same key wait on the record (single-flight), and
  other keys keep being served and loaded meanwhile;
* `on_event` callbacks run outside the lock, and predict (done by callers on the returned
  `LoadedModel`) runs outside every lock.

Callers must hold on to the `LoadedModel` returned by `get_or_load`/`get` for the whole request:
the cache may evict it concurrently, which only drops the cache's reference.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)


class VersionKey(NamedTuple):
    """Immutable identity of one model version; the sha256 pins the exact artifact bytes.

    A tuple, not a dataclass: every cached predict looks it up twice, and a tuple hashes and
    compares in C."""

    name: str
    version: int
    sha256: str


@dataclass(slots=True)
class LoadedModel:
    """A deserialized model ready to predict; built by the loader, handed out by the cache."""

    key: VersionKey
    model: Any  # the deserialized estimator / session
    nbytes: int  # estimated memory footprint, used for the max_bytes bound
    load_seconds: float
    extra: Any = None  # opaque to the cache (input plan, runtime name, ...)


# on_event(kind, key, info): kind is "hit" | "miss" | "load" | "load_failed" | "evict".
EventHook = Callable[[str, VersionKey, dict], None]


class _Entry:
    """Cache bookkeeping around one LoadedModel; mutated only under the cache lock."""

    __slots__ = ("hits", "last_used_at", "loaded", "loaded_at")

    def __init__(self, loaded: LoadedModel, now: float) -> None:
        self.loaded = loaded
        self.hits = 0
        self.loaded_at = now  # wall-clock seconds; formatted only in entries()
        self.last_used_at = now


class _InFlight:
    """One running load that concurrent callers for the same key wait on instead of reloading."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: LoadedModel | None = None
        self.error: BaseException | None = None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ModelCache:
    """Thread-safe LRU of loaded models, bounded by count and by estimated bytes, single-flight.

    Bounds: after a load inserts its entry, least-recently-used OTHER entries are evicted until
    `len <= max_models` and `sum(nbytes) <= max_bytes`. The newest entry is always kept, even if
    it alone exceeds `max_bytes`: the bound is then exceeded by that single model (refusing to
    cache it would reload it on every request, which is worse).
    """

    # Per-key failure records kept for failures(); oldest dropped first beyond this.
    _MAX_FAILURES = 256

    def __init__(
        self,
        load: Callable[[VersionKey], LoadedModel],
        *,
        max_models: int,
        max_bytes: int,
        on_event: EventHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._load = load
        self._max_models = max_models
        self._max_bytes = max_bytes
        self._on_event = on_event
        self._clock = clock
        self._wall_clock = wall_clock

        self._lock = threading.Lock()
        self._entries: OrderedDict[VersionKey, _Entry] = OrderedDict()  # LRU first, MRU last
        self._inflight: dict[VersionKey, _InFlight] = {}
        # key -> (error class name, detail, wall time); oldest first
        self._failures: OrderedDict[VersionKey, tuple[str, str, float]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._coalesced = 0
        self._loads = 0
        self._load_failures = 0
        self._evictions = 0

    # ------------------------------------------------------------------ lookups

    def get_or_load(self, key: VersionKey) -> LoadedModel:
        """Return the cached model, or load it exactly once however many callers ask at once.

        Raises whatever the loader raised; concurrent waiters for that load get the same
        exception object. Nothing is cached after a failure, so the next call retries.
        """
        leader = False
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                entry.hits += 1
                entry.last_used_at = self._wall_clock()
                self._hits += 1
                loaded = entry.loaded
            else:
                flight = self._inflight.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._inflight[key] = _InFlight()
                    self._misses += 1
                else:
                    self._coalesced += 1
        if entry is not None:
            if self._on_event is not None:
                self._emit("hit", key, {})
            return loaded
        if leader:
            return self._lead_load(key, flight)
        if self._on_event is not None:
            self._emit("miss", key, {"coalesced": True})
        flight.done.wait()
        if flight.error is not None:
            raise flight.error
        assert flight.result is not None
        return flight.result

    def get(self, key: VersionKey) -> LoadedModel | None:
        """Return the cached model without ever loading; a find counts (and emits) a hit.

        Not finding it counts nothing (it is a peek, not a request that will load).
        """
        loaded = self.peek(key)
        if loaded is not None:
            self.touch(key)
        return loaded

    def peek(self, key: VersionKey) -> LoadedModel | None:
        """The cached model, counting nothing: call `touch` once it has been used."""
        entry = self._entries.get(key)
        return entry.loaded if entry is not None else None

    def touch(self, key: VersionKey) -> None:
        """Count a use of a cached model: a hit, and most recently used."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return  # evicted meanwhile; the use still happened, but there is no entry
            self._entries.move_to_end(key)
            entry.hits += 1
            entry.last_used_at = self._wall_clock()
            self._hits += 1
        if self._on_event is not None:
            self._emit("hit", key, {})

    def _lead_load(self, key: VersionKey, flight: _InFlight) -> LoadedModel:
        """Run the loader outside the lock, then publish the result to the cache and waiters."""
        start = self._clock()
        try:
            if self._on_event is not None:
                self._emit("miss", key, {"coalesced": False})
            loaded = self._load(key)
            if not isinstance(loaded, LoadedModel) or loaded.key != key:
                got = loaded.key if isinstance(loaded, LoadedModel) else type(loaded).__name__
                raise ValueError(f"loader for {key} returned {got}, not a LoadedModel for that key")
        except BaseException as exc:
            # BaseException too: waiters must never hang on a record nobody will complete.
            seconds = self._clock() - start
            with self._lock:
                del self._inflight[key]
                self._load_failures += 1
                self._failures.pop(key, None)
                self._failures[key] = (type(exc).__name__, str(exc), self._wall_clock())
                while len(self._failures) > self._MAX_FAILURES:
                    self._failures.popitem(last=False)
                flight.error = exc
            flight.done.set()
            if self._on_event is not None:
                self._emit("load_failed", key, {"error": type(exc).__name__, "seconds": seconds})
            raise
        seconds = self._clock() - start
        with self._lock:
            del self._inflight[key]
            self._failures.pop(key, None)
            self._loads += 1
            self._entries[key] = _Entry(loaded, self._wall_clock())
            self._bytes += loaded.nbytes
            evicted = self._shrink_locked(keep=key)
            flight.result = loaded
        flight.done.set()
        if self._on_event is not None:
            self._emit("load", key, {"seconds": seconds, "bytes": loaded.nbytes})
            for old in evicted:
                self._emit("evict", old.key, {"reason": "lru", "bytes": old.nbytes})
        return loaded

    def _shrink_locked(self, keep: VersionKey) -> list[LoadedModel]:
        """Evict LRU entries other than `keep` until both bounds hold; caller holds the lock."""
        evicted: list[LoadedModel] = []
        while len(self._entries) > self._max_models or self._bytes > self._max_bytes:
            oldest = next(iter(self._entries))
            if oldest == keep:  # `keep` was just appended as MRU, so it is the only entry left
                break
            old = self._entries.pop(oldest).loaded
            self._bytes -= old.nbytes
            self._evictions += 1
            evicted.append(old)
        return evicted

    # ------------------------------------------------------------------ eviction

    def evict(self, key: VersionKey) -> bool:
        """Drop one cached model; False when not cached (an in-flight load is left alone)."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            self._bytes -= entry.loaded.nbytes
            self._evictions += 1
        if self._on_event is not None:
            self._emit("evict", key, {"reason": "manual", "bytes": entry.loaded.nbytes})
        return True

    def evict_where(self, predicate: Callable[[VersionKey], bool]) -> int:
        """Drop every cached model whose key matches (e.g. all versions of a deleted model).

        The predicate runs outside the lock on a snapshot of the keys, so it may be slow or call
        back into the cache; if it raises, nothing is evicted. Loads in flight are not affected.
        """
        with self._lock:
            keys = list(self._entries)
        doomed = [k for k in keys if predicate(k)]
        evicted: list[LoadedModel] = []
        with self._lock:
            for k in doomed:
                entry = self._entries.pop(k, None)
                if entry is not None:
                    self._bytes -= entry.loaded.nbytes
                    self._evictions += 1
                    evicted.append(entry.loaded)
        if self._on_event is not None:
            for old in evicted:
                self._emit("evict", old.key, {"reason": "manual", "bytes": old.nbytes})
        return len(evicted)

    # ------------------------------------------------------------------ introspection

    def entries(self) -> list[dict]:
        """Describe cached models, most recently used first (for the admin/status endpoint)."""
        with self._lock:
            rows = [
                (
                    e.loaded.key,
                    e.loaded.nbytes,
                    e.loaded.load_seconds,
                    e.loaded_at,
                    e.hits,
                    e.last_used_at,
                )
                for e in reversed(self._entries.values())
            ]
        return [
            {
                "name": key.name,
                "version": key.version,
                "sha256": key.sha256,
                "bytes": nbytes,
                "load_seconds": load_seconds,
                "loaded_at": _iso(loaded_at),
                "hits": hits,
                "last_used_at": _iso(last_used_at),
            }
            for key, nbytes, load_seconds, loaded_at, hits, last_used_at in rows
        ]

    def failures(self) -> list[dict]:
        """Last load failure per key, newest first; a key's record is cleared by a good load."""
        with self._lock:
            rows = list(reversed(self._failures.items()))
        return [
            {
                "name": key.name,
                "version": key.version,
                "sha256": key.sha256,
                "error": error,
                "detail": detail,
                "at": _iso(at),
            }
            for key, (error, detail, at) in rows
        ]

    def stats(self) -> dict:
        """Counters since construction plus current occupancy and bounds."""
        with self._lock:
            return {
                "hits": self._hits,
                "misses": self._misses,
                "coalesced": self._coalesced,
                "loads": self._loads,
                "load_failures": self._load_failures,
                "evictions": self._evictions,
                "models": len(self._entries),
                "bytes": self._bytes,
                "max_models": self._max_models,
                "max_bytes": self._max_bytes,
            }

    # ------------------------------------------------------------------ events

    def _emit(self, kind: str, key: VersionKey, info: dict) -> None:
        """Call on_event (never under the lock); a broken hook must not break serving."""
        hook = self._on_event
        if hook is None:
            return
        try:
            hook(kind, key, info)
        except Exception:
            logger.exception("model cache on_event hook failed for %s %s", kind, key)
