"""Before/after: the serving matrix on two commits, measured alternately in one run.

`.venv/bin/python bench/compare.py --before REF --after REF [--duration S] [--rounds N]
[--quick] [--out bench/COMPARE.md]` checks each ref out into a temporary git worktree, starts
`modelreg serve --workers 2` from each tree (this venv's python, that tree's code first on the
path), registers the reference models on each, then measures every point before, after,
before, after... for N rounds while both servers stay up (only one is loaded at a time). The
report has the median req/s of each side and after/before per point; a point below 0.95 is
flagged and measured again with more rounds (`--recheck-rounds`). See bench/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path, like run.py

import argparse
import contextlib
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from bench.loadgen import INSTALL_HINT, WrkMissing, require_wrk
from bench.main import DEFAULT_THREADS, machine_facts
from bench.matrix import (
    FULL_POINTS,
    QUICK_POINTS,
    Measured,
    Point,
    Settings,
    check_served,
    run_point,
)
from bench.models import ModelSpec, TrainedModel, train_all
from bench.peers import v2_body
from bench.procs import REPO_ROOT, Memory, Process, free_port, relative, stop_on_sigterm
from bench.report import _n, _table
from bench.targets import ModelregTarget, Target

BENCH_DIR = Path(__file__).resolve().parent
FLAG_BELOW = 0.95  # after/before req/s under this is a drop worth a second look

# The standard matrix, plus 1,000-row requests (between 100 and 10,000) and the V2 protocol.
EXTRA_POINTS: tuple[Point, ...] = (Point(1_000, 8),)
V2_POINTS: tuple[tuple[str, Point], ...] = (
    ("bench-linear", Point(1, 8)),
    ("bench-linear", Point(100, 8)),
    ("bench-forest", Point(1, 8)),
)
QUICK_V2_POINTS: tuple[tuple[str, Point], ...] = (("bench-linear", Point(1, 8)),)

# Started as `python -c LAUNCHER serve ...` in the tree: this venv's packages, but the tree's
# code only. The editable install of the bench's own checkout is taken off the import system
# first, so that no module (nor a portion of the `registry` namespace package) comes from it.
LAUNCHER = """
import sys
sys.path[:] = [p for p in sys.path if '__editable__' not in p]
sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith('__editable__')]
sys.path_importer_cache.clear()
import manage, registry, serving
print('BENCH_CODE', manage.__file__, list(registry.__path__)[0], serving.__file__, flush=True)
sys.argv[0] = 'modelreg'
manage.cli()
"""


def _env_item(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
    return key, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/compare.py",
        description="Serving speed of two commits, measured alternately in one run.",
    )
    parser.add_argument("--before", required=True, help="git ref of the code before the change")
    parser.add_argument("--after", required=True, help="git ref of the code after the change")
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per measurement (10; 3 quick)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="before/after pairs per point")
    parser.add_argument(
        "--recheck-rounds",
        type=int,
        default=None,
        help="rounds for a point flagged below 0.95, measured again at the end "
        "(default 2 x --rounds; 0: no recheck)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer points, 3 s each")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="[v2:]MODEL:ROWS:CONC",
        help="measure only these points (repeatable), e.g. bench-linear:1:8 or v2:bench-linear:1:8",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "COMPARE.md")
    parser.add_argument(
        "--after-accelerate",
        choices=["float32"],
        default=None,
        help="register the after side's models with this `accelerate` metadata (float32: the "
        "served form of trees an older commit used, to compare the rest like with like)",
    )
    parser.add_argument(
        "--after-env",
        action="append",
        default=[],
        type=_env_item,
        metavar="KEY=VALUE",
        help="environment of the after side's server (repeatable), e.g. MONITORING=false to "
        "leave out a feature the before side does not have",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    parser.add_argument(
        "--max-wait",
        type=float,
        default=60,
        help="seconds to wait for a quiet machine before each measurement (default 60)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        help="re-measure a measurement disturbed by other load (default 0: alternation and "
        "medians absorb it, and the load is reported)",
    )
    return parser.parse_args(argv)


# ---- the two trees ---------------------------------------------------------------------------


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


@dataclass(frozen=True)
class Tree:
    label: str  # "before" | "after"
    ref: str
    commit: str
    subject: str
    path: Path


@contextlib.contextmanager
def worktree(label: str, ref: str, parent: Path):
    """A detached worktree of `ref` under `parent`, removed (with its admin entry) at the end."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = parent / f"tree-{label}"
    _git("worktree", "add", "--detach", str(path), commit)
    try:
        yield Tree(label, ref, commit, _git("log", "-1", "--format=%s", commit), path)
    finally:
        with contextlib.suppress(RuntimeError):
            _git("worktree", "remove", "--force", str(path))
        with contextlib.suppress(RuntimeError):
            _git("worktree", "prune")


