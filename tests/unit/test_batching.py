"""Unit tests for serving.batching: exact per-caller results under concurrency, failure isolation,
size limits, no added latency at concurrency 1, and the load-time decision helper.

Batching is made deterministic without sleeps: the first model call is held (in the wrapped fn)
until every request has reached the batcher, so all the others must queue up behind it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from serving.batching import MicroBatcher, batching_helps

WAIT = 5.0  # upper bound for any synchronisation wait; a passing test never reaches it
N_FEATURES = 8
FEATURES = [f"f{j}" for j in range(N_FEATURES)]
DATA = np.random.default_rng(0).normal(size=(400, N_FEATURES))
TARGET = DATA @ np.arange(1.0, N_FEATURES + 1) + 0.1 * np.random.default_rng(1).normal(size=400)
LABELS = np.array(["low", "mid", "high"], dtype=object)[np.digitize(TARGET, [-3.0, 3.0])]


@pytest.fixture(scope="module")
def linear() -> LinearRegression:
    return LinearRegression().fit(DATA, TARGET)


@pytest.fixture(scope="module")
def small_forest() -> RandomForestRegressor:
    return RandomForestRegressor(n_estimators=10, max_depth=6, random_state=0).fit(DATA, TARGET)


@pytest.fixture(scope="module")
def logistic() -> LogisticRegression:
    return LogisticRegression(max_iter=500).fit(DATA, LABELS)


class Recorder:
    """Wraps fn: records every call's input; the first call is held until `hold_until` requests
    have reached the batcher (or until `gate` is set), so that the others queue up behind it."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        hold_until: int = 0,
        gate: threading.Event | None = None,
    ) -> None:
        self.fn = fn
        self.hold_until = hold_until
        self.gate = gate
        self.batcher: MicroBatcher | None = None
        self.inputs: list[Any] = []
        self.started = threading.Event()
        self._lock = threading.Lock()

    @property
    def rows(self) -> list[int]:
        return [len(x) for x in self.inputs]

    def __call__(self, X: Any) -> Any:
        with self._lock:
            self.inputs.append(X)
            first = len(self.inputs) == 1
        if first:
            self.started.set()
            if self.gate is not None:
                assert self.gate.wait(WAIT)
            if self.hold_until:
                assert self.batcher is not None
                until_ok(lambda: self.batcher.stats["requests"] >= self.hold_until)
        return self.fn(X)


def until_ok(condition: Callable[[], bool]) -> None:
    """Poll a condition another thread makes true; fails after WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.0002)


def batcher_for(
    fn: Callable[[Any], Any], n_requests: int, *, max_rows: int = 256, hold: bool = True
) -> tuple[MicroBatcher, Recorder]:
    recorder = Recorder(fn, hold_until=n_requests if hold else 0)
    # A long max_wait: leaders are released by the held call finishing or by max_rows, so the
    # batches do not depend on timing. (The wait is only ever spent while a call is running.)
    batcher = MicroBatcher(recorder, max_wait_ms=WAIT * 1000, max_rows=max_rows, name="test")
    recorder.batcher = batcher
    return batcher, recorder


def run_concurrently(
    call: Callable[[Any], Any], inputs: Sequence[Any], recorder: Recorder | None = None
) -> list[tuple[str, Any]]:
    """One thread per input, released together; with a recorder, input 0 goes first and is
    held inside the model so that all the others join batches behind it."""
    out: list[tuple[str, Any]] = [("missing", None)] * len(inputs)

    def work(i: int, barrier: threading.Barrier | None) -> None:
        if barrier is not None:
            barrier.wait(WAIT)
        try:
            out[i] = ("ok", call(inputs[i]))
        except Exception as error:
            out[i] = ("error", error)

    threads = []
    first = 0
    if recorder is not None:
        threads.append(threading.Thread(target=work, args=(0, None), daemon=True))
        threads[0].start()
        assert recorder.started.wait(WAIT)
        first = 1
    barrier = threading.Barrier(len(inputs) - first)
    for i in range(first, len(inputs)):
        threads.append(threading.Thread(target=work, args=(i, barrier), daemon=True))
        threads[-1].start()
    for thread in threads:
        thread.join(WAIT * 2)
        assert not thread.is_alive(), "a caller never returned"
    return out


def mixed_slices(n: int, seed: int, high: int = 50) -> list[np.ndarray]:
    """n requests of 1..high rows each, cut from DATA at random offsets."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, high + 1, size=n)
    starts = rng.integers(0, len(DATA) - high, size=n)
    return [DATA[s : s + k] for s, k in zip(starts, sizes, strict=True)]


