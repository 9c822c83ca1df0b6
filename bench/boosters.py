"""XGBoost and LightGBM served by modelreg against MLServer's own runtimes, in one run.

    .venv/bin/python bench/boosters.py [--duration 10] [--rounds 2] [--quick]

Two models (100 trees, depth 6, 8 features, regression on synthetic data): an XGBoost model
saved as JSON and a LightGBM text model. modelreg registers the files (the verified ONNX
tree ensemble serves them, see docs/boosters.md) under `modelreg serve --workers 2`;
MLServer 1.7 serves the same files with mlserver-xgboost and mlserver-lightgbm (one server,
V2 bodies, default settings), from a throwaway venv (bench/peers.py). Both answers are
checked against the library's own predict before anything is measured. Points: 1 row at
concurrency 1 and 8, 100 rows at 8, 10,000 rows at 4, with wrk; the targets alternate within
each round and take turns going first. Writes bench/BOOSTERS.md and a section of
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import orjson
import requests

from bench.loadgen import run_wrk, wrk_version
from bench.peers import MLSERVER_BOOSTERS_ENV, _env_vars, ensure_env, v2_body
from bench.procs import REPO_ROOT, Process, free_port, wait_until
from bench.targets import ModelregTarget, instances_body
from registry.client import Client

N_FEATURES = 8
POINTS = (("1 row, c1", 1, 1), ("1 row, c8", 1, 8), ("100 rows, c8", 100, 8),
          ("10,000 rows, c4", 10_000, 4))  # fmt: skip
RESULTS = REPO_ROOT / "bench" / "RESULTS.md"
REPORT = REPO_ROOT / "bench" / "BOOSTERS.md"
SECTION = "## XGBoost and LightGBM (bench/boosters.py)"


@dataclass(frozen=True)
class Booster:
    name: str
    library: str
    path: Path
    model: Any
    mlserver_runtime: str


def train(folder: Path) -> list[Booster]:
    import lightgbm as lgb
    import xgboost as xgb

    rng = np.random.default_rng(2024)
    X = rng.normal(size=(20_000, N_FEATURES))
    y = X @ rng.normal(size=N_FEATURES) + np.sin(3 * X[:, 0]) + 0.1 * rng.normal(size=len(X))
    xgb_model = xgb.XGBRegressor(n_estimators=100, max_depth=6, n_jobs=2).fit(X, y)
    lgb_model = lgb.LGBMRegressor(
        n_estimators=100, max_depth=6, num_leaves=63, n_jobs=2, verbose=-1
    ).fit(X, y)
    xgb_path, lgb_path = folder / "xgb-price.json", folder / "lgb-price.txt"
    xgb_model.get_booster().save_model(str(xgb_path))
    lgb_model.booster_.save_model(str(lgb_path))
    return [
        Booster("xgb-price", "xgboost", xgb_path, xgb_model, "mlserver_xgboost.XGBoostModel"),
        Booster("lgb-price", "lightgbm", lgb_path, lgb_model, "mlserver_lightgbm.LightGBMModel"),
    ]


class ModelregBoosters(ModelregTarget):
    def deploy(self, models: list[Booster]) -> None:  # type: ignore[override]
        with Client(self.url, timeout=120) as client:
            for booster in models:
                example = np.random.default_rng(1).normal(size=(2, N_FEATURES)).tolist()
                record = client.register(booster.name, booster.path, input_example=example)
                served = record["acceleration"].get("served", {})
                print(f"  [modelreg] {booster.name}: served by {served}", flush=True)
                client.promote(booster.name, record["version"], reason="benchmark")

    def url_for(self, booster: Booster) -> str:
        return f"{self.url}/models/{booster.name}/production/predict"

    def body(self, X: np.ndarray) -> bytes:
        return instances_body(X)

    def answers(self, response: requests.Response) -> list[float]:
        return orjson.loads(response.content)["predictions"]


class MlserverBoosters:
    """`mlserver start <folder>` with a folder per model (mlserver-xgboost, -lightgbm)."""

    name = "mlserver"

    def __init__(self, folder: Path, log_dir: Path) -> None:
        self.folder = folder
        self.log_dir = log_dir
        self.port = 0
        self.process: Process | None = None
        self.versions: dict[str, str] = {}

    def prepare(self, models: list[Booster]) -> None:
        self.versions = ensure_env(MLSERVER_BOOSTERS_ENV)
        for booster in models:
            folder = self.folder / booster.name
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / booster.path.name
            target.write_bytes(booster.path.read_bytes())
            settings = {
                "name": booster.name,
                "implementation": booster.mlserver_runtime,
                "parameters": {"uri": f"./{booster.path.name}"},
            }
            (folder / "model-settings.json").write_text(json.dumps(settings))

    def start(self, models: list[Booster]) -> None:
        self.port = free_port()
        settings = {"http_port": self.port, "grpc_port": free_port(), "metrics_endpoint": None,
                    "metrics_port": free_port()}  # fmt: skip
        (self.folder / "settings.json").write_text(json.dumps(settings))
        command = [str(MLSERVER_BOOSTERS_ENV.bin / "mlserver"), "start", str(self.folder)]
        log = self.log_dir / f"mlserver-boosters-{self.port}.log"
        self.process = Process(command, _env_vars(MLSERVER_BOOSTERS_ENV), log, cwd=self.folder)

        def ready() -> bool:
            assert self.process is not None
            if not self.process.alive():
                raise RuntimeError(f"mlserver exited:\n{self.process.log_tail()}")
            try:
                return all(
                    requests.get(f"{self.url_base}/v2/models/{b.name}/ready", timeout=1).ok
                    for b in models
                )
            except requests.RequestException:
                return False

        wait_until(ready, 180, 0.1, "mlserver to load the boosters")

    @property
    def url_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, booster: Booster) -> str:
        return f"{self.url_base}/v2/models/{booster.name}/infer"

    def body(self, X: np.ndarray) -> bytes:
        return v2_body(X)

    def answers(self, response: requests.Response) -> list[float]:
        return orjson.loads(response.content)["outputs"][0]["data"]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


def check(target: Any, booster: Booster) -> float:
    """The largest relative difference from the library's own predict on 100 rows."""
    X = np.random.default_rng(3).normal(size=(100, N_FEATURES))
    response = requests.post(
        target.url_for(booster),
        data=target.body(X),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    response.raise_for_status()
    got = np.asarray(target.answers(response), dtype=np.float64).ravel()
    expected = booster.model.predict(X)
    diff = float(np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-12)))
    if not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
        raise RuntimeError(f"{target.name} {booster.name}: answers differ (max rel {diff:.2e})")
    return diff


