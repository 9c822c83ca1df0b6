"""Registry lookups with a deadline, one in flight per key.

A database that stops answering without closing its connections (a frozen host, a network
path that swallows replies) makes a query wait forever. Lookups on the serving path (alias
resolution, token checks, readiness) therefore run on a small pool of threads: the caller
waits at most `timeout` and then answers from what it already knows (or 503), and concurrent
callers for the same key share one query instead of each taking a request thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from registry.errors import DependencyUnavailable, ModelregError

log = logging.getLogger(__name__)

T = TypeVar("T")


def _log_unexpected(done: Future[Any]) -> None:
    """A background lookup nobody joined: its failure would go unseen. The registry's own
    errors (unavailable, not found) are for the next caller to meet; anything else is a bug."""
    error = None if done.cancelled() else done.exception()
    if error is not None and not isinstance(error, ModelregError):
        log.error("a background registry lookup failed", exc_info=error)


class LookupTimeout(DependencyUnavailable):
    """The registry did not answer in time (the lookup may still complete later)."""


class BoundedLookups:
    def __init__(self, *, workers: int = 4, name: str = "registry-lookup") -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        # Reentrant: a call that finishes at once runs its done-callback inside `call`.
        self._lock = threading.RLock()
        self._inflight: dict[Hashable, Future[Any]] = {}

    def busy(self) -> bool:
        """Whether any lookup is running."""
        with self._lock:
            return any(not future.done() for future in self._inflight.values())

    def in_flight(self, key: Hashable) -> bool:
        future = self._inflight.get(key)
        return future is not None and not future.done()

    def call(self, key: Hashable, fn: Callable[[], T], timeout: float) -> T:
        """`fn()` for `key`, joining a call already running; raises LookupTimeout after
        `timeout` seconds, and whatever `fn` raised otherwise."""
        with self._lock:
            future = self._inflight.get(key)
            if future is None or future.done():
                future = self._pool.submit(fn)
                self._inflight[key] = future
                future.add_done_callback(lambda done, k=key: self._forget(k, done))
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            raise LookupTimeout(
                f"the registry database did not answer within {timeout:g}s"
            ) from None

    def start(self, key: Hashable, fn: Callable[[], Any]) -> None:
        """Run `fn()` for `key` without waiting, unless a call for `key` is running; a
        `call` for the same key meanwhile joins it. Its outcome is left to whoever joins."""
        with self._lock:
            future = self._inflight.get(key)
            if future is not None and not future.done():
                return
            future = self._pool.submit(fn)
            self._inflight[key] = future
            future.add_done_callback(lambda done, k=key: self._forget(k, done))
            future.add_done_callback(_log_unexpected)

    def _forget(self, key: Hashable, done: Future[Any]) -> None:
        with self._lock:
            if self._inflight.get(key) is done:
                del self._inflight[key]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
