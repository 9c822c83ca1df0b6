"""`bench/run.py --peers`: modelreg, MLServer and MLflow measured in the same run.

The same matrix, wrk runner and settings for every target (see README). Order: install the
peers if needed and save their models, modelreg's matrix (then its memory on a fresh server),
MLServer's matrix, MLflow's matrix, the cold starts, modelreg's cache-bound check. Writes
RESULTS.md: the comparison first, then modelreg's own detailed report.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.cachecheck import (
    CacheCheck,
    ModelCost,
    measure_model_cost,
    run_cache_check,
    sample_workers,
)
from bench.loadgen import INSTALL_HINT, WrkMissing, require_wrk
from bench.main import DEFAULT_THREADS, command_line, inprocess_probe, machine_facts
from bench.matrix import (
    FULL_POINTS,
    QUICK_POINTS,
    Point,
    PointResult,
    Settings,
    TargetRun,
    cold_start,
    run_target,
)
from bench.models import REFERENCE_MODELS, TrainedModel, train_all
from bench.peers import (
    PEERS_DIR,
    MlflowTarget,
    MlserverTarget,
    PeerOutcome,
    mlflow_cold_start,
    mlserver_cold_start,
)
from bench.procs import Memory, relative, stop_on_sigterm
from bench.report import FOREST, LINEAR, Context, _ms, _n, _table, render, stdout_table
from bench.targets import ModelregTarget

BENCH_DIR = Path(__file__).resolve().parent

# Targets against the peers (from the brief).
LINEAR_REQ_PER_S = 3_000  # 1-row LinearRegression, conc 8
LINEAR_X_BEST = 3.0  # ... and this many times the best peer's req/s
P99_MS = 10.0
FOREST_X_BEST = 30.0  # 1-row RandomForest, conc 8
LARGE_X_MLSERVER = 1.2  # 10,000-row requests: rows/s vs MLServer's, each model
CACHE_X_ARTIFACT = 3.0  # RSS growth per further cached model vs its artifact size


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py --peers",
        description="Benchmark modelreg, MLServer and MLflow side by side with wrk.",
    )
    parser.add_argument("--quick", action="store_true", help="3 s per point, fewer points")
    parser.add_argument("--duration", type=float, default=None, help="seconds per point (15)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "RESULTS.md")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument("--cache-versions", type=int, default=None, help="default 200 (60 quick)")
    parser.add_argument(
        "--max-wait",
        type=float,
        default=None,
        help="seconds to wait for a quiet machine before each point (default 300)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help="re-measure a point disturbed by other load at most this often (default 2)",
    )
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument("--skip-cache-check", action="store_true")
    parser.add_argument("--skip-mlflow", action="store_true")
    parser.add_argument("--skip-mlserver", action="store_true")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class FreshMemory:
    """modelreg's memory on a fresh server (models registered earlier by another server)."""

    idle: Memory
    served: Memory  # after every model was predicted on every worker
    models_per_worker: tuple[int, ...]  # from /serving/cache, one entry per distinct answer


def fresh_memory(
    home: Path, log_dir: Path, workers: int, threads: int, models: Sequence[TrainedModel]
) -> FreshMemory:
    target = ModelregTarget(home, log_dir, workers=workers, threads=threads, name="modelreg-fresh")
    target.start()
    try:
        idle = target.memory()
        target.warm(models, requests_per_model=32)
        stats = sample_workers(target.url)
        served = target.memory()
    finally:
        target.stop()
    fresh = FreshMemory(idle, served, tuple(int(s.get("models", 0)) for s in stats))
    print(
        f"  [modelreg-fresh] RSS idle {idle.rss_mib:.0f} MiB, three models served "
        f"{served.rss_mib:.0f} MiB ({served.breakdown()}); models per worker "
        f"{fresh.models_per_worker}",
        flush=True,
    )
    return fresh


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}".strip()


# ---- the report ------------------------------------------------------------------------------


def _find(run: TargetRun | None, model: str, point: Point) -> PointResult | None:
    if run is None:
        return None
    for m in run.models:
        if m.spec.name == model:
            for p in m.points:
                if p.point == point:
                    return p
    return None


def _label(outcome: PeerOutcome) -> str:
    version = outcome.versions.get(outcome.name, "")
    return {"mlflow": "MLflow", "mlserver": "MLServer"}[outcome.name] + (
        f" {version}" if version else ""
    )


