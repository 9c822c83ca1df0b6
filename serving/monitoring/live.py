"""The data plane's monitoring observer: queue on the request path, fold and flush off it.

Per request the observer does a clock read, a tuple, a locked list append and, rarely, a
sampled payload-log entry: no numpy, no database. A background step (the monitoring worker,
or a test calling it) folds the queue into per-(version, variant, window) accumulators with
numpy, and every flush writes the accumulators' counts and the sampled payloads in one
transaction, then starts them afresh. Counts are additive, so processes and hosts merge by
addition when read (registry/monitoring/store.py).

Memory is bounded: the queue holds at most `max_pending_rows` rows (beyond it a request is
counted but not binned), large requests queue a systematic sample of at most
`rows_binned_per_request` rows, an accumulator's size depends only on the profile, and the
payload buffer holds at most `max_payload_entries` entries.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.monitoring.context import CURRENT_REQUEST_ID
from serving.monitoring.fold import Accumulator, CompiledProfile, compile_profile, sample_rows

log = logging.getLogger(__name__)

Key = tuple[str, int, str]  # (model, version, variant)
BUFFER_ROWS = 4_096  # rows per numeric buffer before it is concatenated and queued
_ROW_INDEX = re.compile(r"\[\d+\]")
MAX_REFUSED_FIELDS = 50


@dataclass(frozen=True, slots=True)
class LiveSettings:
    window_seconds: int = 300
    payload_sample: float = 0.01
    payload_max_rows: int = 1_000  # rows kept per logged request
    max_payload_entries: int = 10_000
    max_pending_rows: int = 200_000
    rows_binned_per_request: int = 256

    @classmethod
    def from_config(cls, config: Any) -> LiveSettings:
        return cls(
            window_seconds=int(config.MONITOR_WINDOW_SECONDS),
            payload_sample=float(config.MONITOR_PAYLOAD_SAMPLE),
            payload_max_rows=int(config.MONITOR_PAYLOAD_MAX_ROWS),
            max_payload_entries=int(config.MONITOR_PAYLOAD_BUFFER),
            max_pending_rows=int(config.MONITOR_MAX_PENDING_ROWS),
            rows_binned_per_request=int(config.MONITOR_ROWS_BINNED_PER_REQUEST),
        )


ProfileLoader = Callable[[list[tuple[str, int]]], dict[tuple[str, int], Any]]
FlushWriter = Callable[[list[dict[str, Any]], list[dict[str, Any]]], None]


class _Buffer:
    """Numeric requests of one (version, variant, window) since the last fold: two list
    appends per request (arrays are not tracked by the garbage collector), one concatenate
    per fold."""

    __slots__ = ("end", "n", "plan", "rows", "start", "width", "xs", "ys")

    def __init__(self, start: int, end: int, width: int, plan: Any) -> None:
        self.start = start
        self.end = end
        self.width = width
        self.xs: list[np.ndarray] = []
        self.ys: list[np.ndarray] = []
        self.n = 0
        self.rows = 0
        self.plan = plan


def field_of(path: str) -> str:
    """An error path without its row index: `instances[3].sqft` -> `instances.sqft`."""
    return _ROW_INDEX.sub("", path, count=1)


class LiveMonitor:
    def __init__(
        self,
        settings: LiveSettings,
        load_profiles: ProfileLoader,
        write: FlushWriter,
        *,
        clock: Callable[[], float] = time.time,
        writer_id: str | None = None,
    ) -> None:
        self.settings = settings
        self._window = settings.window_seconds  # read on every request: kept at hand
        self._rows_binned = settings.rows_binned_per_request
        self._payload_sample = settings.payload_sample
        self._load_profiles = load_profiles
        self._write = write
        self._clock = clock
        self.writer_id = writer_id or f"{os.uname().nodename[:40]}:{os.getpid()}"
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, ...]] = []
        self._buffers: dict[Key, _Buffer] = {}
        self._pending_rows = 0
        self._payload: list[tuple[Any, ...]] = []
        self._accumulators: dict[tuple[Key, int], Accumulator] = {}
        self._profiles: dict[tuple[str, int], CompiledProfile] = {}
        self._raw_profiles: dict[tuple[str, int], Any] = {}
        self._fold_lock = threading.Lock()  # one folder at a time (worker, flush, tests)
        self.payload_rates: dict[str, float] = {}  # per-model overrides (monitor configs)
        self.unbinned_requests = 0  # requests counted but not binned (queue full)

    # -- the request path ----------------------------------------------------------------

    def observe(self, inference: Any) -> None:
        """DataPlane observer: queue the rows (sampled when large) for the next fold."""
        batch = inference.batch
        rows = batch.rows
        now = self._clock()
        key = (inference.name, inference.version, inference.variant)
        X = batch.X
        y = inference.outputs[0] if batch.methods[0] == "predict" else None
        if (
            rows <= self._rows_binned
            and type(X) is np.ndarray
            and type(y) is np.ndarray
            and y.ndim == 1
            and y.dtype.kind == "f"
        ):  # the usual numeric request: two appends to its window's buffer
            with self._lock:
                buffer = self._buffers.get(key)
                if (
                    buffer is None
                    or not buffer.start <= now < buffer.end
                    or buffer.n >= BUFFER_ROWS
                    or buffer.width != X.shape[1]
                ):
                    buffer = self._swap_buffer(
                        key, self._window_start(now), X.shape[1], inference.servable.plan
                    )
                buffer.xs.append(X)
                buffer.ys.append(y)
                buffer.n += len(X)
                buffer.rows += rows
        else:
            queued = rows
            if rows > self._rows_binned:
                X, y = sample_rows(X, y, rows, self._rows_binned)
                queued = len(X)
            start = self._window_start(now)
            self._queue(key, start, X, y, rows, queued, inference.servable.plan)
        rate = self.payload_rates.get(inference.name, self._payload_sample)
        if rate > 0 and (rate >= 1 or random.random() < rate):
            self._log_payload(inference, key, now, self._window_start(now))

    def _window_start(self, now: float) -> int:
        window = self._window
        return int(now // window) * window

    def _swap_buffer(self, key: Key, start: int, width: int, plan: Any) -> _Buffer:
        """A fresh buffer for `key`; the old one (if it holds rows) joins the queue. Called
        with the lock held."""
        old = self._buffers.get(key)
        if old is not None and old.rows:
            self._retire(key, old)
        buffer = self._buffers[key] = _Buffer(start, start + self._window, width, plan)
        return buffer

    def _retire(self, key: Key, buffer: _Buffer) -> None:
        n = buffer.n
        if self._pending_rows + n > self.settings.max_pending_rows:
            self._pending.append((key, buffer.start, None, None, buffer.rows, buffer.plan))
            self.unbinned_requests += 1
            return
        # The lists go as they are: the fold concatenates them, off the request path.
        self._pending.append((key, buffer.start, buffer.xs, buffer.ys, buffer.rows, buffer.plan))
        self._pending_rows += n

    def _queue(
        self, key: Key, start: int, X: Any, y: Any, rows: int, queued: int, plan: Any
    ) -> None:
        with self._lock:
            if self._pending_rows + queued > self.settings.max_pending_rows:
                X = y = None
                queued = 0
                self.unbinned_requests += 1
            self._pending.append((key, start, X, y, rows, plan))
            self._pending_rows += queued

    def refused(self, name: str, version: int, error: Any) -> None:
        """DataPlane refusal hook: count the refused fields of a request."""
        window = self.settings.window_seconds
        start = int(self._clock() // window) * window
        fields = list((getattr(error, "errors", None) or {"body": ""}).keys())[:10]
        with self._lock:
            self._pending.append(((name, version, ""), start, None, None, 0, fields))

    def _log_payload(self, inference: Any, key: Key, now: float, start: int) -> None:
        limit = self.settings.payload_max_rows
        X = inference.batch.X
        head = X.iloc[:limit] if hasattr(X, "iloc") else X[:limit]
        output = inference.outputs[0]
        entry = (
            key,
            CURRENT_REQUEST_ID.get(),
            now,
            start,
            inference.batch.methods[0],
            head,
            output[:limit] if hasattr(output, "__getitem__") else output,
            inference.servable.classes,
        )
        with self._lock:
            if len(self._payload) >= self.settings.max_payload_entries:
                del self._payload[0]
            self._payload.append(entry)

    # -- off the request path --------------------------------------------------------------

    def fold_pending(self) -> int:
        """Fold the queue into the accumulators; returns the rows folded."""
        with self._fold_lock:
            with self._lock:
                for key, buffer in self._buffers.items():
                    if buffer.rows:
                        self._retire(key, buffer)
                self._buffers = {}
                pending, self._pending = self._pending, []
                self._pending_rows = 0
            if not pending:
                return 0
            self._ensure_profiles({(k[0], k[1]) for k, *_ in pending})
            groups: dict[tuple[Key, int], list[tuple[Any, ...]]] = {}
            for item in pending:
                groups.setdefault((item[0], item[1]), []).append(item)
            folded = 0
            for (key, start), items in groups.items():
                folded += self._fold_group(key, start, items)
            return folded

    def _fold_group(self, key: Key, start: int, items: list[tuple[Any, ...]]) -> int:
        arrays, outputs, counted, plan = [], [], 0, None
        refusals: list[str] = []
        for _, _, X, y, rows, extra in items:
            if isinstance(extra, list):  # a refusal: extra holds its fields
                refusals.extend(extra)
                continue
            plan = extra
            counted += rows
            if type(X) is list:  # a numeric buffer's requests
                arrays.extend(X)
                outputs.extend(y)
            elif X is not None:
                arrays.append(X)
                outputs.append(y)
        acc = self._accumulator(key, start, plan)
        for path in refusals:
            field = field_of(path)
            if field in acc.refused or len(acc.refused) < MAX_REFUSED_FIELDS:
                acc.refuse(field)
        if not counted:
            return 0
        if not arrays:
            acc.fold(None, None, counted)
            return counted
        X = _concat(arrays)
        y = None if any(o is None for o in outputs) else _concat([np.asarray(o) for o in outputs])
        acc.fold(X, y, counted)
        return counted

    def _accumulator(self, key: Key, start: int, plan: Any) -> Accumulator:
        acc = self._accumulators.get((key, start))
        if acc is None:
            compiled = self._compiled(key[0], key[1], plan)
            acc = self._accumulators[(key, start)] = Accumulator(compiled)
        return acc

    def _compiled(self, name: str, version: int, plan: Any) -> CompiledProfile:
        compiled = self._profiles.get((name, version))
        if compiled is None or (plan is not None and compiled.problem == "no input plan yet"):
            stored = self._raw_profiles.get((name, version))
            raw = stored[1] if stored else None
            if plan is None:
                compiled = CompiledProfile((), (), None, "no input plan yet")
            else:
                compiled = compile_profile(raw, plan.feature_names, plan.n_features)
            self._profiles[(name, version)] = compiled
        return compiled

    def _ensure_profiles(self, keys: set[tuple[str, int]]) -> None:
        missing = [k for k in keys if k not in self._raw_profiles]
        if not missing:
            return
        try:
            found = self._load_profiles(missing)
        except Exception:
            log.warning("monitoring: reference profiles could not be read", exc_info=True)
            return  # rows still count; they are binned once a profile is known
        for key in missing:
            self._raw_profiles[key] = found.get(key)
            self._profiles.pop(key, None)

    def refresh_profiles(self, stamps: dict[tuple[str, int], Any]) -> None:
        """Forget cached profiles whose stored stamp changed (set or replaced elsewhere)."""
        for key, stored in list(self._raw_profiles.items()):
            if (stored[0] if stored else None) != stamps.get(key):
                self._raw_profiles.pop(key, None)
                self._profiles.pop(key, None)

    def forget_profile(self, name: str, version: int | None = None) -> None:
        """A profile was set or replaced: compile it again (this process at once; the
        worker's refresh tells the others)."""
        for key in list(self._raw_profiles):
            if key[0] == name and (version is None or key[1] == version):
                self._raw_profiles.pop(key, None)
                self._profiles.pop(key, None)

    def known_profiles(self) -> list[tuple[str, int]]:
        return list(self._raw_profiles)

    def flush(self) -> tuple[int, int]:
        """Fold what is queued and write it all in one transaction; on failure the counts
        stay and go out with the next flush (nothing is counted twice)."""
        self.fold_pending()
        with self._fold_lock:
            accumulators = self._accumulators
            with self._lock:
                payload, self._payload = self._payload, []
            summaries = [
                {
                    "model": key[0],
                    "version": key[1],
                    "variant": key[2],
                    "window_start": start,
                    "window_seconds": self.settings.window_seconds,
                    "writer": self.writer_id,
                    "rows": acc.rows,
                    "summary": acc.to_summary(),
                }
                for (key, start), acc in accumulators.items()
                if acc.rows or acc.refused
            ]
            entries = [_payload_row(entry) for entry in payload]
            try:
                self._write(summaries, entries)
            except Exception:
                log.warning(
                    "monitoring: a flush failed; its counts wait for the next one", exc_info=True
                )
                with self._lock:
                    keep = self.settings.max_payload_entries - len(self._payload)
                    self._payload[:0] = payload[-keep:] if keep > 0 else []
                return 0, 0
            self._accumulators = {}
            return len(summaries), len(entries)

    def memory_estimate(self) -> int:
        """Bytes held by the accumulators (not the queue): for the bench and docs."""
        total = 0
        for acc in self._accumulators.values():
            for part in [*acc.num, *acc.cat, *([acc.pred] if acc.pred else [])]:
                for value in part.values():
                    total += value.nbytes if hasattr(value, "nbytes") else 64
        return total


def _concat(arrays: list[Any]) -> Any:
    if len(arrays) == 1:
        return arrays[0]
    if hasattr(arrays[0], "iloc"):
        import pandas as pd

        return pd.concat(arrays, ignore_index=True)
    return np.concatenate(arrays)


def _payload_row(entry: tuple[Any, ...]) -> dict[str, Any]:
    from datetime import UTC, datetime

    key, request_id, at, start, method, X, output, classes = entry
    inputs = X.to_dict(orient="records") if hasattr(X, "to_dict") else np.asarray(X).tolist()
    outputs = np.asarray(output).tolist() if output is not None else []
    return {
        "model": key[0],
        "version": key[1],
        "variant": key[2],
        "request_id": request_id or "",
        "at": datetime.fromtimestamp(at, UTC),
        "window_start": start,
        "method": method,
        "inputs": _finite(inputs),
        "outputs": _finite(outputs),
        "classes": list(classes) if classes is not None else None,
    }


def _finite(value: Any) -> Any:
    """NaN is not JSON: missing values are logged as null."""
    if isinstance(value, float):
        return None if value != value else value
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
