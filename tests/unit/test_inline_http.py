"""The worker's strict HTTP/1.1 reader and writer (serving/inline_http.py), on raw bytes.

A request the inline path cannot handle exactly as gunicorn would must be declined (None), so
that gunicorn parses it; one it accepts must give the app the environ gunicorn would build and
the client a well-framed response.
"""

from __future__ import annotations

import io
import json
import time
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from http.client import HTTPResponse
from typing import Any

import flask
import pytest

from serving.inline_http import (
    MAX_HEADERS,
    SECURITY_HEADERS,
    InlineRequest,
    build_environ,
    call_app,
    error_response,
    http_date,
    parse_request,
)

SUFFIXES = (b"/predict", b"/infer")
BODY = b'{"instances": [[1.0, 2.0, 3.0]]}'
CLIENT = ("10.1.2.3", 54321)
SERVER = ("127.0.0.1", 8080)


def respond(app, environ, keep_alive):
    """call_app's response bytes (the keep-alive decision is checked where it matters)."""
    return call_app(app, environ, keep_alive)[0]


def raw(
    body: bytes = BODY,
    *,
    target: bytes = b"/models/m/1/predict",
    method: bytes = b"POST",
    version: bytes = b"HTTP/1.1",
    headers: list[bytes] | None = None,
    length: bool = True,
) -> bytes:
    """A request as a client sends it; `headers` are whole lines added after Host."""
    lines = [method + b" " + target + b" " + version, b"Host: localhost:8080"]
    lines += [b"Content-Type: application/json"]
    if length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    lines += headers or []
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def parsed(data: bytes) -> InlineRequest:
    request = parse_request(data, SUFFIXES)
    assert request is not None, data
    return request


def environ_for(data: bytes, **kwargs: Any) -> dict[str, Any]:
    options = {"client": CLIENT, "server": SERVER, "multiprocess": True, **kwargs}
    return build_environ(parsed(data), **options)


class _Socket:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def read_response(data: bytes) -> tuple[HTTPResponse, bytes]:
    """Parse a raw response the way a client does; asserts the framing is exact."""
    response = HTTPResponse(_Socket(data), method="POST")  # type: ignore[arg-type]
    response.begin()
    body = response.read()
    head_size = data.index(b"\r\n\r\n") + 4
    assert head_size + len(body) == len(data), "bytes after the announced body"
    return response, body


def head_lines(data: bytes) -> list[bytes]:
    return data[: data.index(b"\r\n\r\n")].split(b"\r\n")


# ---- parse_request: what is accepted ------------------------------------------------------


def test_a_complete_plain_post_parses():
    data = raw(headers=[b"X-Request-ID: abc", b"ACCEPT:  */* "])
    request = parsed(data)
    assert request.target == b"/models/m/1/predict"
    assert request.body == BODY
    assert request.size == len(data)
    assert request.close is False
    assert request.headers == [
        (b"host", b"localhost:8080"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"x-request-id", b"abc"),
        (b"accept", b"*/*"),  # names lower-cased, values stripped of spaces and tabs
    ]


def test_the_size_is_the_head_plus_the_body():
    data = raw()
    assert parsed(data).size == data.index(b"\r\n\r\n") + 4 + len(BODY)


def test_other_suffixes_and_a_query_after_the_suffix_are_accepted():
    assert parsed(raw(target=b"/v2/models/m/infer")).target == b"/v2/models/m/infer"
    request = parsed(raw(target=b"/models/m/1/predict?debug=1&x=%20"))
    assert request.target == b"/models/m/1/predict?debug=1&x=%20"


def test_without_content_length_the_body_is_empty():
    data = raw(b"", length=False)
    request = parsed(data)
    assert request.body == b""
    assert request.size == len(data)
    assert not any(name == b"content-length" for name, _ in request.headers)


def test_a_zero_content_length_is_an_empty_body():
    assert parsed(raw(b"")).body == b""


def test_trailing_bytes_without_content_length_are_not_the_body():
    data = raw(b"", length=False) + b"POST /next"
    request = parsed(data)
    assert request.body == b""
    assert request.size == len(data) - len(b"POST /next")