class TreeTarget(ModelregTarget):
    """`modelreg serve` of one tree: cwd and PYTHONPATH are the tree, the venv is the bench's."""

    def __init__(
        self,
        tree: Tree,
        home: Path,
        log_dir: Path,
        *,
        workers: int,
        threads: int,
        accelerate: str | None = None,
        env: dict[str, str] | None = None,
    ):
        super().__init__(
            home,
            log_dir,
            workers=workers,
            threads=threads,
            env={**(env or {}), "PYTHONPATH": str(tree.path)},
            name=tree.label,
            accelerate=accelerate,
        )
        self.tree = tree
        self.code: list[str] = []  # manage.py, registry/, serving/__init__.py as loaded

    def launch(self) -> None:
        self.port = free_port()
        log_path = self.log_dir / f"{self.name}-{self.port}.log"
        command = [sys.executable, "-c", LAUNCHER, *self._args()]
        self.process = Process(command, self._env(), log_path, cwd=self.tree.path)

    def wait_ready(self, timeout: float = 120) -> None:
        super().wait_ready(timeout)
        self.code = self._loaded_code()
        outside = [p for p in self.code if not Path(p).resolve().is_relative_to(self.tree.path)]
        if not self.code or outside:
            raise RuntimeError(f"{self.name}: code loaded from outside {self.tree.path}: {outside}")
        print(f"  [{self.name}] code loaded from {self.code[0]}", flush=True)

    def _loaded_code(self) -> list[str]:
        assert self.process is not None
        for line in self.process.log_path.read_text(errors="replace").splitlines():
            if line.startswith("BENCH_CODE "):
                return line.split()[1:]
        return []

    def describe(self) -> str:
        # The tree's temporary path says nothing to a reader: named, not shown.
        shown = f"PYTHONPATH={self.extra_env.get('PYTHONPATH')} "
        described = super().describe().replace(shown, "")
        return f"PYTHONPATH=<{self.name} tree> " + described


class V2View(Target):
    """The same server through the Open Inference Protocol (V2) `infer` route."""

    protocol = staticmethod(v2_body)

    def __init__(self, target: TreeTarget) -> None:
        self.target = target
        self.name = f"{target.name}-v2"

    def predict_url(self, spec: ModelSpec) -> str:
        return f"{self.target.url}/v2/models/{spec.name}/versions/production/infer"

    def parse_predictions(self, response: requests.Response) -> Any:
        return response.json()["outputs"][0]["data"]

    def launch(self) -> None:
        raise NotImplementedError("a view of a running target")

    def wait_ready(self, timeout: float = 120) -> None:
        self.target.wait_ready(timeout)

    def deploy(self, models: Sequence[TrainedModel]) -> None:
        raise NotImplementedError("a view of a running target")

    def stop(self) -> None:
        pass  # the target owns the process

    def memory(self) -> Memory:
        return self.target.memory()

    def cpu_by_process(self) -> dict[int, float]:
        return self.target.cpu_by_process()

    def worker_cpu(self) -> dict[int, float]:
        return self.target.worker_cpu()

    def log_tail(self, chars: int = 4_000) -> str:
        return self.target.log_tail(chars)

    def describe(self) -> str:
        return self.target.describe() + " (V2 infer)"


# ---- points and measurements -----------------------------------------------------------------


@dataclass(frozen=True)
class ComparePoint:
    protocol: str  # "native" | "v2"
    model: str
    point: Point

    @property
    def key(self) -> str:
        prefix = "v2:" if self.protocol == "v2" else ""
        return f"{prefix}{self.model}:{self.point.rows}:{self.point.concurrency}"

    @property
    def label(self) -> str:
        short = self.model.removeprefix("bench-")
        prefix = "V2 " if self.protocol == "v2" else ""
        rows = "1 row" if self.point.rows == 1 else f"{self.point.rows:,} rows"
        return f"{prefix}{short}, {rows}, c{self.point.concurrency}"


