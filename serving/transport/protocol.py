"""One HTTP/1.1 connection on the worker's event loop, parsed by httptools (llhttp).

The loop reads every request itself, within REQUEST_HEADER_TIMEOUT for the head and
REQUEST_BODY_TIMEOUT between two pieces of the body, so no client holds a thread by sending
slowly. A complete request the app's fast path can answer from memory (a cached model) is
answered right here: the model call is microseconds of CPU, less than a thread hand-off.
Anything else goes to a pool thread (wsgi.py) once its body is in, or once REQUEST_BUFFER_BYTES
of it is (the thread then reads the rest as it arrives, and the loop stops reading while the
thread is behind). Answers are written by the loop; while more than RESPONSE_BUFFER_BYTES wait
for the client, the loop reads no further request from it (pipelined requests wait in the
kernel) and a thread streaming an answer waits; a client that takes nothing of its answer for
RESPONSE_WRITE_TIMEOUT is dropped. Pipelined requests are answered in order, one at a time.

llhttp is strict by default (CL+TE, duplicate or malformed Content-Length, obs-fold, bare LF,
bad chunk sizes are parse errors); what it lets through and gunicorn refused is checked in
`on_header`. Every refusal is a problem+json answer that closes the connection.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

import httptools

from registry.answers import Answer, status_line
from serving.transport.responses import CONTINUE, problem_response, render_own_head
from serving.transport.wsgi import (
    ABORT,
    BodyStream,
    ResponseSink,
    WsgiApp,
    build_environ,
    connection_environ,
    run_app,
)

LINGER_SECONDS = 2.0  # after the last answer, how long a closing connection is drained
LINGER_BYTES = 64 * 1024
READ_SLACK = 256 * 1024  # one read's worth past the head limit before it is counted as over
_FRAMING = frozenset({b"host", b"content-length", b"expect"})  # what the transport reads

# What a connection is waiting for (the deadline that applies)
IDLE = 0  # the next request on a kept-alive connection
HEAD = 1  # the rest of a request's head
BODY = 2  # the next piece of a request's body
NONE = 3  # an answer (no read deadline)
LINGER = 4  # the client to finish after our side closed


@dataclass(frozen=True, slots=True)
class Settings:
    header_timeout: float
    body_timeout: float
    write_timeout: float
    keepalive: float  # seconds an idle connection is kept; 0: one request per connection
    request_buffer: int
    response_buffer: int
    max_body: int
    max_request_line: int
    max_headers: int
    max_header_field: int
    multiprocess: bool

    @property
    def max_head(self) -> int:
        return self.max_request_line + self.max_headers * (self.max_header_field + 4) + 4


# The whole answer from memory, or None (the app answers in a thread). Its headers include
# Content-Length and no hop-by-hop field: the loop sends them as they are.
MemoryAnswerer = Callable[[dict[str, Any]], Answer | None]


class Host(Protocol):
    """What a connection needs of its worker."""

    loop: asyncio.AbstractEventLoop
    settings: Settings
    wsgi: WsgiApp  # the whole WSGI app (the fast path first, then Flask)
    app_after_memory: WsgiApp  # the app for a request the loop already tried from memory
    from_memory: MemoryAnswerer | None
    log: Any

    @property
    def accepting_requests(self) -> bool: ...  # False: answer with Connection: close

    def submit(self, function: Callable[..., None], *args: Any) -> None: ...

    def request_answered(
        self,
        environ: dict[str, Any],
        status: str,
        sent: int,
        started: float,
        headers: list[tuple[str, str]],
    ) -> None: ...

    def connection_closed(self, connection: HttpProtocol) -> None: ...


class Reject(Exception):
    """A request refused while it is parsed (raised from a parser callback)."""

    def __init__(self, status: HTTPStatus, detail: str, field: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


class Request:
    __slots__ = (
        "chunks",
        "complete",
        "continue_sent",
        "expect_continue",
        "framing",
        "headers",
        "keep_alive",
        "length",
        "method",
        "received",
        "refused",
        "started",
        "stream",
        "target",
        "version",
    )

    def __init__(self, target: bytes) -> None:
        self.target = target
        self.method = ""
        self.version = "1.1"
        self.headers: list[tuple[bytes, bytes]] = []
        self.framing: list[tuple[bytes, bytes]] = []  # Host, Content-Length and Expect
        self.chunks: list[bytes] = []
        self.received = 0  # body bytes so far
        self.length: int | None = None
        self.stream: BodyStream | None = None
        self.complete = False
        self.keep_alive = True
        self.expect_continue = False
        self.continue_sent = False
        self.refused: bytes | None = None  # the answer, when the transport refuses it
        self.started = time.perf_counter()


class HttpProtocol(asyncio.Protocol):
    def __init__(self, host: Host, client: Any, server: Any) -> None:
        self.host = host
        self.settings = host.settings
        self.client = client
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self._base_environ = connection_environ(
            client=client, server=server, multiprocess=self.settings.multiprocess
        )
        self.transport: asyncio.Transport | None = None
        self.requests: deque[Request] = deque()  # heads parsed, answers not yet given
        self.parsing: Request | None = None  # the request the parser is in
        self._url = b""
        self._head_raw = 0  # bytes received while a head was incomplete
        self._fields = 0
        self.refusal: bytes | None = None  # a parse error, answered after what came before
        self.busy = False  # a thread answers the first request
        self.sink: ResponseSink | None = None
        self._busy_environ: dict[str, Any] = {}
        self.closing = False  # the last answer is given: close once it is sent
        self.closed = False
        self.eof = False
        self.reading_paused = False
        self.writing_paused = False
        self.served = 0
        self.bytes_seen = 0
        self.waiting_for = HEAD
        self.deadline = time.monotonic() + self.settings.header_timeout
        self._out_size = 0
        self._out_progress = 0.0
        self._lingered = 0
        self._rejection: Reject | None = None

    # -- asyncio's callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=self.settings.response_buffer)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.closing:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self._drop()
            return
        self.bytes_seen += len(data)
        head_open = self.parsing is not None and not self.parsing.method
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade_refused()
        except httptools.HttpParserError as error:
            # A callback's own refusal comes back as HttpParserCallbackError, without it.
            reject, self._rejection = self._rejection, None
            if reject is not None:
                self._refuse(reject.status, reject.detail, {reject.field: reject.detail})
            else:
                self._refuse(HTTPStatus.BAD_REQUEST, _parser_detail(error), {"request": str(error)})
        else:
            if self.parsing is not None and not self.parsing.method:
                self._head_raw += len(data) if head_open else 0
                if self._head_raw > self.settings.max_head + READ_SLACK:
                    self._refuse(
                        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "The request head is too large.",
                        {"headers": "too large"},
                    )
        self._advance()

    def eof_received(self) -> bool:
        self.eof = True
        request = self.parsing
        if request is not None and request.stream is not None:
            # A body cut short can never complete: its reader (a thread streaming an upload)
            # gets the end of the stream now, not at the body timeout.
            request.stream.fail()
        if not self.requests and not self.busy:
            self._drop()
            return False
        return True  # answer what came, then close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        if self.sink is not None:
            self.sink.fail()
        for request in (*self.requests, self.parsing):
            if request is not None and request.stream is not None:
                request.stream.fail()
        self.requests.clear()
        self.host.connection_closed(self)

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.sink is not None:
            self.sink.set_writable(False)
        self._update_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.sink is not None:
            self.sink.set_writable(True)
        self._advance()

    # -- httptools' callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._fields = 0
        self._head_raw = 0
        self.parsing = Request(b"")
        if self.served or self.requests:  # a kept-alive connection; a new one counts from accept
            self._wait(HEAD, self.settings.header_timeout)

    def _reject(self, status: HTTPStatus, detail: str, field: str) -> None:
        """Refuse the request being parsed (from a callback: llhttp stops there)."""
        self._rejection = Reject(status, detail, field)
        raise self._rejection

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.settings.max_request_line:
            self._reject(
                HTTPStatus.REQUEST_URI_TOO_LONG, "The request target is too long.", "target"
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > self.settings.max_headers:
            self._reject(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many header fields.", "headers"
            )
        if len(name) + len(value) + 2 > self.settings.max_header_field:
            self._reject(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "A header field is too large.",
                name.decode("latin-1")[:64],
            )
        request = self.parsing
        if request is None or request.method:
            return  # a chunked body's trailer: never a header of the request
        # llhttp keeps a value's trailing tabs; RFC 9110 5.5: not part of the value.
        name, value = name.lower(), value.strip(b" \t")
        request.headers.append((name, value))
        if name in _FRAMING:  # noted now: on_headers_complete then needs no second pass
            request.framing.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        parser = self.parser
        request.target = self._url
        request.method = parser.get_method().decode("latin-1")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        # llhttp takes a request line without a version as HTTP/0.9, and any x.y.
        if request.version not in ("1.0", "1.1"):
            if request.version.startswith("0."):
                self._reject(HTTPStatus.BAD_REQUEST, "The request line has no HTTP version.",
                             "request line")  # fmt: skip
            self._reject(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                         "This server speaks HTTP/1.0 and 1.1 only.", "version")  # fmt: skip
        framing = request.framing
        if request.version == "1.1" and not any(name == b"host" for name, _ in framing):
            # RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without Host.
            self._reject(HTTPStatus.BAD_REQUEST, "An HTTP/1.1 request needs a Host header.", "Host")
        settings = self.settings
        for name, value in framing:
            if name == b"content-length":
                request.length = int(value)
            elif name == b"expect":
                if value.lower() != b"100-continue":
                    request.refused = problem_response(
                        HTTPStatus.EXPECTATION_FAILED,
                        "Only Expect: 100-continue is supported.",
                        {"Expect": "unsupported expectation"},
                    )
                request.expect_continue = request.version == "1.1"
        if request.length is not None and request.length > settings.max_body:
            request.refused = _too_large(settings.max_body)
        self.requests.append(request)
        self._wait(BODY, settings.body_timeout)

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        assert request is not None
        request.received += len(body)
        if request.refused is not None:
            return  # answered without its body; the connection closes after the answer
        if request.received > self.settings.max_body:  # a chunked body past the limit
            request.refused = _too_large(self.settings.max_body)
            if request.stream is not None:
                request.stream.fail()
            return
        if request.stream is not None:
            request.stream.feed(body)
        else:
            request.chunks.append(body)
        self.deadline = time.monotonic() + self.settings.body_timeout

    def on_message_complete(self) -> None:
        request = self.parsing
        assert request is not None
        request.complete = True
        if request.stream is not None:
            request.stream.finish()
        self.parsing = None
        self.waiting_for = NONE

    # -- answering -------------------------------------------------------------------------

    def _advance(self) -> None:
        """Answer or hand off the first request when it can be; then decide on reading."""
        while not self.closing and not self.busy and not self.writing_paused:
            if not self.requests:
                if self.refusal is not None:
                    self._write_final(self.refusal)
                elif self.eof:
                    self._close_after_write()
                break
            request = self.requests[0]
            if request.refused is not None:
                self._answer_refused(request)
                break
            if request.complete:
                self._answer(request)
                continue
            if request.received > self.settings.request_buffer:
                self._hand_off_streamed(request)
                break
            if request.expect_continue and not request.continue_sent:
                request.continue_sent = True
                self.transport.write(CONTINUE)  # type: ignore[union-attr]
            break
        self._update_reading()

    def _answer(self, request: Request) -> None:
        body = b"".join(request.chunks)
        request.chunks = []
        environ = self._environ(request, io.BytesIO(body))
        environ["CONTENT_LENGTH"] = str(len(body))  # a chunked body is all here now
        answerer = self.host.from_memory
        if answerer is None or request.method != "POST":
            self._hand_off(request, environ, self.host.wsgi)
            return
        try:
            answer = answerer(environ)
        except Exception:
            self.host.log.exception("Error answering %s from memory", environ.get("RAW_URI"))
            answer = None
        if answer is None:  # a load or a registry lookup: the app, in a thread
            self._hand_off(request, environ, self.host.app_after_memory)
            return
        keep_alive = request.keep_alive and self.host.accepting_requests and not self.eof
        status = status_line(answer.status)
        head = render_own_head(status, answer.headers, keep_alive)
        self.transport.write(head + answer.body)  # type: ignore[union-attr]
        self.host.request_answered(
            environ, status, len(answer.body), request.started, answer.headers
        )
        self._finished(keep_alive)

    def _hand_off(self, request: Request, environ: dict[str, Any], app: WsgiApp) -> None:
        self.busy = True
        self._busy_environ = environ
        self.waiting_for = NONE if self.parsing is None else self.waiting_for
        sink = ResponseSink(self.host.loop, self._deliver, self.settings.response_buffer)
        if self.writing_paused:
            sink.set_writable(False)
        self.sink = sink
        host = self.host
        self.host.submit(
            run_app,
            app,
            environ,
            sink,
            lambda: request.keep_alive and host.accepting_requests and not self.eof,
            host.log,
        )

    def _hand_off_streamed(self, request: Request) -> None:
        """A body larger than REQUEST_BUFFER_BYTES: the thread reads the rest as it comes."""
        loop = self.host.loop
        stream = BodyStream(
            request.chunks,
            self.settings.request_buffer,
            lambda: loop.call_soon_threadsafe(self._update_reading),
        )
        request.chunks = []
        request.stream = stream
        if request.expect_continue and not request.continue_sent:
            request.continue_sent = True
            self.transport.write(CONTINUE)  # type: ignore[union-attr]
        self._hand_off(request, self._environ(request, stream), self.host.wsgi)

    def _deliver(self, data: bytes, end: Any) -> None:
        """A piece of a thread's answer (on the loop); `end` is None until the last one."""
        sink = self.sink
        if self.closed or sink is None:
            return
        if data:
            self.transport.write(data)  # type: ignore[union-attr]
        sink.accepted(len(data))
        if end is None:
            return
        if end == ABORT:
            self._drop()
            return
        self.busy = False
        self.sink = None
        environ, self._busy_environ = self._busy_environ, {}
        self.host.request_answered(
            environ, sink.status, sink.sent, self.requests[0].started, sink.headers
        )
        self._finished(bool(end))
        self._advance()

    def _answer_refused(self, request: Request) -> None:
        self.requests.popleft()
        self.served += 1
        if request.stream is not None:
            request.stream.fail()
        self._write_final(request.refused)  # type: ignore[arg-type]

    def _finished(self, keep_alive: bool) -> None:
        request = self.requests.popleft()
        self.served += 1
        if not request.complete:
            keep_alive = False  # answered before its body was in: the rest is not read
            if request.stream is not None:
                request.stream.fail()
        if not keep_alive or self.eof or not self.settings.keepalive:
            self._close_after_write()
        elif not self.requests and self.parsing is None:
            self._wait(IDLE, self.settings.keepalive)

    def _environ(self, request: Request, body: Any) -> dict[str, Any]:
        return build_environ(
            self._base_environ, request.method, request.target, request.headers, body,
            request.version,
        )  # fmt: skip

    # -- closing ---------------------------------------------------------------------------

    def _refuse(self, status: HTTPStatus, detail: str, errors: dict[str, str]) -> None:
        """A request that cannot be parsed: answered once those before it are."""
        if self.refusal is None:
            self.refusal = problem_response(status, detail, errors)
        if self.parsing is not None:
            if self.parsing.stream is not None:
                self.parsing.stream.fail()
            if self.parsing in self.requests and not self.parsing.complete:
                if self.parsing is self.requests[0] and self.busy:
                    self.parsing.keep_alive = False
                else:
                    self.requests.remove(self.parsing)
        self.parsing = None
        self.waiting_for = NONE

    def _upgrade_refused(self) -> None:
        """llhttp stops at an Upgrade (or CONNECT): what came before is answered, and the
        connection then closes (this server speaks HTTP/1.1 only)."""
        if self.parsing is not None and not self.parsing.complete:
            self._refuse(
                HTTPStatus.BAD_REQUEST, "Protocol upgrades are not supported.", {"Upgrade": "no"}
            )
            return
        self.eof = True  # nothing after it is read

    def _write_final(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]
        self._close_after_write()

    def _close_after_write(self) -> None:
        """Send what is queued, then FIN, and drain what the client still sends for a moment:
        unread request bytes would turn the close into a reset that can cut off the answer."""
        if self.closing or self.closed:
            return
        self.closing = True
        self.requests.clear()
        transport = self.transport
        assert transport is not None
        self._wait(LINGER, LINGER_SECONDS)
        if self.eof or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._update_reading()

    def _drop(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close_if_idle(self) -> bool:
        """The worker is stopping: close now when no request is in progress."""
        if self.requests or self.parsing is not None or self.busy:
            return False
        self._close_after_write()
        return True

    # -- reading and deadlines -------------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        stream = self.requests[0].stream if self.requests else None
        stream_full = stream is not None and stream.pause_if_full()
        pause = not self.closing and (
            self.writing_paused
            or self.refusal is not None
            or len(self.requests) > 1  # a pipelined request waits for the one before
            or stream_full
        )
        if pause and not self.reading_paused:
            self.reading_paused = True
            transport.pause_reading()
        elif not pause and self.reading_paused:
            self.reading_paused = False
            transport.resume_reading()
            if self.waiting_for == BODY:
                self.deadline = time.monotonic() + self.settings.body_timeout
            elif self.waiting_for == HEAD:
                self.deadline = time.monotonic() + self.settings.header_timeout

    def _wait(self, what: int, seconds: float) -> None:
        self.waiting_for = what
        self.deadline = time.monotonic() + seconds

    def check(self, now: float) -> None:
        """Enforce the deadlines (the worker calls this about twice a second)."""
        transport = self.transport
        if transport is None or self.closed:
            return
        waiting = transport.get_write_buffer_size()
        if not waiting or waiting < self._out_size:
            self._out_progress = now
        self._out_size = waiting
        if waiting and now - self._out_progress > self.settings.write_timeout:
            self._drop()  # the client stopped reading its answers
            return
        what = self.waiting_for
        if what == LINGER and waiting:
            self.deadline = now + LINGER_SECONDS  # the lingering starts once all is sent
            return
        if now < self.deadline or (self.reading_paused and what in (HEAD, BODY)):
            return
        if what == LINGER:
            self._drop()
        elif what == IDLE and not waiting:
            transport.close()
        elif what in (HEAD, BODY):
            self._timed_out()

    def _timed_out(self) -> None:
        self.host.log.debug("Request from %s not complete in time: closing", self.client)
        request = self.parsing
        if request is not None and request.stream is not None:
            request.stream.fail()  # the thread gets a short body; its answer ends the connection
            request.keep_alive = False
            self.waiting_for = NONE
            return
        if request is None and not self.bytes_seen:
            self.transport.close()  # type: ignore[union-attr]  # never sent a byte: nothing to say
            return
        self._refuse(
            HTTPStatus.REQUEST_TIMEOUT,
            "The request was not received completely in time.",
            {"request": "incomplete after the timeout"},
        )
        self._advance()


def _too_large(limit: int) -> bytes:
    return problem_response(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"The request body is larger than {limit} bytes.",
        {"body": f"at most {limit} bytes"},
    )


def _parser_detail(error: Exception) -> str:
    return f"Malformed request: {error}."
