"""Prometheus metrics, correct across gunicorn workers.

Each app gets its own CollectorRegistry (tests build many apps in one process). When
PROMETHEUS_MULTIPROC_DIR is set (the gunicorn runner sets it up), every worker writes its
samples to files there and `/metrics` aggregates all workers, so a scrape that lands on
any one worker reports the totals of the whole server.

Every label takes a bounded set of values: each new value is a new series that lives as long
as the process and is in every scrape (a request's histogram alone is 15 buckets, a count and
a sum), so a value taken from a request would let anyone grow both. Routes are the URL rules,
methods the standard ones (else "OTHER"), statuses the HTTP codes; a model is named only when
it exists and the request passed authentication (the caller decides; otherwise
`UNKNOWN_MODEL`), and at most `max_model_labels` (model, version) pairs are named per process,
`OTHER_LABEL` beyond.

The standard process_*, python_gc_* and python_info metrics are there too, per worker under
gunicorn (serving/process_metrics.py), and a scrape that asks for OpenMetrics gets it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

from registry.access import public
from registry.endpoints import endpoint
from serving.cache import VersionKey
from serving.process_metrics import ProcessMetrics

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
OPENMETRICS_TYPE = OPENMETRICS.split(";")[0]  # application/openmetrics-text
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# Placeholders; model names cannot begin with "_", so neither is ever a real model.
UNKNOWN_MODEL = "_unknown"  # no such model, or the request did not pass authentication
OTHER_LABEL = "_other"  # a model (or version) beyond the label budget
DEFAULT_MAX_MODEL_LABELS = 1000
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STATUS_LABELS = {int(status): str(int(status)) for status in HTTPStatus}
_MAX_CACHED_CHILDREN = 10_000

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


PUBLISH_SECONDS = 1.0  # answered requests reach the Prometheus values within this


class _Publisher:
    """One thread per process that hands every Metrics' tallied requests to Prometheus each
    PUBLISH_SECONDS (a worker that goes idle still publishes what it counted), started again
    in a forked child, whose parent's thread did not come along."""

    def __init__(self) -> None:
        self._metrics: weakref.WeakSet[Metrics] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._pid = 0

    def add(self, metrics: Metrics) -> None:
        with self._lock:
            self._metrics.add(metrics)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="metrics-publisher", daemon=True).start()

    def publish_all(self) -> None:
        for metrics in list(self._metrics):
            metrics.publish_requests()

    def _run(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(PUBLISH_SECONDS)
            try:
                self.publish_all()
            except Exception:  # a metrics write must never end the thread
                log.exception("publishing request metrics failed")

    def after_fork(self) -> None:
        """In a forked child: no thread yet, and the parent's tallies are the parent's."""
        self._pid = 0
        for metrics in list(self._metrics):
            metrics.forget_tally()


_PUBLISHER = _Publisher()
atexit.register(_PUBLISHER.publish_all)  # what an exiting process counted is not lost
os.register_at_fork(after_in_child=_PUBLISHER.after_fork)


class Metrics:
    def __init__(self, max_model_labels: int = DEFAULT_MAX_MODEL_LABELS) -> None:
        self._max_model_labels = max_model_labels
        self._model_labels: set[tuple[str, str]] = set()
        self._model_labels_lock = threading.Lock()
        self._request_children: dict[tuple[str, ...], tuple[Any, Any]] = {}
        # Requests since the last publish, per label set: [children, count, sum, buckets].
        self._tally: dict[tuple[str, ...], list[Any]] = {}
        self._tally_lock = threading.Lock()
        self._hits = 0  # model cache hits since the last publish
        self._publishing = False
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.process = ProcessMetrics(r, multiprocess_dir())
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
        self.policy_requests = Counter(
            "modelreg_policy_requests",
            "Requests a traffic policy routed, by the version that answered",
            ["model", "alias", "version", "outcome"],
            registry=r,
        )
        self.policy_shadows = Counter(
            "modelreg_policy_shadow",
            "Shadow copies: compared, error or dropped (a full queue)",
            ["model", "alias", "version", "outcome"],
            registry=r,
        )
        self._policy_children: dict[tuple[str, ...], Any] = {}
        # Called before each exposition: counters kept off the request path publish here.
        self.before_scrape: list[Callable[[], None]] = []

    def model_labels(self, model: str, version: str) -> tuple[str, str]:
        """(model, version) as labels: as given while the budget of pairs lasts."""
        if not model or model == UNKNOWN_MODEL:
            return model, ""
        pair = (model, version)
        if pair in self._model_labels:
            return pair
        with self._model_labels_lock:
            if len(self._model_labels) < self._max_model_labels:
                self._model_labels.add(pair)
                return pair
        return OTHER_LABEL, ""

    def _policy_child(self, counter: Any, kind: str, labels: tuple[str, str, int, str]) -> Any:
        key = (kind, *map(str, labels))
        child = self._policy_children.get(key)
        if child is None:
            model, version = self.model_labels(labels[0], str(labels[2]))
            alias = labels[1] if model != OTHER_LABEL else ""
            child = counter.labels(model, alias, version, labels[3])
            if len(self._policy_children) < 4 * self._max_model_labels:
                self._policy_children[key] = child
        return child

    def on_policy_route(
        self, model: str, alias: str, version: int, outcome: str, count: int = 1
    ) -> None:
        """Requests a policy routed (outcome success or error)."""
        self._policy_child(self.policy_requests, "r", (model, alias, version, outcome)).inc(count)

    def on_shadow_outcome(
        self, model: str, alias: str, version: int, outcome: str, count: int = 1
    ) -> None:
        self._policy_child(self.policy_shadows, "s", (model, alias, version, outcome)).inc(count)

    def on_cache_event(self, kind: str, key: VersionKey, info: dict[str, Any]) -> None:
        """Listener for ModelCache events."""
        if kind == "hit":  # one per request: tallied, published with the request counts
            with self._tally_lock:
                self._hits += 1
            self._publish_soon()
        elif kind == "miss":
            self.cache_misses.inc()
        elif kind == "load":
            model = self.model_labels(key.name, "")[0]
            self.cache_loads.labels(model).inc()
            self.load_seconds.labels(model).observe(info.get("seconds", 0.0))
            self.loaded_models.inc()
            self.loaded_bytes.inc(info.get("bytes", 0))
        elif kind == "load_failed":  # error: an exception class name
            model = self.model_labels(key.name, "")[0]
            self.load_failures.labels(model, str(info.get("error", ""))).inc()
        elif kind == "evict":
            self.cache_evictions.labels(str(info.get("reason", ""))).inc()
            self.loaded_models.dec()
            self.loaded_bytes.dec(info.get("bytes", 0))

    def on_batch(self, model: str, rows: int, requests: int, waited: float) -> None:
        """Listener for MicroBatcher batches."""
        model = self.model_labels(model, "")[0]
        self.batch_rows.labels(model).observe(rows)
        self.batch_requests.labels(model).observe(requests)
        self.batch_wait.labels(model).observe(waited)

    def observe_request(
        self, route: str, method: str, model: str, version: str, status: int, seconds: float
    ) -> None:
        """One answered request. `route` is a URL rule (or "unmatched"), `model` a model that
        exists and the caller may use (or UNKNOWN_MODEL, or "" where the route names none)."""
        if method not in METHODS:
            method = "OTHER"
        code = _STATUS_LABELS.get(status, "other")
        model, version = self.model_labels(model, version)
        self.process.flush()
        labels = (route, method, model, version, code)
        children = self._request_children.get(labels)
        if children is None:
            # Resolved once per label set (labels() takes a lock and rebuilds the key each
            # time); the sets are as bounded as the labels themselves.
            children = (
                self.requests.labels(route, method, model, version, code),
                self.latency.labels(route, model, version, code),
            )
            if len(self._request_children) < _MAX_CACHED_CHILDREN:
                self._request_children[labels] = children
        # A few additions here; the writes to the multiprocess files (a lock and a pid check
        # each, three per request) happen in publish_requests, once per label set.
        bounds = children[1]._upper_bounds
        with self._tally_lock:
            entry = self._tally.get(labels)
            if entry is None:
                entry = self._tally[labels] = [children, 0, 0.0, [0] * len(bounds)]
            entry[1] += 1
            entry[2] += seconds
            entry[3][bisect_left(bounds, seconds)] += 1
        self._publish_soon()

    def _publish_soon(self) -> None:
        """Something was tallied: make sure this process's publisher knows these metrics."""
        if not self._publishing:
            self._publishing = True
            _PUBLISHER.add(self)

    def forget_tally(self) -> None:
        with self._tally_lock:
            self._tally = {}
            self._hits = 0
        self._publishing = False

    def publish_requests(self) -> None:
        """Add the requests (and cache hits) tallied since the last call to their series."""
        with self._tally_lock:
            if not self._tally and not self._hits:
                return
            tally, self._tally = self._tally, {}
            hits, self._hits = self._hits, 0
        if hits:
            self.cache_hits.inc(hits)
        for (counter, histogram), count, total, buckets in tally.values():
            counter.inc(count)
            histogram._sum.inc(total)  # Histogram.observe, for many observations at once
            for index, n in enumerate(buckets):
                if n:
                    histogram._buckets[index].inc(n)

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The scrape's body and content type: OpenMetrics when `accept` asks for it (as
        Prometheus does), else the classic text format."""
        encoder, content_type = choose_encoder(accept or "")
        if not content_type.startswith(OPENMETRICS_TYPE):
            encoder, content_type = generate_latest, CONTENT_TYPE_LATEST  # the classic text
        self.process.flush()
        self.publish_requests()
        for publish in self.before_scrape:
            publish()
        directory = multiprocess_dir()
        if directory is None:
            return encoder(self.registry), content_type
        aggregate = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(aggregate, path=directory)
        ProcessMetrics.aggregate_collectors(aggregate, directory)
        return encoder(aggregate), content_type


_EXPOSITION = {"type": "string"}


@endpoint(
    summary="Prometheus metrics",
    tag="ops",
    description="The Prometheus text format, or OpenMetrics 1.0 when `Accept` asks for "
    f"`{OPENMETRICS_TYPE}` (Prometheus does). Under gunicorn, counters are the "
    "totals of every worker and `process_*` samples carry each worker's `pid`.",
    responses={
        200: {
            "description": "The exposition.",
            "content": {
                "text/plain": {"schema": _EXPOSITION},
                OPENMETRICS_TYPE: {"schema": _EXPOSITION},
            },
        }
    },
)
@bp.get("/metrics")
@public
def metrics() -> Response:
    collected = current_app.extensions["modelreg"].metrics
    body, content_type = collected.exposition(request.headers.get("Accept"))
    response = Response(body, content_type=content_type)
    response.vary.add("Accept")
    return response


def mark_worker_dead(pid: int) -> None:
    """gunicorn child_exit hook: drop the dead worker's live gauges."""
    if multiprocess_dir() is not None:
        prometheus_multiprocess.mark_process_dead(pid)