def test_pipelined_requests_parse_one_at_a_time():
    first = raw(BODY)
    second = raw(b'{"instances": [[9]]}', target=b"/models/other/latest/predict")
    data = first + second
    request = parsed(data)
    assert request.size == len(first)
    assert request.body == BODY
    assert request.target == b"/models/m/1/predict"
    following = parsed(data[request.size :])
    assert following.size == len(second)
    assert following.body == b'{"instances": [[9]]}'
    assert following.target == b"/models/other/latest/predict"


def test_a_body_with_crlf_crlf_inside_is_read_by_length():
    body = b"\r\n\r\n" + BODY
    data = raw(body) + raw()
    request = parsed(data)
    assert request.body == body
    assert request.size == len(raw(body))


@pytest.mark.parametrize(
    "line",
    [
        b"Connection: close",
        b"Connection: Close",
        b"connection: CLOSE",
        b"Connection: keep-alive, close",
        b"Connection: TE,close",
        b"Connection:close ",
    ],
)
def test_connection_close_asks_to_close(line):
    assert parsed(raw(headers=[line])).close is True


@pytest.mark.parametrize("line", [b"Connection: keep-alive", b"Connection: closed", b"X-A: close"])
def test_other_connection_values_keep_the_connection(line):
    assert parsed(raw(headers=[line])).close is False


def test_exactly_the_header_limit_is_accepted():
    extra = [f"X-H{i}: {i}".encode() for i in range(MAX_HEADERS - 3)]  # + Host, type, length
    assert len(parsed(raw(headers=extra)).headers) == MAX_HEADERS


def test_obs_text_in_a_value_is_accepted():
    request = parsed(raw(headers=[b"X-Name: caf\xe9\tbar"]))
    assert (b"x-name", b"caf\xe9\tbar") in request.headers


# ---- parse_request: what is declined ------------------------------------------------------


def test_an_incomplete_body_is_declined():
    data = raw()
    assert parse_request(data[:-1], SUFFIXES) is None
    assert parse_request(data[: data.index(b"\r\n\r\n") + 4], SUFFIXES) is None