def compare_points(models: Sequence[TrainedModel], quick: bool) -> list[ComparePoint]:
    native = QUICK_POINTS if quick else FULL_POINTS
    extra = EXTRA_POINTS
    v2 = QUICK_V2_POINTS if quick else V2_POINTS
    points = [
        ComparePoint("native", m.spec.name, p)
        for m in models
        for p in sorted({*native, *extra}, key=lambda p: (p.rows, p.concurrency))
    ]
    points += [ComparePoint("v2", name, p) for name, p in v2]
    return points


def select(points: list[ComparePoint], only: Sequence[str]) -> list[ComparePoint]:
    if not only:
        return points
    chosen = [p for p in points if p.key in set(only)]
    unknown = set(only) - {p.key for p in chosen}
    if unknown:
        keys = ", ".join(p.key for p in points)
        raise SystemExit(f"unknown point(s) {sorted(unknown)}; the points are: {keys}")
    return chosen


@dataclass
class PointComparison:
    point: ComparePoint
    runs: dict[str, list[Measured]] = field(default_factory=lambda: {"before": [], "after": []})

    def median(self, side: str) -> float:
        return statistics.median(m.load.req_per_s for m in self.runs[side])

    def p50(self, side: str) -> float:
        return statistics.median(m.load.p50_ms for m in self.runs[side])

    @property
    def ratio(self) -> float:
        before = self.median("before")
        return self.median("after") / before if before else float("nan")

    @property
    def flagged(self) -> bool:
        return self.ratio < FLAG_BELOW

    def other_cores(self) -> list[float]:
        return [m.other_cores for side in self.runs.values() for m in side]

    def failures(self) -> int:
        return sum(
            m.load.non_2xx + m.load.socket_errors for side in self.runs.values() for m in side
        )


def measure(
    views: dict[str, dict[str, Target]],
    specs: dict[str, ModelSpec],
    cp: ComparePoint,
    rounds: int,
    settings: Settings,
) -> PointComparison:
    """before, after, before, after... `rounds` times; each measurement waits for a quiet
    machine first (run_point's settle)."""
    result = PointComparison(cp)
    for round_ in range(1, rounds + 1):
        for side in ("before", "after"):
            m = run_point(views[side][cp.protocol], specs[cp.model], cp.point, settings)
            result.runs[side].append(m)
            load = m.load
            print(
                f"  {cp.label:<28} round {round_} {side:<6} {load.req_per_s:9.1f} req/s  "
                f"p50 {load.p50_ms:8.2f} ms  errors {load.non_2xx + load.socket_errors}  "
                f"other {m.other_cores:.2f}",
                flush=True,
            )
    print(
        f"  => {cp.label}: before {result.median('before'):,.1f}  after "
        f"{result.median('after'):,.1f}  after/before {result.ratio:.3f}"
        + ("  !!! below 0.95" if result.flagged else ""),
        flush=True,
    )
    return result


# ---- the report ------------------------------------------------------------------------------


def _ratio_cell(c: PointComparison) -> str:
    text = f"{c.ratio:.3f}"
    return f"**{text} ⚠**" if c.flagged else text


def _load_cell(c: PointComparison) -> str:
    cores = c.other_cores()
    return f"{statistics.mean(cores):.2f} / {max(cores):.2f}"


def _spread(c: PointComparison, side: str) -> str:
    values = [m.load.req_per_s for m in c.runs[side]]
    return f"{min(values):,.0f}-{max(values):,.0f}"


def comparison_table(results: Sequence[PointComparison]) -> list[str]:
    rows = [
        [
            c.point.label,
            _n(c.median("before"), 1),
            _n(c.median("after"), 1),
            _ratio_cell(c),
            f"{_spread(c, 'before')} / {_spread(c, 'after')}",
            f"{c.p50('before'):.2f} / {c.p50('after'):.2f}",
            _load_cell(c),
            str(c.failures()),
        ]
        for c in results
    ]
    header = (
        "point",
        "before req/s",
        "after req/s",
        "after/before",
        "range before / after",
        "p50 ms before / after",
        "other load, cores (mean / max)",
        "errors",
    )
    return _table(header, rows)