def _peer_memory(outcome: PeerOutcome) -> Memory | None:
    if outcome.run is None or not outcome.run.models:
        return None
    return outcome.run.models[-1].memory


@dataclass(frozen=True)
class Verdict:
    name: str
    measured: str
    passed: bool | None


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("**PASS**" if passed else "**FAIL**")


def _best_peer(
    peers: Sequence[PeerOutcome], model: str, point: Point
) -> tuple[PointResult, str] | None:
    found = [(p, _label(o)) for o in peers if (p := _find(o.run, model, point)) is not None]
    return max(found, key=lambda x: x[0].load.req_per_s) if found else None


def cache_cost(cost: ModelCost | None) -> tuple[float, float] | None:
    """(RSS growth per further cached model, mean artifact bytes), from `measure_model_cost`:
    100 versions loaded on top of a warm base, none evicted."""
    if cost is None or not cost.artifact_bytes:
        return None
    return cost.per_model_bytes, cost.artifact_bytes


def verdicts(
    run: TargetRun,
    peers: Sequence[PeerOutcome],
    fresh: FreshMemory | None,
    cost: tuple[float, float] | None,
) -> list[Verdict]:
    out: list[Verdict] = []
    ours = _find(run, LINEAR, Point(1, 8))
    best = _best_peer(peers, LINEAR, Point(1, 8))
    name = (
        f"LinearRegression 1 row conc 8: ≥ {LINEAR_REQ_PER_S:,} req/s, ≥ {LINEAR_X_BEST:g}x the "
        f"best peer, p99 < {P99_MS:g} ms"
    )
    if ours is None:
        out.append(Verdict(name, "not measured", None))
    else:
        load = ours.load
        text = f"{load.req_per_s:,.0f} req/s, p99 {load.p99_ms:.2f} ms"
        ok = load.req_per_s >= LINEAR_REQ_PER_S and load.p99_ms < P99_MS and not load.failed
        passed: bool | None = ok
        if best is None:
            text += "; no peer measured"
            passed = None if ok else False
        else:
            ratio = load.req_per_s / best[0].load.req_per_s
            text += f"; {ratio:.1f}x {best[1]} ({best[0].load.req_per_s:,.0f} req/s)"
            passed = ok and ratio >= LINEAR_X_BEST
        out.append(Verdict(name, text, passed))

    ours = _find(run, FOREST, Point(1, 8))
    best = _best_peer(peers, FOREST, Point(1, 8))
    name = f"RandomForest 1 row conc 8: ≥ {FOREST_X_BEST:g}x the best peer's req/s"
    if ours is None or best is None:
        out.append(Verdict(name, "not measured (modelreg or every peer missing)", None))
    else:
        ratio = ours.load.req_per_s / best[0].load.req_per_s
        out.append(
            Verdict(
                name,
                f"{ours.load.req_per_s:,.0f} vs {best[1]} {best[0].load.req_per_s:,.1f} req/s = "
                f"{ratio:.1f}x",
                ratio >= FOREST_X_BEST and not ours.load.failed,
            )
        )

    mlserver = next((o for o in peers if o.name == "mlserver"), None)
    for spec in REFERENCE_MODELS:
        for conc in (1, 4):
            point = Point(10_000, conc)
            name = (
                f"{spec.label}, 10,000 rows conc {conc}: ≥ {LARGE_X_MLSERVER:g}x MLServer's rows/s"
            )
            ours = _find(run, spec.name, point)
            theirs = _find(mlserver.run, spec.name, point) if mlserver else None
            if ours is None or theirs is None:
                out.append(Verdict(name, "not measured", None))
                continue
            ratio = ours.rows_per_s / theirs.rows_per_s
            out.append(
                Verdict(
                    name,
                    f"{ours.rows_per_s:,.0f} vs {theirs.rows_per_s:,.0f} rows/s = {ratio:.2f}x",
                    ratio >= LARGE_X_MLSERVER and not ours.load.failed,
                )
            )

    name = "Memory: three models served in less RSS than MLServer's one server"
    theirs_mem = _peer_memory(mlserver) if mlserver else None
    if fresh is None or theirs_mem is None:
        out.append(Verdict(name, "not measured", None))
    else:
        reg = run.models[-1].memory if run.models else None
        reg_text = f"; registration server {reg.rss_mib:,.0f} MiB" if reg else ""
        out.append(
            Verdict(
                name,
                f"fresh server {fresh.served.rss_mib:,.0f} MiB vs MLServer "
                f"{theirs_mem.rss_mib:,.0f} MiB{reg_text}",
                fresh.served.rss_bytes < theirs_mem.rss_bytes,
            )
        )

    name = f"Each further cached model costs ≤ {CACHE_X_ARTIFACT:g}x its artifact size"
    if cost is None:
        out.append(Verdict(name, "not measured", None))
    else:
        per_model, artifact = cost
        out.append(
            Verdict(
                name,
                f"{per_model / 1024:,.1f} KiB RSS per model vs {artifact / 1024:,.1f} KiB "
                f"artifact = {per_model / artifact:.2f}x",
                per_model <= CACHE_X_ARTIFACT * artifact,
            )
        )
    return out


