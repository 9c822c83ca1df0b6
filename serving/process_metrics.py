"""Prometheus' standard process and Python metrics, also under gunicorn's multiprocess mode.

In one process (the development server, tests) prometheus_client's own ProcessCollector,
PlatformCollector and GCCollector go on the app's registry as they are.

Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) a scrape lands on one worker, and those
collectors would describe only that one. So:
- process_* (CPU seconds, resident and virtual memory, open fds, start time) are read from
  /proc for every live worker by whichever worker answers, each sample labelled with the
  worker's `pid`. A worker is live while its `modelreg_worker` gauge file exists (gunicorn's
  child_exit hook removes it, `serving.metrics.mark_worker_dead`).
- python_gc_* are counters that every worker adds to the shared files, so they are the
  server's totals (summed over workers, as every other counter). A collection is noted by a
  `gc.callbacks` hook and written at the worker's next request or scrape: the hook itself
  must not take prometheus_client's file lock, which the collecting thread may be holding.
- python_info is the same in every worker and comes from the answering one.
"""

from __future__ import annotations

import gc
import glob
import os
import re
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics_core import Metric

WORKER_GAUGE = "modelreg_worker"
_LIVE_FILE = re.compile(r"gauge_liveall_(\d+)\.db$")

__all__ = ["ProcessMetrics", "WorkerProcessCollector"]
PENDING_MAX = 4096  # collections noted by a worker that gets no request are dropped beyond


class WorkerProcessCollector:
    """process_* of every live worker, labelled with its pid."""

    def __init__(self, directory: str, proc: str = "/proc") -> None:
        self._directory = directory
        self._proc = proc

    def live_pids(self) -> list[int]:
        pids = {os.getpid()}
        for path in glob.glob(os.path.join(self._directory, "gauge_liveall_*.db")):
            match = _LIVE_FILE.search(path)
            if match:
                pids.add(int(match.group(1)))
        return sorted(pid for pid in pids if self._running(pid))

    def _running(self, pid: int) -> bool:
        """Not gone, nor a zombie (killed, not yet reaped by the arbiter: no memory left)."""
        try:
            with open(os.path.join(self._proc, str(pid), "stat"), "rb") as stat:
                state = stat.read().rpartition(b")")[2].split()[:1]
        except OSError:
            return False
        return state not in ([b"Z"], [b"X"], [])

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in self.live_pids():
            reader = ProcessCollector(pid=lambda pid=pid: pid, proc=self._proc, registry=None)
            for family in reader.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    merged.samples.append(
                        sample._replace(labels={**sample.labels, "pid": str(pid)})
                    )
        yield from families.values()


class _GcCounters:
    """python_gc_* as multiprocess counters, fed from a gc callback through a queue."""

    def __init__(self) -> None:
        labels = ["generation"]
        self.collected = Counter(
            "python_gc_objects_collected", "Objects collected during gc", labels, registry=None
        )
        self.uncollectable = Counter(
            "python_gc_objects_uncollectable",
            "Uncollectable objects found during GC",
            labels,
            registry=None,
        )
        self.collections = Counter(
            "python_gc_collections",
            "Number of times this generation was collected",
            labels,
            registry=None,
        )
        self._pending: deque[tuple[int, int, int]] = deque(maxlen=PENDING_MAX)
        gc.callbacks.append(self._on_gc)

    def remove(self) -> None:
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":  # deque.append is atomic: no lock here
            self._pending.append((info["generation"], info["collected"], info["uncollectable"]))

    def flush(self) -> None:
        pending = self._pending
        while pending:
            try:
                generation, collected, uncollectable = pending.popleft()
            except IndexError:  # another thread took the last one
                return
            label = str(generation)
            self.collections.labels(label).inc()
            if collected:
                self.collected.labels(label).inc(collected)
            if uncollectable:
                self.uncollectable.labels(label).inc(uncollectable)


# One gc hook per process (a forked worker gets its own); the counters write to its files.
_gc_counters: dict[int, _GcCounters] = {}


class ProcessMetrics:
    """The standard collectors for one app, the right way for how the process serves."""

    def __init__(self, registry: CollectorRegistry, multiprocess_dir: str | None) -> None:
        self._gc: _GcCounters | None = None
        if multiprocess_dir is None:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
            return
        pid = os.getpid()
        if pid not in _gc_counters:
            for inherited in _gc_counters.values():  # a parent's, copied by fork
                inherited.remove()
            _gc_counters.clear()
            _gc_counters[pid] = _GcCounters()
        self._gc = _gc_counters[pid]
        # Marks this worker live for the others' scrapes (removed when it exits).
        Gauge(
            WORKER_GAUGE,
            "1 for each live serving process, by pid",
            multiprocess_mode="liveall",
            registry=None,
        ).set(1)

    def flush(self) -> None:
        """Write the gc collections noted since the last call (cheap when there are none)."""
        if self._gc is not None:
            self._gc.flush()

    @staticmethod
    def aggregate_collectors(registry: CollectorRegistry, directory: str) -> None:
        """What a multiprocess scrape adds to the files' aggregate."""
        registry.register(WorkerProcessCollector(directory))
        PlatformCollector(registry=registry)
