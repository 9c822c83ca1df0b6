"""What a `modelreg serve --workers` server leaves on its host: its own gunicorn control socket
(or none), and no metrics folder once it has stopped, even after a worker crashed."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import requests
from gunicorn.ctl.client import ControlClient

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, wait_until

pytestmark = pytest.mark.slow


def _env(tmp_path: Path, name: str, **extra: str) -> dict[str, str]:
    folder = tmp_path / name
    folder.mkdir()
    return {
        "DATABASE_URL": f"sqlite:///{folder / 'r.db'}",
        "STORAGE_URL": (folder / "artifacts").as_uri(),
        "INSTANCE_PATH": str(folder / "instance"),
        "AUTH_DISABLED": "true",
        **extra,
    }


def _workers(server: ServerProcess) -> set[int]:
    pid = server.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


def _predict(server: ServerProcess) -> int:
    answer = requests.post(
        f"{server.url}/models/lin/1/predict", json={"instances": [[1, 2, 3]]}, timeout=30
    )
    return answer.status_code


def test_two_servers_on_one_host_each_keep_to_their_own_control_socket(tmp_path):
    home = tmp_path / "home"
    runtime = home / "run"
    runtime.mkdir(parents=True)
    # gunicorn's default control socket is $XDG_RUNTIME_DIR/gunicorn.ctl (else under ~).
    host = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    control = tmp_path / "first.ctl"
    first = ServerProcess(
        _env(tmp_path, "first", CONTROL_SOCKET=str(control), **host),
        tmp_path,
        workers=2,
        threads=1,
        name="first",
    )
    try:
        second = ServerProcess(_env(tmp_path, "second", **host), tmp_path, workers=2, name="second")
        try:
            for server in (first, second):
                assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
            # The first answers on the socket it was given, about its own workers only.
            assert control.is_socket()
            with ControlClient(str(control), timeout=10) as client:
                shown = client.send_command("show workers")
            assert {w["pid"] for w in shown["workers"]} == _workers(first)
            # Neither took the per-user default that both would otherwise share.
            assert not (runtime / "gunicorn.ctl").exists()
            assert not (home / ".gunicorn").exists()
        finally:
            second.stop()
        assert requests.get(f"{first.url}/healthz", timeout=5).status_code == 200
        assert control.is_socket()
    finally:
        first.stop()
    assert not control.exists()


def test_the_metrics_folder_goes_with_the_server_even_after_a_worker_crash(tmp_path):
    metrics = tmp_path / "metrics"  # the server makes it, so the server removes it
    server = ServerProcess(
        _env(tmp_path, "crash", PROMETHEUS_MULTIPROC_DIR=str(metrics)),
        tmp_path,
        workers=2,
        threads=1,
        name="crash",
    )
    try:
        registered = requests.post(
            f"{server.url}/models/lin/versions",
            files={
                "artifact": ("m.joblib", joblib_bytes(fit_linear())),
                "metadata": (None, json.dumps({"format": "joblib"})),
            },
            timeout=60,
        )
        assert registered.status_code == 201, registered.text
        assert _predict(server) == 200
        assert list(metrics.glob("*.db"))
        before = wait_until(lambda: len(w := _workers(server)) == 2 and w, 30, what="2 workers")
        crashed = min(before)
        os.kill(crashed, signal.SIGKILL)
        wait_until(
            lambda: len(w := _workers(server)) == 2 and crashed not in w,
            timeout=60,
            what="a new worker in place of the crashed one",
        )
        for _ in range(6):  # new connections: both workers answer
            assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
            assert _predict(server) == 200
        scrape = requests.get(f"{server.url}/metrics", timeout=10)
        assert scrape.status_code == 200
        assert "modelreg_http_requests_total" in scrape.text
        assert metrics.is_dir()
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert not metrics.exists()


def test_a_given_metrics_folder_is_emptied_and_a_default_one_removed(tmp_path):
    given = tmp_path / "given"
    given.mkdir()
    (given / "stale_123.db").write_bytes(b"")
    (given / "README").write_text("the operator's folder\n")
    temp = tmp_path / "tmp"
    temp.mkdir()
    servers = [
        ServerProcess(
            _env(tmp_path, "with-folder", PROMETHEUS_MULTIPROC_DIR=str(given)),
            tmp_path,
            workers=1,
            name="given",
        ),
        # No folder named: one is made in the temp folder.
        ServerProcess(
            _env(tmp_path, "without-folder", PROMETHEUS_MULTIPROC_DIR="", TMPDIR=str(temp)),
            tmp_path,
            workers=1,
            name="default",
        ),
    ]
    try:
        for server in servers:
            assert requests.get(f"{server.url}/metrics", timeout=10).status_code == 200
        assert not (given / "stale_123.db").exists()  # emptied at start
        assert len(list(temp.glob("modelreg-metrics-*"))) == 1
    finally:
        for server in servers:
            server.stop()
    assert given.is_dir() and (given / "README").exists()
    assert not list(given.glob("*.db"))
    assert not list(temp.glob("modelreg-metrics-*"))