def side_by_side(run: TargetRun, peers: Sequence[PeerOutcome]) -> list[str]:
    measured = [o for o in peers if o.run is not None]
    names = ["modelreg", *(_label(o) for o in measured)]
    runs = [run, *(o.run for o in measured)]
    short = "/".join(["modelreg", *(_label(o).split()[0] for o in measured)])
    header = [
        "rows",
        "conc",
        *(f"req/s {n}" for n in names),
        *(f"rows/s {n}" for n in names),
        "modelreg ÷ best peer (req/s)",
        f"p50 ms ({short})",
        f"p99 ms ({short})",
    ]
    lines: list[str] = []
    for model in run.models:
        rows = []
        for p in model.points:
            found = [_find(r, model.spec.name, p.point) for r in runs]
            peer_rates = [f.load.req_per_s for f in found[1:] if f is not None]
            ratio = (
                f"**{p.load.req_per_s / max(peer_rates):,.1f}x**"
                if peer_rates and max(peer_rates) > 0
                else "n/a"
            )

            def cell(f: PointResult | None, what: str) -> str:
                if f is None:
                    return "n/a"
                if f.load.failed:
                    return f"{_value(f, what)} (errors: {f.load.non_2xx}+{f.load.socket_errors})"
                return _value(f, what)

            rows.append(
                [
                    f"{p.point.rows:,}",
                    str(p.point.concurrency),
                    *(cell(f, "req") for f in found),
                    *(cell(f, "rows") for f in found),
                    ratio,
                    " / ".join(cell(f, "p50") for f in found),
                    " / ".join(cell(f, "p99") for f in found),
                ]
            )
        lines += ["", f"### {model.spec.label} — `{model.spec.name}`", "", *_table(header, rows)]
    return lines


def _value(p: PointResult, what: str) -> str:
    if what == "req":
        return _n(p.load.req_per_s, 1 if p.load.req_per_s < 100 else 0)
    if what == "rows":
        return _n(p.rows_per_s)
    return _ms(p.load.p50_ms if what == "p50" else p.load.p99_ms)


def ratio_summary(run: TargetRun, peers: Sequence[PeerOutcome]) -> list[str]:
    """modelreg ÷ best peer req/s, one row per point, one column per model."""
    points = [p.point for p in run.models[0].points] if run.models else []
    rows = []
    for point in points:
        plural = "s" if point.rows > 1 else ""
        cells = [f"{point.rows:,} row{plural}, conc {point.concurrency}"]
        for model in run.models:
            ours = _find(run, model.spec.name, point)
            best = _best_peer(peers, model.spec.name, point)
            if ours is None or best is None or best[0].load.req_per_s <= 0:
                cells.append("n/a")
            else:
                ratio = ours.load.req_per_s / best[0].load.req_per_s
                cells.append(f"{ratio:,.1f}x ({best[1].split()[0]})")
        rows.append(cells)
    header = ["point", *(m.spec.label.split(" (")[0] for m in run.models)]
    return [
        "",
        "## modelreg ÷ best peer, req/s (= rows/s)",
        "",
        "The best peer at each point is named in brackets.",
        "",
        *_table(header, rows),
    ]


