"""RESULTS.md: machine facts, the matrix per model, memory, cold start, cache bound, targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.cachecheck import SLACK_PER_WORKER, CacheCheck
from bench.matrix import Point, PointResult, Settings, TargetRun
from bench.models import ModelSpec

LINEAR, FOREST, LOGISTIC = "bench-linear", "bench-forest", "bench-logistic"

# Targets from the brief.
SMALL_REQ_PER_S = 2_500  # 1-row LinearRegression at concurrency 8
SMALL_P99_MS = 10.0
OVERHEAD_P50_MS = 0.5  # served p50 minus in-process, 1 row, concurrency 1
LARGE_FRACTION = 0.60  # 10,000-row requests: served rows/s / in-process rows/s

# The best figure of each peer's range in the shared PERFORMANCE.md (not re-measured here).
PEERS: tuple[tuple[str, str, Point | None, str, float, float, bool], ...] = (
    # (label, model, point, metric, MLflow, MLServer, higher is better)
    ("linear, 1 row, conc 1", LINEAR, Point(1, 1), "req/s", 880, 600, True),
    ("linear, 1 row, conc 8", LINEAR, Point(1, 8), "req/s", 1_030, 985, True),
    ("linear, 1 row, conc 8", LINEAR, Point(1, 8), "p99 ms", 100, 13, False),
    ("random forest, 1 row, conc 8", FOREST, Point(1, 8), "req/s", 94, 129, True),
    ("logistic, 1 row, conc 8", LOGISTIC, Point(1, 8), "req/s", 861, 932, True),
    ("linear, 10,000 rows, conc 4", LINEAR, Point(10_000, 4), "rows/s", 73_000, 1_000_000, True),
    (
        "random forest, 10,000 rows, conc 4",
        FOREST,
        Point(10_000, 4),
        "rows/s",
        56_000,
        116_000,
        True,
    ),
    ("memory, three models served", "", None, "MiB", 1_500, 448, False),
    ("cold start to first answer", "", None, "s", 4.8, 2.7, False),
)


@dataclass(frozen=True)
class Verdict:
    name: str
    measured: str
    passed: bool | None  # None: not measured in this run


@dataclass(frozen=True)
class Context:
    command: str
    machine: dict[str, str]
    settings: Settings
    threads_note: str


# ---- formatting ----------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    digits = 3 if abs(value) < 1 else 2 if abs(value) < 100 else 0
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _find(run: TargetRun, model: str, point: Point) -> PointResult | None:
    for m in run.models:
        if m.spec.name == model:
            for p in m.points:
                if p.point == point:
                    return p
    return None


def _spec(run: TargetRun, model: str) -> ModelSpec | None:
    return next((m.spec for m in run.models if m.spec.name == model), None)


# ---- the matrix ----------------------------------------------------------------------------

POINT_HEADER = (
    "rows",
    "conc",
    "req/s",
    "rows/s",
    "p50 ms",
    "p99 ms",
    "non-2xx",
    "in-process µs/call, as served",
    "in-process µs/call, sklearn",
    "overhead ms (p50 - in-process)",
    "served / in-process rows/s",
    "worker cores",
    "other load (cores)",
)


def point_row(p: PointResult) -> list[str]:
    load = p.load
    errors = str(load.non_2xx) + (f" (+{load.socket_errors} socket)" if load.socket_errors else "")
    return [
        f"{p.point.rows:,}",
        str(p.point.concurrency),
        _n(load.req_per_s, 1 if load.req_per_s < 100 else 0),
        _n(p.rows_per_s),
        _ms(load.p50_ms),
        _ms(load.p99_ms),
        errors if not load.failed else f"**{errors}**",
        _n(p.inprocess_s * 1e6 if p.inprocess_s else None, 1),
        _n(p.inprocess.sklearn_s * 1e6 if p.inprocess else None, 1),
        _ms(p.overhead_ms),
        f"{p.fraction:.2f}" if p.fraction is not None else "n/a",
        " + ".join(f"{c:.2f}" for c in p.worker_cores) or "n/a",
        f"{p.other_cores:.2f}" + (f" (attempt {p.attempts})" if p.attempts > 1 else ""),
    ]


def matrix_section(run: TargetRun) -> list[str]:
    lines: list[str] = []
    for model in run.models:
        lines += [
            "",
            f"### {model.spec.label} ({model.spec.n_features} features) — `{model.spec.name}`",
            "",
        ]
        if model.check is not None:
            c = model.check
            lines += [
                f"Served by **{c.runtime}**; its predictions for {c.rows} rows against the "
                f"registered scikit-learn estimator's: max |diff| {c.max_abs_diff:.2g}, "
                f"{c.mismatches} mismatches.",
                "",
            ]
        lines += _table(POINT_HEADER, [point_row(p) for p in model.points])
        if model.memory is not None:
            lines += [
                "",
                f"Server memory after this model's points: RSS "
                f"{model.memory.rss_mib:,.0f} MiB summed over {model.memory.processes}"
                f" processes ({model.memory.breakdown()} MiB: the gunicorn master, then the "
                f"workers; PSS {model.memory.pss_mib:,.0f} MiB).",
            ]
    return lines


def cold_start_section(run: TargetRun) -> list[str]:
    if not run.cold_start_s:
        return []
    rows = [[f"`{name}`", f"{s:.2f}"] for name, s in run.cold_start_s.items()]
    return [
        "",
        "## Cold start",
        "",
        "From launching `modelreg serve --workers 2` (fresh processes, empty cache, models "
        "already registered) to the first successful `production` predict of one model; "
        "one fresh server per model.",
        "",
        *_table(("model", "seconds"), rows),
    ]


def cache_section(check: CacheCheck | None) -> list[str]:
    if check is None:
        return []
    mib = 2**20
    lines = [
        "",
        "## Cache bound",
        "",
        f"`MODEL_CACHE_MAX_MODELS={check.max_models}`, {check.workers} workers: "
        f"{check.versions} versions of `many` (LogisticRegression, 20 features, one seed "
        f"each) registered in {check.register_s:.1f} s, then each predicted once, pinned "
        f"(`/models/many/<v>/predict`, fresh connections, {check.failed_predicts} "
        "failures).",
        "",
    ]
    memory = [
        ("server idle", check.memory_idle),
        (f"{check.versions} versions registered", check.memory_registered),
        ("version 1 predicted on every worker (base)", check.memory_before),
        (f"after the first {check.max_models} versions", check.memory_filled),
        (f"after all {check.versions} versions", check.memory_after),
    ]
    lines += _table(
        ("moment", "RSS MiB (sum)", "per process MiB", "PSS MiB"),
        [[m, f"{x.rss_mib:,.1f}", x.breakdown(), f"{x.pss_mib:,.1f}"] for m, x in memory],
    )
    keys = ("hits", "misses", "evictions", "loads", "models", "bytes", "max_models")
    stats_rows = [
        [f"worker {i + 1}", *(_n(s.get(k)) for k in keys)] for i, s in enumerate(check.worker_stats)
    ]
    lines += [
        "",
        "`/serving/cache` stats, sampled on fresh connections (one row per distinct "
        "answer, i.e. per worker):",
        "",
    ]
    lines += _table(("", *keys), stats_rows)
    lines += [
        "",
        f"Bound: {check.workers} workers x ({check.max_models} models x "
        f"{check.entry_bytes:,} bytes per entry + {SLACK_PER_WORKER // mib} MiB allocator slack) = "
        f"{check.bound_bytes / mib:,.1f} MiB; RSS growth base → end "
        f"{check.growth_bytes / mib:,.1f} MiB; each worker holds ≤ "
        f"{check.max_models} models: {'yes' if check.models_bounded else 'NO'}. "
        f"**{'PASS' if check.passed else 'FAIL'}**",
    ]
    return lines


# ---- targets ---------------------------------------------------------------------------------


def verdicts(run: TargetRun) -> list[Verdict]:
    out: list[Verdict] = []
    small = _find(run, LINEAR, Point(1, 8))
    if small is None:
        out.append(
            Verdict(
                "1-row LinearRegression, conc 8: ≥ 2,500 req/s and p99 < 10 ms",
                "not measured",
                None,
            )
        )
    else:
        ok = small.load.req_per_s >= SMALL_REQ_PER_S and small.load.p99_ms < SMALL_P99_MS
        out.append(
            Verdict(
                "1-row LinearRegression, conc 8: ≥ 2,500 req/s and p99 < 10 ms",
                f"{small.load.req_per_s:,.0f} req/s, p99 {small.load.p99_ms:.2f} ms",
                ok and not small.load.failed,
            )
        )
    for model in run.models:
        p = _find(run, model.spec.name, Point(1, 1))
        name = f"{model.spec.label}: overhead per 1-row request at conc 1 < 0.5 ms (p50)"
        if p is None or p.overhead_ms is None:
            out.append(Verdict(name, "not measured", None))
            continue
        out.append(
            Verdict(
                name,
                f"p50 {p.load.p50_ms:.3f} ms - in-process {p.inprocess_s * 1e3:.3f} ms = "
                f"{p.overhead_ms:.3f} ms",
                p.overhead_ms < OVERHEAD_P50_MS and not p.load.failed,
            )
        )
    for model in run.models:
        name = f"{model.spec.label}: 10,000-row request ≥ 60% of in-process rows/s (conc 1)"
        p = _find(run, model.spec.name, Point(10_000, 1))
        if p is None or p.fraction is None:
            out.append(Verdict(name, "not measured", None))
            continue
        wide = _find(run, model.spec.name, Point(10_000, 4))
        extra = f"; at conc 4: {wide.fraction:.0%}" if wide and wide.fraction else ""
        out.append(
            Verdict(
                name,
                f"{p.rows_per_s:,.0f} of {p.point.rows / p.inprocess_s:,.0f} rows/s = "
                f"{p.fraction:.0%}{extra}",
                p.fraction >= LARGE_FRACTION and not p.load.failed,
            )
        )
    return out


def _verdict_text(passed: bool | None) -> str:
    return "n/a" if passed is None else ("**PASS**" if passed else "**FAIL**")


def targets_section(run: TargetRun) -> list[str]:
    rows = [[v.name, v.measured, _verdict_text(v.passed)] for v in verdicts(run)]
    return ["", "## Targets", "", *_table(("target", "measured", "verdict"), rows)]


def _peer_measured(
    run: TargetRun, model: str, point: Point | None, metric: str, memory_mib: float | None
) -> float | None:
    if point is None:
        if metric == "MiB":
            return memory_mib
        return max(run.cold_start_s.values()) if run.cold_start_s else None
    p = _find(run, model, point)
    if p is None:
        return None
    return {"req/s": p.load.req_per_s, "rows/s": p.rows_per_s, "p99 ms": p.load.p99_ms}[metric]


def peers_section(run: TargetRun) -> list[str]:
    memory = run.models[-1].memory if run.models else None
    rows = []
    for label, model, point, metric, mlflow, mlserver, higher in PEERS:
        ours = _peer_measured(run, model, point, metric, memory.rss_mib if memory else None)
        best_peer = max(mlflow, mlserver) if higher else min(mlflow, mlserver)
        ahead = None if ours is None else (ours > best_peer if higher else ours < best_peer)
        digits = 2 if metric in ("s", "p99 ms") else 0
        rows.append(
            [
                label,
                metric,
                _n(ours, digits),
                _n(mlflow, digits),
                _n(mlserver, digits),
                "n/a" if ahead is None else ("yes" if ahead else "**no**"),
            ]
        )
    return [
        "",
        "## Against the peers' reference numbers",
        "",
        "Peers from `PERFORMANCE.md` (best of each range; not re-measured in this run). "
        "Memory: modelreg's RSS sum over master + workers with all three models loaded; "
        "cold start: the slowest of the three models.",
        "",
        *_table(
            ("point", "metric", "modelreg", "MLflow 3.17", "MLServer 1.7.1", "ahead of both"), rows
        ),
    ]


# ---- the whole file --------------------------------------------------------------------------


def _machine_section(ctx: Context) -> list[str]:
    rows = [[k, v] for k, v in ctx.machine.items()]
    return ["## Machine", "", *_table(("", ""), rows)]


def _setup_section(ctx: Context, run: TargetRun) -> list[str]:
    s = ctx.settings
    return [
        "",
        "## Setup",
        "",
        f"- Server: `{run.command}` (gunicorn, modelreg's gthread-based worker; SQLite and a "
        "local artifact folder in a temp dir, `AUTH_DISABLED=true`, `LOG_LEVEL=WARNING`). "
        + ctx.threads_note,
        "- Models registered as skops over HTTP with the Python client, promoted to "
        "`production`, and predicted 16 times each on fresh connections before measuring, "
        "so that both workers hold them. Requests go to `/models/<name>/production/predict`.",
        '- Body: `{"instances": [[...], ...]}` of N(0, 1) float64 rows (orjson).',
        f"- Load: wrk 4 (same machine, competing for the same cores), keep-alive, "
        f"threads = min(conc, 2), connections = conc, {s.warmup_s:g} s warm-up (discarded) "
        f"then {s.duration_s:g} s measured per point. p50/p99 from wrk's latency histogram; "
        "non-2xx = answers with status ≥ 400 (wrk's status errors).",
        "- In-process: the same body through `serving.inputs.decode_predict_body`, a predict "
        "and `orjson.dumps` of the answer, in one loop in the bench process (timeit, best of "
        "7, GC off): the single-core limit without HTTP. *As served*: the predict the server "
        "runs for that version (taken from a modelreg app built in the bench process on the "
        "same instance: the registry's verified ONNX conversion when there is one); "
        "*sklearn*: the registered estimator's own `predict`.",
        "- Overhead = served p50 - in-process (as served) per call, at conc 1. Served / "
        "in-process = served rows/s ÷ in-process (as served) rows/s (one core; > 1 is possible "
        "with 2 workers).",
        "- Other load: the machine is shared. Busy CPU time (/proc/stat) not spent by the server"
        ", wrk or the bench process, in cores, averaged over the point. Each point waits for "
        f"less than {s.quiet_cores:g} cores of other load first (at most {s.max_wait_s:g} s), "
        f"and is measured again (up to {s.retries} times) when other load exceeded "
        f"{s.retry_cores:g} cores; the least disturbed attempt is reported.",
    ]


def _log_section(run: TargetRun) -> list[str]:
    failed = run.failed_points()
    lines = ["", "## Errors", ""]
    if not failed and not run.server_errors:
        return [*lines, "No non-2xx answers, no socket errors, no errors in the server log."]
    for p in failed:
        lines.append(
            f"- **{p.model} rows={p.point.rows} conc={p.point.concurrency}: "
            f"{p.load.non_2xx} non-2xx, {p.load.socket_errors} socket errors**"
        )
    if run.server_errors:
        lines += [
            f"- {len(run.server_errors)} error lines in the server log (`{run.log_file}`), "
            "first ones:",
            "",
            "```",
            *run.server_errors[:20],
            "```",
        ]
    return lines


def render(ctx: Context, run: TargetRun, cache: CacheCheck | None) -> str:
    lines = ["# modelreg serving benchmark", "", f"Command: `{ctx.command}`", ""]
    lines += _machine_section(ctx)
    lines += _setup_section(ctx, run)
    lines += targets_section(run)
    lines += ["", "## Results"]
    lines += matrix_section(run)
    lines += cold_start_section(run)
    lines += cache_section(cache)
    lines += peers_section(run)
    lines += _log_section(run)
    return "\n".join(lines) + "\n"


def _tune_cell(p: PointResult) -> str:
    workers = "+".join(f"{c:.2f}" for c in p.worker_cores)
    return (
        f"{p.load.req_per_s:,.0f} · {_ms(p.load.p50_ms)} · {_ms(p.load.p99_ms)} · {workers}"
        f" · {p.other_cores:.2f}"
    )


def render_tuning(ctx: Context, runs: dict[int, TargetRun], best: int) -> str:
    points = (Point(1, 1), Point(1, 8), Point(1, 32))
    header = [
        "threads",
        "run",
        *(
            f"conc {p.concurrency}: req/s · p50 ms · p99 ms · worker cores · other load"
            for p in points
        ),
    ]
    rows: list[list[str]] = []
    for threads, run in runs.items():
        label = f"**{threads}**" if threads == best else str(threads)
        results = [p for m in run.models for p in m.points if m.spec.name == LINEAR]
        for repeat in sorted({p.repeat for p in results}):
            cells = [label, str(repeat)]
            for point in points:
                found = [p for p in results if p.point == point and p.repeat == repeat]
                cells.append(_tune_cell(found[0]) if found else "n/a")
            rows.append(cells)
    lines = [
        "# modelreg benchmark: threads per worker",
        "",
        f"Command: `{ctx.command}`",
        "",
        *_machine_section(ctx),
        "",
        "## 1-row LinearRegression, `modelreg serve --workers 2 --threads T`",
        "",
        f"wrk, {ctx.settings.duration_s:g} s per point after {ctx.settings.warmup_s:g} s "
        "warm-up, each point measured twice (wrk opens new connections each time); a fresh "
        "server per setting. Worker cores: the average cores each gunicorn worker used during "
        "the point (unequal numbers mean wrk's keep-alive connections landed unevenly on the "
        "workers). Other load: cores used by other processes on the machine (see README).",
        "",
        *_table(header, rows),
        "",
        f"Best: **threads = {best}** (the highest mean req/s at concurrency 8 among the "
        f"settings whose p99 there stayed < {SMALL_P99_MS:g} ms in every run).",
    ]
    return "\n".join(lines) + "\n"


def stdout_table(run: TargetRun) -> str:
    """The matrix as one plain-text table."""
    header = (
        "model",
        "rows",
        "conc",
        "req/s",
        "rows/s",
        "p50 ms",
        "p99 ms",
        "non-2xx",
        "inproc µs",
        "sklearn µs",
        "ovh ms",
        "ratio",
        "workers",
        "other",
    )
    rows: list[list[Any]] = []
    for model in run.models:
        for p in model.points:
            r = point_row(p)
            rows.append([model.spec.name, *r])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    return "\n".join(fmt.format(*(str(x) for x in row)) for row in [header, *rows])
