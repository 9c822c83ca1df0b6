"""Strict HTTP/1.1 handling for one complete, small request the worker's event loop has read.

The worker's inline path (serving/worker.py) uses this for predict calls: the request line
and headers are parsed here, the WSGI environ built and the response made as one buffer,
skipping gunicorn's general parser and response writer (a third of a small request's cost).
Only plain requests qualify: HTTP/1.1, `POST`, an origin-form target, a Content-Length body,
header names that are tokens without underscores (gunicorn drops those), values without
control characters, no folding, no Transfer-Encoding or Expect. Anything else returns None
and the request goes through gunicorn untouched, which parses and answers it (or refuses it)
as usual.
"""

from __future__ import annotations

import io
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

from registry.answers import FIXED_HEADERS

TOKEN = re.compile(rb"[!#$%&'*+\-.^`|~0-9A-Za-z]+")
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
TARGET = re.compile(rb"/[\x21-\x22\x24-\x7e]*")  # visible ASCII, no fragment
# gunicorn's defaults (limit_request_fields, limit_request_line, limit_request_field_size)
MAX_HEADERS = 100
MAX_REQUEST_LINE = 4094
MAX_FIELD = 8190
# The headers every answer carries (registry/answers.py is stdlib-only: the gunicorn
# arbiter can load it with the worker class).
SECURITY_HEADERS = FIXED_HEADERS
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


@dataclass(frozen=True, slots=True)
class InlineRequest:
    target: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased, values stripped
    body: bytes
    size: int  # bytes of the whole request (head + body) in the buffer
    close: bool  # the client asked to close after this answer


def parse_request(data: bytes, suffixes: tuple[bytes, ...]) -> InlineRequest | None:
    """The request at the start of `data` if it is complete and plain, else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    if len(lines[0]) > MAX_REQUEST_LINE or len(lines) - 1 > MAX_HEADERS:
        return None
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"POST" or parts[2] != b"HTTP/1.1":
        return None
    target = parts[1]
    if not TARGET.fullmatch(target) or not target.split(b"?", 1)[0].endswith(suffixes):
        return None
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    close = False
    for line in lines[1:]:
        if len(line) > MAX_FIELD:
            return None
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.fullmatch(name) or b"_" in name:
            return None
        value = value.strip(b" \t")
        if not FIELD_VALUE.fullmatch(value):
            return None
        name = name.lower()
        if name in (b"transfer-encoding", b"expect", b"upgrade"):
            return None
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"upgrade" in tokens:
                return None
            close = close or b"close" in tokens
        headers.append((name, value))
    body_start = end + 4
    length = length or 0
    if len(data) < body_start + length:
        return None
    return InlineRequest(
        target, headers, data[body_start : body_start + length], body_start + length, close
    )


def build_environ(
    request: InlineRequest,
    *,
    client: Any,
    server: Any,
    multiprocess: bool,
    errors: Any = None,
) -> dict[str, Any]:
    """The WSGI environ gunicorn would build for this request (no proxy headers honoured:
    a prediction does not depend on the client's address or scheme)."""
    raw_path, _, query = request.target.partition(b"?")
    host, port = (server[0], str(server[1])) if isinstance(server, tuple) else (str(server), "")
    environ: dict[str, Any] = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": errors if errors is not None else sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": "gunicorn",
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(raw_path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": request.target.decode("latin-1"),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": host,
        "SERVER_PORT": port,
        "CONTENT_LENGTH": str(len(request.body)),
    }
    if isinstance(client, tuple):
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    for name, value in request.headers:
        text = value.decode("latin-1")
        if name == b"content-type":
            environ["CONTENT_TYPE"] = text
            continue
        if name == b"content-length":
            continue
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


class _DateHeader:
    """The Date header, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._value = formatdate(now, usegmt=True).encode("latin-1")
        return self._value


http_date = _DateHeader()


def call_app(
    app: Callable[..., Iterable[bytes]], environ: dict[str, Any], keep_alive: bool
) -> tuple[bytes, bool]:
    """Run the WSGI app; return the whole HTTP response, ready to send, and whether the
    connection stays open (the app may ask to close it)."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        # Nothing is sent before the app returns, so a later call (with exc_info, PEP 3333)
        # may always replace the status and headers.
        started[:] = [status, headers]
        return None  # the write() callable of WSGI 1.0; no view of ours uses it

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    status, headers = started
    return render_response(status, headers, body, keep_alive)


def render_response(
    status: str, headers: list[tuple[str, str]], body: bytes, keep_alive: bool
) -> tuple[bytes, bool]:
    """The whole HTTP response for a status, the app's headers and a body, and whether the
    connection stays open (the headers may ask to close it)."""
    lines = []
    has_length = False
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:  # framing is this server's business, as in gunicorn
            if lower == "connection" and "close" in value.lower():
                keep_alive = False
            continue
        if lower == "content-length":
            has_length = True
        lines.append(f"{name}: {value}".encode("latin-1"))
    if not has_length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    head = [
        b"HTTP/1.1 " + status.encode("latin-1"),
        b"Server: gunicorn",
        b"Date: " + http_date(),
        b"Connection: keep-alive" if keep_alive else b"Connection: close",
    ]
    return b"\r\n".join(head + lines) + b"\r\n\r\n" + body, keep_alive


def error_response(
    status: HTTPStatus | int = HTTPStatus.INTERNAL_SERVER_ERROR,
    detail: str = "",
    *,
    server: str = "gunicorn",
) -> bytes:
    """A problem+json answer that closes the connection, for errors outside the app."""
    status = HTTPStatus(status)
    problem: dict[str, Any] = {
        "type": "about:blank",
        "title": status.phrase,
        "status": status.value,
    }
    if detail:
        problem["detail"] = detail
    body = json.dumps(problem).encode()
    fixed = "".join(f"{name}: {value}\r\n" for name, value in SECURITY_HEADERS)
    return (
        f"HTTP/1.1 {status.value} {status.phrase}\r\nServer: {server}\r\n"
        f"Date: {http_date().decode()}\r\nConnection: close\r\n"
        f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n"
        f"{fixed}Cache-Control: no-store\r\n\r\n"
    ).encode() + body


MAX_DETAIL = 300  # a refused request line is echoed in gunicorn's message: keep it short


class ErrorSink:
    """A socket stand-in that keeps what gunicorn writes as an error answer (an HTML page), so
    the worker can send the same status as problem+json instead."""

    def __init__(self) -> None:
        self.data = bytearray()

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data

    def status(self) -> int | None:
        """The status of the captured answer, or None when nothing (or no HTTP) was written."""
        match = re.match(rb"HTTP/1\.[01] (\d{3}) ", self.data)
        return int(match.group(1)) if match else None