def memory_section(
    run: TargetRun, peers: Sequence[PeerOutcome], fresh: FreshMemory | None
) -> list[str]:
    rows = []
    if fresh is not None:
        rows.append(
            [
                "modelreg, **fresh server** (models registered by an earlier server; each "
                "predicted on every worker)",
                f"{fresh.served.rss_mib:,.0f}",
                f"{fresh.served.pss_mib:,.0f}",
                str(fresh.served.processes),
                fresh.served.breakdown(),
            ]
        )
        rows.append(
            [
                "modelreg, fresh server idle (nothing loaded)",
                f"{fresh.idle.rss_mib:,.0f}",
                f"{fresh.idle.pss_mib:,.0f}",
                str(fresh.idle.processes),
                fresh.idle.breakdown(),
            ]
        )
    reg = run.models[-1].memory if run.models else None
    if reg is not None:
        rows.append(
            [
                "modelreg, **registration server** after the matrix (its worker that handled "
                "the registrations imported scikit-learn/skl2onnx for them)",
                f"{reg.rss_mib:,.0f}",
                f"{reg.pss_mib:,.0f}",
                str(reg.processes),
                reg.breakdown(),
            ]
        )
    for outcome in peers:
        mem = _peer_memory(outcome)
        if mem is None:
            rows.append([_label(outcome), "n/a", "n/a", "-", outcome.error[:80] or "not run"])
        else:
            rows.append(
                [
                    f"{_label(outcome)} after its matrix",
                    f"{mem.rss_mib:,.0f}",
                    f"{mem.pss_mib:,.0f}",
                    str(mem.processes),
                    mem.breakdown(),
                ]
            )
    workers = (
        f" `/serving/cache` on the fresh server: models per worker {fresh.models_per_worker} "
        "(one entry per distinct answer)."
        if fresh
        else ""
    )
    return [
        "",
        "## Memory: three models served",
        "",
        "RSS summed over every process of the target (modelreg: gunicorn master + workers; "
        "MLServer: its process group, i.e. the server and its inference worker(s); MLflow: the "
        "three servers' process groups, each `mlflow models serve` and the uvicorn server it "
        "starts). PSS counts shared pages once." + workers,
        "",
        *_table(("target", "RSS MiB", "PSS MiB", "processes", "per process MiB"), rows),
    ]


def cold_section(run: TargetRun, peers: Sequence[PeerOutcome], cold: dict[str, dict]) -> list[str]:
    names = ["modelreg", *(_label(o) for o in peers)]
    keys = ["modelreg", *(o.name for o in peers)]
    rows = []
    for spec in REFERENCE_MODELS:
        cells = [f"`{spec.name}`"]
        for key in keys:
            value = cold.get(key, {}).get(spec.name)
            cells.append("n/a" if value is None else f"{value:.2f}")
        rows.append(cells)
    notes = [f"- {_label(o)}: {o.cold_start_error}" for o in peers if o.cold_start_error]
    return [
        "",
        "## Cold start (seconds, launch → first successful predict)",
        "",
        "modelreg: a fresh `modelreg serve --workers 2` per model (models registered, cache "
        "empty). MLflow: a fresh `mlflow models serve` of that model alone. MLServer: one fresh "
        "server with the three models, polled for each model at once from the launch.",
        "",
        *_table(("model", *names), rows),
        *(["", *notes] if notes else []),
    ]


def cache_cost_section(cost: ModelCost | None) -> list[str]:
    if cost is None or not cost.artifact_bytes:
        return []
    per_model, artifact = cost.per_model_bytes, cost.artifact_bytes
    growth = cost.memory_after.rss_bytes - cost.memory_before.rss_bytes
    return [
        "",
        "## Cost of a further cached model",
        "",
        f"A fresh server with room for every version (`MODEL_CACHE_MAX_MODELS="
        f"{cost.models + 1}`; the versions were registered through another server): "
        f"RSS went from {cost.memory_before.rss_mib:,.1f} MiB (version 1 loaded by every "
        f"worker) to {cost.memory_after.rss_mib:,.1f} MiB after {cost.models} further "
        f"LogisticRegression versions (20 features) were predicted once each, so loaded once, "
        f"by one worker ({cost.cached} models cached over the workers at the end, "
        f"{cost.failed_predicts} failed predicts): {growth / 2**20:,.2f} MiB / {cost.models} = "
        f"**{per_model / 1024:,.1f} KiB per model**, against a mean artifact (skops file) of "
        f"**{artifact / 1024:,.1f} KiB**: {per_model / artifact:.2f}x "
        f"(target ≤ {CACHE_X_ARTIFACT:g}x). Beyond a model's arrays, that is the Python "
        "objects around it and allocator overhead (docs/performance.md, Memory).",
    ]


