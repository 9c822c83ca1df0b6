"""modelreg against the HTTP floor and a hand-made FastAPI app, in one run; and the abuse probe.

`.venv/bin/python bench/floor.py [--duration S] [--rounds N] [--before REF] [--out PATH]`

Targets, each with 2 worker processes, measured one after another (never at once):
- `modelreg`: `modelreg serve --workers 2` of this checkout (and `before`, the same of REF in a
  temporary git worktree, with --before);
- `floor`: a no-op raw ASGI app under uvicorn + httptools + uvloop (bench/floor_apps.py);
- `fastapi`: the 25-line FastAPI app calling `model.predict`, under the same uvicorn.
Points: 1-row LinearRegression and LogisticRegression at concurrency 1 and 8 (wrk, keep-alive).
The floor and FastAPI live in a throwaway venv, `<temp>/modelreg-bench-peers/asgi-floor`.

Abuse probe (modelreg, and before): the p99 of 1-row predictions at c=8 alone, then while 20
slowloris connections trickle header lines (one a second, within the 30 s a head may take) and
one 60 MB body is in flight (sent over the whole measurement), and their ratio.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run by path, like run.py

import argparse
import contextlib
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import orjson
import requests

from bench.compare import TreeTarget, worktree
from bench.loadgen import INSTALL_HINT, LoadResult, WrkMissing, require_wrk, run_wrk
from bench.models import REFERENCE_MODELS, TrainedModel, request_rows, train_all
from bench.peers import PeerEnv, _env_vars, ensure_env
from bench.procs import REPO_ROOT, Process, free_port, relative, stop_on_sigterm, wait_until
from bench.targets import ModelregTarget, instances_body

BENCH_DIR = Path(__file__).resolve().parent
FLOOR_ENV = PeerEnv(
    "asgi-floor",
    ("uvicorn", "httptools", "uvloop", "fastapi", "joblib"),
    ("uvicorn", "httptools", "uvloop", "fastapi", "scikit-learn", "numpy"),
)
MODELS = tuple(spec for spec in REFERENCE_MODELS if spec.name in ("bench-linear", "bench-logistic"))
CONCURRENCY = (1, 8)
LORIS_CONNECTIONS = 20
ABUSE_BODY_BYTES = 60 * 1024**2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/floor.py", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per point and target")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="modelreg's threads per worker")
    parser.add_argument("--before", help="also measure this git ref (a worktree alongside)")
    parser.add_argument("--skip-abuse", action="store_true", help="no slowloris/60 MB probe")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "FLOOR.md")
    return parser.parse_args(argv)


class UvicornTarget:
    """A uvicorn server (2 workers, httptools, uvloop) of one app in the peer venv."""

    def __init__(self, name: str, app: str, env: dict[str, str], log_dir: Path, workers: int):
        self.name = name
        self.app = app
        self.extra_env = env
        self.log_dir = log_dir
        self.workers = workers
        self.port = 0
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        command = [
            str(FLOOR_ENV.python), "-m", "uvicorn", self.app,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers),
            "--http", "httptools", "--loop", "uvloop", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        env = {**_env_vars(FLOOR_ENV), "PYTHONPATH": str(REPO_ROOT), **self.extra_env}
        self.process = Process(command, env, self.log_dir / f"{self.name}-{self.port}.log")
        wait_until(self._up, timeout=120, interval=0.2, what=f"{self.name} to start")

    def _up(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(f"{self.name} exited:\n{self.process.log_tail()}")
        try:
            return requests.post(self.predict_url("bench-linear"), data=b'{"instances":[[0]]}',
                                 timeout=1).status_code in (200, 422)  # fmt: skip
        except requests.RequestException:
            return False

    def predict_url(self, model: str) -> str:
        return f"{self.url}/models/{model}/predict"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def describe(self) -> str:
        return f"uvicorn {self.app} --workers {self.workers} --http httptools --loop uvloop"


@dataclass
class Cell:
    runs: list[LoadResult] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(r.req_per_s for r in self.runs)

    @property
    def p50(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def failures(self) -> int:
        return sum(r.non_2xx + r.socket_errors for r in self.runs)


def _modelreg_url(target: ModelregTarget, model: str) -> str:
    return f"{target.url}/models/{model}/1/predict"


def measure(
    urls: dict[str, dict[str, str]], bodies: dict[str, Path], rounds: int, duration: float
) -> dict[tuple[str, str, int], Cell]:
    """Every point, every target, round-robin, so a noisy moment is shared fairly."""
    cells: dict[tuple[str, str, int], Cell] = {}
    for model in bodies:
        for concurrency in CONCURRENCY:
            for round_ in range(rounds):
                for target, by_model in urls.items():
                    url = by_model[model]
                    run_wrk(url, bodies[model], connections=concurrency, duration_s=1)  # warm-up
                    result = run_wrk(url, bodies[model], connections=concurrency,
                                     duration_s=duration)  # fmt: skip
                    cell = cells.setdefault((target, model, concurrency), Cell())
                    cell.runs.append(result)
                    print(f"  {target:>9} {model} c{concurrency} round {round_ + 1}: "
                          f"{result.req_per_s:,.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                          f"p99 {result.p99_ms:.2f} ms", flush=True)  # fmt: skip
    return cells


# ---- abuse probe -----------------------------------------------------------------------------


def _loris(port: int, stop: threading.Event) -> None:
    """Headers trickled one line a second; a new connection when the server drops it."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"POST /models/bench-linear/1/predict HTTP/1.1\r\nHost: b\r\n")
                line = 0
                while not stop.wait(1.0):
                    sock.sendall(b"X-Loris-%d: %s\r\n" % (line, b"x" * 16))
                    line += 1
        except OSError:
            stop.wait(0.2)