def test_incomplete_headers_are_declined():
    data = raw()
    head_end = data.index(b"\r\n\r\n")
    for cut in (10, head_end, head_end + 2, head_end + 3):
        assert parse_request(data[:cut], SUFFIXES) is None, cut
    assert parse_request(b"", SUFFIXES) is None


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw(method=b"GET"), id="GET"),
        pytest.param(raw(method=b"post"), id="lower-case method"),
        pytest.param(raw(method=b"PUT"), id="PUT"),
        pytest.param(raw(version=b"HTTP/1.0"), id="HTTP/1.0"),
        pytest.param(raw(version=b"HTTP/2.0"), id="HTTP/2.0"),
        pytest.param(raw(version=b"http/1.1"), id="lower-case version"),
        pytest.param(raw(target=b"http://localhost/models/m/1/predict"), id="absolute-form"),
        pytest.param(raw(target=b"*"), id="asterisk-form"),
        pytest.param(raw(target=b"models/m/1/predict"), id="no leading slash"),
        pytest.param(raw(target=b"/models/m/1/versions"), id="other suffix"),
        pytest.param(raw(target=b"/models/m/1/predict/"), id="trailing slash"),
        pytest.param(raw(target=b"/models/m/1/predict#top"), id="fragment"),
        pytest.param(raw(target=b"/models/m/1/predict.json"), id="suffix inside"),
        pytest.param(raw(target=b"/a?x=/predict"), id="suffix only in the query"),
        pytest.param(
            b"POST  /models/m/1/predict HTTP/1.1\r\nContent-Length: 0\r\n\r\n", id="two spaces"
        ),
        pytest.param(b"POST /models/m/1/predict\r\nContent-Length: 0\r\n\r\n", id="no version"),
        pytest.param(
            raw(b"", length=False, headers=[b"Transfer-Encoding: chunked"]) + b"0\r\n\r\n",
            id="chunked",
        ),
        pytest.param(raw(headers=[b"Transfer-Encoding: identity"]), id="any transfer-encoding"),
        pytest.param(raw(headers=[b"Expect: 100-continue"]), id="expect"),
        pytest.param(raw(headers=[b"Upgrade: websocket"]), id="upgrade header"),
        pytest.param(raw(headers=[b"Connection: upgrade"]), id="connection upgrade"),
        pytest.param(raw(headers=[b"Connection: keep-alive, Upgrade"]), id="upgrade in a list"),
        pytest.param(
            raw(headers=[b"Content-Length: " + str(len(BODY)).encode()]),
            id="duplicate content-length (same value)",
        ),
        pytest.param(raw(headers=[b"content-length: 3"]), id="duplicate content-length"),
        pytest.param(raw(b"", length=False, headers=[b"Content-Length: 1e3"]), id="cl not digit"),
        pytest.param(raw(b"", length=False, headers=[b"Content-Length: -1"]), id="cl negative"),
        pytest.param(raw(b"", length=False, headers=[b"Content-Length: +0"]), id="cl plus sign"),
        pytest.param(raw(b"", length=False, headers=[b"Content-Length: 0x0"]), id="cl hex"),
        pytest.param(raw(b"", length=False, headers=[b"Content-Length: 1, 1"]), id="cl list"),
        pytest.param(raw(b"", length=False, headers=[b"Content-Length:"]), id="cl empty"),
        pytest.param(raw(headers=[b"X_Forwarded_For: 1.2.3.4"]), id="underscore in name"),
        pytest.param(raw(headers=[b"X Bad: 1"]), id="space in name"),
        pytest.param(raw(headers=[b"X-Bad : 1"]), id="space before colon"),
        pytest.param(raw(headers=[b"X-B@d: 1"]), id="invalid character in name"),
        pytest.param(raw(headers=[b"X-Caf\xe9: 1"]), id="non-ascii name"),
        pytest.param(raw(headers=[b": no name"]), id="empty name"),
        pytest.param(raw(headers=[b"NoColonHere"]), id="no colon"),
        pytest.param(raw(headers=[b"X-A: one", b" two"]), id="obs-fold with space"),
        pytest.param(raw(headers=[b"X-A: one", b"\ttwo"]), id="obs-fold with tab"),
        pytest.param(raw(headers=[b"X-A: a\x00b"]), id="NUL in a value"),
        pytest.param(raw(headers=[b"X-A: a\x01b"]), id="control character in a value"),
        pytest.param(raw(headers=[b"X-A: a\x7fb"]), id="DEL in a value"),
        pytest.param(raw(headers=[b"X-A: a\rb"]), id="bare CR in a value"),
        pytest.param(raw(headers=[b"X-A: a\nX-B: b"]), id="bare LF line ending"),
        pytest.param(
            raw(headers=[f"X-H{i}: {i}".encode() for i in range(MAX_HEADERS - 2)]),
            id="more than 100 headers",
        ),
    ],
)
def test_anything_but_a_plain_request_is_declined(data):
    assert parse_request(data, SUFFIXES) is None


# ---- build_environ --------------------------------------------------------------------------


def test_the_environ_has_the_wsgi_and_cgi_keys():
    environ = environ_for(raw())
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is True
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.input_terminated"] is True
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["SERVER_SOFTWARE"].startswith("gunicorn")
    assert environ_for(raw(), multiprocess=False)["wsgi.multiprocess"] is False


def test_the_input_holds_exactly_the_body():
    environ = environ_for(raw() + raw(b"NEXT"))
    assert environ["wsgi.input"].read() == BODY
    assert environ["CONTENT_LENGTH"] == str(len(BODY))
    assert environ["CONTENT_TYPE"] == "application/json"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ


def test_no_content_length_gives_an_empty_input():
    environ = environ_for(raw(b"", length=False))
    assert environ["wsgi.input"].read() == b""
    # gunicorn leaves CONTENT_LENGTH out here; "0" means the same to a WSGI app (PEP 3333)
    assert environ["CONTENT_LENGTH"] == "0"


def test_the_path_is_percent_decoded_as_latin_1_like_gunicorn():
    target = b"/models/caf%C3%A9%20x%2Fy/1/predict?q=%C3%A9%20&a=b"
    environ = environ_for(raw(target=target))
    # the UTF-8 bytes of "é" as two latin-1 characters: what PEP 3333 servers give apps
    assert environ["PATH_INFO"] == "/models/caf\xc3\xa9 x/y/1/predict"
    assert environ["PATH_INFO"].encode("latin-1").decode("utf-8") == "/models/café x/y/1/predict"
    assert environ["QUERY_STRING"] == "q=%C3%A9%20&a=b"  # left encoded
    assert environ["RAW_URI"] == target.decode()