def render_peers(
    ctx: Context,
    run: TargetRun,
    peers: Sequence[PeerOutcome],
    fresh: FreshMemory | None,
    cache: CacheCheck | None,
    model_cost: ModelCost | None,
    cold: dict[str, dict],
    total_s: float,
) -> str:
    cost = cache_cost(model_cost)
    s = ctx.settings
    lines = [
        "# modelreg vs MLServer and MLflow, measured in the same run",
        "",
        f"Command: `{ctx.command}` — total run time {total_s / 60:.1f} min.",
        "",
        "## Setup",
        "",
        f"- modelreg: `{run.command}`.",
    ]
    for o in peers:
        if o.error and o.run is None:
            lines.append(f"- {_label(o)}: **not measured**: `{o.error}`")
        else:
            versions = ", ".join(f"{k} {v}" for k, v in o.versions.items())
            lines.append(f"- {o.describe} ({versions}).")
    lines += [
        f"- Peers installed in throwaway venvs under `{PEERS_DIR.name}/` in the system temp "
        "folder (reused between runs), with the bench's scikit-learn; the same joblib models "
        "re-saved in each venv (MLflow: `mlflow.sklearn.save_model`; MLServer: `joblib.dump`).",
        '- Bodies: modelreg and MLflow `{"instances": [[...]]}`; MLServer V2 `{"inputs": '
        '[{"name": "input-0", "shape": [N, F], "datatype": "FP64", "data": [...]}]}`. The same '
        "rows for every target; each target's predictions for 100 rows were checked against "
        "the estimator's before measuring (see the prediction checks below).",
        f"- Same wrk runner for every target: {s.warmup_s:g} s warm-up, {s.duration_s:g} s "
        "measured per point, threads = min(conc, 2), connections = conc, keep-alive; wrk "
        "shares the 2 cores with the server. Targets run one after another, never at once.",
        "",
        "## Targets against the peers",
        "",
    ]
    rows = [[v.name, v.measured, _verdict(v.passed)] for v in verdicts(run, peers, fresh, cost)]
    lines += _table(("target", "measured", "verdict"), rows)
    lines += ratio_summary(run, peers)
    lines += ["", "## Side by side"]
    lines += side_by_side(run, peers)
    lines += memory_section(run, peers, fresh)
    lines += cold_section(run, peers, cold)
    lines += cache_cost_section(model_cost)
    checks = []
    for o in peers:
        if o.run is not None:
            for m in o.run.models:
                if m.check is not None:
                    checks.append(
                        f"- {_label(o)} `{m.spec.name}`: max |diff| {m.check.max_abs_diff:.2g}, "
                        f"{m.check.mismatches} mismatches (100 rows)."
                    )
            failed = o.run.failed_points()
            if failed:
                checks.append(f"- {_label(o)}: {len(failed)} points with errors.")
        if o.error:
            checks.append(f"- {_label(o)} error: `{o.error}`")
    lines += ["", "## Peers: prediction checks and errors", "", *checks]
    body = render(ctx, run, cache).split("\n", 1)[1]
    lines += ["", "---", "", "# modelreg alone: the detailed report", body]
    return "\n".join(lines)


# ---- the command -------------------------------------------------------------------------------