def assert_same(got: Any, expected: Any) -> None:
    assert type(got) is type(expected)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    if expected.dtype.kind == "f":
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    else:
        np.testing.assert_array_equal(got, expected)


def assert_batched(batcher: MicroBatcher, recorder: Recorder, n_requests: int) -> None:
    stats = batcher.stats
    assert stats["requests"] == n_requests
    assert stats["direct"] == stats["fallbacks"] == stats["retries"] == 0
    assert 1 < stats["batches"] < n_requests  # batches formed, beyond the held first call
    assert len(recorder.inputs) == stats["batches"]  # one model call per batch
    assert stats["batched_requests"] == n_requests
    assert stats["batched_rows"] == stats["rows"] == sum(recorder.rows)
    assert stats["max_batch_rows"] == max(recorder.rows) <= batcher.max_rows
    assert stats["executing"] == stats["waiting"] == 0


# ---------------------------------------------------------------------- correctness under load


@pytest.mark.parametrize(
    ("model", "method"),
    [
        ("linear", "predict"),
        ("small_forest", "predict"),
        ("logistic", "predict_proba"),  # 2-D float results
        ("logistic", "predict"),  # object array of string labels
    ],
)
def test_concurrent_mixed_sizes_get_exactly_their_rows(
    request: pytest.FixtureRequest, model: str, method: str
) -> None:
    fn = getattr(request.getfixturevalue(model), method)
    inputs = mixed_slices(64, seed=sum(map(ord, model + method)))
    batcher, recorder = batcher_for(fn, len(inputs))

    results = run_concurrently(batcher, inputs, recorder)

    for X, (status, got) in zip(inputs, results, strict=True):
        assert status == "ok", got
        assert_same(got, fn(X))
    assert_batched(batcher, recorder, len(inputs))


def test_dataframe_inputs_keep_feature_names() -> None:
    frame = pd.DataFrame(DATA, columns=FEATURES)
    model = LinearRegression().fit(frame, TARGET)
    inputs = [
        pd.DataFrame(X, columns=FEATURES) for X in mixed_slices(64, seed=7)
    ]  # fresh RangeIndex per request, as serving.inputs builds them
    batcher, recorder = batcher_for(model.predict, len(inputs))

    results = run_concurrently(batcher, inputs, recorder)

    for X, (status, got) in zip(inputs, results, strict=True):
        assert status == "ok", got
        assert_same(got, model.predict(X))
    assert_batched(batcher, recorder, len(inputs))
    for merged in recorder.inputs:
        assert type(merged) is pd.DataFrame
        assert list(merged.columns) == FEATURES
        assert isinstance(merged.index, pd.RangeIndex)


def test_unmergeable_inputs_go_to_separate_batches_or_direct() -> None:
    def row_sums(X: Any) -> Any:
        if isinstance(X, list):
            return [sum(row) for row in X]
        return X.sum(axis=1) if isinstance(X, pd.DataFrame) else X.sum(axis=-1)

    rng = np.random.default_rng(3)
    kinds: list[Callable[[int], Any]] = [
        lambda k: rng.normal(size=(k, 3)),
        lambda k: rng.normal(size=(k, 5)),
        lambda k: rng.normal(size=(k, 3)).astype(np.float32),
        lambda k: pd.DataFrame(rng.normal(size=(k, 3)), columns=["a", "b", "c"]),
        lambda k: pd.DataFrame(rng.normal(size=(k, 3)), columns=["x", "y", "z"]),
    ]
    inputs: list[Any] = [kinds[i % len(kinds)](1 + i % 7) for i in range(40)]
    inputs += [rng.normal(size=4), [[1.0, 2.0], [3.0, 4.0]]]  # 1-D and list: always direct
    batcher, recorder = batcher_for(row_sums, len(inputs))

    results = run_concurrently(batcher, inputs, recorder)

    for X, (status, got) in zip(inputs, results, strict=True):
        assert status == "ok", got
        expected = row_sums(X)
        if isinstance(expected, pd.Series):
            pd.testing.assert_series_equal(got, expected)
        elif isinstance(expected, list):
            assert got == expected
        else:
            assert_same(got, expected)
    stats = batcher.stats
    assert stats["direct"] == 2
    assert stats["fallbacks"] == 0  # nothing was merged that could not be
    assert 5 <= stats["batches"] < 40
    assert len(recorder.inputs) == stats["batches"] + stats["direct"]


