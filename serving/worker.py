"""The gunicorn worker `modelreg serve` runs: one event loop per process that does all the
waiting on clients, a thread pool that only ever runs the application, small predictions
answered on the loop itself, and new connections spread over the workers.

No client can hold a thread or the loop. gthread hands a new connection to a pool thread that
reads the request from the socket, blocking, and writes the answer with a blocking send: a
connection that trickles its headers, or sends nothing at all, holds a thread (a few of them
stop a worker), and one that stops reading its answers blocks the thread, or the loop, that
writes to it. Here the loop reads every request itself, without blocking, until it is
complete (serving/http_framing.py finds where it ends), within REQUEST_HEADER_TIMEOUT for the
head and REQUEST_BODY_TIMEOUT between two pieces of the body; only a complete request goes to
a thread (a body larger than REQUEST_BUFFER_BYTES goes once that much of it is in, and the
thread reads the rest under the same body timeout). Threads never write to the socket: the
answer goes to the connection's output buffer and the loop sends it as the client accepts it.
While a connection has more than RESPONSE_BUFFER_BYTES waiting, the loop reads no further
request from it (pipelined requests wait in the kernel) and a thread streaming an answer
waits; a connection that accepts nothing for RESPONSE_WRITE_TIMEOUT is dropped.

Inline predictions: a hand-off to the pool (a queue, a future, a pipe write, another poll, two
GIL hand-offs) costs more than a small prediction itself. A complete, small, plain predict
request (serving/inline_http.py parses it, strictly) that the app's fast path can answer from
memory alone (serving/fastpath.py: a cached token, a known reference, a loaded model) is
answered by the loop thread, failures included (a bad body, a refusing model): the model call
is CPU work either way, and the answer is buffered like any other. Everything else (a load, a
registry lookup, uploads, registry calls, V2, larger or unusual requests) goes to the pool
and through gunicorn's own parser and response writer: the loop never waits on the database
or the store.

Spreading connections: all workers wait on one listening socket and the first to wake takes a
new connection. With keep-alive clients (a service's connection pool, a load generator), the
connections opened together often all land in one worker, which then does all the work while
the others idle: half the throughput on two workers. Here a worker that already holds
connections waits a moment (longer the more it holds) before taking another, so a worker with
fewer connections takes it first; if none does (they are gone or busy), it takes the connection
itself after the pause, so no connection waits more than MAX_ACCEPT_PAUSE to be accepted.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import select
import selectors
import socket
import threading
import time
from collections import deque
from concurrent.futures import Future
from http import HTTPStatus
from typing import Any

from gunicorn import http
from gunicorn.errors import ConfigError
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import ThreadWorker

from registry.answers import status_line
from serving.http_framing import ChunkedBody, Head, Malformed, scan_head
from serving.inline_http import (
    MAX_DETAIL,
    ErrorSink,
    InlineRequest,
    build_environ,
    error_response,
    parse_request,
    render_response,
)

PAUSE_PER_CONNECTION = 0.001  # seconds of accept pause per connection more than another's
MAX_ACCEPT_PAUSE = 0.01
# After a pause, a connection taken within this window is the one that was waiting.
RESUMED_WINDOW = 0.02


class ConnectionBoard:
    """How many connections each worker of a server holds, in memory the workers share.

    The gunicorn arbiter makes it before forking any worker and gives each worker a slot
    (worker objects are built in the arbiter, one at a time); a worker writes its own count
    and reads the others'. A slot is free again when its worker exits."""

    SLOTS = 128

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, self.SLOTS * 8)
        self._cells = memoryview(self._memory).cast("i")  # (in use, connections) per slot

    def claim(self) -> int:
        for slot in range(self.SLOTS):
            if not self._cells[2 * slot]:
                self._cells[2 * slot] = 1
                self._cells[2 * slot + 1] = 0
                return slot
        return -1  # more workers than slots: that worker balances against no one

    def release(self, slot: int) -> None:
        if slot >= 0:
            self._cells[2 * slot] = 0

    def publish(self, slot: int, connections: int) -> None:
        if slot >= 0:
            self._cells[2 * slot + 1] = connections

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The fewest connections another live worker holds (None: no other worker)."""
        cells = self._cells
        counts = [
            cells[2 * other + 1]
            for other in range(self.SLOTS)
            if other != slot and cells[2 * other]
        ]
        return min(counts) if counts else None


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_at = 0.0
        self._resumed_at = float("-inf")
        self.board: ConnectionBoard | None = getattr(self.app, "connection_board", None)
        self.board_slot = self.board.claim() if self.board is not None else -1

    def accept(self, listener: Any) -> None:
        now = time.monotonic()
        # Only a worker holding more connections than another pauses: while the counts are
        # even, every worker accepts at full speed (a burst of new connections never waits
        # in line behind pauses).
        fewest = self.board.fewest_elsewhere(self.board_slot) if self.board else 0
        surplus = self.nr_conns - (fewest if fewest is not None else self.nr_conns)
        if surplus > 0 and now - self._resumed_at > RESUMED_WINDOW:
            self._resume_at = now + min(MAX_ACCEPT_PAUSE, PAUSE_PER_CONNECTION * surplus)
            super().set_accept_enabled(False)
            return
        self._resumed_at = float("-inf")  # one connection per pause, then pause again
        self.take_connection(listener)
        if self.board is not None:
            self.board.publish(self.board_slot, self.nr_conns)

    def take_connection(self, listener: Any) -> None:
        super().accept(listener)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and not self._accepting:
            now = time.monotonic()
            if now < self._resume_at:
                return  # still pausing: another worker may take the connection
            if self._resume_at:
                self._resume_at = 0.0
                self._resumed_at = now
        super().set_accept_enabled(enabled)

    def poll_timeout(self, timeout: float) -> float:
        """`timeout`, shortened to wake up when an accept pause ends."""
        if self._resume_at:
            return max(0.0, min(timeout, self._resume_at - time.monotonic()))
        return timeout

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        super().wait_for_and_dispatch_events(self.poll_timeout(timeout))


INLINE_MAX_BYTES = 16 * 1024  # larger requests (and their larger answers) go to the pool
INLINE_SUFFIXES = (b"/predict",)
READ_CHUNK = 256 * 1024
FLUSH_EARLY = 64 * 1024  # a thread's output this large is sent before its answer is complete
SWEEP_INTERVAL = 0.5  # seconds between two checks of every connection's deadlines
LINGER_SECONDS = 2.0  # after the last answer, how long a closing connection is drained
LINGER_BYTES = 64 * 1024
STOP_KEEPALIVE_LINGER = 2.0  # a stopping worker keeps idle connections this long at most
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# Connection phases
IDLE = "idle"  # between requests: no byte of the next one yet
HEAD = "head"  # part of the head is in
BODY = "body"  # the head is in, part of the body
BUSY = "busy"  # the request is being answered (inline or by a pool thread)
CLOSING = "closing"  # sending the last answer, then close
LINGER = "linger"  # our side is shut; draining what the client still sends
DEAD = "dead"
READING = (IDLE, HEAD, BODY)


class Output:
    """What is still to be sent on one connection.

    Pool threads write into it through the socket methods gunicorn's response writer uses
    (sendall, send); the event loop sends it. A writer waits while more than `cap` bytes are
    waiting (a streamed answer to a slow reader); the loop fails the buffer when the client
    takes nothing for the write timeout, and every writer then gets BrokenPipeError.
    """

    def __init__(self, cap: int, wake: Any) -> None:
        self.cap = cap
        self._wake = wake  # called (from a thread) when the loop should send early
        self._cond = threading.Condition(threading.Lock())
        self._chunks: deque[bytes | memoryview] = deque()
        self.pending = 0
        self.progress_at = time.monotonic()  # last time bytes left (or started waiting)
        self.failed = False
        self.close_requested = False  # gunicorn gave up on the connection mid-answer
        self._wake_scheduled = False

    # -- the loop's side ---------------------------------------------------------------

    def add(self, data: bytes) -> None:
        """Queue bytes from the loop thread (inline answers, errors); never waits."""
        if data:
            with self._cond:
                self._append(data)

    def _append(self, data: bytes) -> None:
        if not self.pending:
            self.progress_at = time.monotonic()
        self._chunks.append(data)
        self.pending += len(data)

    def peek(self) -> list[bytes | memoryview]:
        with self._cond:
            self._wake_scheduled = False
            return list(self._chunks)

    def sent(self, count: int) -> None:
        """`count` bytes of the head of the queue went out."""
        with self._cond:
            self.pending -= count
            if count:
                self.progress_at = time.monotonic()
            while count:
                chunk = self._chunks[0]
                if len(chunk) <= count:
                    count -= len(chunk)
                    self._chunks.popleft()
                else:
                    self._chunks[0] = memoryview(chunk)[count:]
                    count = 0
            if self.pending <= self.cap:
                self._cond.notify_all()

    def fail(self) -> None:
        with self._cond:
            self.failed = True
            self._chunks.clear()
            self.pending = 0
            self._cond.notify_all()

    # -- the socket methods gunicorn's Response and error writer call, in pool threads ----

    def sendall(self, data: bytes) -> None:
        with self._cond:
            while self.pending > self.cap and not self.failed:
                self._cond.wait()
            if self.failed or self.close_requested:
                raise BrokenPipeError(errno.EPIPE, "the connection is closed")
            self._append(bytes(data))
            wake = self.pending >= FLUSH_EARLY and not self._wake_scheduled
            if wake:
                self._wake_scheduled = True
        if wake:
            self._wake()

    def send(self, data: bytes) -> int:
        # gunicorn sends "100 Continue" itself when it sees the Expect header; by then the
        # loop has sent one if the client was waiting for it (and the whole body is in).
        if data != CONTINUE:
            self.sendall(data)
        return len(data)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        file.seek(offset)
        total = 0
        while count is None or total < count:
            chunk = file.read(FLUSH_EARLY if count is None else min(FLUSH_EARLY, count - total))
            if not chunk:
                break
            self.sendall(chunk)
            total += len(chunk)
        return total

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def settimeout(self, value: float | None) -> None:
        pass

    def recv(self, size: int) -> bytes:
        return b""

    def shutdown(self, how: int) -> None:
        self.close_requested = True

    def close(self) -> None:
        self.close_requested = True


class Connection:
    __slots__ = (
        "chunked",
        "client",
        "continue_sent",
        "deadline",
        "eof",
        "events",
        "head",
        "inbuf",
        "lingered",
        "out",
        "phase",
        "served",
        "server",
        "sock",
        "want_write",
    )

    def __init__(self, sock: socket.socket, client: Any, server: Any, out: Output) -> None:
        self.sock = sock
        self.client = client
        self.server = server
        self.out = out
        self.inbuf = bytearray()
        self.phase = IDLE
        self.deadline = 0.0
        self.head: Head | None = None
        self.chunked: ChunkedBody | None = None
        self.continue_sent = False
        self.events = 0  # what the poller watches for
        self.want_write = False  # the kernel's send buffer was full
        self.eof = False  # the client has shut its side
        self.served = 0
        self.lingered = 0


class _Target:
    """What gunicorn's handle_request needs of a connection: the writer is the Output."""

    __slots__ = ("client", "server", "sock")

    def __init__(self, conn: Connection) -> None:
        self.sock = conn.out
        self.client = conn.client
        self.server = conn.server


