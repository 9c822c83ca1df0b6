"""Response heads and the transport's own problem+json answers (for requests the app never
sees: malformed, too large, too slow)."""

from __future__ import annotations

import json
import os
import time
from email.utils import formatdate
from http import HTTPStatus

from registry.answers import FIXED_HEADERS

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
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
BODYLESS_STATUSES = frozenset({204, 304})
# gunicorn's default limits, enforced by both servers (the development server imports them).
MAX_REQUEST_LINE = 4094
MAX_HEADERS = 100
MAX_FIELD = 8190


class _DateHeader:
    """The Date header line, formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._line = b""

    def __call__(self) -> bytes:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._line = b"Date: " + formatdate(now, usegmt=True).encode("latin-1") + b"\r\n"
        return self._line


date_line = _DateHeader()


def render_head(
    status: str,
    headers: list[tuple[str, str]],
    keep_alive: bool,
    *,
    length: int | None = None,
    chunked: bool = False,
) -> tuple[bytes, bool, bool]:
    """The head for the app's status and headers, framed by this server: (bytes, keep-alive,
    whether the app gave a Content-Length). `length` adds one when the app gave none."""
    lines = [f"HTTP/1.1 {status}\r\n"]
    has_length = False
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP:  # framing is the server's business, as in gunicorn
            if lower == "connection" and "close" in value.lower():
                keep_alive = False
            continue
        if lower == "content-length":
            has_length = True
        lines.append(f"{name}: {value}\r\n")
    if not has_length:
        if length is not None:
            lines.append(f"Content-Length: {length}\r\n")
        elif chunked:
            lines.append("Transfer-Encoding: chunked\r\n")
        else:
            keep_alive = False  # the end of the body is the end of the connection
    lines.append("Connection: keep-alive\r\n\r\n" if keep_alive else "Connection: close\r\n\r\n")
    head = "".join(lines).encode("latin-1")
    # The Date line goes after the status line, as every server sends it.
    cut = head.index(b"\n") + 1
    return head[:cut] + date_line() + head[cut:], keep_alive, has_length


_KEEP_ALIVE_END = b"Connection: keep-alive\r\n\r\n"
_CLOSE_END = b"Connection: close\r\n\r\n"


def render_own_head(status: str, headers: list[tuple[str, str]], keep_alive: bool) -> bytes:
    """The head of an answer the app gave from memory (the fast path): its headers hold
    their own Content-Length and never a hop-by-hop field, so none is looked for."""
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return b"".join(
        (
            f"HTTP/1.1 {status}\r\n".encode("latin-1"),
            date_line(),
            fields.encode("latin-1"),
            _KEEP_ALIVE_END if keep_alive else _CLOSE_END,
        )
    )


def problem_response(
    status: HTTPStatus, detail: str, errors: dict[str, str] | None = None
) -> bytes:
    """A problem+json answer that closes the connection, with the headers every answer has."""
    request_id = os.urandom(16).hex()
    problem: dict[str, object] = {
        "type": "about:blank",
        "title": status.phrase,
        "status": status.value,
        "detail": detail,
    }
    if errors:
        problem["errors"] = errors
    body = json.dumps(problem).encode()
    headers = [
        ("Content-Type", "application/problem+json"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        ("X-Request-ID", request_id),
        *FIXED_HEADERS,
    ]
    head, _, _ = render_head(f"{status.value} {status.phrase}", headers, False)
    return head + body


MAX_DETAIL = 300  # a refused request line may be echoed in the detail: keep it short


def error_response(
    status: HTTPStatus | int = HTTPStatus.INTERNAL_SERVER_ERROR,
    detail: str = "",
    *,
    server: str | None = None,
) -> bytes:
    """A problem+json answer that closes the connection, for errors outside the app (the
    development server names itself in `server`)."""
    status = HTTPStatus(status)
    answer = problem_response(status, (detail or status.description)[:MAX_DETAIL])
    if server is None:
        return answer
    cut = answer.index(b"\r\n") + 2
    return answer[:cut] + f"Server: {server}\r\n".encode("latin-1") + answer[cut:]
