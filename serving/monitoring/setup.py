"""Monitoring wired into one app: the observer on the data plane, the profile listener,
the worker thread, and what the views need (called by manage.create_app)."""

from __future__ import annotations

import atexit
from dataclasses import dataclass
from typing import Any

from registry.monitoring import store
from registry.monitoring.service import ProfileChanged
from registry.services import aliases as alias_service
from registry.unit_of_work import UnitOfWorkFactory
from serving.dataplane import DataPlane
from serving.monitoring.live import LiveMonitor, LiveSettings
from serving.monitoring.reference_predict import reference_predictor
from serving.monitoring.worker import MonitoringWorker, MonitorMetrics

EXTENSION_KEY = "modelreg.monitoring"


@dataclass(frozen=True, slots=True)
class Monitoring:
    live: LiveMonitor
    worker: MonitoringWorker
    predict_reference: Any  # registry.monitoring.service.ReferencePredictor
    window_seconds: int


def build_monitoring(
    uow: UnitOfWorkFactory, config: Any, dataplane: DataPlane, metrics: Any, check_version: Any
) -> Monitoring:
    sessions = uow.session_factory
    live = LiveMonitor(
        LiveSettings.from_config(config),
        lambda keys: store.profiles(sessions, keys),
        lambda summaries, payload: store.write_flush(sessions, summaries, payload),
    )
    if config.MONITORING:
        dataplane.observers.append(live.observe)
        dataplane.refusal_observers.append(live.refused)

    def on_change(change: Any) -> None:
        if isinstance(change, ProfileChanged):
            live.forget_profile(change.name, change.version)

    uow.subscribe(on_change)

    def rollback(name: str, alias: str, reason: str) -> Any:
        return alias_service.rollback_alias(
            uow, name, alias, reason=reason, actor="monitor", check=check_version
        )

    worker = MonitoringWorker(
        live,
        uow,
        config,
        rollback=rollback,
        metrics=MonitorMetrics(metrics.registry, metrics.model_labels),
    )
    if config.MONITORING and config.MONITOR_BACKGROUND:
        worker.start()
        atexit.register(worker.stop)
    return Monitoring(
        live, worker, reference_predictor(dataplane), int(config.MONITOR_WINDOW_SECONDS)
    )
