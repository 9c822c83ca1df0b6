"""The gunicorn worker of `modelreg serve` (serving/transport/) over real sockets.

Predictions of cached models are answered on the worker's event loop; everything else runs
the Flask app in a pool thread. These tests hold both paths to the same answers under
concurrency, pipelining, partial requests and odd framing, and check that keep-alive
connections opened together are spread over the workers. The framing cases in detail are in
test_transport_conformance.py.
"""

from __future__ import annotations

import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, register_joblib, sqlite_env, wait_until

pytestmark = pytest.mark.slow

N_FEATURES = 4
MODEL = fit_linear(N_FEATURES, seed=3)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("worker")
    env = sqlite_env(
        tmp_path,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    )
    process = ServerProcess(env, tmp_path, workers=2, threads=1, name="worker")
    try:
        register_joblib(process.url, "lin", joblib_bytes(MODEL))
        yield process
    finally:
        process.stop()


def _rows(n: int, seed: int) -> list[list[float]]:
    return np.random.default_rng(seed).random((n, N_FEATURES)).round(6).tolist()


def _expected(rows: list[list[float]]) -> np.ndarray:
    return MODEL.predict(np.asarray(rows))


def _request(rows: list[list[float]], *, extra: str = "", path: str = "/models/lin/1/predict"):
    body = json.dumps({"instances": rows}).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode()
    return head + body


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 response with a Content-Length body; leftover bytes stay in `buffer`."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection before answering"
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers["content-length"])
    while len(buffer) < end + 4 + length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-body"
        buffer += chunk
    body = bytes(buffer[end + 4 : end + 4 + length])
    del buffer[: end + 4 + length]
    return status, headers, body


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _predictions(body: bytes) -> np.ndarray:
    return np.asarray(json.loads(body)["predictions"])


def test_concurrent_keep_alive_clients_each_get_their_own_rows(server):
    sizes = [1, 7, 100, 3_000]  # 3,000 rows is > 64 KiB: gunicorn's own path

    def client(seed: int) -> int:
        checked = 0
        with requests.Session() as session:
            for i in range(24):
                rows = _rows(sizes[(seed + i) % len(sizes)], seed * 1000 + i)
                answer = session.post(
                    f"{server.url}/models/lin/1/predict", json={"instances": rows}, timeout=60
                )
                assert answer.status_code == 200, answer.text
                assert answer.headers["X-Model-Version"] == "1"
                assert answer.headers["X-Content-Type-Options"] == "nosniff"
                np.testing.assert_allclose(answer.json()["predictions"], _expected(rows), rtol=1e-9)
                checked += 1
        return checked

    with ThreadPoolExecutor(12) as pool:
        assert sum(pool.map(client, range(12))) == 12 * 24


def test_pipelined_requests_are_answered_in_order(server):
    first, second, third = _rows(1, 1), _rows(5, 2), _rows(2, 3)
    with _connect(server) as sock:
        buffer = bytearray()
        sock.sendall(_request(_rows(1, 0)))  # makes the connection a kept-alive one
        assert _read_response(sock, buffer)[0] == 200
        # Three requests in one write, the last one cut in two.
        payload = _request(first) + _request(second) + _request(third)
        cut = len(payload) - 10
        sock.sendall(payload[:cut])
        time.sleep(0.2)
        sock.sendall(payload[cut:])
        for rows in (first, second, third):
            status, _, body = _read_response(sock, buffer)
            assert status == 200
            np.testing.assert_allclose(_predictions(body), _expected(rows), rtol=1e-9)


def test_a_request_arriving_in_pieces_is_answered(server):
    rows = _rows(3, 4)
    raw = _request(rows)
    with _connect(server) as sock:
        buffer = bytearray()
        for _ in range(2):  # a fresh connection, then a kept-alive one
            sock.sendall(raw[:40])
            time.sleep(0.15)
            sock.sendall(raw[40:-5])
            time.sleep(0.15)
            sock.sendall(raw[-5:])
            status, _, body = _read_response(sock, buffer)
            assert status == 200
            np.testing.assert_allclose(_predictions(body), _expected(rows), rtol=1e-9)