def test_without_a_query_the_query_string_is_empty():
    environ = environ_for(raw())
    assert environ["QUERY_STRING"] == ""
    assert environ["PATH_INFO"] == environ["RAW_URI"] == "/models/m/1/predict"


def test_headers_become_http_keys_and_repeated_ones_are_joined():
    environ = environ_for(
        raw(
            headers=[
                b"X-Request-ID: r-1",
                b"Accept-Encoding: gzip",
                b"X-Multi: a",
                b"x-multi: b",
                b"X-MULTI: c, d",
                b"Authorization: Bearer mr_secret",
                b"X-Latin: caf\xe9",
            ]
        )
    )
    assert environ["HTTP_HOST"] == "localhost:8080"
    assert environ["HTTP_X_REQUEST_ID"] == "r-1"
    assert environ["HTTP_ACCEPT_ENCODING"] == "gzip"
    assert environ["HTTP_X_MULTI"] == "a,b,c, d"
    assert environ["HTTP_AUTHORIZATION"] == "Bearer mr_secret"
    assert environ["HTTP_X_LATIN"] == "caf\xe9"


def test_client_and_server_addresses():
    environ = environ_for(raw())
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("10.1.2.3", "54321")
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("127.0.0.1", "8080")
    ipv6 = environ_for(raw(), client=("::1", 1, 0, 0), server=("::", 9000, 0, 0))
    assert (ipv6["REMOTE_ADDR"], ipv6["REMOTE_PORT"]) == ("::1", "1")
    # A 4-tuple (IPv6 address) is not a 2-tuple: only the host and port are used.
    assert ipv6["SERVER_NAME"] == "::"


def test_a_unix_socket_server_has_no_port():
    environ = environ_for(raw(), client="", server="/run/modelreg.sock")
    assert environ["SERVER_NAME"] == "/run/modelreg.sock"
    assert environ["SERVER_PORT"] == ""


def test_wsgi_errors_defaults_to_stderr_and_can_be_given():
    import sys

    assert environ_for(raw())["wsgi.errors"] is sys.stderr
    sink = io.StringIO()
    assert environ_for(raw(), errors=sink)["wsgi.errors"] is sink


def gunicorn_environ(data: bytes) -> dict[str, Any]:
    """What gunicorn itself builds for `data` (raises what its parser raises)."""
    from gunicorn.config import Config
    from gunicorn.http import wsgi
    from gunicorn.http.parser import RequestParser

    config = Config()
    request = next(RequestParser(config, iter([data]), CLIENT))
    return wsgi.create(request, None, CLIENT, SERVER, config)[1]


# Keys whose values are server objects, or the server's own choices (threads, version).
NOT_COMPARED = {
    "wsgi.input",
    "wsgi.errors",
    "wsgi.file_wrapper",
    "wsgi.early_hints",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "gunicorn.socket",
    "SERVER_SOFTWARE",
}


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw(), id="plain"),
        pytest.param(
            raw(
                target=b"/models/caf%C3%A9%20x/latest/predict?a=1&b=%20",
                headers=[b"X-A: 1", b"x-a: 2", b"Accept:  */* ", b"X-Latin: caf\xe9"],
            ),
            id="encoded path, query, repeated and latin-1 headers",
        ),
    ],
)
def test_the_environ_is_the_one_gunicorn_builds(data):
    ours = environ_for(data)
    theirs = gunicorn_environ(data)
    assert {k: v for k, v in ours.items() if k not in NOT_COMPARED} == {
        k: v for k, v in theirs.items() if k not in NOT_COMPARED and v is not None
    }


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(raw(target=b"/models/m\x7f/1/predict"), id="DEL in the target"),
        pytest.param(raw(target=b"/models/\xc3\xa9/1/predict"), id="raw UTF-8 in the target"),
        pytest.param(raw(target=b"/models/m\x00/1/predict"), id="NUL in the target"),
        pytest.param(raw(target=b"/models/m\t/1/predict"), id="tab in the target"),
        pytest.param(raw(target=b"/" + b"a" * 5000 + b"/predict"), id="request line > 4094"),
        pytest.param(raw(headers=[b"X-Big: " + b"a" * 9000]), id="header field > 8190"),
    ],
)
def test_requests_gunicorn_refuses_are_declined(data):
    from gunicorn.http.errors import ParseException

    with pytest.raises(ParseException):
        gunicorn_environ(data)
    assert parse_request(data, SUFFIXES) is None


