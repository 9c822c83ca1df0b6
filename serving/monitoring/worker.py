"""Each serving process's monitoring thread: fold, refresh, flush, and (one leader) judge.

Every `tick_seconds` (ALIAS_REFRESH_SECONDS): fold the queue. Every `flush_seconds`: read
which profiles and payload rates changed elsewhere (two small queries, for the versions this
process serves), then write the counts (one transaction). Every `evaluate_seconds`, if
this process holds the lease (`job_leases`, renewed each time): close windows, evaluate the
monitors and, every ten minutes, apply retention. Everything runs in this thread: the
request path never waits for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from registry.db import utcnow
from registry.monitoring import alerts, store
from registry.unit_of_work import UnitOfWorkFactory
from serving.monitoring.live import LiveMonitor

log = logging.getLogger(__name__)

LEASE = "monitoring"
PRUNE_SECONDS = 600.0


class MonitorMetrics:
    """Prometheus series with bounded labels: (model, version) through the app's label
    budget (serving/metrics.py); no feature or variant names."""

    def __init__(self, registry: CollectorRegistry, labels: Callable[[str, str], tuple[str, str]]):
        self._labels = labels
        self.firing = Gauge(
            "modelreg_monitor_alert_firing",
            "1 while a monitor alert fires for the version",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.transitions = Counter(
            "modelreg_monitor_alerts",
            "Monitor alerts fired and resolved",
            ["kind"],
            registry=registry,
        )
        self.flushes = Counter(
            "modelreg_monitor_flushes",
            "Monitoring flushes by outcome",
            ["outcome"],
            registry=registry,
        )

    def states(self, states: list[tuple[str, int, str, bool]]) -> None:
        firing: dict[tuple[str, str], bool] = {}
        for model, version, _, is_firing in states:
            key = self._labels(model, str(version))
            firing[key] = firing.get(key, False) or is_firing
        for (model, version), value in firing.items():
            self.firing.labels(model, version).set(1 if value else 0)


class MonitoringWorker:
    def __init__(
        self,
        live: LiveMonitor,
        uow: UnitOfWorkFactory,
        config: Any,
        *,
        rollback: alerts.Rollback | None,
        metrics: MonitorMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.live = live
        self.uow = uow
        self.config = config
        self.rollback = rollback
        self.metrics = metrics
        self.clock = clock
        self.tick_seconds = min(
            float(config.ALIAS_REFRESH_SECONDS), float(config.MONITOR_FLUSH_SECONDS)
        )
        self.flush_seconds = float(config.MONITOR_FLUSH_SECONDS)
        self.evaluate_seconds = float(config.MONITOR_EVALUATE_SECONDS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_flush = 0.0
        self._last_evaluate = 0.0
        self._last_prune = 0.0

    # -- steps (tests call these directly) ---------------------------------------------

    def refresh(self) -> None:
        """Forget profiles set or replaced elsewhere, and read per-model payload rates."""
        keys = self.live.known_profiles()
        if keys:
            self.live.refresh_profiles(store.profile_stamps(self.uow.session_factory, keys))
        names = {name for name, _ in keys}
        if names:
            configs = store.monitor_configs(self.uow.session_factory, names)
            self.live.payload_rates = {
                name: float(c["payload_sample"])
                for name, c in configs.items()
                if c.get("payload_sample") is not None
            }

    def flush(self) -> None:
        written = self.live.flush()
        if self.metrics is not None:
            self.metrics.flushes.labels("ok" if written != (0, 0) else "empty").inc()

    def evaluate(self, *, lead: bool | None = None) -> list[alerts.Transition]:
        """Judge closed windows if this process leads (or `lead` says so), then retention."""
        if lead is None:
            lead = store.take_lease(
                self.uow.session_factory, LEASE, self.live.writer_id, 3 * self.evaluate_seconds + 5
            )
        transitions: list[alerts.Transition] = []
        if lead:
            transitions = alerts.evaluate(
                self.uow,
                now=self.clock(),
                window_seconds=self.live.settings.window_seconds,
                grace_seconds=2 * self.flush_seconds + 1,
                rollback=self.rollback,
            )
            closed = self.clock() - 2 * self.flush_seconds - 1
            store.compact(
                self.uow.session_factory,
                before=int(closed // self.live.settings.window_seconds)
                * self.live.settings.window_seconds,
            )
            now = utcnow()
            if time.monotonic() - self._last_prune >= PRUNE_SECONDS or self._last_prune == 0.0:
                self._last_prune = time.monotonic()
                self._prune(now)
        if self.metrics is not None:
            for transition in transitions:
                self.metrics.transitions.labels(transition.kind).inc()
            self.metrics.states(alerts.firing_states(self.uow))
        return transitions

    def _prune(self, now: Any) -> None:
        config = self.config
        store.prune(
            self.uow.session_factory,
            summaries_before=int(self.clock() - config.MONITOR_RETENTION_DAYS * 86400),
            payload_before=now - timedelta(hours=config.MONITOR_PAYLOAD_RETENTION_HOURS),
            labels_before=now - timedelta(hours=config.MONITOR_PAYLOAD_RETENTION_HOURS * 2),
            payload_max_rows=int(config.MONITOR_PAYLOAD_MAX_ENTRIES),
        )

    def evaluate_soon(self) -> None:
        """Judge at the next flush instead of at the end of the evaluation period: a monitor
        just changed, and its new thresholds apply to every window not yet judged."""
        self._last_evaluate = float("-inf")

    def tick(self) -> None:
        self.live.fold_pending()  # every tick: the queue holds about one tick of traffic
        now = time.monotonic()
        if now - self._last_flush < self.flush_seconds:
            return
        self._last_flush = now
        # At the flush cadence (MONITOR_FLUSH_SECONDS): a reference or payload rate set
        # through another process applies here within a flush, a small part of a window
        # (MONITOR_WINDOW_SECONDS); two queries a second would cost every request.
        self.refresh()
        self.flush()
        if now - self._last_evaluate >= self.evaluate_seconds:
            self._last_evaluate = now
            self.evaluate()

    # -- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="modelreg-monitoring", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.live.flush()  # what this process counted is not lost at shutdown
        except Exception:
            log.warning("monitoring: the last flush failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.tick()
            except Exception:
                log.warning("monitoring: a step failed; retrying next tick", exc_info=True)
