"""/metrics on a gunicorn server with two workers reports the totals of both, and the process
metrics of each."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

from serving.metrics import PUBLISH_SECONDS
from tests.api.test_metrics_formats import promtool_findings
from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, wait_until

pytestmark = pytest.mark.slow

N = 60


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        labels_text = line[len(name) : line.rindex("}") + 1] if "{" in line else ""
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels_text))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_every_request_across_two_workers(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    server = ServerProcess(env, tmp_path, workers=2, threads=2, name="metrics")
    try:
        registered = requests.post(
            f"{server.url}/models/price/versions",
            files={
                "artifact": ("m.joblib", joblib_bytes(fit_linear())),
                "metadata": (None, json.dumps({"format": "joblib"})),
            },
            timeout=60,
        )
        assert registered.status_code == 201

        def predict(_: int) -> int:
            # A new connection each time, so that both workers take requests.
            return requests.post(
                f"{server.url}/models/price/1/predict",
                json={"instances": [[1, 2, 3]]},
                timeout=30,
                headers={"Connection": "close"},
            ).status_code

        # Send rounds until both workers have loaded the model (each loads it once), so the
        # totals below are known to come from two processes.
        sent = 0
        for _ in range(5):
            with ThreadPoolExecutor(8) as pool:
                assert list(pool.map(predict, range(N))) == [200] * N
            sent += N
            text = requests.get(f"{server.url}/metrics", timeout=10).text
            if _sample(text, "modelreg_model_loads_total", model="price") == 2:
                break
        route = "/models/<name>/<ref>/predict"

        def counted() -> str | None:
            # Each worker publishes its request counts every PUBLISH_SECONDS (and the one
            # answering a scrape, its own at once): the totals are whole within that bound.
            text = requests.get(f"{server.url}/metrics", timeout=10).text
            total = _sample(text, "modelreg_http_requests_total", route=route, status="200")
            return text if total == sent else None

        text = wait_until(counted, timeout=3 * PUBLISH_SECONDS, what="every request counted")
        assert _sample(text, "modelreg_http_requests_total", route=route, status="200") == sent
        assert (
            _sample(
                text,
                "modelreg_http_request_duration_seconds_count",
                route=route,
                model="price",
                version="1",
                status="200",
            )
            == sent
        )
        assert _sample(text, "modelreg_registry_mutations_total", type="register_version") == 1
        loads = _sample(text, "modelreg_model_loads_total", model="price")
        hits = _sample(text, "modelreg_cache_hits_total")
        misses = _sample(text, "modelreg_cache_misses_total")  # loads + coalesced waiters
        assert loads == 2 and loads <= misses and hits + misses == sent
        assert _sample(text, "modelreg_cache_models") == loads
    finally:
        server.stop()


def _worker_pids(server: ServerProcess) -> set[int]:
    pid = server.process.pid
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_process_metrics_of_every_worker_carry_its_pid(tmp_path):
    """Each worker's process_* are in every scrape, whichever worker answers it, labelled
    with its pid; python_gc_* are the server's totals; OpenMetrics parses strictly."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    server = ServerProcess(env, tmp_path, workers=2, threads=2, name="process-metrics")
    try:
        # /healthz answers once one worker is up; the arbiter forks the other meanwhile.
        def both() -> set[int] | None:
            pids = _worker_pids(server)
            return pids if len(pids) == 2 else None

        workers = wait_until(both, timeout=30, what="both workers")

        def scraped() -> tuple[str, set[int]]:
            text = requests.get(
                f"{server.url}/metrics", timeout=10, headers={"Connection": "close"}
            ).text
            family = next(f for f in classic(text) if f.name == "process_resident_memory_bytes")
            return text, {int(s.labels["pid"]) for s in family.samples if s.value > 0}

        # Every worker appears once it has made its app (both have once /healthz answered
        # from each; give the second a moment).
        wait_until(lambda: scraped()[1] == workers, timeout=30, what="both workers' metrics")
        answer = requests.get(
            f"{server.url}/metrics",
            timeout=10,
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        )
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        families = {f.name: f for f in openmetrics(answer.text)}
        pids = {int(s.labels["pid"]) for s in families["process_cpu_seconds"].samples}
        assert pids == workers
        assert {int(s.labels["pid"]) for s in families["modelreg_worker"].samples} == workers
        assert "python_info" in families
        assert families["python_gc_collections"].type == "counter"
        if shutil.which("promtool"):
            assert promtool_findings(scraped()[0].encode()) == ""

        # A worker that exits leaves the scrape (gunicorn starts another in its place).
        gone = min(workers)
        os.kill(gone, signal.SIGKILL)
        wait_until(
            lambda: gone not in scraped()[1] and len(scraped()[1]) == 2,
            timeout=60,
            what="the dead worker to leave the scrape",
        )
    finally:
        server.stop()