def rounds_table(results: Sequence[PointComparison]) -> list[str]:
    rows = []
    for c in results:
        pairs = zip(c.runs["before"], c.runs["after"], strict=True)
        cells = [
            f"{b.load.req_per_s:,.0f} → {a.load.req_per_s:,.0f} "
            f"({b.other_cores:.2f}/{a.other_cores:.2f})"
            for b, a in pairs
        ]
        rows.append([c.point.label, "; ".join(cells)])
    return _table(("point", "req/s before → after per round (other load, cores)"), rows)


def render(
    command: str,
    trees: Sequence[TreeTarget],
    settings: Settings,
    rounds: int,
    results: Sequence[PointComparison],
    rechecks: Sequence[PointComparison],
    loadavg: tuple[tuple[float, ...], tuple[float, ...]],
    minutes: float,
) -> str:
    lines = [
        "# modelreg serving: before / after",
        "",
        f"Command: `{command}`",
        "",
        "## Code measured",
        "",
        *_table(
            ("side", "ref", "commit", "subject", "loaded from"),
            [
                [t.name, f"`{t.tree.ref}`", f"`{t.tree.commit}`", t.tree.subject, t.code[0]]
                for t in trees
            ],
        ),
        "",
        "Each side runs from a temporary `git worktree` of its commit (`PYTHONPATH` and cwd = "
        "the tree, the bench venv's packages, the bench checkout's editable install taken off "
        "the import path); `loaded from` is `manage.__file__` as printed by the server.",
        "",
        "## Machine",
        "",
        *_table(("", ""), [[_fact_name(k), v] for k, v in machine_facts().items()]),
        "",
        "## Settings",
        "",
        f"- Server: `modelreg serve --workers {trees[0].workers} --threads {trees[0].threads}`, "
        "one per side, each on its own instance folder (SQLite + local artifacts) with the "
        "three reference models registered and promoted to `production`, warmed on every "
        "worker; both servers stay up for the whole run, only one is loaded at a time.",
        f"- Each point: {rounds} rounds of before then after (alternating), each measurement a "
        f"{settings.warmup_s:g} s wrk warm-up and {settings.duration_s:g} s measured, after "
        f"waiting up to {settings.max_wait_s:g} s for other load below "
        f"{settings.quiet_cores} cores; {settings.retries} re-measurements of a disturbed "
        f"measurement. wrk: `connections = concurrency`, `threads = min(concurrency, 2)`.",
        "- Native points: `POST /models/<name>/production/predict` with "
        '`{"instances": [[...]]}`; V2 points: `POST /v2/models/<name>/versions/production/'
        'infer` with one FP64 tensor `{"inputs": [{"name", "shape", "datatype", "data"}]}`.',
        f"- Median req/s of the rounds per side; after/before below {FLAG_BELOW} is flagged "
        "(⚠). *range*: lowest-highest round. *other load*: cores used by processes other than "
        "the servers, wrk and the bench during the measurements (see bench/cpu.py).",
        f"- Load average (1, 5, 15 min) at the start {loadavg[0]}, at the end {loadavg[1]}; "
        f"the run took {minutes:.1f} min.",
        "",
        "## Results",
        "",
        *comparison_table(results),
        "",
    ]
    if rechecks:
        lines += [
            "## Flagged points measured again",
            "",
            f"Each point below {FLAG_BELOW} above, measured again at the end of the run with "
            f"{len(rechecks[0].runs['before'])} rounds:",
            "",
            *comparison_table(rechecks),
            "",
        ]
    verdict = _verdict(results, rechecks)
    lines += ["## Reading", "", verdict, "", "## Every round", "", *rounds_table(results)]
    if rechecks:
        lines += ["", "Measured again:", "", *rounds_table(rechecks)]
    return "\n".join(lines) + "\n"


def _fact_name(key: str) -> str:
    return "bench code (this script)" if key == "code" else key