def _big_body(n_features: int) -> bytes:
    row = orjson.dumps([round(0.1 + i / 7, 6) for i in range(n_features)])
    count = ABUSE_BODY_BYTES // (len(row) + 1)
    return b'{"instances":[' + b",".join([row] * count) + b"]}"


def _send_big(port: int, body: bytes, seconds: float, log: list) -> None:
    """One large predict body spread over `seconds` (in flight the whole time), then its answer."""
    head = (
        b"POST /models/bench-linear/1/predict HTTP/1.1\r\nHost: b\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    piece = max(64 * 1024, int(len(body) / max(seconds * 10, 1)))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(head)
            for start in range(0, len(body), piece):
                sock.sendall(body[start : start + piece])
                time.sleep(0.1)
            log.append(sock.recv(64).split(b"\r\n", 1)[0].decode("latin-1"))
    except OSError as error:
        log.append(repr(error))


def abuse_probe(
    target: ModelregTarget, body_1row: Path, duration: float
) -> tuple[LoadResult, LoadResult, list]:
    url = _modelreg_url(target, "bench-linear")
    run_wrk(url, body_1row, connections=8, duration_s=1)
    calm = run_wrk(url, body_1row, connections=8, duration_s=duration)
    stop = threading.Event()
    big = _big_body(8)
    outcome: list = []
    threads = [
        threading.Thread(target=_loris, args=(target.port, stop), daemon=True)
        for _ in range(LORIS_CONNECTIONS)
    ]
    threads.append(
        threading.Thread(
            target=_send_big, args=(target.port, big, duration + 1, outcome), daemon=True
        )
    )
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    try:
        abused = run_wrk(url, body_1row, connections=8, duration_s=duration)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    return calm, abused, outcome


# ---- report ----------------------------------------------------------------------------------


def render(
    command: str,
    describe: dict[str, str],
    cells: dict[tuple[str, str, int], Cell],
    abuse: dict[str, tuple[LoadResult, LoadResult, list]],
    rounds: int,
    duration: float,
) -> str:
    targets = list(describe)
    lines = [
        "# modelreg vs the HTTP floor vs FastAPI",
        "",
        f"`{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average "
        f"{os.getloadavg()[0]:.2f}; {rounds} round(s) of {duration:g} s per point and target, "
        "median shown. wrk keep-alive connections, 1-row requests.",
        "",
        "| target | command |",
        "|---|---|",
        *(f"| {name} | `{text}` |" for name, text in describe.items()),
        "",
        "| point | "
        + " | ".join(f"{t} req/s (p50 / p99 ms)" for t in targets)
        + " | modelreg ÷ fastapi | modelreg ÷ floor |",
        "|---|" + "---|" * (len(targets) + 2),
    ]
    for model in dict.fromkeys(m for _, m, _ in cells):
        for concurrency in CONCURRENCY:
            row = [f"{model.removeprefix('bench-')} c{concurrency}"]
            for target in targets:
                cell = cells[(target, model, concurrency)]
                fail = f" ({cell.failures} failed)" if cell.failures else ""
                row.append(f"{cell.rps:,.0f} ({cell.p50:.2f} / {cell.p99:.2f}){fail}")
            ours = cells[("modelreg", model, concurrency)]
            row.append(f"{ours.rps / cells[('fastapi', model, concurrency)].rps:.2f}x")
            row.append(f"{ours.rps / cells[('floor', model, concurrency)].rps:.2f}x")
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Targets of issue 20: c8 ≥ 3x fastapi and ≥ 0.67x floor; c1 p50 ≤ 1.5x the floor's.",
    ]
    for model in dict.fromkeys(m for _, m, _ in cells):
        c8 = cells[("modelreg", model, 8)]
        c1 = cells[("modelreg", model, 1)]
        checks = [
            ("c8 ≥ 3x fastapi", c8.rps >= 3 * cells[("fastapi", model, 8)].rps),
            ("c8 ≥ 2/3 floor", c8.rps >= 2 / 3 * cells[("floor", model, 8)].rps),
            ("c1 p50 ≤ 1.5x floor", c1.p50 <= 1.5 * cells[("floor", model, 1)].p50),
        ]
        text = ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks)
        lines.append(f"- {model}: {text}")
    if abuse:
        lines += [
            "",
            "## Abuse probe: 1-row linear, c8, p99 alone and with 20 slowloris connections "
            "and a 60 MB body in flight",
            "",
            "| target | p99 alone (ms) | p99 abused (ms) | ratio (target ≤ 2) "
            "| req/s alone / abused | the 60 MB request |",
            "|---|---|---|---|---|---|",
        ]
        for name, (calm, abused, outcome) in abuse.items():
            lines.append(
                f"| {name} | {calm.p99_ms:.2f} | {abused.p99_ms:.2f} | "
                f"{abused.p99_ms / calm.p99_ms:.2f} | {calm.req_per_s:,.0f} / "
                f"{abused.req_per_s:,.0f} | {outcome[0] if outcome else 'no answer'!s} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    stop_on_sigterm()
    args = parse_args(argv)
    try:
        require_wrk()
    except WrkMissing as error:
        print(f"{error}\n\n    {INSTALL_HINT}\n", file=sys.stderr)
        return 2
    log_dir = BENCH_DIR / "out" / datetime.now(UTC).strftime("floor-%Y%m%dT%H%M%SZ")
    command = "python bench/floor.py " + " ".join(sys.argv[1:] if argv is None else argv)
    ensure_env(FLOOR_ENV)
    with (
        tempfile.TemporaryDirectory(prefix="modelreg-floor-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        print("== training the reference models", flush=True)
        models: list[TrainedModel] = train_all(workdir / "models", MODELS)
        bodies = {}
        for model in models:
            bodies[model.spec.name] = workdir / f"{model.spec.name}-1.json"
            bodies[model.spec.name].write_bytes(
                instances_body(np.asarray(request_rows(1, model.spec.n_features)))
            )
        modelreg: dict[str, ModelregTarget] = {}
        current = ModelregTarget(
            workdir / "home", log_dir, workers=args.workers, threads=args.threads
        )
        modelreg["modelreg"] = current
        if args.before:
            tree = stack.enter_context(worktree("before", args.before, workdir))
            modelreg["before"] = TreeTarget(
                tree, workdir / "home-before", log_dir, workers=args.workers, threads=args.threads
            )
        urls: dict[str, dict[str, str]] = {}
        describe: dict[str, str] = {}
        for name, target in modelreg.items():
            stack.callback(target.stop)
            target.start()
            target.deploy(models)
            target.warm(models)
            urls[name] = {m.spec.name: _modelreg_url(target, m.spec.name) for m in models}
            describe[name] = target.describe()
        model_files = ",".join(f"{m.spec.name}={m.joblib_path}" for m in models)
        peers = {
            "floor": UvicornTarget("floor", "bench.floor_apps:floor", {}, log_dir, args.workers),
            "fastapi": UvicornTarget(
                "fastapi",
                "bench.floor_apps:fastapi_app",
                {"BENCH_FLOOR_APP": "fastapi", "BENCH_MODELS": model_files},
                log_dir,
                args.workers,
            ),
        }
        for name, peer in peers.items():
            stack.callback(peer.stop)
            peer.start()
            urls[name] = {m.spec.name: peer.predict_url(m.spec.name) for m in models}
            describe[name] = peer.describe()
        print(f"== {len(models) * len(CONCURRENCY)} points x {args.rounds} rounds", flush=True)
        cells = measure(urls, bodies, args.rounds, args.duration)
        abuse = {}
        if not args.skip_abuse:
            for name, target in modelreg.items():
                print(f"== abuse probe: {name}", flush=True)
                abuse[name] = abuse_probe(target, bodies["bench-linear"], args.duration)
        text = render(command, describe, cells, abuse, args.rounds, args.duration)
    args.out.write_text(text)
    print("\n" + text)
    print(f"written to {relative(args.out)}; server logs in {relative(log_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
