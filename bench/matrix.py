"""The matrix: every target x every model x every (rows, concurrency) point, plus cold start."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from bench.cpu import CpuWindow, cores_by_pid, wait_for_quiet
from bench.inprocess import Timing
from bench.loadgen import LoadResult, run_wrk
from bench.models import ModelSpec, TrainedModel, request_rows
from bench.procs import Memory
from bench.targets import ModelregTarget, Target


@dataclass(frozen=True)
class Point:
    rows: int
    concurrency: int


FULL_POINTS: tuple[Point, ...] = (
    Point(1, 1),
    Point(1, 8),
    Point(1, 32),
    Point(100, 1),
    Point(100, 8),
    Point(10_000, 1),
    Point(10_000, 4),
)
QUICK_POINTS: tuple[Point, ...] = (Point(1, 1), Point(1, 8), Point(100, 8), Point(10_000, 1))


@dataclass(frozen=True)
class Settings:
    duration_s: float
    warmup_s: float
    workdir: Path  # request bodies are written here
    # Other work on the machine (cores busy outside the target, wrk and the bench itself):
    quiet_cores: float = 0.15  # wait for less than this before a point...
    max_wait_s: float = 300  # ...but no longer than this
    retry_cores: float = 0.25  # measure a point again when other load exceeded this
    retries: int = 2  # at most this many times; the least disturbed attempt is kept
    repeats: int = 1  # measure each point this many times (new wrk connections each time)


@dataclass(frozen=True)
class Measured:
    """One wrk run of a point, and how the machine's cores were used meanwhile."""

    load: LoadResult
    other_cores: float  # other processes on the machine
    worker_cores: tuple[float, ...]  # each worker process of the target
    attempt: int


@dataclass(frozen=True)
class PointResult:
    model: str
    point: Point
    load: LoadResult
    inprocess: Timing | None  # in-process calls with the same body
    other_cores: float = 0.0  # average cores used by other processes during the point
    attempts: int = 1
    worker_cores: tuple[float, ...] = ()  # average cores used by each worker process
    repeat: int = 1

    @property
    def inprocess_s(self) -> float | None:
        """Seconds per in-process call of what the server runs (else of the sklearn model)."""
        return self.inprocess.best_s if self.inprocess else None

    @property
    def rows_per_s(self) -> float:
        return self.load.req_per_s * self.point.rows

    @property
    def overhead_ms(self) -> float | None:
        """Served p50 minus the in-process call: the cost of HTTP + the web layer (conc 1)."""
        if self.inprocess_s is None or self.point.concurrency != 1:
            return None
        return self.load.p50_ms - self.inprocess_s * 1e3

    @property
    def fraction(self) -> float | None:
        """Served rows/s as a fraction of the in-process rows/s (one core)."""
        if not self.inprocess_s:
            return None
        return self.rows_per_s / (self.point.rows / self.inprocess_s)


@dataclass(frozen=True)
class ServedCheck:
    """The served predictions of 100 rows against the registered estimator's."""

    runtime: str  # as the target reports it (modelreg: X-Model-Runtime)
    rows: int
    max_abs_diff: float
    mismatches: int  # values off by more than 1e-4 x (1 + |expected|)


@dataclass
class ModelRun:
    spec: ModelSpec
    points: list[PointResult] = field(default_factory=list)
    memory: Memory | None = None  # after this model's points (all models loaded by then)
    check: ServedCheck | None = None


@dataclass
class TargetRun:
    target: str
    command: str
    models: list[ModelRun] = field(default_factory=list)
    cold_start_s: dict[str, float] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    log_file: str = "-"

    def failed_points(self) -> list[PointResult]:
        return [p for m in self.models for p in m.points if p.load.failed]


InProcess = dict[tuple[str, int], Timing]  # (model name, rows) -> seconds per call
# Measured once the target has its models deployed (and is idle): target -> timings.
InProcessProbe = Callable[[Target], InProcess]


def body_file(settings: Settings, target: Target, spec: ModelSpec, rows: int) -> Path:
    """The request body of one point, written once per target protocol."""
    path = settings.workdir / "bodies" / f"{target.name}-{spec.name}-{rows}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(target.body(request_rows(rows, spec.n_features)))
    return path


def settle(target: Target, settings: Settings) -> None:
    wait_for_quiet(
        target.cpu_seconds, threshold_cores=settings.quiet_cores, max_wait_s=settings.max_wait_s
    )


def run_point(target: Target, spec: ModelSpec, point: Point, settings: Settings) -> Measured:
    """The least disturbed of up to 1 + settings.retries attempts."""
    url = target.predict_url(spec)
    body = body_file(settings, target, spec, point.rows)
    options = {"connections": point.concurrency, "content_type": target.content_type}
    best: Measured | None = None
    for attempt in range(1, settings.retries + 2):
        settle(target, settings)
        if settings.warmup_s > 0:
            run_wrk(url, body, duration_s=settings.warmup_s, **options)
        window = CpuWindow(target.cpu_seconds).start()
        workers_before = target.worker_cpu()
        load = run_wrk(url, body, duration_s=settings.duration_s, **options)
        workers = cores_by_pid(workers_before, target.worker_cpu(), load.duration_s)
        measured = Measured(load, window.other_cores(), tuple(workers), attempt)
        if best is None or measured.other_cores < best.other_cores:
            best = measured
        if measured.other_cores <= settings.retry_cores:
            break
        print(
            f"  (other processes used {measured.other_cores:.2f} cores during this point)",
            flush=True,
        )
    assert best is not None
    return best


