"""Triton-style inference statistics per model version, kept by the data plane for every
protocol (native predict, V2 infer, the fast path) and reported by V2's statistics extension."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


class _Counters:
    # Every success counts once in success, queue and each compute_* duration, so one
    # counter (execution_count) stands for all five: recording stays a few additions.
    __slots__ = (
        "execution_count",
        "fail_count",
        "fail_ns",
        "infer_ns",
        "inference_count",
        "input_ns",
        "last_inference",
        "output_ns",
        "queue_ns",
        "success_ns",
    )

    def __init__(self) -> None:
        self.last_inference = 0
        self.inference_count = 0
        self.execution_count = 0
        self.fail_count = 0
        self.success_ns = self.fail_ns = self.queue_ns = 0
        self.input_ns = self.infer_ns = self.output_ns = 0

    def row(self) -> tuple[int, ...]:
        n = self.execution_count
        counts = (n, self.fail_count, n, n, n, n)
        durations = (
            self.success_ns,
            self.fail_ns,
            self.queue_ns,
            self.input_ns,
            self.infer_ns,
            self.output_ns,
        )
        return (self.last_inference, self.inference_count, n, *counts, *durations)


class InferenceStats:
    """Triton-style per-version inference statistics of one process; thread-safe.

    success = whole request (ns from the start of the view); queue = resolving the version and
    getting it from the model cache (a load on a miss); compute_input = decoding the request
    into the model's input; compute_infer = the model calls; compute_output = encoding the
    response. inference_count counts rows, execution_count requests. A failed request counts in
    `fail` only (once the version is known: an unknown model or version counts nowhere).
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[tuple[str, int], _Counters] = {}

    def _counters(self, name: str, version: int) -> _Counters:
        counters = self._models.get((name, version))
        if counters is None:
            counters = self._models[(name, version)] = _Counters()
        return counters

    def record_success(
        self,
        name: str,
        version: int,
        *,
        rows: int,
        queue_ns: int,
        input_ns: int,
        infer_ns: int,
        output_ns: int,
        total_ns: int,
    ) -> None:
        now_ms = int(self._clock() * 1000)
        with self._lock:
            c = self._counters(name, version)
            c.last_inference = now_ms
            c.inference_count += rows
            c.execution_count += 1
            c.success_ns += total_ns
            c.queue_ns += queue_ns
            c.input_ns += input_ns
            c.infer_ns += infer_ns
            c.output_ns += output_ns

    def record_failure(self, name: str, version: int, total_ns: int) -> None:
        now_ms = int(self._clock() * 1000)
        with self._lock:
            c = self._counters(name, version)
            c.last_inference = now_ms
            c.fail_count += 1
            c.fail_ns += total_ns

    def model_stats(
        self,
        keep: Callable[[str, int], bool] = lambda name, version: True,
        also: Iterable[tuple[str, int]] = (),
    ) -> list[dict[str, Any]]:
        """Entries whose (name, version) `keep` accepts, plus zero entries for `also`."""
        with self._lock:
            rows = {key: c.row() for key, c in self._models.items() if keep(*key)}
        for key in also:
            rows.setdefault(key, (0, 0, 0, *([0] * 2 * len(_DURATIONS))))
        n = len(_DURATIONS)
        return [
            {
                "name": name,
                "version": str(version),
                "last_inference": row[0],
                "inference_count": row[1],
                "execution_count": row[2],
                "inference_stats": {
                    kind: {"count": row[3 + i], "ns": row[3 + n + i]}
                    for i, kind in enumerate(_DURATIONS)
                },
                "batch_stats": [],
            }
            for (name, version), row in sorted(rows.items())
        ]