def _run_peer(
    outcome: PeerOutcome,
    target: MlflowTarget | MlserverTarget | None,
    models: Sequence[TrainedModel],
    points: Sequence[Point],
    settings: Settings,
) -> None:
    if target is None:
        return
    try:
        outcome.run = run_target(target, models, points, settings, {})
    except Exception as error:
        outcome.error = _error_text(error)[:2_000]
        print(f"!!! {outcome.name} failed: {outcome.error}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    stop_on_sigterm()
    started = time.monotonic()
    args = parse_args(argv)
    try:
        require_wrk()
    except WrkMissing as error:
        print(f"{error}\n\n    {INSTALL_HINT}\n", file=sys.stderr)
        return 2
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 15.0)
    warmup = 1.0 if args.quick else 2.0
    versions = args.cache_versions or (60 if args.quick else 200)
    points = QUICK_POINTS if args.quick else FULL_POINTS
    log_dir = BENCH_DIR / "out" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")  # gitignored
    with tempfile.TemporaryDirectory(prefix="modelreg-bench-") as tmp:
        settings = Settings(duration_s=duration, warmup_s=warmup, workdir=Path(tmp))
        if args.max_wait is not None:
            settings = dataclasses.replace(settings, max_wait_s=args.max_wait)
        if args.retries is not None:
            settings = dataclasses.replace(settings, retries=args.retries)
        print("== training the reference models", flush=True)
        models = train_all(settings.workdir / "models")

        print("== peers: install (if needed) and save the models", flush=True)
        peers: list[PeerOutcome] = []
        peer_targets: dict[str, MlflowTarget | MlserverTarget | None] = {}
        for cls, skip in ((MlserverTarget, args.skip_mlserver), (MlflowTarget, args.skip_mlflow)):
            if skip:
                continue
            target = cls(models, settings.workdir, log_dir)
            outcome = PeerOutcome(target.name)
            try:
                target.prepare(models)
                outcome.versions = target.versions
                outcome.describe = target.describe()
                peer_targets[target.name] = target
            except Exception as error:
                outcome.error = _error_text(error)[:2_000]
                peer_targets[target.name] = None
                print(f"!!! {target.name} could not be set up: {outcome.error}", flush=True)
            peers.append(outcome)

        modelreg = ModelregTarget(
            settings.workdir / "home", log_dir, workers=args.workers, threads=args.threads
        )
        run = run_target(
            modelreg, models, points, settings, inprocess_probe(models, points, settings)
        )
        print("== modelreg: memory on a fresh server", flush=True)
        fresh: FreshMemory | None = None
        try:
            fresh = fresh_memory(modelreg.home, log_dir, args.workers, args.threads, models)
        except Exception as error:
            print(f"!!! fresh-server memory failed: {_error_text(error)}", flush=True)

        for outcome in peers:
            _run_peer(outcome, peer_targets[outcome.name], models, points, settings)

        facts = machine_facts()
        for outcome in peers:
            for package, version in outcome.versions.items():
                facts[f"{outcome.name} venv: {package}"] = version
        note = (
            "Threads per worker: default of `bench/run.py` (see `TUNING.md`)."
            if args.threads == DEFAULT_THREADS
            else "Threads per worker set with `--threads`."
        )
        ctx = Context(command_line(None), facts, settings, note)
        cold: dict[str, dict] = {}
        cache = None
        model_cost: ModelCost | None = None

        def write() -> float:
            total = time.monotonic() - started
            args.out.write_text(
                render_peers(ctx, run, peers, fresh, cache, model_cost, cold, total)
            )
            return total

        write()  # the matrices are safe on disk before the cold starts and the cache check
        if not args.skip_cold_start:
            print("== cold start", flush=True)
            try:
                run.cold_start_s = cold_start(modelreg, models, settings)
                cold["modelreg"] = run.cold_start_s
            except Exception as error:
                print(f"!!! modelreg cold start: {_error_text(error)}", flush=True)
            for outcome in peers:
                target = peer_targets[outcome.name]
                if target is None or outcome.run is None:
                    continue
                try:
                    if isinstance(target, MlflowTarget):
                        cold[outcome.name] = mlflow_cold_start(target)
                    else:
                        cold[outcome.name] = mlserver_cold_start(target)
                except Exception as error:
                    outcome.cold_start_error = _error_text(error)[:500]
                    print(f"!!! {outcome.name} cold start: {outcome.cold_start_error}", flush=True)
            write()

        if not args.skip_cache_check:
            print("== cache bound", flush=True)
            try:
                cache = run_cache_check(
                    settings.workdir,
                    log_dir,
                    threads=args.threads,
                    workers=args.workers,
                    versions=versions,
                )
            except Exception as error:
                print(f"!!! cache check: {_error_text(error)}", flush=True)
            print("== cost of a further cached model", flush=True)
            try:
                model_cost = measure_model_cost(
                    settings.workdir, log_dir, threads=args.threads, workers=args.workers
                )
                print(
                    f"  [cost] {model_cost.per_model_bytes / 1024:,.1f} KiB per model, "
                    f"artifact {model_cost.artifact_bytes / 1024:,.1f} KiB",
                    flush=True,
                )
            except Exception as error:
                print(f"!!! model cost: {_error_text(error)}", flush=True)
        total = write()
    print("\n" + stdout_table(run))
    for line in ratio_summary(run, peers):
        print(line)
    print(f"\nresults written to {relative(args.out)}; logs in {relative(log_dir)}")
    print(f"total run time {total / 60:.1f} min")
    failed = run.failed_points() or [p for o in peers if o.run for p in o.run.failed_points()]
    if failed:
        print("!!! WARNING: some points had non-2xx answers or socket errors (see above)")
        return 3
    return 0