def _progress(target: Target, result: PointResult) -> None:
    load = result.load
    print(
        f"  [{target.name}] {result.model:<15} rows={result.point.rows:<6} "
        f"conc={result.point.concurrency:<3} {load.req_per_s:9.1f} req/s "
        f"{result.rows_per_s:12.0f} rows/s  p50 {load.p50_ms:8.2f} ms  "
        f"p99 {load.p99_ms:8.2f} ms  non-2xx {load.non_2xx}  other {result.other_cores:.2f}  "
        f"workers {'+'.join(f'{c:.2f}' for c in result.worker_cores)}",
        flush=True,
    )


def _warn(target: Target, result: PointResult) -> None:
    load = result.load
    bar = "!" * 78
    print(
        f"{bar}\n!!! WARNING: {target.name} {result.model} rows={result.point.rows} "
        f"conc={result.point.concurrency}: {load.non_2xx} non-2xx answers, "
        f"{load.socket_errors} socket errors/timeouts, {load.requests} requests\n"
        f"!!! server log tail:\n{target.log_tail(3_000)}\n{bar}",
        flush=True,
    )


def run_model(
    target: Target,
    model: TrainedModel,
    points: Sequence[Point],
    settings: Settings,
    inprocess: InProcess,
) -> ModelRun:
    run = ModelRun(model.spec)
    for point in points:
        for repeat in range(1, settings.repeats + 1):
            m = run_point(target, model.spec, point, settings)
            timing = inprocess.get((model.spec.name, point.rows))
            result = PointResult(
                model.spec.name,
                point,
                m.load,
                timing,
                m.other_cores,
                m.attempt,
                m.worker_cores,
                repeat,
            )
            run.points.append(result)
            _progress(target, result)
            if m.load.failed:
                _warn(target, result)
    run.memory = target.memory()
    print(
        f"  [{target.name}] memory after {model.spec.name}: RSS {run.memory.rss_mib:.0f} MiB, "
        f"PSS {run.memory.pss_mib:.0f} MiB over {run.memory.processes} processes",
        flush=True,
    )
    return run


def run_target(
    target: Target,
    models: Sequence[TrainedModel],
    points: Sequence[Point],
    settings: Settings,
    inprocess: InProcess | InProcessProbe,
) -> TargetRun:
    """Start the target, deploy, time the in-process limit, warm and check every model, run
    every point, stop it."""
    print(f"== {target.name}: {target.describe()}", flush=True)
    target.start()
    run = TargetRun(target.name, target.describe())
    try:
        target.deploy(models)
        timings = inprocess(target) if callable(inprocess) else inprocess
        target.warm(models)
        checks = {m.spec.name: check_served(target, m) for m in models}
        for model in models:
            model_run = run_model(target, model, points, settings, timings)
            model_run.check = checks[model.spec.name]
            run.models.append(model_run)
    finally:
        _collect_log(target, run)
        target.stop()
    return run


def _collect_log(target: Target, run: TargetRun) -> None:
    if isinstance(target, ModelregTarget):
        run.server_errors.extend(target.server_errors())
        run.log_file = target.log_file()


def run_matrix(
    targets: Sequence[Target],
    models: Sequence[TrainedModel],
    points: Sequence[Point],
    settings: Settings,
    inprocess: InProcess | InProcessProbe,
) -> list[TargetRun]:
    return [run_target(t, models, points, settings, inprocess) for t in targets]


def check_served(target: Target, model: TrainedModel, rows: int = 100) -> ServedCheck:
    """Served predictions vs the registered estimator's on the same rows."""
    X = request_rows(rows, model.spec.n_features)
    served, runtime = target.predict_once(model.spec, X)
    expected = np.asarray(model.estimator.predict(X), dtype=np.float64)
    got = np.asarray(served, dtype=np.float64).reshape(expected.shape)
    diff = np.abs(got - expected)
    mismatches = int((diff > 1e-4 * (1 + np.abs(expected))).sum())
    check = ServedCheck(runtime, rows, float(diff.max()), mismatches)
    print(
        f"  [{target.name}] {model.spec.name}: served by {runtime}; {rows} rows vs scikit-learn: "
        f"max |diff| {check.max_abs_diff:.2g}, {mismatches} mismatches",
        flush=True,
    )
    return check


# ---- cold start ----------------------------------------------------------------------------


def _first_success(url: str, body: bytes, content_type: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Content-Type": content_type}
    while time.monotonic() < deadline:
        try:
            if requests.post(url, data=body, headers=headers, timeout=30).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"no successful predict from {url} within {timeout:.0f} s")


def cold_start(
    target: Target, models: Sequence[TrainedModel], settings: Settings, timeout: float = 180
) -> dict[str, float]:
    """Seconds from launching a fresh server (fresh cache, models already registered) to the
    first successful predict, one fresh server per model. The target must be stopped."""
    seconds: dict[str, float] = {}
    for model in models:
        settle(target, settings)
        body = target.body(request_rows(1, model.spec.n_features))
        started = time.monotonic()
        target.launch()
        try:
            _first_success(target.predict_url(model.spec), body, target.content_type, timeout)
            seconds[model.spec.name] = time.monotonic() - started
        finally:
            target.stop()
        print(
            f"  [{target.name}] cold start {model.spec.name}: {seconds[model.spec.name]:.2f} s",
            flush=True,
        )
    return seconds
