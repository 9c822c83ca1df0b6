"""The gunicorn worker `modelreg serve` runs: gthread, with small predictions answered on the
event loop thread and new connections spread over the workers.

Inline predictions: gthread hands every request from its event loop to a pool thread and the
result back (a queue, a future, a pipe write, another poll, two GIL hand-offs), which costs more
than a small prediction itself. When a kept-alive connection becomes readable and its whole
request is already in the socket buffer, small, and a predict or infer call, the event loop
thread answers it itself (serving/inline_http.py parses it, strictly): nothing can block on the
client (every byte is there) and the model call is CPU work either way. Everything else (first
requests on a connection, uploads, registry calls, slow, partial or unusual requests) goes to
the pool exactly as in gthread.

Spreading connections: all workers wait on one listening socket and the first to wake takes a
new connection. With keep-alive clients (a service's connection pool, a load generator), the
connections opened together often all land in one worker, which then does all the work while
the others idle: half the throughput on two workers. Here a worker that already holds
connections waits a moment (longer the more it holds) before taking another, so a worker with
fewer connections takes it first; if none does (they are gone or busy), it takes the connection
itself after the pause, so no connection waits more than MAX_ACCEPT_PAUSE to be accepted.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

from serving.inline_http import (
    InlineRequest,
    build_environ,
    call_app,
    error_response,
    parse_request,
)

PAUSE_PER_CONNECTION = 0.001  # seconds of accept pause per connection already held
MAX_ACCEPT_PAUSE = 0.01
# After a pause, a connection taken within this window is the one that was waiting.
RESUMED_WINDOW = 0.02


class BalancedThreadWorker(ThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume_at = 0.0
        self._resumed_at = float("-inf")

    def accept(self, listener: Any) -> None:
        now = time.monotonic()
        if self.nr_conns and now - self._resumed_at > RESUMED_WINDOW:
            self._resume_at = now + min(MAX_ACCEPT_PAUSE, PAUSE_PER_CONNECTION * self.nr_conns)
            super().set_accept_enabled(False)
            return
        self._resumed_at = float("-inf")  # one connection per pause, then pause again
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

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        if self._resume_at:
            timeout = max(0.0, min(timeout, self._resume_at - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)


INLINE_MAX_BYTES = 64 * 1024
SEND_TIMEOUT = 5.0  # seconds a client may take to accept an inline answer
INLINE_SUFFIXES = (b"/predict", b"/infer")


class _Finished:
    """What finish_request expects from a pool future, for a request answered inline."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value

    def cancelled(self) -> bool:
        return False


class ModelregWorker(BalancedThreadWorker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # gunicorn's access log and TLS need its own request and response objects.
        self._own_http = not self.cfg.accesslog and not self.cfg.is_ssl

    def enqueue_req(self, conn: Any) -> None:
        request = self._buffered_request(conn)
        if request is None:
            super().enqueue_req(conn)
        else:
            self.finish_request(conn, _Finished(self._answer(conn, request)))

    def _answer(self, conn: Any, request: InlineRequest) -> bool:
        """Answer a parsed request with the app; False closes the connection."""
        self.nr += 1
        keepalive = (
            not request.close
            and self.alive
            and bool(self.cfg.keepalive)
            and len(self.keepalived_conns) < self.max_keepalived
        )
        if self.nr >= self.max_requests:
            if self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            keepalive = False
        environ = build_environ(
            request,
            client=conn.client,
            server=conn.server,
            multiprocess=self.cfg.workers > 1,
        )
        sock = conn.sock
        try:
            _discard(sock, request.size)
            try:
                response, keepalive = call_app(self.wsgi, environ, keepalive)
            except Exception:
                self.log.exception("Error handling request %s", environ.get("RAW_URI"))
                response, keepalive = error_response(), False
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(response)
        except OSError:
            return False
        return keepalive

    def _buffered_request(self, conn: Any) -> InlineRequest | None:
        """The request at the head of the socket buffer when it is whole, small, plain and a
        predict/infer call on a kept-alive connection; None sends it to the pool."""
        if not self._own_http or not conn.initialized or conn.is_http2:
            return None  # a first request sets the connection up through gunicorn
        if conn.parser.unreader.buf.getvalue():
            return None  # bytes already read ahead: the usual path knows what to do
        try:
            data = conn.sock.recv(INLINE_MAX_BYTES, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            return None
        return parse_request(data, INLINE_SUFFIXES) if data else None


def _discard(sock: Any, size: int) -> None:
    """Take `size` bytes, already in the socket buffer, out of it."""
    while size > 0:
        chunk = sock.recv(min(size, INLINE_MAX_BYTES), socket.MSG_DONTWAIT)
        if not chunk:
            raise ConnectionResetError("the client closed the connection")
        size -= len(chunk)