def measure(target: Any, models: list[Booster], workdir: Path, duration: float) -> dict:
    results: dict[tuple[str, str], Any] = {}
    for booster in models:
        for label, rows, connections in POINTS:
            X = np.random.default_rng(rows).normal(size=(rows, N_FEATURES))
            body_file = workdir / f"{target.name}-{booster.name}-{rows}.json"
            body_file.write_bytes(target.body(X))
            run_wrk(target.url_for(booster), body_file, connections=connections, duration_s=2)
            result = run_wrk(
                target.url_for(booster), body_file, connections=connections, duration_s=duration
            )
            if result.failed:
                raise RuntimeError(f"{target.name} {booster.name} {label}: {result}")
            results[(booster.name, label)] = result
            print(
                f"  [{target.name}] {booster.name} {label}: {result.req_per_s:,.0f} req/s, "
                f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms",
                flush=True,
            )
    return results


def best(rounds: list[dict], key: tuple[str, str]) -> Any:
    return max((r[key] for r in rounds), key=lambda r: r.req_per_s)


def table(models: list[Booster], runs: dict[str, list[dict]]) -> list[str]:
    lines = [
        "| model | point | modelreg req/s | MLServer req/s | ratio | modelreg p50 / p99 ms | "
        "MLServer p50 / p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for booster in models:
        for label, rows, _ in POINTS:
            ours = best(runs["modelreg"], (booster.name, label))
            theirs = best(runs["mlserver"], (booster.name, label))
            ratio = ours.req_per_s / theirs.req_per_s if theirs.req_per_s else float("inf")
            rate = f"{ours.req_per_s:,.0f}" + (
                f" ({ours.req_per_s * rows / 1e6:.2f}M rows/s)" if rows > 1 else ""
            )
            peer = f"{theirs.req_per_s:,.0f}" + (
                f" ({theirs.req_per_s * rows / 1e6:.2f}M rows/s)" if rows > 1 else ""
            )
            lines.append(
                f"| {booster.library} | {label} | {rate} | {peer} | {ratio:.1f}x | "
                f"{ours.p50_ms:.2f} / {ours.p99_ms:.2f} | "
                f"{theirs.p50_ms:.2f} / {theirs.p99_ms:.2f} |"
            )
    return lines


def write(models: list[Booster], runs: dict, facts: dict[str, str], args: Any) -> str:
    body = [
        SECTION,
        "",
        f"Run on {facts['when']}, {facts['machine']}; {facts['wrk']}; {args.rounds} "
        f"rounds of {args.duration:.0f} s per point, the targets alternating (best round "
        "shown). Models: 100 trees, depth 6, 8 features, regression; the same files for both.",
        "",
        f"- modelreg: `modelreg serve --workers 2 --threads 2`, {facts['modelreg_served']}",
        f"- MLServer {facts['mlserver']} with mlserver-xgboost / mlserver-lightgbm "
        f"(xgboost {facts['xgboost']}, lightgbm {facts['lightgbm']}): `mlserver start`, "
        "default settings, V2 JSON bodies",
        f"- answers checked against the library's own predict first: max relative difference "
        f"{facts['diffs']}",
        "",
        *table(models, runs),
        "",
    ]
    text = "\n".join(body)
    REPORT.write_text("# XGBoost and LightGBM against MLServer's runtimes\n\n" + text)
    previous = RESULTS.read_text() if RESULTS.exists() else ""
    if SECTION in previous:
        head, _, rest = previous.partition(SECTION)
        tail = rest.split("\n## ", 1)
        previous = head.rstrip() + ("\n\n## " + tail[1] if len(tail) > 1 else "")
    RESULTS.write_text(previous.rstrip() + "\n\n" + text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="3 s per point, one round")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.rounds = 3.0, 1
    import lightgbm
    import xgboost

    with tempfile.TemporaryDirectory(prefix="modelreg-boosters-") as tmp:
        work = Path(tmp)
        log_dir = REPO_ROOT / "bench" / "out" / time.strftime("%Y%m%d-%H%M%S")
        models = train(work)
        mlserver = MlserverBoosters(work / "mlserver", log_dir)
        mlserver.prepare(models)
        runs: dict[str, list[dict]] = {"modelreg": [], "mlserver": []}
        diffs: dict[str, float] = {}
        served = ""
        for round_ in range(args.rounds):
            order = ["modelreg", "mlserver"] if round_ % 2 == 0 else ["mlserver", "modelreg"]
            for name in order:
                print(f"round {round_ + 1}: {name}", flush=True)
                if name == "modelreg":
                    home = work / f"modelreg-{round_}"
                    target: Any = ModelregBoosters(home, log_dir, workers=2, threads=2)
                    target.start()
                    target.deploy(models)
                    with Client(target.url) as client:
                        record = client.get_version(models[0].name, "production")
                        served = str(record["acceleration"].get("served", {}).get("form"))
                else:
                    target = mlserver
                    target.start(models)
                try:
                    for booster in models:
                        diffs[f"{name} {booster.library}"] = check(target, booster)
                    runs[name].append(measure(target, models, work, args.duration))
                finally:
                    target.stop()
        facts = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": f"{platform.machine()}, Python {platform.python_version()}",
            "wrk": wrk_version(),
            "mlserver": mlserver.versions.get("mlserver", "?"),
            "xgboost": f"{xgboost.__version__} here, {mlserver.versions.get('xgboost', '?')} "
            "in MLServer's venv",
            "lightgbm": f"{lightgbm.__version__} here, "
            f"{mlserver.versions.get('lightgbm', '?')} in MLServer's venv",
            "modelreg_served": f"both models served by the verified `{served}` form",
            "diffs": ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()),
        }
        print(write(models, runs, facts, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
