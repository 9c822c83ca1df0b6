"""Adaptive micro-batching: merge concurrent predict calls on one model into one model call.

Why: for models whose per-call cost is mostly fixed (a scikit-learn forest spends ~4 ms in input
validation and joblib dispatch whether it predicts 1 row or 50), N concurrent 1-row requests cost
N fixed costs when served one by one, but about one when served as a single N-row call.

How (no background thread per model; models come and go from an LRU cache):

* The first caller to arrive for a kind of input becomes the *leader* of an open batch; callers
  arriving while the batch is open join it as *followers* and block on the batch's Event.
* Waiting policy: the leader waits only while another call of this batcher is executing the
  model (a batch, a direct call or a retry), and at most `max_wait_ms`, and no longer once the
  batch holds `max_rows` rows. With nothing in flight, i.e. at concurrency 1, nobody ever waits:
  no added latency. Under load the call that is running is the natural collection window, so
  batches grow with the arrival rate times the model's service time, by themselves.
* The leader closes the batch, concatenates the inputs, calls the model once outside any lock,
  splits the result by each request's row count and sets the Event. Whatever happens, the
  leader releases its followers in a `finally`: a follower never waits forever.
* If the batched call fails (or its inputs cannot be merged, or its result cannot be split),
  every request of the batch is run alone, in its own thread: each caller gets its own result
  or its own error, and one bad request cannot fail the others.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from itertools import accumulate, pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.inputs import is_dataframe

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MicroBatcher", "batching_helps"]

log = logging.getLogger(__name__)


class _Batch:
    """Requests merged into one model call; mutated only under the batcher's lock until closed."""

    __slots__ = ("closed", "done", "inputs", "key", "results", "rows", "sizes")

    def __init__(self, key: Hashable, X: Any, rows: int) -> None:
        self.key = key
        self.inputs: list[Any] = [X]
        self.sizes: list[int] = [rows]
        self.rows = rows
        self.closed = False  # no more joiners; set under the lock
        self.done: threading.Event | None = None  # created when the first follower joins
        self.results: list[Any] | None = None  # one per request on success; None = run alone


class _CannotBatch(Exception):
    """The inputs could not be merged or the output could not be split: run each alone."""


