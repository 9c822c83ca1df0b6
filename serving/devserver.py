"""`modelreg serve` without --workers: werkzeug's development server, with modelreg's limits.

This is the server Flask's `app.run` starts: one process, one thread per connection (no upper
bound), one request per connection, none of gunicorn's process management. Left as it is, a
connection that trickles its headers or stops reading its answer keeps its thread forever, and
it accepts request lines and header lines of 64 KiB. Here each connection gets the same bounds
as under the gunicorn worker: REQUEST_HEADER_TIMEOUT for the request line and headers,
REQUEST_BODY_TIMEOUT between two pieces of the body, RESPONSE_WRITE_TIMEOUT for each write of
the answer, gunicorn's request-line and header-field limits (414 and 431), and a 408 for a
request that did not arrive in time; these and http.server's own refusals (a bad request
line) are problem+json, as under gunicorn. Body limits and security headers are the app's
own, the same under both servers. Production still belongs on `--workers` (docs/deployment.md).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import socket
import time
from http import HTTPStatus
from typing import Any

from werkzeug.serving import WSGIRequestHandler, run_simple

from serving.inline_http import (
    MAX_DETAIL,
    MAX_FIELD,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    error_response,
)

LINGER_SECONDS = 2.0  # after the answer starts, how long werkzeug may drain an unread body


class _Reader(io.RawIOBase):
    """The connection's read side; every read waits at most what the handler allows."""

    def __init__(self, sock: socket.socket, handler: GuardedRequestHandler) -> None:
        self._sock = sock
        self._handler = handler

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(self._handler.read_timeout())
        try:
            count = self._sock.recv_into(buffer)
        except TimeoutError:
            self._handler.timed_out = True
            raise
        self._handler.received += count
        return count


class _Writer(io.RawIOBase):
    """The connection's write side; each write must be taken within the write timeout."""

    def __init__(self, sock: socket.socket, handler: GuardedRequestHandler) -> None:
        self._sock = sock
        self._handler = handler

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._handler.answering(bytes(data[:12]))
        self._sock.settimeout(self._handler.write_timeout)
        self._sock.sendall(data)
        return len(data)


class GuardedRequestHandler(WSGIRequestHandler):
    header_timeout = 10.0
    body_timeout = 30.0
    write_timeout = 30.0
    # With modelreg's access log on, werkzeug's own line per request only repeats it.
    quiet_requests = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if not self.quiet_requests:
            super().log_request(code, size)

    def setup(self) -> None:
        super().setup()
        self.rfile = io.BufferedReader(_Reader(self.connection, self))
        self.wfile = _Writer(self.connection, self)

    # -- deadlines ----------------------------------------------------------------------

    def read_timeout(self) -> float:
        if self._deadline is None:
            return self.body_timeout
        left = self._deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise TimeoutError("the request was not received completely in time")
        return left

    def answering(self, start: bytes) -> None:
        """The answer is being written: werkzeug may drain an unread body for a moment."""
        if not self._answered and not start.startswith(b"HTTP/1.1 1"):
            self._answered = True
            self._deadline = time.monotonic() + LINGER_SECONDS

    def handle_one_request(self) -> None:
        self._deadline: float | None = time.monotonic() + self.header_timeout
        self._answered = False
        self.timed_out = False
        self.received = 0
        super().handle_one_request()
        if self.timed_out:
            self.close_connection = True
            if self.received and not self._answered:
                with contextlib.suppress(OSError):
                    self.wfile.write(
                        error_response(
                            HTTPStatus.REQUEST_TIMEOUT,
                            "The request was not received completely in time.",
                            server=self.version_string(),
                        )
                    )

    # -- gunicorn's limits --------------------------------------------------------------

    def parse_request(self) -> bool:
        if len(self.raw_requestline.rstrip(b"\r\n")) > MAX_REQUEST_LINE:
            self.requestline = self.request_version = self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return False
        if not super().parse_request():
            return False
        fields = self.headers.items()
        if len(fields) > MAX_HEADERS or any(
            len(name) + len(value) + 2 > MAX_FIELD for name, value in fields
        ):
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            return False
        self._deadline = None  # the head is in: from now on, the body's idle timeout
        return True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's errors (a bad request line, 414, 431, ...) as problem+json, like the
        app's own, instead of its HTML page."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        status = HTTPStatus(code)
        detail = (message or explain or status.description)[:MAX_DETAIL]
        answer = error_response(status, detail, server=self.version_string())
        if self.command == "HEAD":
            answer = answer[: answer.index(b"\r\n\r\n") + 4]
        self.log_request(code)
        with contextlib.suppress(OSError):
            self.wfile.write(answer)

    def handle_expect_100(self) -> bool:
        return True  # werkzeug sends the 100 Continue itself (run_wsgi); one is enough


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class _PlainText(logging.Filter):
    """werkzeug colours its lines for a terminal; in our log lines (JSON) that is noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _ANSI.sub("", record.getMessage())
        record.args = None
        return True


def run_development_server(app: Any, *, host: str, port: int, config: Any) -> None:
    handler = type(
        "ModelregRequestHandler",
        (GuardedRequestHandler,),
        {
            "header_timeout": config.REQUEST_HEADER_TIMEOUT,
            "body_timeout": config.REQUEST_BODY_TIMEOUT,
            "write_timeout": config.RESPONSE_WRITE_TIMEOUT,
            "quiet_requests": config.ACCESS_LOG,
        },
    )
    # werkzeug logs each request (and its start-up warning) at INFO unless told otherwise.
    werkzeug_log = logging.getLogger("werkzeug")
    werkzeug_log.setLevel(config.LOG_LEVEL.upper())
    if not any(isinstance(f, _PlainText) for f in werkzeug_log.filters):
        werkzeug_log.addFilter(_PlainText())
    run_simple(host, port, app, threaded=True, use_reloader=False, request_handler=handler)
