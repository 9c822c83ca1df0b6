"""Uploads through a real server: 500 MB with flat memory, and a client that hangs up halfway."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, wait_until

pytestmark = pytest.mark.slow

SIZE = 500 * 1024 * 1024
CHUNK = 4 * 1024 * 1024
BOUNDARY = "modelreg-test-boundary"


def _worker_pids(server: ServerProcess) -> list[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
    return [int(pid) for pid in children.read_text().split()]


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _write_multipart(path: Path, artifact_head: bytes, padding: int) -> str:
    """A multipart body on disk: metadata, then an artifact of head + zero padding (a joblib
    pickle stops at its STOP opcode, so the padding is carried but never deserialized)."""
    digest = hashlib.sha256(artifact_head)
    with open(path, "wb") as body:
        body.write(
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
                f"{json.dumps({'format': 'joblib'})}\r\n"
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="artifact"; '
                'filename="big.joblib"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
        )
        body.write(artifact_head)
        zeros = bytes(CHUNK)
        left = padding
        while left:
            piece = zeros[: min(CHUNK, left)]
            body.write(piece)
            digest.update(piece)
            left -= len(piece)
        body.write(f"\r\n--{BOUNDARY}--\r\n".encode())
    return digest.hexdigest()


@pytest.fixture
def server(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
        "ACCELERATE": "off",
        "LOG_LEVEL": "WARNING",
    }
    process = ServerProcess(env, tmp_path, workers=1, threads=2, name="upload")
    yield process
    process.stop()


def test_500_mb_upload_registers_with_flat_memory(server, tmp_path):
    head = joblib_bytes(fit_linear())
    warm = requests.post(
        f"{server.url}/models/big/versions",
        files={
            "artifact": ("w.joblib", head),
            "metadata": (None, json.dumps({"format": "joblib"})),
        },
        timeout=60,
    )
    assert warm.status_code == 201  # every code path of a registration has run once
    (worker,) = _worker_pids(server)
    before = _peak_rss_kib(worker)

    body_path = tmp_path / "body.bin"
    sha256 = _write_multipart(body_path, head, SIZE - len(head))
    with open(body_path, "rb") as body:
        response = requests.post(
            f"{server.url}/models/big/versions",
            data=body,
            timeout=600,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
    body_path.unlink()
    assert response.status_code == 201, response.text
    record = response.json()
    assert (record["size"], record["sha256"]) == (SIZE, sha256)
    growth_mib = (_peak_rss_kib(worker) - before) / 1024
    print(f"peak RSS growth for a 500 MB upload: {growth_mib:.1f} MiB")
    assert growth_mib < 64, f"peak RSS grew by {growth_mib:.1f} MiB for a 500 MB upload"
    stored = tmp_path / "artifacts" / "sha256" / sha256[:2] / sha256
    assert stored.stat().st_size == SIZE
    predicted = requests.post(
        f"{server.url}/models/big/2/predict", json={"instances": [[1, 2, 3]]}, timeout=120
    )
    assert predicted.status_code == 200


def test_client_disconnect_mid_upload_leaves_nothing(server, tmp_path):
    head = joblib_bytes(fit_linear())
    preamble = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        "{}\r\n"
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="artifact"; '
        'filename="m.joblib"\r\n\r\n'
    ).encode()
    declared = len(preamble) + 50 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /models/gone/versions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
                f"Content-Length: {declared}\r\n\r\n"
            ).encode()
            + preamble
            + head
        )
        sock.sendall(os.urandom(8 * 1024 * 1024))
        time.sleep(0.5)  # the server is now streaming the part into a staged file
    staging = tmp_path / "artifacts" / ".staging"
    wait_until(
        lambda: not list(staging.glob("*.part")),
        timeout=10,
        what="the staged upload to be discarded",
    )
    assert requests.get(f"{server.url}/models/gone", timeout=30).status_code == 404
    assert not list((tmp_path / "artifacts").glob("sha256/*/*"))
    # The server is still healthy and takes the next upload.
    again = requests.post(
        f"{server.url}/models/gone/versions",
        files={
            "artifact": ("m.joblib", head),
            "metadata": (None, json.dumps({"format": "joblib"})),
        },
        timeout=60,
    )
    assert again.status_code == 201 and again.json()["version"] == 1
