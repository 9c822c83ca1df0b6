"""What the matrix runs against. A `Target` is one serving system: how to start and stop it,
how to deploy the reference models on it, the URL to POST to per model and the body its
protocol expects. modelreg is the only target today; MLflow or MLServer peers are more
`Target` subclasses (a server per model or one server, `instances` or V2 bodies).
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import requests

from bench.cpu import group_cpu_by_pid
from bench.models import ModelSpec, TrainedModel, request_rows
from bench.procs import Memory, Process, free_port, group_memory, relative, wait_until
from registry.client import Client

BodyBuilder = Callable[[np.ndarray], bytes]


def instances_body(X: np.ndarray) -> bytes:
    """modelreg / MLflow style: `{"instances": [[...], ...]}` (row-major lists)."""
    return orjson.dumps({"instances": X}, option=orjson.OPT_SERIALIZE_NUMPY)


def post_fresh(url: str, body: bytes, content_type: str, timeout: float = 60) -> int:
    """POST on a new connection (so that gunicorn may hand it to any worker); the status."""
    headers = {"Content-Type": content_type, "Connection": "close"}
    try:
        return requests.post(url, data=body, headers=headers, timeout=timeout).status_code
    except requests.RequestException:
        return 0


class Target(ABC):
    """One serving system under test."""

    name: str
    content_type: str = "application/json"
    protocol: BodyBuilder = staticmethod(instances_body)

    def body(self, X: np.ndarray) -> bytes:
        return self.protocol(X)

    def parse_predictions(self, response: requests.Response) -> Any:
        """The predictions in an answer (modelreg and MLflow: `{"predictions": [...]}`)."""
        return orjson.loads(response.content)["predictions"]

    def runtime_label(self, response: requests.Response) -> str:
        """Which runtime answered (modelreg tells in X-Model-Runtime)."""
        return response.headers.get("X-Model-Runtime", self.name)

    def predict_once(self, spec: ModelSpec, X: np.ndarray) -> tuple[Any, str]:
        """(predictions, runtime label) of one request."""
        response = requests.post(
            self.predict_url(spec),
            data=self.body(X),
            headers={"Content-Type": self.content_type},
            timeout=120,
        )
        response.raise_for_status()
        return self.parse_predictions(response), self.runtime_label(response)

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    @abstractmethod
    def launch(self) -> None:
        """Start the server(s) without waiting (cold-start timing begins here)."""

    @abstractmethod
    def wait_ready(self, timeout: float = 120) -> None:
        """Block until the server answers its health check."""

    @abstractmethod
    def deploy(self, models: Sequence[TrainedModel]) -> None:
        """Make each model servable at `predict_url` (register, promote, load...)."""

    @abstractmethod
    def predict_url(self, spec: ModelSpec) -> str: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def memory(self) -> Memory:
        """Memory of every process of the target (all servers, all workers)."""

    @abstractmethod
    def cpu_by_process(self) -> dict[int, float]:
        """user + system CPU seconds used so far by each live process of the target."""

    def worker_cpu(self) -> dict[int, float]:
        """The same, for the processes that serve requests (modelreg: not the master)."""
        return self.cpu_by_process()

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_process().values())

    @abstractmethod
    def log_tail(self, chars: int = 4_000) -> str: ...

    @abstractmethod
    def describe(self) -> str:
        """The command line (or equivalent) shown in the results."""

    def warm(self, models: Sequence[TrainedModel], requests_per_model: int = 16) -> None:
        """Predict each model several times at once, on fresh connections, so that every
        worker process loads it before anything is measured."""
        for model in models:
            url = self.predict_url(model.spec)
            body = self.body(request_rows(1, model.spec.n_features))
            calls = [(url, body, self.content_type)] * requests_per_model
            with ThreadPoolExecutor(max_workers=8) as pool:
                statuses = list(pool.map(lambda call: post_fresh(*call), calls))
            bad = [s for s in statuses if not 200 <= s < 300]
            if bad:
                raise RuntimeError(
                    f"{self.name}: warming {model.spec.name} failed with {bad}:\n" + self.log_tail()
                )


def _modelreg_command() -> list[str]:
    entry = Path(sys.executable).parent / "modelreg"
    if entry.exists():
        return [str(entry)]
    return [sys.executable, "-c", "from manage import cli; cli()"]


# Settings from the caller's shell that would point the server somewhere else.
_SCRUBBED_ENV = ("DATABASE_URL", "STORAGE_URL", "INSTANCE_PATH", "MODELREG_ENV", "MODELREG_URL")


class ModelregTarget(Target):
    """`modelreg serve --workers N --threads T` (gunicorn) on an embedded instance folder."""

    def __init__(
        self,
        home: Path,
        log_dir: Path,
        *,
        workers: int = 2,
        threads: int = 2,
        env: Mapping[str, str] | None = None,
        name: str = "modelreg",
        accelerate: bool | str | None = None,
    ) -> None:
        self.name = name
        self.accelerate = accelerate  # the versions' `accelerate` metadata; None: the default
        self.home = home
        self.log_dir = log_dir
        self.workers = workers
        self.threads = threads
        self.extra_env = dict(env or {})
        self.port = 0
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        env.update(
            MODELREG_HOME=str(self.home),
            AUTH_DISABLED="true",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            # gunicorn workers share metrics through files: keep them in the temp folder.
            PROMETHEUS_MULTIPROC_DIR=str(self.home / f"metrics-{self.port}"),
        )
        env.update(self.extra_env)
        return env

    def _args(self) -> list[str]:
        return [
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--threads",
            str(self.threads),
        ]

    def describe(self) -> str:
        extra = " ".join(f"{k}={v}" for k, v in self.extra_env.items())
        command = f"modelreg serve --workers {self.workers} --threads {self.threads}"
        return f"{extra} {command}".strip()

    def launch(self) -> None:
        self.port = free_port()
        log_path = self.log_dir / f"{self.name}-{self.port}.log"
        self.process = Process(_modelreg_command() + self._args(), self._env(), log_path)

    def wait_ready(self, timeout: float = 120) -> None:
        wait_until(self._healthy, timeout=timeout, interval=0.05, what=f"{self.name} to start")

    def _healthy(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(
                f"{self.name} exited with {self.process.popen.returncode}:\n{self.log_tail()}"
            )
        try:
            return requests.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def deploy(self, models: Sequence[TrainedModel]) -> None:
        with Client(self.url, timeout=120) as client:
            for model in models:
                record = client.register(
                    model.spec.name,
                    model.skops_path,
                    description=f"bench reference model: {model.spec.label}",
                    input_example=model.example,
                    **({} if self.accelerate is None else {"accelerate": self.accelerate}),
                )
                client.promote(
                    model.spec.name, record["version"], alias="production", reason="benchmark"
                )

    def predict_url(self, spec: ModelSpec) -> str:
        return self.version_url(spec.name, "production")

    def version_url(self, name: str, ref: str | int) -> str:
        return f"{self.url}/models/{name}/{ref}/predict"

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def memory(self) -> Memory:
        assert self.process is not None
        return group_memory(self.process.pid)

    def cpu_by_process(self) -> dict[int, float]:
        return group_cpu_by_pid(self.process.pid) if self.process else {}

    def worker_cpu(self) -> dict[int, float]:
        assert self.process is not None
        return {pid: s for pid, s in self.cpu_by_process().items() if pid != self.process.pid}

    def log_tail(self, chars: int = 4_000) -> str:
        return self.process.log_tail(chars) if self.process else ""

    def log_file(self) -> str:
        return relative(self.process.log_path) if self.process else "-"

    def server_errors(self) -> list[str]:
        """Lines of the server log that signal trouble (tracebacks, errors, worker timeouts)."""
        if self.process is None or not self.process.log_path.exists():
            return []
        markers = ("Traceback", " ERROR ", "[ERROR]", "CRITICAL", "WORKER TIMEOUT")
        lines = self.process.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if any(m in line for m in markers)]
