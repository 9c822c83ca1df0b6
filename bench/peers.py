"""Peers measured in the same run as modelreg: MLflow's scoring server and MLServer.

Each peer lives in a throwaway venv under `tempfile.gettempdir()/modelreg-bench-peers`
(created and installed on first use, reused afterwards), with the scikit-learn version of the
bench's own venv so that the reference models load. The models are re-saved inside each venv
(MLflow: `mlflow.sklearn.save_model`; MLServer: `joblib.dump`) from the joblib files the bench
trains.

- `MlflowTarget`: one `mlflow models serve -m <dir> --env-manager local` per model (MLflow
  serves one model per process), `{"instances": [[...]]}` bodies.
- `MlserverTarget`: one `mlserver start <folder>` serving the three models (a folder per model
  with `model-settings.json`), V2 `{"inputs": [{"name", "shape", "datatype", "data"}]}` bodies.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import requests
import sklearn

from bench.cpu import group_cpu_by_pid
from bench.models import ModelSpec, TrainedModel, request_rows
from bench.procs import Memory, Process, free_port, group_memory, wait_until
from bench.targets import Target

PEERS_DIR = Path(tempfile.gettempdir()) / "modelreg-bench-peers"
SKLEARN_VERSION = sklearn.__version__
MARKER = "bench-installed.json"


# ---- throwaway venvs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerEnv:
    name: str  # folder under PEERS_DIR
    requirements: tuple[str, ...]
    versions_of: tuple[str, ...]  # distributions whose versions are reported

    @property
    def venv(self) -> Path:
        return PEERS_DIR / self.name

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"


MLFLOW_ENV = PeerEnv("mlflow", ("mlflow==3.*",), ("mlflow", "scikit-learn", "numpy"))
MLSERVER_ENV = PeerEnv(
    "mlserver",
    ("mlserver", "mlserver-sklearn", "uvloop<0.22"),  # uvloop 0.22 breaks mlserver 1.7
    ("mlserver", "mlserver-sklearn", "scikit-learn", "numpy"),
)
# MLServer's own XGBoost and LightGBM runtimes, for bench/boosters.py.
MLSERVER_BOOSTERS_ENV = PeerEnv(
    "mlserver-boosters",
    ("mlserver==1.7.*", "mlserver-xgboost==1.7.*", "mlserver-lightgbm==1.7.*", "uvloop<0.22"),
    ("mlserver", "mlserver-xgboost", "mlserver-lightgbm", "xgboost", "lightgbm", "numpy"),
)


def ensure_env(env: PeerEnv, say: Any = print) -> dict[str, str]:
    """Create and install the venv unless an earlier run did; the installed versions."""
    marker = env.venv / MARKER
    if marker.exists():
        versions = json.loads(marker.read_text())
        if versions.get("scikit-learn") == SKLEARN_VERSION:
            return versions
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    log = PEERS_DIR / f"{env.name}-install.log"
    say(f"  [{env.name}] installing into {env.venv} (log: {log})", flush=True)
    started = time.monotonic()
    with open(log, "ab") as out:
        if not env.python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(env.venv)], check=True, stdout=out, stderr=out
            )
        # The bench's scikit-learn version, so that the joblib files load.
        packages = [*env.requirements, f"scikit-learn=={SKLEARN_VERSION}"]
        result = subprocess.run(
            [str(env.python), "-m", "pip", "install", "-q", *packages], stdout=out, stderr=out
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()
        errors = [line for line in tail if "is ignored" not in line][-15:]
        raise RuntimeError(f"pip install {' '.join(packages)} failed:\n" + "\n".join(errors))
    versions = installed_versions(env)
    marker.write_text(json.dumps(versions))
    say(f"  [{env.name}] installed in {time.monotonic() - started:.0f} s: {versions}", flush=True)
    return versions


def installed_versions(env: PeerEnv) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    )
    out = subprocess.run(
        [str(env.python), "-c", code, *env.versions_of],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)


def _run_in(env: PeerEnv, script: str, *args: str) -> None:
    out = subprocess.run(
        [str(env.python), "-c", script, *args], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"{env.name}: script failed:\n{out.stderr[-3000:]}")


def _env_vars(env: PeerEnv) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    keep["PATH"] = f"{env.bin}{os.pathsep}{keep.get('PATH', '')}"
    keep["VIRTUAL_ENV"] = str(env.venv)
    keep["PYTHONUNBUFFERED"] = "1"
    return keep


def _merge_memory(memories: Sequence[Memory]) -> Memory:
    return Memory(
        sum(m.processes for m in memories),
        sum(m.rss_bytes for m in memories),
        sum(m.pss_bytes for m in memories),
        tuple(r for m in memories for r in m.rss_by_pid),
    )


# ---- MLflow -------------------------------------------------------------------------------------

_MLFLOW_SAVE = """
import sys, joblib, mlflow.sklearn, skops.io
src, dst, sk = sys.argv[1:4]
model = joblib.load(src)
# MLflow 3 saves with skops and asks which of the model's types to trust (our own models).
trusted = skops.io.get_untrusted_types(data=skops.io.dumps(model))
mlflow.sklearn.save_model(
    model, dst, pip_requirements=["scikit-learn==" + sk], skops_trusted_types=trusted
)
"""


class MlflowTarget(Target):
    """`mlflow models serve -m <dir> --env-manager local` per model (one model per process)."""

    def __init__(self, models: Sequence[TrainedModel], workdir: Path, log_dir: Path) -> None:
        self.name = "mlflow"
        self.models_dir = workdir / "mlflow-models"
        self.log_dir = log_dir
        self.specs = [m.spec for m in models]
        self.ports: dict[str, int] = {}
        self.processes: dict[str, Process] = {}
        self.versions: dict[str, str] = {}

    def prepare(self, models: Sequence[TrainedModel]) -> None:
        self.versions = ensure_env(MLFLOW_ENV)
        for model in models:
            dst = self.models_dir / model.spec.name
            if not dst.exists():
                _run_in(MLFLOW_ENV, _MLFLOW_SAVE, str(model.joblib_path), str(dst), SKLEARN_VERSION)

    def _command(self, name: str) -> list[str]:
        return [
            str(MLFLOW_ENV.bin / "mlflow"),
            "models",
            "serve",
            "-m",
            str(self.models_dir / name),
            "--env-manager",
            "local",
            "-p",
            str(self.ports[name]),
            "-h",
            "127.0.0.1",
        ]

    def describe(self) -> str:
        version = self.versions.get("mlflow", "?")
        return (
            f"MLflow {version}: `mlflow models serve -m <dir> --env-manager local` x "
            f"{len(self.specs)} (one server per model, default workers)"
        )

    def launch(self, names: Sequence[str] | None = None) -> None:
        for name in names or [s.name for s in self.specs]:
            self.ports[name] = free_port()
            log = self.log_dir / f"mlflow-{name}-{self.ports[name]}.log"
            self.processes[name] = Process(
                self._command(name), _env_vars(MLFLOW_ENV), log, cwd=self.models_dir
            )

    def wait_ready(self, timeout: float = 180) -> None:
        for name in self.processes:
            wait_until(
                lambda n=name: self._healthy(n), timeout, 0.05, f"mlflow serving {name} to start"
            )

    def _healthy(self, name: str) -> bool:
        process = self.processes[name]
        if not process.alive():
            raise RuntimeError(f"mlflow {name} exited:\n{process.log_tail()}")
        try:
            url = f"http://127.0.0.1:{self.ports[name]}/ping"
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def deploy(self, models: Sequence[TrainedModel]) -> None:
        """Nothing to do: each server was started on its saved model."""

    def predict_url(self, spec: ModelSpec) -> str:
        return f"http://127.0.0.1:{self.ports[spec.name]}/invocations"

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.processes = {}

    def memory(self) -> Memory:
        return _merge_memory([group_memory(p.pid) for p in self.processes.values()])

    def cpu_by_process(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for process in self.processes.values():
            out.update(group_cpu_by_pid(process.pid))
        return out

    def log_tail(self, chars: int = 4_000) -> str:
        return "\n".join(
            f"--- {n}\n{p.log_tail(chars // max(1, len(self.processes)))}"
            for n, p in self.processes.items()
        )


# ---- MLServer -----------------------------------------------------------------------------------

_MLSERVER_SAVE = """
import sys, joblib
joblib.dump(joblib.load(sys.argv[1]), sys.argv[2])
"""


def v2_body(X: np.ndarray) -> bytes:
    """Open Inference Protocol (V2): one FP64 tensor, row-major flat data."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    return orjson.dumps(
        {
            "inputs": [
                {"name": "input-0", "shape": list(X.shape), "datatype": "FP64", "data": X.ravel()}
            ]
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


class MlserverTarget(Target):
    """`mlserver start <folder>`: one server, a folder per model (mlserver_sklearn)."""

    protocol = staticmethod(v2_body)

    def __init__(self, models: Sequence[TrainedModel], workdir: Path, log_dir: Path) -> None:
        self.name = "mlserver"
        self.folder = workdir / "mlserver-models"
        self.log_dir = log_dir
        self.specs = [m.spec for m in models]
        self.port = 0
        self.process: Process | None = None
        self.versions: dict[str, str] = {}

    def prepare(self, models: Sequence[TrainedModel]) -> None:
        self.versions = ensure_env(MLSERVER_ENV)
        for model in models:
            folder = self.folder / model.spec.name
            folder.mkdir(parents=True, exist_ok=True)
            if not (folder / "model.joblib").exists():
                _run_in(
                    MLSERVER_ENV,
                    _MLSERVER_SAVE,
                    str(model.joblib_path),
                    str(folder / "model.joblib"),
                )
            settings = {
                "name": model.spec.name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": "./model.joblib"},
            }
            (folder / "model-settings.json").write_text(json.dumps(settings))

    def describe(self) -> str:
        version = self.versions.get("mlserver", "?")
        return (
            f"MLServer {version} (mlserver-sklearn): `mlserver start <folder>`, one server for "
            f"the {len(self.specs)} models, default parallel workers, metrics server off"
        )

    def launch(self) -> None:
        self.port = free_port()
        settings = {
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_endpoint": None,  # no metrics server (it would need its own port)
            "metrics_port": free_port(),
        }
        (self.folder / "settings.json").write_text(json.dumps(settings))
        log = self.log_dir / f"mlserver-{self.port}.log"
        command = [str(MLSERVER_ENV.bin / "mlserver"), "start", str(self.folder)]
        self.process = Process(command, _env_vars(MLSERVER_ENV), log, cwd=self.folder)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> None:
        wait_until(self._ready, timeout, 0.05, "mlserver to start")

    def _ready(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(f"mlserver exited:\n{self.process.log_tail()}")
        try:
            return all(
                requests.get(f"{self.url}/v2/models/{s.name}/ready", timeout=1).status_code == 200
                for s in self.specs
            )
        except requests.RequestException:
            return False

    def deploy(self, models: Sequence[TrainedModel]) -> None:
        """Nothing to do: the server loads every folder at start."""

    def predict_url(self, spec: ModelSpec) -> str:
        return f"{self.url}/v2/models/{spec.name}/infer"

    def parse_predictions(self, response: requests.Response) -> Any:
        return orjson.loads(response.content)["outputs"][0]["data"]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def memory(self) -> Memory:
        assert self.process is not None
        return group_memory(self.process.pid)

    def cpu_by_process(self) -> dict[int, float]:
        return group_cpu_by_pid(self.process.pid) if self.process else {}

    def log_tail(self, chars: int = 4_000) -> str:
        return self.process.log_tail(chars) if self.process else ""


# ---- cold start -------------------------------------------------------------------------------


def _first_success(target: Target, spec: ModelSpec, timeout: float) -> float:
    """Polls until one predict of `spec` succeeds; the monotonic time it did."""
    body = target.body(request_rows(1, spec.n_features))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            url = target.predict_url(spec)
            response = requests.post(
                url, data=body, headers={"Content-Type": target.content_type}, timeout=30
            )
            if response.status_code == 200:
                return time.monotonic()
        except (requests.RequestException, KeyError):
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{target.name}: no successful predict of {spec.name} in {timeout:.0f} s")


def mlflow_cold_start(target: MlflowTarget, timeout: float = 180) -> dict[str, float]:
    """One fresh server per model, alone: launch → first successful predict."""
    seconds: dict[str, float] = {}
    for spec in target.specs:
        started = time.monotonic()
        target.launch([spec.name])
        try:
            seconds[spec.name] = _first_success(target, spec, timeout) - started
        finally:
            target.stop()
        print(f"  [mlflow] cold start {spec.name}: {seconds[spec.name]:.2f} s", flush=True)
    return seconds


def mlserver_cold_start(target: MlserverTarget, timeout: float = 180) -> dict[str, float]:
    """One fresh server for all models: launch → first successful predict of each model."""
    seconds: dict[str, float] = {}
    started = time.monotonic()
    target.launch()
    errors: list[BaseException] = []

    def poll(spec: ModelSpec) -> None:
        try:
            seconds[spec.name] = _first_success(target, spec, timeout) - started
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=poll, args=(s,)) for s in target.specs]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        target.stop()
    if errors:
        raise errors[0]
    for spec in target.specs:
        print(f"  [mlserver] cold start {spec.name}: {seconds[spec.name]:.2f} s", flush=True)
    return {s.name: seconds[s.name] for s in target.specs}


@dataclass
class PeerOutcome:
    """What happened to one peer in the run: its matrix, or why there is none."""

    name: str
    versions: dict[str, str] = field(default_factory=dict)
    describe: str = ""
    run: Any = None  # bench.matrix.TargetRun
    memory: Memory | None = None  # all models loaded and predicted
    error: str = ""
    cold_start_error: str = ""
