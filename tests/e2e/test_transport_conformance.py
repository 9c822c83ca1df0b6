"""HTTP/1.1 conformance of the serve worker (serving/transport/) over raw sockets.

These were the home-made parser's cases (pipelining, partial requests, odd framing, request
smuggling); they now run against a real `modelreg serve --workers 2` on the uvloop + httptools
worker. A request is either answered exactly once, as the plain one would be, or refused with
a 4xx problem+json naming what is wrong, and the connection then closes: never a second
answer from bytes that were not a request.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time

import numpy as np
import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, register_joblib, sqlite_env, wait_until

pytestmark = pytest.mark.slow

N_FEATURES = 3
MODEL = fit_linear(N_FEATURES, seed=11)
ROWS = [[0.5, 1.5, -2.0]]
BODY = json.dumps({"instances": ROWS}).encode()
PREDICT = b"/models/lin/1/predict"
MAX_ARTIFACT = 200_000
STATUS_LINE = re.compile(
    rb"(?:^|\n)HTTP/1\.1 \d{3} "
)  # keeps the transport's own body limit small enough to test


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("transport")
    env = sqlite_env(
        tmp_path,
        MAX_ARTIFACT_BYTES=str(MAX_ARTIFACT),
        MAX_METADATA_BYTES="10000",
        MAX_PREDICT_BODY_BYTES="100000",
        # Bodies stay on the loop until complete: the transport's own limit applies first.
        REQUEST_BUFFER_BYTES=str(4 * 1024**2),
    )
    process = ServerProcess(env, tmp_path, workers=2, threads=2, name="transport")
    try:
        register_joblib(process.url, "lin", joblib_bytes(MODEL))
        yield process
    finally:
        process.stop()


def raw(
    body: bytes = BODY,
    *,
    target: bytes = PREDICT,
    method: bytes = b"POST",
    version: bytes = b"HTTP/1.1",
    headers: list[bytes] | None = None,
    length: bool = True,
) -> bytes:
    lines = [method + b" " + target + b" " + version, b"Host: t", b"Content-Type: application/json"]
    if length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines += headers or []
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def chunked(body: bytes = BODY, *, trailer: bytes = b"") -> bytes:
    return (
        raw(b"", length=False, headers=[b"Transfer-Encoding: chunked"])
        + b"%x\r\n" % len(body)
        + body
        + b"\r\n0\r\n"
        + trailer
        + b"\r\n"
    )


def _connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer; got {bytes(buffer)[:300]!r}"
        buffer += chunk
    end = buffer.index(b"\r\n\r\n")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(buffer) < end + 4 + length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        buffer += chunk
    body = bytes(buffer[end + 4 : end + 4 + length])
    del buffer[: end + 4 + length]
    return status, headers, body


def _until_closed(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    received = b""
    try:
        while data := sock.recv(65536):
            received += data
    except ConnectionResetError:
        pass
    return received


def _exchange(server: ServerProcess, payload: bytes) -> bytes:
    """Everything the server sends for `payload` until it closes (sends close after it)."""
    with _connect(server) as sock:
        sock.sendall(payload)
        return _until_closed(sock)


def _assert_prediction(body: bytes, rows=ROWS) -> None:
    np.testing.assert_allclose(
        json.loads(body)["predictions"], MODEL.predict(np.asarray(rows)), rtol=1e-9
    )


def _assert_refused(answer: bytes, status: int, *, field: str | None = None) -> dict:
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:300]
    assert len(STATUS_LINE.findall(answer)) == 1, answer  # nothing after it is answered
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/problem+json" in head
    assert b"Connection: close" in head
    assert b"X-Content-Type-Options: nosniff" in head
    problem = json.loads(body)
    assert problem["status"] == status and problem["detail"]
    if field is not None:
        assert field in problem["errors"], problem
    return problem


# ---- answered ----------------------------------------------------------------------------


def test_a_plain_predict_is_answered_on_the_loop_with_the_apps_headers(server):
    with _connect(server) as sock:
        buffer = bytearray()
        sock.sendall(raw(headers=[b"X-Request-ID: abc-1"]))
        status, headers, body = _read_response(sock, buffer)
    assert status == 200
    _assert_prediction(body)
    assert headers["x-model-version"] == "1"
    assert headers["x-request-id"] == "abc-1"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["connection"] == "keep-alive"
    assert headers["date"].endswith("GMT")


def test_pipelined_requests_of_both_paths_are_answered_in_order(server):
    other = [[3.0, 2.0, 1.0]]
    health = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    payload = raw() + health + chunked(json.dumps({"instances": other}).encode()) + raw()
    with _connect(server) as sock:
        buffer = bytearray()
        cut = len(payload) - 7
        sock.sendall(payload[:cut])  # the last request cut short, the rest later
        time.sleep(0.2)
        sock.sendall(payload[cut:])
        answers = [_read_response(sock, buffer) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    _assert_prediction(answers[0][2])
    assert json.loads(answers[1][2])["status"] == "ok"
    _assert_prediction(answers[2][2], other)
    _assert_prediction(answers[3][2])


def test_a_request_in_single_bytes_is_answered(server):
    payload = raw()
    with _connect(server) as sock:
        for index in range(len(payload)):
            sock.send(payload[index : index + 1])
        status, _, body = _read_response(sock, bytearray())
    assert status == 200
    _assert_prediction(body)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\r\n" + raw(), id="an empty line before the request"),
        pytest.param(chunked(trailer=b"X-Checksum: 1\r\n"), id="chunked with a trailer"),
        pytest.param(
            raw(b"", length=False, headers=[b"Transfer-Encoding: chunked"])
            + b"5;ext=1\r\n"
            + BODY[:5]
            + b"\r\n%x\r\n" % (len(BODY) - 5)
            + BODY[5:]
            + b"\r\n0\r\n\r\n",
            id="chunks with an extension",
        ),
        pytest.param(raw(headers=[b"X-Odd_Name: 1"]), id="an underscore header (dropped)"),
        pytest.param(raw(target=PREDICT + b"?x=1"), id="a query string (Flask answers)"),
        pytest.param(raw(headers=[b"X-A: caf\xe9"]), id="obs-text in a value"),
        pytest.param(raw(headers=[b"X-A:\tone\t"]), id="tabs around a value"),
        pytest.param(raw(method=b"POST", target=b"http://t" + PREDICT), id="absolute-form"),
        # RFC 9112 3: a server may split the request line on whitespace runs; the target
        # is the same either way, so nothing can be smuggled through it.
        pytest.param(raw().replace(b"POST ", b"POST  ", 1), id="two spaces in the request line"),
    ],
)
def test_odd_but_valid_framing_is_answered_like_the_plain_request(server, payload):
    with _connect(server) as sock:
        buffer = bytearray()
        sock.sendall(payload + raw())  # and the connection still works after it
        for _ in range(2):
            status, _, body = _read_response(sock, buffer)
            assert status == 200, body
            _assert_prediction(body)


def test_http_1_0_is_answered_and_closed(server):
    answer = _exchange(server, raw(version=b"HTTP/1.0"))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in answer
    _assert_prediction(answer.partition(b"\r\n\r\n")[2])


def test_connection_close_is_honoured(server):
    answer = _exchange(server, raw(headers=[b"Connection: close"]) + raw())
    assert len(STATUS_LINE.findall(answer)) == 1 and b"Connection: close" in answer


# ---- refused -----------------------------------------------------------------------------

SMUGGLING = [
    pytest.param(raw(headers=[b"Transfer-Encoding: chunked"]) + b"0\r\n\r\n", id="CL+TE"),
    pytest.param(
        raw(b"", length=False, headers=[b"Transfer-Encoding: chunked", b"Content-Length: 5"])
        + b"0\r\n\r\n",
        id="TE+CL",
    ),
    pytest.param(raw(headers=[b"Content-Length: 3"]), id="duplicate content-length"),
    pytest.param(
        raw(headers=[b"Content-Length: " + str(len(BODY)).encode()]),
        id="duplicate content-length (same value)",
    ),
    pytest.param(raw(b"", length=False, headers=[b"Content-Length: 1e3"]), id="cl not digits"),
    pytest.param(raw(b"", length=False, headers=[b"Content-Length: -1"]), id="cl negative"),
    pytest.param(raw(b"", length=False, headers=[b"Content-Length: +0"]), id="cl plus sign"),
    pytest.param(raw(b"", length=False, headers=[b"Content-Length: 0x0"]), id="cl hex"),
    pytest.param(raw(b"", length=False, headers=[b"Content-Length: 1, 1"]), id="cl list"),
    pytest.param(raw(b"", length=False, headers=[b"Content-Length:"]), id="cl empty"),
    pytest.param(raw(headers=[b"X-A: one", b" two"]), id="obs-fold with space"),
    pytest.param(raw(headers=[b"X-A: one", b"\ttwo"]), id="obs-fold with tab"),
    pytest.param(raw(headers=[b"X-A: a\nX-B: b"]), id="bare LF line ending"),
    pytest.param(raw().replace(b"\r\n", b"\n"), id="bare LF everywhere"),
    pytest.param(raw(headers=[b"X-A: a\rb"]), id="bare CR in a value"),
    pytest.param(raw(headers=[b"X-A: a\x00b"]), id="NUL in a value"),
    pytest.param(raw(headers=[b"X-A: a\x01b"]), id="control character in a value"),
    pytest.param(raw(headers=[b"X Bad: 1"]), id="space in a name"),
    pytest.param(raw(headers=[b"X-Bad : 1"]), id="space before the colon"),
    pytest.param(raw(headers=[b"X-B@d: 1"]), id="invalid character in a name"),
    pytest.param(raw(headers=[b": no name"]), id="empty name"),
    pytest.param(raw(headers=[b"NoColonHere"]), id="no colon"),
    pytest.param(raw(b"", length=False, headers=[b"Transfer-Encoding: gzip"]) + BODY, id="TE gzip"),
    pytest.param(
        raw(b"", length=False, headers=[b"Transfer-Encoding: chunked, gzip"]) + b"0\r\n\r\n",
        id="TE chunked then gzip",
    ),
    pytest.param(
        raw(b"", length=False, headers=[b"Transfer-Encoding: chunked", b"Transfer-Encoding: x"])
        + b"0\r\n\r\n",
        id="TE twice",
    ),
    pytest.param(b"POST /models/lin/1/predict\r\nHost: t\r\n\r\n", id="no version"),
    pytest.param(b"GARBAGE\r\n\r\n", id="no request line"),
    pytest.param(raw(method=b"P@ST"), id="invalid method"),
]

BAD_CHUNKS = [
    b"zz\r\nab\r\n0\r\n\r\n",  # not hex
    b"-1\r\nab\r\n0\r\n\r\n",
    b"\r\nabc\r\n0\r\n\r\n",  # empty size
    b"3\r\nabcXY0\r\n\r\n",  # data not followed by CRLF
    b"1234567890123456789\r\n",  # too large
    b"3 \r\nabc\r\n0\r\n\r\n",  # space after the size
]


@pytest.mark.parametrize("payload", SMUGGLING)
def test_smuggling_attempts_and_malformed_heads_are_refused(server, payload):
    # A plain request right behind must not be answered: after a framing error the
    # server cannot know where it starts.
    _assert_refused(_exchange(server, payload + raw()), 400)


def test_other_http_versions_are_refused(server):
    _assert_refused(_exchange(server, raw(version=b"HTTP/2.0") + raw()), 505, field="version")
    no_version = b"POST /models/lin/1/predict\r\nHost: t\r\n\r\n"  # llhttp: HTTP/0.9
    _assert_refused(_exchange(server, no_version + raw()), 400, field="request line")
    no_host = raw().replace(b"Host: t\r\n", b"")
    _assert_refused(_exchange(server, no_host), 400, field="Host")


def test_a_trailer_never_becomes_a_header(server):
    # A trailer field arrives after the head: a proxy that checked the headers never saw it.
    payload = chunked(
        json.dumps({"instances": ROWS, "method": "predict"}).encode(),
        trailer=b"Content-Type: text/plain\r\n",
    )
    status, _, body = _read_response(_connect_and_send(server, payload), bytearray())
    assert status == 200
    _assert_prediction(body)


def _connect_and_send(server: ServerProcess, payload: bytes) -> socket.socket:
    sock = _connect(server)
    sock.sendall(payload)
    return sock


@pytest.mark.parametrize("chunks", BAD_CHUNKS, ids=lambda c: repr(c[:12]))
def test_invalid_chunk_sizes_are_refused(server, chunks):
    payload = raw(b"", length=False, headers=[b"Transfer-Encoding: chunked"]) + chunks
    _assert_refused(_exchange(server, payload + raw()), 400)


def test_a_refusal_comes_after_the_answers_to_the_requests_before_it(server):
    answer = _exchange(server, raw() + raw(headers=[b"Content-Length: 3"]) + raw())
    first, _, rest = answer.partition(b"HTTP/1.1 400 ")
    assert first.startswith(b"HTTP/1.1 200 ") and len(STATUS_LINE.findall(first)) == 1
    assert not STATUS_LINE.findall(rest)


def test_limits_are_problems_naming_the_part(server):
    long_target = b"GET /healthz?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
    _assert_refused(_exchange(server, long_target), 414, field="target")
    big = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    _assert_refused(_exchange(server, big), 431, field="X-Big")
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(120))
    _assert_refused(
        _exchange(server, b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + b"\r\n"),
        431,
        field="headers",
    )
    declared = raw(b"", length=False, headers=[b"Content-Length: 50000000"])
    problem = _assert_refused(_exchange(server, declared), 413, field="body")
    assert "bytes" in problem["detail"]


def test_a_chunked_body_past_the_limit_is_refused(server):
    limit = MAX_ARTIFACT + 10_000 + 1024**2
    with _connect(server) as sock:
        sock.sendall(raw(b"", length=False, headers=[b"Transfer-Encoding: chunked"]))
        piece = b"%x\r\n%s\r\n" % (65536, b"1" * 65536)
        sent = 0
        try:
            while sent <= limit + 65536:
                sock.sendall(piece)
                sent += 65536
        except OSError:
            pass  # the server may close while we still send
        answer = _until_closed(sock)
    _assert_refused(answer, 413, field="body")


def test_an_unsupported_expectation_is_refused(server):
    _assert_refused(_exchange(server, raw(headers=[b"Expect: teapot"])), 417, field="Expect")


def test_an_upgrade_is_answered_as_plain_http_and_closed(server):
    upgrade = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    answer = _exchange(server, upgrade + b"\x81\x05hello")
    assert answer.startswith(b"HTTP/1.1 200 ") and len(STATUS_LINE.findall(answer)) == 1


# ---- process model -----------------------------------------------------------------------


def test_sigterm_finishes_the_request_in_flight(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'r.db'}",
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
        "REQUEST_BUFFER_BYTES": "1000",
    }
    server = ServerProcess(env, tmp_path, workers=1, threads=2, name="stopping")
    try:
        registered = requests.post(
            f"{server.url}/models/lin/versions",
            files={
                "artifact": ("m.joblib", joblib_bytes(MODEL)),
                "metadata": (None, json.dumps({"format": "joblib"})),
            },
            timeout=60,
        )
        assert registered.status_code == 201
        rows = np.random.default_rng(0).random((400, N_FEATURES)).round(5).tolist()
        body = json.dumps({"instances": rows}).encode()
        idle = _connect(server)
        idle.sendall(raw())
        assert _read_response(idle, bytearray())[0] == 200
        sock = _connect(server)
        sock.sendall(raw(body)[: len(body) // 2])  # in flight: half the body is in
        time.sleep(0.3)
        os.kill(server.process.pid, signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(raw(body)[len(body) // 2 :])
        status, headers, answer = _read_response(sock, bytearray())
        assert status == 200 and headers["connection"] == "close"
        _assert_prediction(answer, rows)
        assert _until_closed(idle) == b""  # the idle keep-alive connection is closed
        server.process.wait(timeout=20)
        assert server.process.returncode == 0
    finally:
        server.stop()


def test_a_slow_loris_does_not_hold_the_worker(server):
    stop = threading.Event()

    def loris() -> None:
        with _connect(server) as sock:
            sock.sendall(b"POST /models/lin/1/predict HTTP/1.1\r\n")
            while not stop.is_set():
                sock.sendall(b"X-Slow: 1\r\n")
                stop.wait(0.5)

    threads = [threading.Thread(target=loris, daemon=True) for _ in range(20)]
    for thread in threads:
        thread.start()
    try:
        with requests.Session() as session:
            for _ in range(50):
                answer = session.post(
                    f"{server.url}/models/lin/1/predict", json={"instances": ROWS}, timeout=5
                )
                assert answer.status_code == 200
    finally:
        stop.set()
        wait_until(lambda: not any(thread.is_alive() for thread in threads), timeout=15)
