"""The loop-to-thread bridge of the serve worker (serving/transport/wsgi.py, responses.py),
with a stand-in loop: bounded request bodies, answers framed as the app gave them."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from http import HTTPStatus

from serving.transport.responses import error_response, problem_response, render_head
from serving.transport.wsgi import (
    ABORT,
    BodyStream,
    FileWrapper,
    ResponseSink,
    build_environ,
    connection_environ,
    run_app,
)

LOG = logging.getLogger("test")


class Loop:
    """call_soon_threadsafe runs the callback at once and records what was delivered."""

    def __init__(self) -> None:
        self.pieces: list[tuple[bytes, object]] = []

    def call_soon_threadsafe(self, callback, *args) -> None:
        callback(*args)


def _sink(loop: Loop, cap: int = 1 << 20) -> ResponseSink:
    def deliver(data: bytes, end: object) -> None:
        loop.pieces.append((data, end))
        sink.accepted(len(data))

    sink = ResponseSink(loop, deliver, cap)
    return sink


def _answer(app, method: str = "GET", version: str = "1.1") -> tuple[bytes, object]:
    loop = Loop()
    base = connection_environ(client=("1.2.3.4", 5), server=("0.0.0.0", 80), multiprocess=True)
    environ = build_environ(base, method, b"/x", [(b"host", b"t")], io.BytesIO(b""), version)
    run_app(app, environ, _sink(loop), lambda: True, LOG)
    return b"".join(data for data, _ in loop.pieces), loop.pieces[-1][1]


def test_the_environ_is_gunicorns():
    base = connection_environ(
        client=("10.0.0.1", 4321), server=("127.0.0.1", 8080), multiprocess=True
    )
    headers = [
        (b"host", b"t"),
        (b"content-type", b"application/json"),
        (b"content-length", b"2"),
        (b"x-forwarded-for", b"1.1.1.1"),
        (b"x_forwarded_for", b"6.6.6.6"),  # dropped: it would pass for the one above
        (b"accept", b"a"),
        (b"accept", b"b"),
    ]
    environ = build_environ(base, "POST", b"/models/a%20b/1/predict?x=1#frag", headers, None, "1.1")
    assert environ["PATH_INFO"] == "/models/a b/1/predict"
    assert environ["QUERY_STRING"] == "x=1#frag"
    assert environ["CONTENT_TYPE"] == "application/json" and environ["CONTENT_LENGTH"] == "2"
    assert environ["HTTP_X_FORWARDED_FOR"] == "1.1.1.1"
    assert environ["HTTP_ACCEPT"] == "a,b"
    assert environ["REMOTE_ADDR"] == "10.0.0.1" and environ["SERVER_PORT"] == "8080"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1" and environ["wsgi.multiprocess"] is True
    absolute = build_environ(base, "GET", b"http://t/healthz", [], None, "1.0")
    assert absolute["PATH_INFO"] == "/healthz" and absolute["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "wsgi.input" not in base  # every request gets its own copy


def test_a_body_stream_reads_what_arrives_and_asks_for_more_once_half_is_taken():
    wanted = []
    stream = BodyStream([b"ab"], cap=4, wanted=lambda: wanted.append(1))
    stream.feed(b"cdef")
    assert stream.pause_if_full()  # 6 bytes wait, more than the cap: the loop stops reading
    got = []
    reader = threading.Thread(target=lambda: got.append(stream.read(8)))
    reader.start()
    time.sleep(0.05)
    assert wanted == [1] and reader.is_alive()  # took everything, waits for the rest
    stream.feed(b"gh")
    reader.join(timeout=5)
    assert got == [b"abcdefgh"]
    stream.feed(b"ij")
    stream.finish()
    assert stream.read() == b"ij" and stream.read(10) == b""
    assert not stream.pause_if_full()


def test_a_failed_body_stream_ends_short():
    stream = BodyStream([b"abc"], cap=10, wanted=lambda: None)
    threading.Timer(0.05, stream.fail).start()
    assert stream.read(10) == b"abc"  # werkzeug then answers the short body as a client error
    assert stream.readline() == b""


def test_a_small_answer_is_one_piece_with_its_length():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), ("Connection", "keep-alive")])
        return [b"hello", b" ", b"world"]

    data, end = _answer(app)
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b"hello world" and end is True
    assert b"Content-Length: 11" in head and b"Connection: keep-alive" in head
    assert head.count(b"Connection:") == 1  # the app's hop-by-hop header is the server's


def test_a_large_answer_without_a_length_is_chunked():
    piece = b"x" * 50_000

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        yield from (piece, piece, piece)

    data, end = _answer(app)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head and end is True
    decoded, rest = b"", body
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            break
        decoded += rest[:size]
        rest = rest[size + 2 :]
    assert decoded == piece * 3 and rest == b"\r\n"


def test_http_1_0_without_a_length_closes_after_the_body():
    def app(environ, start_response):
        start_response("200 OK", [])
        yield from (b"y" * 70_000, b"z")

    data, end = _answer(app, version="1.0")
    assert b"Connection: close" in data and end is False
    assert data.endswith(b"y" * 10 + b"z")


def test_head_and_204_answers_have_no_body():
    def head_app(environ, start_response):
        start_response("200 OK", [("Content-Length", "42")])
        return [b"ignored"]

    data, _ = _answer(head_app, method="HEAD")
    assert data.endswith(b"\r\n\r\n") and b"Content-Length: 42" in data

    def empty(environ, start_response):
        start_response("204 No Content", [])
        return []

    data, _ = _answer(empty)
    assert data.endswith(b"\r\n\r\n") and b"Content-Length" not in data


def test_an_app_failure_is_a_closing_500_problem():
    def broken(environ, start_response):
        raise RuntimeError("boom")

    data, end = _answer(broken)
    assert data.startswith(b"HTTP/1.1 500 ") and end is False
    assert json.loads(data.partition(b"\r\n\r\n")[2])["status"] == 500


def test_a_failure_mid_answer_drops_the_connection():
    def half(environ, start_response):
        start_response("200 OK", [])
        yield b"a" * 70_000
        raise RuntimeError("boom")

    data, end = _answer(half)
    assert data.startswith(b"HTTP/1.1 200 ") and end == ABORT


def test_a_sink_waits_for_the_loop_and_fails_when_the_client_is_gone():
    loop = Loop()
    delivered = []
    sink = ResponseSink(loop, lambda data, end: delivered.append(data), cap=4)
    sink.send(b"12345")  # more than the cap is ahead: the next send waits
    errors: list[Exception] = []

    def send_more() -> None:
        try:
            sink.send(b"6")
        except BrokenPipeError as error:
            errors.append(error)

    waiting = threading.Thread(target=send_more)
    waiting.start()
    time.sleep(0.05)
    assert waiting.is_alive()
    sink.fail()
    waiting.join(timeout=5)
    assert not waiting.is_alive() and delivered == [b"12345"]
    assert len(errors) == 1


def test_file_wrapper_reads_large_blocks():
    blocks = list(FileWrapper(io.BytesIO(b"a" * 600_000), 8192))
    assert [len(b) for b in blocks] == [262_144, 262_144, 75_712]


def test_refusals_are_closing_problems_with_the_fixed_headers():
    data = problem_response(HTTPStatus.REQUEST_URI_TOO_LONG, "too long", {"target": "too long"})
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 Request-URI Too Long\r\nDate: ")
    for line in (b"Connection: close", b"X-Content-Type-Options: nosniff", b"X-Request-ID: "):
        assert line in head
    assert json.loads(body)["errors"] == {"target": "too long"}
    assert error_response(HTTPStatus.REQUEST_TIMEOUT).startswith(b"HTTP/1.1 408 ")


def test_render_head_closes_when_the_app_asks():
    head, keep_alive, has_length = render_head("200 OK", [("Connection", "close")], True, length=0)
    assert not keep_alive and not has_length and b"Connection: close" in head