def test_connection_close_is_honoured(server):
    with _connect(server) as sock:
        buffer = bytearray()
        sock.sendall(_request(_rows(1, 5)))
        assert _read_response(sock, buffer)[0] == 200
        sock.sendall(_request(_rows(1, 6), extra="Connection: close\r\n"))
        status, headers, _ = _read_response(sock, buffer)
        assert status == 200 and headers["connection"] == "close"
        assert sock.recv(1024) == b""  # the server closed its end


def test_odd_framing_goes_through_gunicorn_with_the_same_answers(server):
    rows = _rows(4, 7)
    body = json.dumps({"instances": rows}).encode()
    chunked = (
        b"POST /models/lin/1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    with _connect(server) as sock:
        buffer = bytearray()
        for raw in (
            _request(rows),
            chunked,
            _request(rows, extra="X-Custom_Header: 1\r\n"),  # gunicorn drops it
            _request(rows, path="/models/lin/1/predict?x=1"),
        ):
            sock.sendall(raw)
            status, _, answer = _read_response(sock, buffer)
            assert status == 200, answer
            np.testing.assert_allclose(_predictions(answer), _expected(rows), rtol=1e-9)
        # Errors on the inline path are the app's problem+json, with the connection kept.
        sock.sendall(_request([[1.0, 2.0]]))
        status, headers, answer = _read_response(sock, buffer)
        assert status == 422 and headers["content-type"] == "application/problem+json"
        assert "instances[0]" in json.loads(answer)["errors"]
        sock.sendall(_request(rows))
        assert _read_response(sock, buffer)[0] == 200


def _workers(master: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                children.append(int(entry.name))
    return children


def _established_inodes(port: int, clients: set[int]) -> set[str]:
    """The server's ends of the connections from these client ports."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (
            int(fields[1].split(":")[1], 16) == port
            and int(fields[2].split(":")[1], 16) in clients
            and fields[3] == "01"
        ):
            inodes.add(fields[9])
    return inodes


def _connections_per_worker(server: ServerProcess, socks: list[socket.socket]) -> list[int]:
    # Only these connections: another one (the fixture's, still kept alive) does not count.
    inodes = _established_inodes(server.port, {sock.getsockname()[1] for sock in socks})
    counts = []
    for pid in _workers(server.process.pid):
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                held += 1
        counts.append(held)
    return counts


def test_connections_opened_together_are_spread_over_the_workers(server):
    # A load balancer's pool or a load generator opens its connections at once; with plain
    # gthread they often all landed in one worker. The spread is a race against a short
    # pause, so a busy test machine gets a few attempts.
    spreads = []
    for _ in range(4):
        socks = [_connect(server) for _ in range(8)]
        try:
            for sock in socks:
                sock.sendall(_request(_rows(1, 8)))
            for sock in socks:
                assert _read_response(sock, bytearray())[0] == 200
            counts = wait_until(
                lambda socks=socks: (
                    (c := _connections_per_worker(server, socks)) and sum(c) == 8 and c
                ),
                timeout=10,
                what="8 connections held by the workers",
            )
            spreads.append(sorted(counts))
        finally:
            for sock in socks:
                sock.close()
        if min(spreads[-1]) >= 3:
            break
        time.sleep(0.5)
    assert min(spreads[-1]) >= 3, spreads


def test_framing_the_loop_cannot_follow_is_refused_by_gunicorn(server):
    body = json.dumps({"instances": _rows(1, 9)}).encode()
    for extra in (
        f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n",
        f"Content-Length: {len(body)}\r\nContent-Length: {len(body) + 1}\r\n",
        "Transfer-Encoding: gzip\r\n",
    ):
        head = (
            f"POST /models/lin/1/predict HTTP/1.1\r\nHost: t\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n"
        ).encode()
        with _connect(server) as sock:
            sock.sendall(head + body)
            answer = b""
            while data := sock.recv(65536):
                answer += data  # read until the server closes
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 600 and status != 408, answer[:300]
        assert answer.count(b"HTTP/1.1 ") == 1, answer[:600]


def test_a_pipelined_request_after_a_chunked_one_is_answered(server):
    rows = _rows(2, 10)
    body = json.dumps({"instances": rows}).encode()
    chunked = (
        b"POST /models/lin/1/predict HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    with _connect(server) as sock:
        buffer = bytearray()
        sock.sendall(chunked + _request(rows) + chunked)
        for _ in range(3):
            status, _, answer = _read_response(sock, buffer)
            assert status == 200, answer
            np.testing.assert_allclose(_predictions(answer), _expected(rows), rtol=1e-9)
