"""Prometheus metrics, correct across gunicorn workers.

Each app gets its own CollectorRegistry (tests build many apps in one process). When
PROMETHEUS_MULTIPROC_DIR is set (the gunicorn runner sets it up), every worker writes its
samples to files there and `/metrics` aggregates all workers, so a scrape that lands on
any one worker reports the totals of the whole server.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Blueprint, Response, current_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess

from registry.access import public
from serving.cache import VersionKey

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

bp = Blueprint("metrics", __name__)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "modelreg_http_requests",
            "HTTP requests answered",
            ["route", "method", "model", "version", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "modelreg_http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["route", "model", "version", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache_hits = Counter("modelreg_cache_hits", "Model cache hits", registry=r)
        self.cache_misses = Counter("modelreg_cache_misses", "Model cache misses", registry=r)
        self.cache_evictions = Counter(
            "modelreg_cache_evictions", "Models evicted", ["reason"], registry=r
        )
        self.cache_loads = Counter("modelreg_model_loads", "Models loaded", ["model"], registry=r)
        self.load_failures = Counter(
            "modelreg_model_load_failures", "Failed model loads", ["model", "error"], registry=r
        )
        self.load_seconds = Histogram(
            "modelreg_model_load_seconds",
            "Time to load a model",
            ["model"],
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.loaded_models = Gauge(
            "modelreg_cache_models", "Models in the cache", multiprocess_mode="livesum", registry=r
        )
        self.loaded_bytes = Gauge(
            "modelreg_cache_bytes",
            "Estimated bytes of cached models",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.batch_rows = Histogram(
            "modelreg_batch_rows",
            "Rows per merged predict call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.batch_requests = Histogram(
            "modelreg_batch_requests",
            "Requests merged into one predict call",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=r,
        )
        self.batch_wait = Histogram(
            "modelreg_batch_wait_seconds",
            "Time a batch leader waited for company",
            ["model"],
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01),
            registry=r,
        )
        self.mutations = Counter(
            "modelreg_registry_mutations", "Successful registry changes", ["type"], registry=r
        )

    def on_cache_event(self, kind: str, key: VersionKey, info: dict[str, Any]) -> None:
        """Listener for ModelCache events."""
        if kind == "hit":
            self.cache_hits.inc()
        elif kind == "miss":
            self.cache_misses.inc()
        elif kind == "load":
            self.cache_loads.labels(key.name).inc()
            self.load_seconds.labels(key.name).observe(info.get("seconds", 0.0))
            self.loaded_models.inc()
            self.loaded_bytes.inc(info.get("bytes", 0))
        elif kind == "load_failed":
            self.load_failures.labels(key.name, str(info.get("error", ""))).inc()
        elif kind == "evict":
            self.cache_evictions.labels(str(info.get("reason", ""))).inc()
            self.loaded_models.dec()
            self.loaded_bytes.dec(info.get("bytes", 0))

    def on_batch(self, model: str, rows: int, requests: int, waited: float) -> None:
        """Listener for MicroBatcher batches."""
        self.batch_rows.labels(model).observe(rows)
        self.batch_requests.labels(model).observe(requests)
        self.batch_wait.labels(model).observe(waited)

    def observe_request(
        self, route: str, method: str, model: str, version: str, status: int, seconds: float
    ) -> None:
        code = str(status)
        self.requests.labels(route, method, model, version, code).inc()
        self.latency.labels(route, model, version, code).observe(seconds)

    def exposition(self) -> bytes:
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        aggregate = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(aggregate, path=directory)
        return generate_latest(aggregate)


@bp.get("/metrics")
@public
def metrics() -> Response:
    body = current_app.extensions["modelreg"].extras["metrics"].exposition()
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def mark_worker_dead(pid: int) -> None:
    """gunicorn child_exit hook: drop the dead worker's live gauges."""
    if multiprocess_dir() is not None:
        prometheus_multiprocess.mark_process_dead(pid)
