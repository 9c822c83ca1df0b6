"""Cache-bound check: many versions served by one server with a small MODEL_CACHE_MAX_MODELS.

Registers `versions` LogisticRegression versions of the model `many` (each from its own seed),
predicts each version once, pinned (`/models/many/<v>/predict`), and checks that each worker
keeps at most `max_models` of them and that memory stays within the idle memory plus what
`workers x max_models` cached models can hold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import skops.io

from bench.models import request_rows, small_logistic
from bench.procs import Memory
from bench.targets import ModelregTarget, post_fresh
from registry.client import Client

MODEL_NAME = "many"
N_FEATURES = 20
PARALLEL = 4  # concurrent registrations / predictions
# Allowance per worker on top of the cached models' estimated bytes: allocator fragmentation
# and Python objects around each entry. An unbounded cache would grow by versions x entry.
SLACK_PER_WORKER = 8 * 2**20


@dataclass
class CacheCheck:
    versions: int
    max_models: int
    workers: int
    register_s: float
    memory_idle: Memory  # server started, nothing registered
    memory_registered: Memory  # versions registered, nothing predicted yet
    memory_before: Memory  # the base: version 1 loaded by every worker (loading code warm)
    memory_filled: Memory  # after predicting the first max_models versions
    memory_after: Memory  # after predicting every version
    worker_stats: list[dict[str, Any]]  # distinct /serving/cache stats seen (one per worker)
    entry_bytes: int  # largest cached entry's estimated bytes
    failed_predicts: int

    @property
    def bound_bytes(self) -> int:
        return self.workers * (self.max_models * self.entry_bytes + SLACK_PER_WORKER)

    @property
    def growth_bytes(self) -> int:
        return self.memory_after.rss_bytes - self.memory_before.rss_bytes

    @property
    def models_bounded(self) -> bool:
        return all(s.get("models", 0) <= self.max_models for s in self.worker_stats)

    @property
    def passed(self) -> bool:
        return (
            self.failed_predicts == 0
            and self.models_bounded
            and self.growth_bytes <= self.bound_bytes
        )


def _save_versions(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(count):
        path = folder / f"many-{seed:03d}.skops"
        skops.io.dump(small_logistic(seed, N_FEATURES), path)
        paths.append(path)
    return paths


def _register_all(url: str, paths: Sequence[Path]) -> list[int]:
    local = threading.local()

    def register(path: Path) -> int:
        if not hasattr(local, "client"):
            local.client = Client(url, timeout=120)
        for attempt in range(5):
            try:
                record = local.client.register(MODEL_NAME, path, description=path.stem)
                return int(record["version"])
            except Exception:  # a busy SQLite writer: retry a few times
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return sorted(pool.map(register, paths))


def _predict_each(target: ModelregTarget, versions: Sequence[int], body: bytes) -> int:
    """Predict every version once, on fresh connections (any worker); the number of failures."""

    def predict(version: int) -> int:
        return post_fresh(target.version_url(MODEL_NAME, version), body, "application/json")

    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        return sum(1 for status in pool.map(predict, versions) if status != 200)


def _warm_every_worker(
    target: ModelregTarget, version: int, body: bytes, workers: int, attempts: int = 20
) -> int:
    """Predict `version` until every worker process has it cached: keep-alive connections
    opened together, which the serve worker spreads (fresh ones may all land on one worker).
    The number of failed predicts."""
    url = target.version_url(MODEL_NAME, version)
    failed = 0
    for _ in range(attempts):
        barrier = threading.Barrier(8)

        def client(_: int, barrier: threading.Barrier = barrier) -> int:
            with requests.Session() as session:
                barrier.wait(timeout=60)
                status = session.post(
                    url, data=body, headers={"Content-Type": "application/json"}, timeout=60
                ).status_code
                barrier.wait(timeout=60)  # hold every connection until all have answered
            return int(status != 200)

        with ThreadPoolExecutor(max_workers=8) as pool:
            failed += sum(pool.map(client, range(8)))
        warm = [s for s in sample_workers(target.url) if s.get("models", 0) >= 1]
        if len(warm) >= workers:
            break
    return failed


def _cache_status(url: str) -> dict[str, Any]:
    response = requests.get(f"{url}/serving/cache", headers={"Connection": "close"}, timeout=30)
    response.raise_for_status()
    return response.json()


def sample_workers(url: str, samples: int = 24) -> list[dict[str, Any]]:
    """/serving/cache stats of each worker that took one of `samples` fresh connections made
    at once (keyed by the answering process)."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: _cache_status(url), range(samples)))
    by_worker: dict[int, dict[str, Any]] = {}
    for answer in answers:
        stats = answer["stats"]
        stats["entry_bytes_max"] = max((e["bytes"] for e in answer["models"]), default=0)
        by_worker[answer["pid"]] = stats
    return list(by_worker.values())