class MicroBatcher:
    """Merge concurrent predict calls on one model into one call; split results back per caller.

    `fn` takes a 2-D ndarray or a DataFrame and returns one result per row along axis 0 (a 1-D
    or 2-D ndarray, a list, a Series or a DataFrame). Inputs of another kind, of `max_rows` rows
    or more, or arriving after `close()`, are passed to `fn` directly.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        *,
        max_wait_ms: float,
        max_rows: int,
        name: str = "",
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms!r}")
        if type(max_rows) is not int or max_rows < 1:
            raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}")
        self.fn = fn
        self.name = name
        self.on_batch = on_batch  # (rows, requests, seconds waited), e.g. for metrics
        self.max_wait = max_wait_ms / 1000.0
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # leaders waiting for joiners
        self._open: dict[Hashable, _Batch] = {}
        self._executing = 0  # calls of fn running right now (batches, direct calls, retries)
        self._waiting = 0  # leaders inside cond.wait: notify only when someone listens
        self._closed = False
        # Statistics: plain counters updated under the lock that is taken anyway.
        self._requests = 0
        self._rows = 0
        self._batches = 0
        self._batched_requests = 0
        self._batched_rows = 0
        self._max_batch_rows = 0
        self._max_batch_requests = 0
        self._direct = 0
        self._fallbacks = 0
        self._retries = 0
        self._wait_seconds = 0.0

    def __repr__(self) -> str:
        wait_ms = self.max_wait * 1000
        return f"MicroBatcher({self.name!r}, max_wait_ms={wait_ms:g}, max_rows={self.max_rows})"

    # ------------------------------------------------------------------------------ public

    def __call__(self, X: Any) -> Any:
        """Predict X, possibly merged with concurrent calls; returns exactly X's rows, in order."""
        key, rows = _merge_key(X)
        with self._lock:
            self._requests += 1
            self._rows += rows
            if key is None or rows >= self.max_rows or self._closed:
                self._direct += 1
                self._executing += 1
                batch, index = None, -1
            else:
                batch = self._open.get(key)
                if batch is not None and batch.rows + rows <= self.max_rows:
                    index = self._join(batch, X, rows)
                else:
                    if batch is not None:  # too full for this request: let its leader go now
                        self._close(batch)
                    batch, index = _Batch(key, X, rows), 0
                    self._open[key] = batch
        if batch is None:
            return self._run_counted(X)
        if index:
            return self._follow(batch, index, X)
        return self._lead(batch, X)

    def close(self) -> None:
        """Stop batching (the model left the cache): open batches go now, later calls go direct."""
        with self._lock:
            self._closed = True
            for batch in list(self._open.values()):
                self._close(batch)

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters: how much batching actually happened, and what it cost."""
        with self._lock:
            batches = self._batches
            return {
                "requests": self._requests,
                "rows": self._rows,
                "batches": batches,
                "batched_requests": self._batched_requests,
                "batched_rows": self._batched_rows,
                "mean_batch_rows": self._batched_rows / batches if batches else 0.0,
                "mean_batch_requests": self._batched_requests / batches if batches else 0.0,
                "max_batch_rows": self._max_batch_rows,
                "max_batch_requests": self._max_batch_requests,
                "direct": self._direct,
                "fallbacks": self._fallbacks,
                "retries": self._retries,
                "wait_seconds": self._wait_seconds,
                "executing": self._executing,
                "waiting": self._waiting,
            }

    # ------------------------------------------------------------------------------ internals

    def _close(self, batch: _Batch) -> None:
        """Under the lock: no more joiners; wake its leader if it is waiting."""
        if not batch.closed:
            batch.closed = True
            if self._open.get(batch.key) is batch:
                del self._open[batch.key]
            if self._waiting:
                self._cond.notify_all()

    def _join(self, batch: _Batch, X: Any, rows: int) -> int:
        """Under the lock: add a request to an open batch; returns its index in the batch."""
        batch.inputs.append(X)
        batch.sizes.append(rows)
        batch.rows += rows
        if batch.done is None:
            batch.done = threading.Event()
        if batch.rows >= self.max_rows:
            self._close(batch)
        return len(batch.inputs) - 1

    def _follow(self, batch: _Batch, index: int, X: Any) -> Any:
        """Block until the leader is done (it sets the Event in a finally); take our slice."""
        assert batch.done is not None  # set by _join, before the lock was released
        batch.done.wait()
        results = batch.results
        if results is not None:
            return results[index]
        with self._lock:
            self._retries += 1
            self._executing += 1
        return self._run_counted(X)

    def _lead(self, batch: _Batch, X: Any) -> Any:
        """Wait for joiners (only while the model is busy), run the batch, release followers."""
        results: list[Any] | None = None
        started = False
        try:
            waited = 0.0
            with self._lock:
                if self._executing and not batch.closed and self.max_wait > 0:
                    waited = self._wait_for_joiners(batch)
                self._close(batch)
                self._executing += 1
                started = True
                inputs, sizes = batch.inputs, batch.sizes
                self._batches += 1
                self._batched_requests += len(inputs)
                self._batched_rows += batch.rows
                self._max_batch_rows = max(self._max_batch_rows, batch.rows)
                self._max_batch_requests = max(self._max_batch_requests, len(inputs))
            if self.on_batch is not None:
                self.on_batch(batch.rows, len(inputs), waited)
            if len(inputs) == 1:
                return self.fn(X)  # alone: exactly what a direct call returns, errors included
            try:
                results = _split(self.fn(_merge(inputs)), sizes)
            except Exception as error:  # each request gets its own result or its own error
                log.debug("%r: batch of %d failed (%r): each runs alone", self, len(inputs), error)
                results = None
        finally:
            with self._lock:
                if started:
                    self._executing -= 1
                    if results is None and len(batch.inputs) > 1:
                        self._fallbacks += 1
                    if self._waiting:
                        self._cond.notify_all()
                else:  # interrupted while waiting: the followers run alone
                    self._close(batch)
                done = batch.done
            if done is not None:
                batch.results = results
                done.set()
        if results is None:
            with self._lock:
                self._retries += 1
                self._executing += 1
            return self._run_counted(X)
        return results[0]

    def _wait_for_joiners(self, batch: _Batch) -> float:
        """Under the lock: wait while another call runs, up to max_wait and max_rows."""
        start = time.perf_counter()
        deadline = start + self.max_wait
        self._waiting += 1
        try:
            while not batch.closed and self._executing:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
        finally:
            self._waiting -= 1
            waited = time.perf_counter() - start
            self._wait_seconds += waited
        return waited

    def _run_counted(self, X: Any) -> Any:
        """Call fn for one request; `_executing` was incremented by the caller, under the lock."""
        try:
            return self.fn(X)
        finally:
            with self._lock:
                self._executing -= 1
                if self._waiting:
                    self._cond.notify_all()


def _merge_key(X: Any) -> tuple[Hashable | None, int]:
    """What must be equal for inputs to be concatenated, and the row count (None: never merge).

    DataFrame dtypes are checked by the leader at merge time rather than here: `df.dtypes`
    costs ~20 µs, which a request at concurrency 1 should not pay.
    """
    if type(X) is np.ndarray:
        if X.ndim != 2:
            return None, int(X.shape[0]) if X.ndim else 0
        return (X.shape[1], X.dtype), X.shape[0]
    if is_dataframe(X):
        try:
            return ("DataFrame", tuple(X.columns)), len(X)
        except TypeError:  # unhashable column labels
            return None, len(X)
    return None, 0


def _merge(inputs: list[Any]) -> Any:
    """Concatenate inputs that share a merge key; rows stay in request order."""
    first = inputs[0]
    if type(first) is np.ndarray:
        return np.concatenate(inputs, axis=0)
    dtypes = first.dtypes
    if not all(frame.dtypes.equals(dtypes) for frame in inputs[1:]):
        raise _CannotBatch("DataFrames with different dtypes")  # e.g. a long column as float
    import pandas as pd

    return pd.concat(inputs, ignore_index=True)


def _split(output: Any, sizes: list[int]) -> list[Any]:
    """Cut a batched output back into one piece per request, of the type fn returns."""
    bounds = [0, *accumulate(sizes)]
    total = bounds[-1]
    pairs = list(pairwise(bounds))
    if isinstance(output, np.ndarray) and output.ndim >= 1 and output.shape[0] == total:
        return [output[a:b] for a, b in pairs]
    if isinstance(output, list) and len(output) == total:
        return [output[a:b] for a, b in pairs]
    pandas = sys.modules.get("pandas")
    if (
        pandas is not None
        and isinstance(output, (pandas.Series, pandas.DataFrame))
        and len(output) == total
    ):
        return [output.iloc[a:b].reset_index(drop=True) for a, b in pairs]
    raise _CannotBatch(f"cannot split a {type(output).__name__} into {len(sizes)} results")


# ---------------------------------------------------------------------------------- decision


def batching_helps(
    fn: Callable[[Any], Any],
    sample_row: np.ndarray | pd.DataFrame,
    *,
    repeats: int = 5,
    rows: int = 32,
    min_call_ms: float = 0.5,
    max_ratio: float = 4.0,
) -> tuple[bool, dict[str, Any]]:
    """Measure per-call cost of 1 row vs `rows` rows; batching helps when the fixed cost dominates.

    True when time(32 rows) < 4 * time(1 row) (most of a call is fixed cost, which a batch pays
    once) and time(1 row) >= 0.5 ms (below that, the bookkeeping and the wait cost about as much
    as they save). Timings are the best of `repeats`, 1-row and 32-row calls interleaved so that
    noise hits both alike. Meant for load time: it costs about 2 * repeats calls.
    """
    one = _one_row(sample_row)
    many = _repeat(one, rows)
    try:
        fn(one)  # warm-up: first-call caches, lazy imports
        fn(many)
        best_one = best_many = float("inf")
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            fn(one)
            middle = time.perf_counter()
            fn(many)
            end = time.perf_counter()
            best_one = min(best_one, middle - start)
            best_many = min(best_many, end - middle)
    except Exception as error:  # a model that cannot predict the sample is not batched
        return False, {"reason": f"sample prediction failed: {type(error).__name__}: {error}"}
    one_ms, many_ms = best_one * 1e3, best_many * 1e3
    ratio = best_many / best_one if best_one > 0 else float("inf")
    if one_ms < min_call_ms:
        helps, reason = False, f"a 1-row call takes {one_ms:.3f} ms < {min_call_ms} ms"
    elif ratio >= max_ratio:
        helps, reason = False, f"{rows} rows cost {ratio:.1f}x one row: per-row cost dominates"
    else:
        helps, reason = True, f"{rows} rows cost {ratio:.1f}x one row: fixed cost dominates"
    return helps, {
        "one_row_ms": one_ms,
        "rows": rows,
        "many_rows_ms": many_ms,
        "ratio": ratio,
        # The leader waits only while a call runs; cap it near the duration of one call.
        "suggested_max_wait_ms": min(max(2.0 * one_ms, 1.0), 20.0),
        "reason": reason,
    }


def _one_row(sample: np.ndarray | pd.DataFrame) -> np.ndarray | pd.DataFrame:
    if is_dataframe(sample):
        return sample.iloc[:1].reset_index(drop=True)
    array = np.asarray(sample)
    return array.reshape(1, -1) if array.ndim == 1 else array[:1]


def _repeat(one: np.ndarray | pd.DataFrame, rows: int) -> np.ndarray | pd.DataFrame:
    if is_dataframe(one):
        import pandas as pd

        return pd.concat([one] * rows, ignore_index=True)
    return np.repeat(one, rows, axis=0)
