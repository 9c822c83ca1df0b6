"""Prometheus metrics of webhook delivery, on the app's registry (serving/metrics.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

OUTCOMES = ("delivered", "retry", "failed")


class WebhookMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "modelreg_webhook_deliveries",
            "Webhook delivery attempts by outcome (retry: failed, will be tried again)",
            ["outcome"],
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.deliveries.labels(outcome)
        # Every process reads the same table: the freshest reading of any live one.
        self.queue_depth = Gauge(
            "modelreg_webhook_queue_depth",
            "Webhook deliveries waiting to be sent",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.oldest_pending = Gauge(
            "modelreg_webhook_oldest_pending_seconds",
            "Age of the oldest webhook delivery waiting to be sent",
            multiprocess_mode="livemax",
            registry=registry,
        )

    def outcome(self, outcome: str) -> None:
        self.deliveries.labels(outcome).inc()

    def queue(self, depth: int, oldest_seconds: float) -> None:
        self.queue_depth.set(depth)
        self.oldest_pending.set(oldest_seconds)