def run_cache_check(
    workdir: Path,
    log_dir: Path,
    *,
    threads: int,
    workers: int = 2,
    versions: int = 200,
    max_models: int = 20,
    say: Callable[[str], None] = print,
) -> CacheCheck:
    target = ModelregTarget(
        workdir / "cache-home",
        log_dir,
        workers=workers,
        threads=threads,
        env={"MODEL_CACHE_MAX_MODELS": str(max_models)},
        name="modelreg-cache",
    )
    paths = _save_versions(workdir / "cache-models", versions)
    target.start()
    try:
        idle = target.memory()
        started = time.monotonic()
        registered = _register_all(target.url, paths)
        register_s = time.monotonic() - started
        say(f"  [cache] registered {len(registered)} versions in {register_s:.1f} s")
        registered_memory = target.memory()
        body = target.body(request_rows(1, N_FEATURES))
        # The first load in a process imports and allocates what every later load reuses:
        # predict version 1 on every worker first, and measure growth from there.
        failed = _predict_each(target, [registered[0]] * 4 * PARALLEL, body)
        before = target.memory()
        failed += _predict_each(target, registered[:max_models], body)
        filled = target.memory()
        failed += _predict_each(target, registered[max_models:], body)
        after = target.memory()
        stats = sample_workers(target.url)
    finally:
        target.stop()
    return CacheCheck(
        versions=len(registered),
        max_models=max_models,
        workers=workers,
        register_s=register_s,
        memory_idle=idle,
        memory_registered=registered_memory,
        memory_before=before,
        memory_filled=filled,
        memory_after=after,
        worker_stats=stats,
        entry_bytes=max((s["entry_bytes_max"] for s in stats), default=0),
        failed_predicts=failed,
    )


@dataclass
class ModelCost:
    """RSS cost of a further cached model: `models` versions loaded on top of a warm base,
    none evicted, so that page-sized allocator noise is spread over many models."""

    models: int
    memory_before: Memory  # version 1 loaded by every worker
    memory_after: Memory  # and the next `models` versions, each loaded by one worker
    cached: int  # models the workers hold at the end (models + 1 per worker: none evicted)
    artifact_bytes: float  # mean size of the versions' skops files
    failed_predicts: int

    @property
    def per_model_bytes(self) -> float:
        growth = self.memory_after.rss_bytes - self.memory_before.rss_bytes
        return growth / self.models


def measure_model_cost(
    workdir: Path,
    log_dir: Path,
    *,
    threads: int,
    workers: int = 2,
    models: int = 100,
) -> ModelCost:
    """Load `models` further versions into caches big enough to keep them all, and divide the
    RSS growth by their number. (The cache-bound check holds only 20 per worker: its growth
    is about one MiB, the size of the allocator's own noise.)"""
    # Registered by one server, measured on a fresh one: registering imports the converters
    # and frees memory that later loads would reuse, which hides part of their cost.
    home = workdir / "cost-home"
    paths = _save_versions(workdir / "cost-models", models + 1)
    registrar = ModelregTarget(home, log_dir, workers=1, threads=threads, name="modelreg-cost-reg")
    registrar.start()
    try:
        registered = _register_all(registrar.url, paths)
    finally:
        registrar.stop()
    target = ModelregTarget(
        home,
        log_dir,
        workers=workers,
        threads=threads,
        env={"MODEL_CACHE_MAX_MODELS": str(models + 1)},
        name="modelreg-cost",
    )
    target.start()
    try:
        body = target.body(request_rows(1, N_FEATURES))
        failed = _warm_every_worker(target, registered[0], body, workers)
        before = target.memory()
        failed += _predict_each(target, registered[1:], body)
        after = target.memory()
        stats = sample_workers(target.url)
    finally:
        target.stop()
    sizes = [p.stat().st_size for p in paths]
    return ModelCost(
        models=len(registered) - 1,
        memory_before=before,
        memory_after=after,
        cached=sum(int(s.get("models", 0)) for s in stats),
        artifact_bytes=sum(sizes) / len(sizes),
        failed_predicts=failed,
    )
