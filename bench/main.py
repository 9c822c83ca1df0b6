"""The benchmark command: train, serve, load, measure, write bench/RESULTS-modelreg.md (see
README; `--peers` runs bench.peerbench instead, which writes bench/RESULTS.md)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from bench.cachecheck import run_cache_check
from bench.inprocess import Loaded, Timing, load_served, load_sklearn, per_call_seconds
from bench.loadgen import INSTALL_HINT, WrkMissing, require_wrk, wrk_version
from bench.matrix import (
    FULL_POINTS,
    QUICK_POINTS,
    InProcess,
    InProcessProbe,
    Point,
    Settings,
    TargetRun,
    body_file,
    cold_start,
    run_target,
    settle,
)
from bench.models import TrainedModel, train_all
from bench.procs import REPO_ROOT, relative, stop_on_sigterm
from bench.report import SMALL_P99_MS, Context, render, render_tuning, stdout_table
from bench.targets import ModelregTarget, Target

BENCH_DIR = Path(__file__).resolve().parent
# `modelreg serve`'s own default: with small predictions answered on the event-loop thread,
# --tune measured no difference between 1, 2, 4 and 8 threads (see TUNING.md).
DEFAULT_THREADS = 4
TUNE_THREADS = (1, 2, 4, 8)
TUNE_POINTS = (Point(1, 1), Point(1, 8), Point(1, 32))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description="Benchmark modelreg's serving path with wrk."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 s per point, fewer points, 60 versions in the cache check",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per point (default 15, or 3 with --quick)",
    )
    # RESULTS.md holds the run against the peers (`--peers`); a modelreg-only run goes beside it.
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS-modelreg.md")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument(
        "--tune",
        action="store_true",
        help="measure --threads 1, 2, 4, 8 on 1-row LinearRegression and write "
        "TUNING.md next to --out (instead of the full run)",
    )
    parser.add_argument("--skip-cache-check", action="store_true")
    parser.add_argument("--skip-cold-start", action="store_true")
    return parser.parse_args(argv)


# ---- machine facts ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, str]:
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    packages = ("numpy", "scikit-learn", "skops", "orjson", "flask", "gunicorn")
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": f"{len(os.sched_getaffinity(0))} (cpu_count {os.cpu_count()})",
        "CPU": _cpu_model(),
        "memory": _mem_total(),
        "kernel": platform.release(),
        "Python": platform.python_version(),
        **{package: _version(package) for package in packages},
        "wrk": wrk_version(),
        "code": f"{commit}" + (" + uncommitted changes to tracked files" if dirty else ""),
    }


def command_line(argv: Sequence[str] | None) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    return ".venv/bin/python bench/run.py " + " ".join(shlex.quote(a) for a in args)


# ---- steps -------------------------------------------------------------------------------------


def inprocess_probe(
    models: Sequence[TrainedModel], points: Sequence[Point], settings: Settings
) -> InProcessProbe:
    """Times the in-process limit for every (model, rows) of the matrix, with the same bodies,
    once the target has its models (it is idle meanwhile)."""

    def probe(target: Target) -> InProcess:
        served: dict[str, Loaded] = {}
        if isinstance(target, ModelregTarget):
            try:
                served = load_served(target.home, [m.spec.name for m in models])
            except Exception as error:  # the app's internals moved: fall back to sklearn only
                print(f"  [in-process] the server's own predict is not available: {error!r}")
        result: InProcess = {}
        for model in models:
            sklearn = load_sklearn(model.skops_path)
            own = served.get(model.spec.name)
            settle(target, settings)
            for rows in sorted({p.rows for p in points}):
                body = body_file(settings, target, model.spec, rows).read_bytes()
                timing = Timing(
                    per_call_seconds(sklearn, body),
                    per_call_seconds(own, body) if own else None,
                    own.runtime if own else "",
                )
                result[(model.spec.name, rows)] = timing
                served_text = (
                    f"{timing.served_s * 1e6:10.1f} µs/call as served ({timing.served_runtime})"
                    if timing.served_s is not None
                    else ""
                )
                print(
                    f"  [in-process] {model.spec.name:<15} rows={rows:<6} "
                    f"{timing.sklearn_s * 1e6:10.1f} µs/call sklearn  {served_text}",
                    flush=True,
                )
        return result

    return probe


def best_threads(runs: dict[int, TargetRun]) -> int:
    """Highest mean req/s at concurrency 8 among the settings whose p99 there stayed under
    the target in every run (all settings if none did)."""
    at_8 = {
        t: [p.load for p in r.models[0].points if p.point == Point(1, 8)] for t, r in runs.items()
    }
    within = [t for t, loads in at_8.items() if max(x.p99_ms for x in loads) < SMALL_P99_MS]
    return max(within or list(at_8), key=lambda t: statistics.mean(x.req_per_s for x in at_8[t]))


def tune(
    args: argparse.Namespace, models: Sequence[TrainedModel], settings: Settings, log_dir: Path
) -> int:
    linear = [m for m in models if m.spec.name == "bench-linear"]
    runs: dict[int, TargetRun] = {}
    tune_settings = dataclasses.replace(settings, repeats=2)
    for threads in TUNE_THREADS:
        target = ModelregTarget(
            settings.workdir / f"tune-{threads}",
            log_dir,
            workers=args.workers,
            threads=threads,
            name=f"modelreg-t{threads}",
        )
        runs[threads] = run_target(target, linear, TUNE_POINTS, tune_settings, {})
    best = best_threads(runs)
    ctx = Context(command_line(None), machine_facts(), tune_settings, "")
    out = args.out.parent / "TUNING.md"
    out.write_text(render_tuning(ctx, runs, best))
    print(f"\nbest threads per worker: {best} (written to {relative(out)})")
    return 0


def full_run(
    args: argparse.Namespace, models: Sequence[TrainedModel], settings: Settings, log_dir: Path
) -> int:
    points = QUICK_POINTS if args.quick else FULL_POINTS
    target = ModelregTarget(
        settings.workdir / "home", log_dir, workers=args.workers, threads=args.threads
    )
    run = run_target(target, models, points, settings, inprocess_probe(models, points, settings))
    if not args.skip_cold_start:
        print("== cold start", flush=True)
        run.cold_start_s = cold_start(target, models, settings)
    cache = None
    if not args.skip_cache_check:
        print("== cache bound", flush=True)
        cache = run_cache_check(
            settings.workdir,
            log_dir,
            threads=args.threads,
            workers=args.workers,
            versions=60 if args.quick else 200,
        )
    note = (
        "Threads per worker: default of `bench/run.py`, `modelreg serve`'s own (1, 2, 4 and 8 "
        "measured alike with `--tune`, see `TUNING.md`)."
        if args.threads == DEFAULT_THREADS
        else "Threads per worker set with `--threads`."
    )
    ctx = Context(command_line(None), machine_facts(), settings, note)
    args.out.write_text(render(ctx, run, cache))
    print("\n" + stdout_table(run))
    print(f"\nresults written to {relative(args.out)}; server logs in {relative(log_dir)}")
    if run.failed_points():
        print("!!! WARNING: some points had non-2xx answers or socket errors (see above)")
        return 3
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    stop_on_sigterm()
    args = parse_args(argv)
    try:
        require_wrk()
    except WrkMissing as error:
        print(f"{error}\n\n    {INSTALL_HINT}\n", file=sys.stderr)
        return 2
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 15.0)
    warmup = 1.0 if args.quick else 2.0
    log_dir = BENCH_DIR / "out" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")  # gitignored
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-") as tmp:
        settings = Settings(duration_s=duration, warmup_s=warmup, workdir=Path(tmp))
        print("== training the reference models", flush=True)
        models = train_all(settings.workdir / "models")
        if args.tune:
            return tune(args, models, settings, log_dir)
        return full_run(args, models, settings, log_dir)