def _verdict(results: Sequence[PointComparison], rechecks: Sequence[PointComparison]) -> str:
    flagged = [c for c in results if c.flagged]
    if not flagged:
        worst = min(results, key=lambda c: c.ratio)
        return (
            f"No point below {FLAG_BELOW}: the lowest after/before is {worst.ratio:.3f} "
            f"({worst.point.label})."
        )
    again = {c.point.key: c for c in rechecks}
    parts = []
    for c in flagged:
        second = again.get(c.point.key)
        if second is None:
            parts.append(f"{c.point.label}: {c.ratio:.3f}, not measured again.")
        elif second.flagged:
            parts.append(
                f"{c.point.label}: {c.ratio:.3f}, and {second.ratio:.3f} when measured again: "
                "still below; a drop unless the rounds' spread says noise."
            )
        else:
            parts.append(
                f"{c.point.label}: {c.ratio:.3f} in the first pass, {second.ratio:.3f} when "
                "measured again: noise."
            )
    return f"Points flagged below {FLAG_BELOW}: " + " ".join(parts)


# ---- the run ---------------------------------------------------------------------------------


def start_tree(target: TreeTarget, models: Sequence[TrainedModel]) -> None:
    print(f"== {target.name}: {target.tree.commit[:10]} {target.tree.subject}", flush=True)
    target.start()
    target.deploy(models)
    v2 = V2View(target)
    target.warm(models)
    v2.warm(models)
    for model in models:
        check = check_served(target, model)
        v2_check = check_served(v2, model)
        if check.mismatches or v2_check.mismatches:
            raise RuntimeError(f"{target.name}: wrong predictions for {model.spec.name}")


def main(argv: Sequence[str] | None = None) -> int:
    stop_on_sigterm()
    args = parse_args(argv)
    try:
        require_wrk()
    except WrkMissing as error:
        print(f"{error}\n\n    {INSTALL_HINT}\n", file=sys.stderr)
        return 2
    started = time.monotonic()
    load_start = tuple(round(x, 2) for x in os.getloadavg())
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 10.0)
    recheck_rounds = args.rounds * 2 if args.recheck_rounds is None else args.recheck_rounds
    log_dir = BENCH_DIR / "out" / datetime.now(UTC).strftime("compare-%Y%m%dT%H%M%SZ")
    command = "python bench/compare.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    with (
        tempfile.TemporaryDirectory(prefix="modelreg-compare-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        settings = Settings(
            duration_s=duration,
            warmup_s=1.0 if args.quick else 2.0,
            workdir=workdir,
            max_wait_s=args.max_wait,
            retries=args.retries,
        )
        trees = [
            stack.enter_context(worktree(label, ref, workdir))
            for label, ref in (("before", args.before), ("after", args.after))
        ]
        print("== training the reference models", flush=True)
        models = train_all(workdir / "models")
        specs = {m.spec.name: m.spec for m in models}
        points = select(compare_points(models, args.quick), args.only)
        targets = []
        for tree in trees:
            target = TreeTarget(
                tree,
                workdir / f"home-{tree.label}",
                log_dir,
                workers=args.workers,
                threads=args.threads,
                accelerate=args.after_accelerate if tree.label == "after" else None,
                env=dict(args.after_env) if tree.label == "after" else None,
            )
            stack.callback(target.stop)
            start_tree(target, models)
            targets.append(target)
        views: dict[str, dict[str, Target]] = {
            t.name: {"native": t, "v2": V2View(t)} for t in targets
        }
        print(f"== {len(points)} points x {args.rounds} rounds x 2 sides", flush=True)
        results = [measure(views, specs, cp, args.rounds, settings) for cp in points]
        rechecks = []
        if recheck_rounds > 0:
            for c in [c for c in results if c.flagged]:
                print(f"== measuring {c.point.label} again ({recheck_rounds} rounds)", flush=True)
                rechecks.append(measure(views, specs, c.point, recheck_rounds, settings))
        for target in targets:
            for line in target.server_errors()[:20]:
                print(f"  [{target.name} log] {line}")
        load_end = tuple(round(x, 2) for x in os.getloadavg())
        minutes = (time.monotonic() - started) / 60
        text = render(
            command,
            targets,
            settings,
            args.rounds,
            results,
            rechecks,
            (load_start, load_end),
            minutes,
        )
        args.out.write_text(text)
    print("\n" + "\n".join(comparison_table(results)))
    if rechecks:
        print("\nmeasured again:\n" + "\n".join(comparison_table(rechecks)))
    print(f"\nwritten to {relative(args.out)}; server logs in {relative(log_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
