"""Requests the servers refuse before the app sees them (a request line too long, headers too
large or too many, a request line that is not HTTP) are answered as problem+json, like every
error of the app, by the gunicorn worker and by the development server alike."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.e2e.servers import ServerProcess

pytestmark = pytest.mark.slow

MANY_HEADERS = "".join(f"X-H{i}: v\r\n" for i in range(120))
REFUSED = {
    "uri-too-long": (f"GET /healthz?{'a' * 5000} HTTP/1.1\r\nHost: t\r\n\r\n", {414}),
    "header-too-large": (f"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {'b' * 9000}\r\n\r\n", {431}),
    # http.server counts more than 100 headers as a 431; gunicorn as a 400.
    "too-many-headers": (f"GET /healthz HTTP/1.1\r\nHost: t\r\n{MANY_HEADERS}\r\n", {400, 431}),
    "bad-request-line": ("NOT AN HTTP REQUEST LINE\r\nHost: t\r\n\r\n", {400}),
    "bad-version": ("GET /healthz HTTP/9.9x\r\nHost: t\r\n\r\n", {400, 505}),
}


@pytest.fixture(scope="module", params=["gunicorn", "development"])
def server(request, tmp_path_factory) -> Iterator[ServerProcess]:
    tmp_path = tmp_path_factory.mktemp(f"protocol-{request.param}")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
    }
    workers = 1 if request.param == "gunicorn" else 0
    process = ServerProcess(env, tmp_path, workers=workers, name=request.param)
    try:
        yield process
    finally:
        process.stop()


def _exchange(server: ServerProcess, payload: bytes) -> bytes:
    """Send `payload`, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(payload)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_requests_are_problem_json(server, case):
    request, statuses = REFUSED[case]
    head, _, body = _exchange(server, request.encode()).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert status in statuses, lines[0]
    assert headers["content-type"] == "application/problem+json"
    assert int(headers["content-length"]) == len(body)
    assert headers["x-content-type-options"] == "nosniff"
    problem = json.loads(body)
    assert problem["status"] == status
    assert problem["title"]
    assert problem["type"] == "about:blank"
