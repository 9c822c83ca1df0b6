"""The bridge from the event loop to the Flask WSGI app, which runs in a pool thread.

The loop hands a thread the environ; the thread runs the app and hands the answer back in
as few pieces as it can (a small answer is one hand-off: head and body at once). Bodies the
loop had no room for arrive through `BodyStream`, answers leave through `ResponseSink`;
both are bounded, so a slow client or a fast uploader waits instead of filling memory, and
neither side ever blocks the loop.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes

from serving.transport.responses import BODYLESS_STATUSES, problem_response, render_head

FLUSH_EARLY = 64 * 1024  # an answer this large is sent before the app has finished it
FILE_BLOCK = 256 * 1024  # download blocks (werkzeug's own file wrapper reads 8 KiB)

ABORT = "abort"  # the last piece of an answer that cannot be finished: drop the connection

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Closed(BrokenPipeError):
    """The client is gone (or was dropped): nothing more can be sent or read."""


def connection_environ(
    *, client: Any, server: Any, multiprocess: bool, url_scheme: str = "http"
) -> dict[str, Any]:
    """The environ keys every request of one connection shares (copied per request)."""
    if isinstance(server, tuple):
        host, port = server[0], str(server[1])
    else:
        host, port = str(server), ""
    environ: dict[str, Any] = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "SERVER_SOFTWARE": "modelreg",
        "SCRIPT_NAME": "",
        "SERVER_NAME": host,
        "SERVER_PORT": port,
    }
    if isinstance(client, tuple):
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = client[0], str(client[1])
    return environ


_HEADER_KEYS: dict[bytes, str] = {}  # b"x-request-id" -> "HTTP_X_REQUEST_ID", for names seen
_MAX_HEADER_KEYS = 1024


def build_environ(
    base: dict[str, Any],
    method: str,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: Any,
    http_version: str,
) -> dict[str, Any]:
    """The WSGI environ gunicorn would build (header names with `_` are dropped, as
    gunicorn does: X_Forwarded_For must not pass for X-Forwarded-For)."""
    raw_path, _, query = target.partition(b"?")
    if b"#" in raw_path:
        raw_path = raw_path.partition(b"#")[0]
    if raw_path[:1] != b"/" and raw_path.startswith((b"http://", b"https://")):
        raw_path = b"/" + raw_path.split(b"/", 3)[3] if raw_path.count(b"/") >= 3 else b"/"
    environ = base.copy()
    environ["wsgi.input"] = body
    environ["REQUEST_METHOD"] = method
    environ["PATH_INFO"] = (unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path).decode(
        "latin-1"
    )
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["RAW_URI"] = target.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if http_version == "1.1" else f"HTTP/{http_version}"
    keys = _HEADER_KEYS
    for name, value in headers:
        key = keys.get(name)
        if key is None:
            if b"_" in name:
                continue
            if name == b"content-type":
                key = "CONTENT_TYPE"
            elif name == b"content-length":
                key = "CONTENT_LENGTH"
            else:
                key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            if len(keys) < _MAX_HEADER_KEYS:
                keys[name] = key
        text = value.decode("latin-1")
        if key in environ and key.startswith("HTTP_"):
            environ[key] = f"{environ[key]},{text}"
        else:
            environ[key] = text
    return environ


class FileWrapper:
    """wsgi.file_wrapper: a download in large blocks, so it takes few hand-offs."""

    def __init__(self, file: Any, block_size: int = FILE_BLOCK) -> None:
        self.file = file
        self.block_size = max(block_size, FILE_BLOCK)

    def __iter__(self) -> Iterator[bytes]:
        while block := self.file.read(self.block_size):
            yield block

    def close(self) -> None:
        close = getattr(self.file, "close", None)
        if close is not None:
            close()


class BodyStream(io.RawIOBase):
    """wsgi.input for a body larger than the loop's buffer: the loop feeds what arrives,
    the app's thread reads it (`read(n)` waits for n bytes, or the end, as a file's does:
    the fast path reads Content-Length bytes in one call). While more than `cap` bytes wait,
    the loop stops reading the socket (`wanted` tells it to start again once the thread has
    taken half)."""

    def __init__(self, first: list[bytes], cap: int, wanted: Callable[[], None]) -> None:
        super().__init__()
        self.cap = cap
        self._wanted = wanted
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[bytes] = deque(first)
        self.buffered = sum(len(chunk) for chunk in first)
        self.complete = False
        self.failed = False
        self.waiting = False  # the loop paused reading for this stream (set on the loop)

    # -- the loop's side -------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(data)
            self.buffered += len(data)
            self._cond.notify()

    def finish(self) -> None:
        with self._cond:
            self.complete = True
            self._cond.notify()

    def fail(self) -> None:
        """The client stopped sending (or left): the reader gets the end of the stream, and
        werkzeug answers the short body as a client error."""
        with self._cond:
            self.failed = True
            self._cond.notify()

    def pause_if_full(self) -> bool:
        """Whether the loop should stop reading: more than `cap` bytes wait for the thread
        (the thread then asks for more once it has taken half)."""
        with self._cond:
            if self.buffered > self.cap and not (self.complete or self.failed):
                self.waiting = True
            return self.waiting

    # -- the app's side --------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size is None or size < 0
        missing = 0 if wanted else size
        with self._cond:
            while wanted or missing > 0:
                if not self._chunks:
                    if self.complete or self.failed:
                        break
                    self._ask_for_more()
                    self._cond.wait()
                    continue
                chunk = self._chunks.popleft()
                if not wanted and len(chunk) > missing:
                    self._chunks.appendleft(chunk[missing:])
                    chunk = chunk[:missing]
                parts.append(chunk)
                self.buffered -= len(chunk)
                missing -= len(chunk)
            self._ask_for_more()
        return b"".join(parts)

    def _ask_for_more(self) -> None:
        """Under the lock: the loop paused reading for this stream and half is taken."""
        if self.waiting and self.buffered <= self.cap // 2:
            self.waiting = False
            self._wanted()  # a call_soon_threadsafe: it never waits on the loop

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        line = bytearray()
        while size is None or size < 0 or len(line) < size:
            byte = self.read(1)
            if not byte:
                break
            line += byte
            if byte == b"\n":
                break
        return bytes(line)


class ResponseSink:
    """Where the app's thread puts its answer: handed to the loop, at most `cap` bytes ahead
    of what the loop has passed to the socket, so a slow reader makes the app wait."""

    def __init__(self, loop: Any, deliver: Callable[[bytes, Any], None], cap: int):
        self._loop = loop
        self._deliver = deliver  # on the loop: (bytes, None | keep-alive when the answer ends)
        self._cap = cap
        self._cond = threading.Condition(threading.Lock())
        self._ahead = 0  # handed to the loop, not yet accepted by its transport
        self._writable = True
        self.failed = False
        # For the access log, read by the loop once the last piece is delivered.
        self.status = "500 Internal Server Error"
        self.headers: list[tuple[str, str]] = []
        self.sent = 0

    # -- the loop's side -------------------------------------------------------------------

    def accepted(self, count: int) -> None:
        with self._cond:
            self._ahead -= count
            self._cond.notify_all()

    def set_writable(self, writable: bool) -> None:
        with self._cond:
            self._writable = writable
            self._cond.notify_all()

    def fail(self) -> None:
        with self._cond:
            self.failed = True
            self._cond.notify_all()

    # -- the thread's side -----------------------------------------------------------------

    def send(self, data: bytes, keep_alive: bool | str | None = None) -> None:
        with self._cond:
            while not self.failed and (not self._writable or self._ahead > self._cap):
                self._cond.wait()
            if self.failed:
                raise Closed("the connection is closed")
            self._ahead += len(data)
            self.sent += len(data)
        self._loop.call_soon_threadsafe(self._deliver, data, keep_alive)


def run_app(
    app: WsgiApp,
    environ: dict[str, Any],
    sink: ResponseSink,
    keeps_alive: Callable[[], bool],
    log: Any,
) -> None:
    """Run the app for one request in a pool thread and send its answer through `sink`; the
    last piece carries whether the connection stays open (`keeps_alive` is asked when the
    head is made: a worker told to stop meanwhile answers with Connection: close)."""
    head_only = environ["REQUEST_METHOD"] == "HEAD"
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info is not None and sent_head:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [status, headers]
        sink.status, sink.headers = status, headers
        return _no_write

    sent_head = False
    chunked = False
    try:
        result = app(environ, start_response)
    except Exception:
        log.exception("Error handling request %s", environ.get("RAW_URI"))
        sink.send(_internal_error(), False)
        return
    try:
        pending: list[bytes] = []
        size = 0
        for piece in result:
            if not piece:
                continue
            if head_only:
                continue
            if sent_head:
                sink.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else bytes(piece))
                continue
            pending.append(bytes(piece))
            size += len(piece)
            if size >= FLUSH_EARLY:
                # A large or streamed answer: the head and what is there now go ahead.
                status, headers = started
                head, keep_alive, has_length = render_head(
                    status,
                    headers,
                    keeps_alive(),
                    chunked=environ["SERVER_PROTOCOL"] != "HTTP/1.0",
                )
                chunked = not has_length and keep_alive
                body = b"".join(pending)
                sink.send(head + (b"%x\r\n%s\r\n" % (len(body), body) if chunked else body))
                sent_head = True
                pending, size = [], 0
        if sent_head:
            sink.send(b"0\r\n\r\n" if chunked else b"", keep_alive)
            return
        status, headers = started
        body = b"".join(pending)
        code = int(status.split(" ", 1)[0])
        length = None if code in BODYLESS_STATUSES or head_only else len(body)
        head, keep_alive, _ = render_head(status, headers, keeps_alive(), length=length)
        if code in BODYLESS_STATUSES:
            body = b""
        sink.send(head + body, keep_alive)
    except Closed:
        pass
    except Exception:
        log.exception("Error handling request %s", environ.get("RAW_URI"))
        with contextlib.suppress(Closed):
            # Half an answer cannot be finished: the loop drops the connection.
            sink.send(b"", ABORT) if sent_head else sink.send(_internal_error(), False)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _no_write(data: bytes) -> None:
    raise NotImplementedError("the WSGI write() callable is not supported")


def _internal_error() -> bytes:
    return problem_response(
        HTTPStatus.INTERNAL_SERVER_ERROR, "The server failed to answer this request."
    )