# ---- call_app -------------------------------------------------------------------------------


class _Chunks:
    """A WSGI response iterable that records close()."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = 0

    def __iter__(self):
        return iter(self.chunks)

    def close(self) -> None:
        self.closed += 1


def chunked_app(headers: list[tuple[str, str]], chunks: list[bytes], status: str = "200 OK"):
    seen: dict[str, Any] = {}

    def app(environ, start_response):
        seen["environ"] = environ
        start_response(status, headers)
        seen["result"] = _Chunks(chunks)
        return seen["result"]

    return app, seen


def test_call_app_writes_one_framed_response():
    chunks = [b'{"a": ', b"", b"1", b"}"]
    app, seen = chunked_app([("Content-Type", "application/json"), ("X-Thing", "v")], chunks)
    environ = environ_for(raw())
    data = respond(app, environ, keep_alive=True)
    assert seen["environ"] is environ
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    lines = head_lines(data)
    assert b"Connection: keep-alive" in lines
    assert b"Server: gunicorn" in lines
    assert b"Content-Length: 8" in lines
    assert b"Content-Type: application/json" in lines
    assert b"X-Thing: v" in lines
    response, body = read_response(data)
    assert response.status == 200
    assert body == b'{"a": 1}'
    assert response.getheader("Content-Length") == "8"
    assert response.getheader("Connection") == "keep-alive"
    date = parsedate_to_datetime(response.getheader("Date"))
    assert abs(date.timestamp() - time.time()) < 5
    assert seen["result"].closed == 1


def test_call_app_closes_when_asked():
    app, _ = chunked_app([("Content-Type", "text/plain")], [b"bye"])
    data = respond(app, environ_for(raw()), keep_alive=False)
    lines = head_lines(data)
    assert b"Connection: close" in lines
    assert b"Connection: keep-alive" not in lines
    response, body = read_response(data)
    assert body == b"bye"
    assert response.will_close


def test_call_app_keeps_the_apps_content_length():
    app, seen = chunked_app(
        [("content-length", "5"), ("Content-Type", "text/plain")], [b"ab", b"cde"]
    )
    data = respond(app, environ_for(raw()), keep_alive=True)
    lengths = [line for line in head_lines(data) if line.lower().startswith(b"content-length:")]
    assert lengths == [b"content-length: 5"]
    assert read_response(data)[1] == b"abcde"
    assert seen["result"].closed == 1


def test_call_app_sends_the_status_and_an_empty_body():
    app, _ = chunked_app([], [], status="404 NOT FOUND")
    data = respond(app, environ_for(raw()), keep_alive=True)
    response, body = read_response(data)
    assert (response.status, response.reason) == (404, "NOT FOUND")
    assert body == b""
    assert b"Content-Length: 0" in head_lines(data)


def test_call_app_runs_generator_apps_that_start_late():
    def app(environ, start_response):
        start_response("201 Created", [("X-Late", "yes")])
        yield environ["wsgi.input"].read()
        yield b"!"

    response, body = read_response(respond(app, environ_for(raw()), keep_alive=True))
    assert response.status == 201
    assert response.getheader("X-Late") == "yes"
    assert body == BODY + b"!"


def test_call_app_closes_the_iterable_when_iteration_fails():
    class Failing(_Chunks):
        def __iter__(self):
            yield b"partial"
            raise RuntimeError("boom")

    failing = Failing([])

    def app(environ, start_response):
        start_response("200 OK", [])
        return failing

    with pytest.raises(RuntimeError, match="boom"):
        respond(app, environ_for(raw()), keep_alive=True)
    assert failing.closed == 1


def test_http_date_is_an_imf_fixdate_of_now():
    value = http_date().decode()
    assert value.endswith(" GMT")
    assert abs(parsedate_to_datetime(value).timestamp() - time.time()) < 5


def test_an_app_may_replace_its_status_with_exc_info_before_anything_is_sent():
    import sys

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("late failure")
        except RuntimeError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        return [b"failed"]

    response, body = read_response(respond(app, environ_for(raw()), keep_alive=True))
    assert (response.status, body) == (500, b"failed")


# ---- a real Flask app, from raw bytes to raw bytes ------------------------------------------


@pytest.fixture(scope="module")
def flask_app() -> flask.Flask:
    app = flask.Flask("inline-test")

    @app.post("/models/<name>/<ref>/predict")
    def predict(name: str, ref: str):
        payload = flask.request.get_json()
        return (
            flask.jsonify(
                name=name,
                ref=ref,
                sum=sum(sum(row) for row in payload["instances"]),
                request_id=flask.request.headers.get("X-Request-ID"),
                remote=flask.request.remote_addr,
                query=flask.request.args.to_dict(),
                multi=flask.request.headers.get("X-Multi"),
            ),
            200,
            {"X-Model-Version": "1"},
        )

    return app


def test_a_flask_app_answers_through_the_inline_path(flask_app):
    body = b'{"instances": [[1.5, 2.5], [3, 4]]}'
    data = raw(
        body,
        target=b"/models/caf%C3%A9/7/predict?trace=1",
        headers=[b"X-Request-ID: req-42", b"X-Multi: a", b"X-Multi: b"],
    )
    environ = environ_for(data)
    response, payload = read_response(respond(flask_app, environ, keep_alive=True))
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("X-Model-Version") == "1"
    assert response.getheader("Connection") == "keep-alive"
    assert int(response.getheader("Content-Length")) == len(payload)
    assert json.loads(payload) == {
        "name": "café",
        "ref": "7",
        "sum": 11.0,
        "request_id": "req-42",
        "remote": "10.1.2.3",
        "query": {"trace": "1"},
        "multi": "a,b",
    }


def test_flask_errors_are_framed_too(flask_app):
    data = raw(b"{not json", headers=[b"Connection: close"])
    request = parsed(data)
    assert request.close
    environ = build_environ(request, client=CLIENT, server=SERVER, multiprocess=False)
    response, payload = read_response(respond(flask_app, environ, keep_alive=not request.close))
    assert response.status == 400
    assert response.getheader("Connection") == "close"
    assert int(response.getheader("Content-Length")) == len(payload) > 0


def test_a_pipelined_pair_is_answered_in_order(flask_app):
    data = raw(b'{"instances": [[1]]}') + raw(
        b'{"instances": [[2]]}', target=b"/models/b/2/predict"
    )
    answers = []
    while data:
        request = parsed(data)
        environ = build_environ(request, client=CLIENT, server=SERVER, multiprocess=False)
        answers.append(json.loads(read_response(respond(flask_app, environ, True))[1]))
        data = data[request.size :]
    assert [(a["name"], a["ref"], a["sum"]) for a in answers] == [("m", "1", 1), ("b", "2", 2)]


# ---- error_response -------------------------------------------------------------------------


def test_error_response_is_a_closing_500_with_a_json_body():
    data = error_response()
    assert data.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    response, body = read_response(data)
    assert response.status == 500
    assert response.getheader("Connection") == "close"
    assert response.getheader("Content-Type") == "application/problem+json"
    assert int(response.getheader("Content-Length")) == len(body)
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
    }
    assert response.will_close
    for name, value in SECURITY_HEADERS:
        assert response.getheader(name) == value
    assert response.getheader("Cache-Control") == "no-store"


def test_error_response_takes_another_status_and_a_detail():
    data = error_response(HTTPStatus.REQUEST_TIMEOUT, "The request was not received in time.")
    response, body = read_response(data)
    assert response.status == 408
    assert json.loads(body) == {
        "type": "about:blank",
        "title": "Request Timeout",
        "status": 408,
        "detail": "The request was not received in time.",
    }


def test_the_app_may_close_the_connection_and_hop_by_hop_headers_are_dropped():
    def app(environ, start_response):
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/plain"),
                ("Connection", "close"),
                ("Transfer-Encoding", "chunked"),
                ("Keep-Alive", "timeout=5"),
            ],
        )
        return [b"ok"]

    data, keep_alive = call_app(app, environ_for(raw()), True)
    assert keep_alive is False
    head = data.split(b"\r\n\r\n", 1)[0].lower()
    assert head.count(b"connection:") == 1 and b"connection: close" in head
    assert b"transfer-encoding" not in head and b"keep-alive" not in head
    assert data.endswith(b"\r\n\r\nok") and b"content-length: 2" in head


def test_a_target_with_a_fragment_is_left_to_gunicorn():
    assert parse_request(raw(target=b"/models/m/1/predict?a#b"), SUFFIXES) is None