def test_dataframes_with_different_dtypes_are_never_concatenated() -> None:
    gate = threading.Event()
    recorder = Recorder(lambda X: X.sum(axis=1), gate=gate)
    batcher = MicroBatcher(recorder, max_wait_ms=WAIT * 1000, max_rows=100)
    floats = pd.DataFrame({"a": [1.5, 2.5], "b": [3.0, 4.0]})
    ints = pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]})
    results: dict[str, Any] = {}

    def call(name: str, X: pd.DataFrame) -> None:
        results[name] = batcher(X)

    threads = [threading.Thread(target=call, args=("held", floats), daemon=True)]
    threads[0].start()
    assert recorder.started.wait(WAIT)
    for name, X in (("floats", floats), ("ints", ints)):  # same columns, one open batch
        threads.append(threading.Thread(target=call, args=(name, X), daemon=True))
        threads[-1].start()
    until_ok(lambda: batcher.stats["requests"] == 3)
    gate.set()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()

    pd.testing.assert_series_equal(results["floats"], floats.sum(axis=1))
    pd.testing.assert_series_equal(results["ints"], ints.sum(axis=1))  # still int64
    assert batcher.stats["fallbacks"] == 1
    assert all(len(set(X.dtypes)) == 1 for X in recorder.inputs)  # never a float/int mix


# ---------------------------------------------------------------------------------- failures


def test_a_bad_request_fails_alone(linear: LinearRegression) -> None:
    def strict_predict(X: np.ndarray) -> np.ndarray:
        if (X < 0).any():
            raise ValueError("negative values are not accepted")
        return linear.predict(X)

    inputs = [np.abs(X) for X in mixed_slices(32, seed=11)]
    bad = 17
    inputs[bad] = inputs[bad].copy()
    inputs[bad][-1, 2] = -1.0
    batcher, recorder = batcher_for(strict_predict, len(inputs))

    results = run_concurrently(batcher, inputs, recorder)

    for i, (X, (status, got)) in enumerate(zip(inputs, results, strict=True)):
        if i == bad:
            assert status == "error"
            assert isinstance(got, ValueError)
        else:
            assert status == "ok", got
            assert_same(got, linear.predict(X))
    stats = batcher.stats
    assert stats["fallbacks"] == 1  # only the batch holding the bad request was retried
    assert stats["retries"] > 1  # ...one request at a time, in the callers' own threads
    assert len(recorder.inputs) == stats["batches"] + stats["retries"]
    assert stats["executing"] == 0


def test_when_the_model_always_fails_every_caller_gets_an_error() -> None:
    def broken(X: np.ndarray) -> np.ndarray:
        raise RuntimeError("model is broken")

    inputs = mixed_slices(24, seed=5)
    batcher, recorder = batcher_for(broken, len(inputs))

    results = run_concurrently(batcher, inputs, recorder)

    assert all(status == "error" and isinstance(e, RuntimeError) for status, e in results)
    stats = batcher.stats
    assert len(recorder.inputs) == stats["batches"] + stats["retries"]
    # Every request that shared a failed batch ran again alone; how batches formed depends on
    # timing, so only the bounds are exact.
    assert 0 < stats["retries"] <= stats["requests"]
    assert stats["executing"] == stats["waiting"] == 0


def test_an_unsplittable_output_falls_back_to_one_call_per_request() -> None:
    inputs = mixed_slices(16, seed=2)
    batcher, recorder = batcher_for(lambda X: float(X.sum()), len(inputs))  # a scalar per call

    results = run_concurrently(batcher, inputs, recorder)

    for X, (status, got) in zip(inputs, results, strict=True):
        assert status == "ok", got
        assert got == pytest.approx(float(X.sum()))
    assert batcher.stats["fallbacks"] >= 1


# ---------------------------------------------------------------------------- limits, policy


def test_max_rows_is_respected(linear: LinearRegression) -> None:
    max_rows = 40
    inputs = mixed_slices(64, seed=13)  # 1..50 rows: some are max_rows or more by themselves
    oversize = {len(X) for X in inputs if len(X) >= max_rows}
    assert oversize
    batcher, recorder = batcher_for(linear.predict, len(inputs), max_rows=max_rows)

    results = run_concurrently(batcher, inputs, recorder)

    for X, (status, got) in zip(inputs, results, strict=True):
        assert status == "ok", got
        assert_same(got, linear.predict(X))
    assert all(rows <= max_rows or rows in oversize for rows in recorder.rows)
    stats = batcher.stats
    assert stats["max_batch_rows"] <= max_rows
    assert stats["direct"] == sum(len(X) >= max_rows for X in inputs)
    assert len(recorder.inputs) == stats["batches"] + stats["direct"]
    assert stats["batches"] < stats["requests"] - stats["direct"]