class _StreamedBody:
    """A request source for gunicorn's parser: the bytes the loop buffered, then the rest of a
    large body from the socket, in a pool thread, each wait at most `timeout` seconds.

    A client that stops sending within the timeout looks like one that hung up: the body
    ends there (the app answers a truncated body with a 400) and the connection closes."""

    def __init__(self, first: bytes, sock: socket.socket, timeout: float) -> None:
        self._first = first
        self._sock = sock
        self._timeout = timeout
        self.drain_only = False  # after the answer: take what is there, never wait
        self.timed_out = False

    def recv(self, size: int) -> bytes:
        if self._first:
            data, self._first = self._first, b""
            return data
        deadline = time.monotonic() + self._timeout
        while not self.timed_out:
            try:
                return self._sock.recv(size)
            except BlockingIOError:
                pass
            left = deadline - time.monotonic()
            if self.drain_only:
                raise TimeoutError("the rest of the body is not there")  # finish_body: False
            if left <= 0:
                self.timed_out = True
                break
            select.select([self._sock], [], [], left)
        return b""


class ModelregWorker(BalancedThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from config import load_config

        config = load_config()
        self.header_timeout = config.REQUEST_HEADER_TIMEOUT
        self.body_timeout = config.REQUEST_BODY_TIMEOUT
        self.write_timeout = config.RESPONSE_WRITE_TIMEOUT
        self.request_buffer = config.REQUEST_BUFFER_BYTES
        self.response_buffer = config.RESPONSE_BUFFER_BYTES
        # Any head gunicorn accepts fits; a longer one is certainly refused by its limits.
        cfg = self.cfg
        self.max_head = (
            (cfg.limit_request_line or 8190)
            + 2
            + (cfg.limit_request_fields or 100) * ((cfg.limit_request_field_size or 8190) + 2)
            + 2
        )
        # The inline path: the app's predict fast path, when there is one (load_wsgi) and
        # gunicorn's access log (which needs its own request and response objects) is off.
        self._from_memory: Any = None
        self.connections: set[Connection] = set()
        self._next_sweep = 0.0

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        super().check_config(cfg, log)
        if cfg.is_ssl or cfg.http2_cleartext != "off" or "h2" in cfg.http_protocols:
            raise ConfigError(
                "modelreg's worker speaks plain HTTP/1.1: terminate TLS and HTTP/2 at the "
                "reverse proxy in front of it"
            )
        if cfg.proxy_protocol != "off" or getattr(cfg, "protocol", "http") != "http":
            raise ConfigError("modelreg's worker reads plain HTTP/1.1 only (no PROXY, uwsgi)")

    def load_wsgi(self) -> None:
        super().load_wsgi()
        fastpath = getattr(self.wsgi, "wsgi_app", None)
        if not self.cfg.accesslog:
            self._from_memory = getattr(fastpath, "answer_from_memory", None)

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        self.poller.register(
            self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks
        )
        self.set_accept_enabled(True)
        while self.alive:
            self.notify()
            can_accept = self.nr_conns < self.worker_connections
            if can_accept != self._accepting:
                self.set_accept_enabled(can_accept)
            self.wait_for_and_dispatch_events(SWEEP_INTERVAL)
            if not self.is_parent_alive():
                break
            self._sweep()

        # Stopping: take no new connection, let the requests in flight finish, keep idle
        # connections a moment (a request arriving on one is answered with
        # "Connection: close"), within the graceful timeout.
        self.set_accept_enabled(False)
        linger = time.monotonic() + STOP_KEEPALIVE_LINGER
        for conn in self.connections:
            if conn.phase == IDLE:
                conn.deadline = min(conn.deadline, linger)
        graceful = time.monotonic() + self.cfg.graceful_timeout
        while self.connections and time.monotonic() < graceful:
            self.notify()
            self.wait_for_and_dispatch_events(SWEEP_INTERVAL)
            self._sweep(force=True)
        for conn in list(self.connections):
            self._release(conn)
        self.tpool.shutdown(wait=False)
        self.poller.close()
        self.method_queue.close()
        for listener in self.sockets:
            listener.close()

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        try:
            events = self.poller.select(self.poll_timeout(timeout))
        except InterruptedError:
            return
        for key, mask in events:
            target = key.data
            if type(target) is Connection:
                self._on_event(target, mask)
            else:
                target(key.fileobj)

    def take_connection(self, listener: Any) -> None:
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        sock.setblocking(False)
        conn = Connection(sock, client, listener.getsockname(), None)  # type: ignore[arg-type]
        conn.out = Output(self.response_buffer, lambda: self._wake_flush(conn))
        conn.deadline = time.monotonic() + self.header_timeout
        self.nr_conns += 1
        self.connections.add(conn)
        self._on_readable(conn)  # the request often came with the connection

    def _on_event(self, conn: Connection, mask: int) -> None:
        if conn.phase == DEAD:
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if mask & selectors.EVENT_READ and conn.phase != DEAD:
            self._on_readable(conn)

    def _on_readable(self, conn: Connection) -> None:
        if conn.phase not in READING and conn.phase != LINGER:
            return  # a thread has the request (and maybe the socket)
        size = READ_CHUNK
        head = conn.head
        if conn.phase == BODY and head is not None and head.length:
            # The rest of a large body at once: every recv is a GIL hand-off, and taking it
            # back while the pool threads compute can take a switch interval (5 ms).
            missing = head.end + head.length - len(conn.inbuf)
            size = max(READ_CHUNK, min(missing, self.request_buffer))
        try:
            data = conn.sock.recv(size)
        except BlockingIOError:
            self._update_interest(conn)
            return
        except OSError:
            self._kill(conn)
            return
        if conn.phase == LINGER:
            conn.lingered += len(data)
            if not data or conn.lingered > LINGER_BYTES:
                self._release(conn)
            return
        if data:
            conn.inbuf += data
        else:
            conn.eof = True
        self._process(conn)

    def _process(self, conn: Connection) -> None:
        """Answer or dispatch every complete request in the buffer, as long as the output is
        not backed up; then send what is queued and watch for what is needed next."""
        cap = self.response_buffer
        buf = conn.inbuf
        while conn.phase in READING and conn.out.pending <= cap:
            now = time.monotonic()
            if conn.phase == IDLE:
                while buf[:2] == b"\r\n":  # RFC 9112 2.2: empty lines before a request
                    del buf[:2]
                if not buf:
                    break
                conn.phase = HEAD
                if conn.served:  # a kept-alive connection; a new one counts from accept
                    conn.deadline = now + self.header_timeout
            if conn.phase == HEAD:
                try:
                    head = scan_head(buf, self.max_head)
                except Malformed:
                    self._to_gunicorn_as_is(conn)
                    break
                if head is None:
                    break
                conn.head = head
                conn.phase = BODY
                conn.continue_sent = False
                conn.chunked = ChunkedBody(head.end) if head.length is None else None
            head = conn.head
            assert head is not None
            if head.length is not None:
                end: int | None = head.end + head.length
                if len(buf) < end:
                    end = None
            else:
                try:
                    end = conn.chunked.end(buf)  # type: ignore[union-attr]
                except Malformed:
                    self._to_gunicorn_as_is(conn)
                    break
            if end is None:
                if len(buf) - head.end >= self.request_buffer:
                    self._dispatch_streamed(conn)
                    break
                conn.deadline = now + self.body_timeout
                if head.expect_continue and not conn.continue_sent:
                    conn.continue_sent = True
                    conn.out.add(CONTINUE)
                break
            conn.head = conn.chunked = None
            conn.phase = BUSY
            if self._from_memory is None or end > INLINE_MAX_BYTES:
                # Head and body apart: gunicorn's parser then copies neither to find the head.
                parts = [bytes(buf[: head.end]), bytes(buf[head.end : end])]
                del buf[:end]
                self._submit(conn, parts, streamed=False)
                break
            request = bytes(buf[:end])
            del buf[:end]
            inline = parse_request(request, INLINE_SUFFIXES)
            keepalive = None if inline is None else self._answer(conn, inline)
            if keepalive is None:
                self._submit(conn, [request], streamed=False)
                break
            self._request_done(conn, keepalive)
        if conn.eof and conn.phase in READING:
            # The client shut its side: what it sent is answered, nothing more can come.
            conn.phase = CLOSING
        self._flush(conn)

    def _to_gunicorn_as_is(self, conn: Connection) -> None:
        """Framing the loop cannot follow: gunicorn's parser gets what was sent, answers the
        error (or whatever it makes of it), and the connection closes."""
        request = bytes(conn.inbuf)
        conn.inbuf.clear()
        conn.head = conn.chunked = None
        conn.phase = BUSY
        conn.eof = True  # nothing after it is read
        self._submit(conn, [request], streamed=False)

    def _dispatch_streamed(self, conn: Connection) -> None:
        """A body larger than REQUEST_BUFFER_BYTES: a thread reads the rest as the app does."""
        source = _StreamedBody(bytes(conn.inbuf), conn.sock, self.body_timeout)
        conn.inbuf.clear()
        conn.head = conn.chunked = None
        conn.phase = BUSY
        self._submit(conn, source, streamed=True)

    def _submit(self, conn: Connection, source: Any, *, streamed: bool) -> None:
        self._update_interest(conn)  # not readable while a thread has the request
        future = self.tpool.submit(self._serve, conn, source, streamed)
        future.add_done_callback(lambda done: self.method_queue.defer(self._served, conn, done))

    def _served(self, conn: Connection, done: Future) -> None:
        """A pool thread finished a request (on the loop thread)."""
        try:
            keepalive, leftover = done.result()
        except Exception:
            keepalive, leftover = False, b""
        if conn.phase == DEAD:
            self._release(conn)  # killed while the thread ran: the socket is closed now
            return
        if leftover:
            conn.inbuf[:0] = leftover
        self._request_done(conn, keepalive)
        self._process(conn)

    def _request_done(self, conn: Connection, keepalive: bool) -> None:
        conn.served += 1
        if keepalive and self.alive:
            conn.phase = IDLE
            conn.deadline = time.monotonic() + self.cfg.keepalive
        elif keepalive:
            conn.phase = IDLE
            conn.deadline = time.monotonic() + STOP_KEEPALIVE_LINGER
        else:
            conn.phase = CLOSING

    # -- writing ------------------------------------------------------------------------

    def _wake_flush(self, conn: Connection) -> None:
        """From a pool thread: a streamed answer has piled up; send it now."""
        self.method_queue.defer(self._flush, conn)

    def _flush(self, conn: Connection) -> None:
        """Send what the kernel takes now; watch for writability if it takes less."""
        if conn.phase == DEAD:
            return
        out = conn.out
        backed_up = out.pending > self.response_buffer
        conn.want_write = False
        while out.pending:
            chunks = out.peek()
            try:
                count = conn.sock.sendmsg(chunks[:64])
            except BlockingIOError:
                count = 0
            except OSError:
                self._kill(conn)
                return
            out.sent(count)
            if count < sum(len(chunk) for chunk in chunks[:64]):
                conn.want_write = True
                break
        if conn.phase == CLOSING and not out.pending:
            self._close_gracefully(conn)
            return
        if backed_up and out.pending <= self.response_buffer and conn.phase in READING:
            # Requests that waited while the output was backed up (deferred: _process
            # itself ends with a flush).
            self.method_queue.defer(self._process, conn)
        self._update_interest(conn)

    def _update_interest(self, conn: Connection) -> None:
        if conn.phase == DEAD:
            return
        events = 0
        reading = conn.phase == LINGER or (
            conn.phase in READING and not conn.eof and conn.out.pending <= self.response_buffer
        )
        if reading:
            events |= selectors.EVENT_READ
        if conn.want_write:
            events |= selectors.EVENT_WRITE
        if events == conn.events:
            return
        if not conn.events:
            self.poller.register(conn.sock, events, conn)
        elif not events:
            self.poller.unregister(conn.sock)
        else:
            self.poller.modify(conn.sock, events, conn)
        conn.events = events

    def _close_gracefully(self, conn: Connection) -> None:
        """Send FIN and drain what the client still sends for a moment, so that unread
        request bytes do not turn the close into a reset that could cut off the answer."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._release(conn)
            return
        conn.phase = LINGER
        conn.deadline = time.monotonic() + LINGER_SECONDS
        conn.inbuf.clear()
        self._update_interest(conn)

    def _kill(self, conn: Connection) -> None:
        """Drop a connection now. A thread still answering on it finds its writes failing;
        the socket is closed once it is done (see _served)."""
        if conn.phase == DEAD:
            return
        busy = conn.phase == BUSY
        conn.phase = DEAD
        conn.out.fail()
        self._unwatch(conn)
        if busy:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread reading the body
        else:
            self._release(conn)

    def _unwatch(self, conn: Connection) -> None:
        if conn.events:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
            conn.events = 0

    def _release(self, conn: Connection) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        conn.phase = DEAD
        conn.out.fail()
        self._unwatch(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()
        self.nr_conns -= 1
        if self.board is not None:
            self.board.publish(self.board_slot, self.nr_conns)

    def _sweep(self, force: bool = False) -> None:
        """Enforce every connection's deadlines (about twice a second)."""
        now = time.monotonic()
        if now < self._next_sweep and not force:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        for conn in list(self.connections):
            if conn.want_write and conn.phase != DEAD:
                # The kernel signals writability only once a good part of its buffer is
                # free: a client reading slowly may take bytes long before that.
                self._flush(conn)
            if conn.phase == DEAD:
                continue
            if conn.out.pending and now - conn.out.progress_at > self.write_timeout:
                self._kill(conn)  # the client stopped reading
            elif conn.phase == LINGER and now >= conn.deadline:
                self._release(conn)
            elif conn.phase == IDLE and now >= conn.deadline and not conn.out.pending:
                self._release(conn)  # an idle connection: no answer to protect, as in gthread
            elif conn.phase in (HEAD, BODY) and now >= conn.deadline:
                self._request_timed_out(conn)

    def _request_timed_out(self, conn: Connection) -> None:
        self.log.debug("Request from %s not complete in time: closing", conn.client)
        conn.inbuf.clear()
        conn.head = conn.chunked = None
        conn.phase = CLOSING
        conn.out.add(
            error_response(
                HTTPStatus.REQUEST_TIMEOUT, "The request was not received completely in time."
            )
        )
        self._flush(conn)

    # -- answering ----------------------------------------------------------------------

    def _serve(self, conn: Connection, source: Any, streamed: bool) -> tuple[bool, bytes]:
        """Answer one request through gunicorn (in a pool thread): its parser reads the
        request from `source`, its response writer writes to the connection's Output.
        Returns whether the connection stays open and any bytes read past the request."""
        parser = http.RequestParser(self.cfg, source, conn.client)
        req = None
        try:
            req = next(parser)
            keepalive = bool(self.handle_request(req, _Target(conn)))
            if keepalive and streamed:
                source.drain_only = True  # an unread rest of a large body closes
                keepalive = not source.timed_out and parser.finish_body()
            elif keepalive:
                keepalive = parser.finish_body()
            leftover = parser.unreader.take_buffered()
            if leftover and not streamed:
                # gunicorn ended the request elsewhere than the framing did: trust neither.
                return False, b""
            return keepalive and not conn.out.close_requested, leftover
        except (NoMoreData, StopIteration) as error:
            self.log.debug("Closing connection: %s", error)
        except OSError as error:
            if error.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, None):
                self.log.exception("Socket error processing request.")
        except Exception as error:
            self.handle_error(req, conn.out, conn.client, error)
        return False, b""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """gunicorn's answer to a request it could not parse (414, 431, a bad request line)
        or an app crash, as problem+json: gunicorn decides the status and logs as usual,
        but its HTML page goes to a sink and the client gets the same error as JSON."""
        sink = ErrorSink()
        super().handle_error(req, sink, addr, exc)
        status = sink.status()
        if status is None:
            return
        detail = str(exc)[:MAX_DETAIL] if status < 500 else ""
        with contextlib.suppress(OSError):
            client.sendall(error_response(status, detail))

    def _answer(self, conn: Connection, request: InlineRequest) -> bool | None:
        """Answer a parsed predict request on the loop thread when the fast path can from
        memory alone; whether the connection stays open, or None: the pool answers it."""
        environ = build_environ(
            request,
            client=conn.client,
            server=conn.server,
            multiprocess=self.cfg.workers > 1,
        )
        try:
            answer = self._from_memory(environ)
        except Exception:
            self.log.exception("Error handling request %s", environ.get("RAW_URI"))
            answer = None
        if answer is None:
            return None  # a load or a registry lookup: the app, in a thread
        self.nr += 1
        keepalive = not request.close and self.alive and bool(self.cfg.keepalive)
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            keepalive = False
        response, keepalive = render_response(
            status_line(answer.status), answer.headers, answer.body, keepalive
        )
        conn.out.add(response)
        return keepalive
