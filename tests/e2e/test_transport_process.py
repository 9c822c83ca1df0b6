"""The serve worker's process model against a real server: streamed answers under flow
control, a graceful reload (HUP) while clients keep predicting, and max_requests restarts
with gunicorn's access log covering both paths."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, env_strings, free_port, modelreg_cli, wait_until

pytestmark = pytest.mark.slow

WIDE = fit_linear(150_000, seed=2)  # a ~1.2 MB artifact: a download of many pieces
SMALL = fit_linear(3, seed=5)


def _register(server: ServerProcess, name: str, model) -> None:
    answer = requests.post(
        f"{server.url}/models/{name}/versions",
        files={
            "artifact": ("m.joblib", joblib_bytes(model)),
            "metadata": (None, json.dumps({"format": "joblib"})),
        },
        timeout=120,
    )
    assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("transport-process")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
        "RESPONSE_BUFFER_BYTES": str(64 * 1024),  # a download is many waits for the reader
    }
    process = ServerProcess(env, tmp_path, workers=2, threads=2, name="process")
    try:
        _register(process, "wide", WIDE)
        _register(process, "lin", SMALL)
        yield process
    finally:
        process.stop()


def _workers(server: ServerProcess) -> set[int]:
    pid = server.process.pid
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_a_slow_reader_gets_the_whole_download_and_stalls_nobody(server):
    head = requests.head(f"{server.url}/models/wide/versions/1/artifact", timeout=30)
    digest = head.headers["ETag"].strip('"')
    size = int(head.headers["Content-Length"])
    assert size > 1024**2
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /models/wide/versions/1/artifact HTTP/1.1\r\nHost: t\r\n\r\n")
    received = bytearray()
    slowest = 0.0
    with requests.Session() as other:
        while True:
            chunk = sock.recv(32 * 1024)
            if not chunk:
                break
            received += chunk
            head_end = received.find(b"\r\n\r\n")
            if head_end >= 0 and len(received) - head_end - 4 >= size:
                break
            time.sleep(0.005)  # ~6 MB/s at most: the server waits for this reader
            if len(received) % (256 * 1024) < 32 * 1024:
                started = time.monotonic()
                answer = other.post(
                    f"{server.url}/models/lin/1/predict",
                    json={"instances": [[1, 2, 3]]},
                    timeout=10,
                )
                assert answer.status_code == 200
                slowest = max(slowest, time.monotonic() - started)
    sock.close()
    head_end = received.index(b"\r\n\r\n")
    body = bytes(received[head_end + 4 :])
    assert received.startswith(b"HTTP/1.1 200 ")
    assert hashlib.sha256(body).hexdigest() == digest and len(body) == size
    assert slowest < 1.0, slowest


def test_a_reload_drops_no_request(server):
    before = _workers(server)
    stop = threading.Event()
    outcomes: list[int | str] = []

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    answer = session.post(
                        f"{server.url}/models/lin/1/predict",
                        json={"instances": [[1.0, 2.0, 3.0]]},
                        timeout=30,
                    )
                    outcomes.append(answer.status_code)
                    np.testing.assert_allclose(
                        answer.json()["predictions"], SMALL.predict([[1.0, 2.0, 3.0]]), rtol=1e-9
                    )
                except requests.RequestException as error:
                    outcomes.append(repr(error))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        server.process.send_signal(signal.SIGHUP)  # new workers, then the old ones stop
        wait_until(
            lambda: (now := _workers(server)) and not (now & before) and len(now) == 2,
            timeout=60,
            what="the workers to be replaced",
        )
        time.sleep(1.0)  # and a moment on the new workers
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    failures = [o for o in outcomes if o != 200]
    assert not failures, failures[:5]
    assert len(outcomes) > 50


RUN_GUNICORN = """
import sys
from manage import create_app
from serving.gunicorn_app import run_gunicorn
run_gunicorn(create_app, host="127.0.0.1", port=int(sys.argv[1]), workers=1, threads=2,
             extra={"max_requests": 20, "accesslog": "-"})
"""


def test_max_requests_restarts_the_worker_without_dropping_requests_and_logs_access(tmp_path):
    env = env_strings(
        {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
            "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "AUTH_DISABLED": True,
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        }
    )
    modelreg_cli("db", "upgrade", env=env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", RUN_GUNICORN, str(port)],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
        )
    try:

        def up() -> bool:
            try:
                return requests.get(f"{url}/healthz", timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=60, what="the server to start")
        answer = requests.post(
            f"{url}/models/lin/versions",
            files={
                "artifact": ("m.joblib", joblib_bytes(SMALL)),
                "metadata": (None, json.dumps({"format": "joblib"})),
            },
            timeout=60,
        )
        assert answer.status_code == 201, answer.text
        pids = set()
        statuses = []
        with requests.Session() as session:
            for i in range(70):
                if i % 3:
                    answer = session.post(
                        f"{url}/models/lin/1/predict", json={"instances": [[1, 2, 3]]}, timeout=30
                    )
                else:
                    answer = session.get(f"{url}/healthz", timeout=30)
                statuses.append(answer.status_code)
                pids.update(
                    int(p)
                    for p in Path(f"/proc/{process.pid}/task/{process.pid}/children")
                    .read_text()
                    .split()
                )
        assert set(statuses) == {200}, statuses
        assert len(pids) >= 3, pids  # restarted after every 20 requests, on both paths
        text = log_path.read_text(errors="replace")
        assert "Autorestarting worker after current request." in text
        assert '"POST /models/lin/1/predict HTTP/1.1" 200' in text  # answered on the loop
        assert '"GET /healthz HTTP/1.1" 200' in text  # answered by a thread
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