def test_no_added_wait_at_concurrency_1(linear: LinearRegression) -> None:
    recorder = Recorder(linear.predict)
    batcher = MicroBatcher(recorder, max_wait_ms=50, max_rows=256)  # 50 ms: any wait would show
    rows = [DATA[i : i + 1] for i in range(100)]
    for X in rows[:10]:  # warm-up
        linear.predict(X)

    start = time.perf_counter()
    for X in rows:
        linear.predict(X)
    direct = time.perf_counter() - start
    start = time.perf_counter()
    for X in rows:
        assert_same(batcher(X), linear.predict(X))
    batched = time.perf_counter() - start

    assert recorder.rows == [1] * 100
    stats = batcher.stats
    assert stats["batches"] == 100
    assert stats["wait_seconds"] == 0.0
    # Generous: each batched iteration also runs the reference predict (so ~2x); a single
    # 50 ms wait per call would take 5 s.
    assert batched < 4 * direct + 0.5


def test_close_releases_a_waiting_leader_and_later_calls_go_direct() -> None:
    gate = threading.Event()
    recorder = Recorder(lambda X: X[:, 0].copy(), gate=gate)
    batcher = MicroBatcher(recorder, max_wait_ms=WAIT * 1000, max_rows=100)
    held = threading.Thread(target=batcher, args=(DATA[:2],), daemon=True)
    held.start()
    assert recorder.started.wait(WAIT)
    result: list[Any] = []
    leader = threading.Thread(target=lambda: result.append(batcher(DATA[2:5])), daemon=True)
    leader.start()
    until_ok(lambda: batcher.stats["waiting"] == 1)  # waiting because the held call runs

    batcher.close()
    leader.join(WAIT)

    assert not leader.is_alive()
    assert_same(result[0], DATA[2:5, 0])
    assert batcher.stats["wait_seconds"] < WAIT
    gate.set()
    held.join(WAIT)
    assert_same(batcher(DATA[:3]), DATA[:3, 0])
    assert batcher.stats["direct"] == 1


def test_free_running_threads_stay_correct(small_forest: RandomForestRegressor) -> None:
    """No holding: real races between leaders, joiners and finishing calls."""
    batcher = MicroBatcher(small_forest.predict, max_wait_ms=2, max_rows=64)
    inputs = mixed_slices(16 * 25, seed=17, high=20)
    expected = [small_forest.predict(X) for X in inputs]
    errors: list[str] = []
    barrier = threading.Barrier(16)

    def work(t: int) -> None:
        barrier.wait(WAIT)
        for i in range(t, len(inputs), 16):
            got = batcher(inputs[i])
            if not np.allclose(got, expected[i]) or got.shape != expected[i].shape:
                errors.append(f"request {i}")

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
        assert not thread.is_alive()
    assert errors == []
    stats = batcher.stats
    assert stats["requests"] == len(inputs)
    assert stats["batched_requests"] == len(inputs)
    assert stats["max_batch_rows"] <= 64
    assert stats["executing"] == stats["waiting"] == 0


# ---------------------------------------------------------------------------------- decision


def test_batching_helps_a_forest_and_not_a_linear_model(linear: LinearRegression) -> None:
    forest = RandomForestRegressor(n_estimators=100, max_depth=8, random_state=0)
    forest.fit(DATA[:200], TARGET[:200])

    helps, info = batching_helps(forest.predict, DATA[0])
    assert helps, info
    assert info["ratio"] < 4

    helps, info = batching_helps(linear.predict, DATA[:1])
    assert not helps, info
    assert info["one_row_ms"] < 0.5


def test_batching_helps_accepts_a_dataframe_and_survives_a_failing_model() -> None:
    frame = pd.DataFrame(DATA, columns=FEATURES)
    model = LinearRegression().fit(frame, TARGET)
    helps, info = batching_helps(model.predict, frame.iloc[5:9], repeats=2)
    # Whether batching helps a DataFrame-fed model depends on this machine's speed; the
    # decision must follow the measured numbers.
    assert info["one_row_ms"] > 0 and info["many_rows_ms"] > 0
    assert helps == (info["one_row_ms"] >= 0.5 and info["ratio"] < 4), info

    def broken(X: Any) -> Any:
        raise ValueError("nope")

    helps, info = batching_helps(broken, DATA[0])
    assert not helps
    assert "ValueError" in info["reason"]
