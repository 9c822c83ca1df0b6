"""The gunicorn worker of `modelreg serve --workers N`: one uvloop event loop per process.

gunicorn's arbiter forks these workers and restarts them (HUP reloads, max_requests, crashes);
each one accepts its own connections from the shared listening socket, answers the requests
it can from memory on the loop and runs the Flask app for the rest in a bounded thread pool
(serving/transport/protocol.py). The loop beats the arbiter's heartbeat, checks the
connections' deadlines about twice a second, and spreads new connections over the workers
(board.py): it accepts by hand (loop.add_reader on the listener, then
loop.connect_accepted_socket), so it can stop accepting for a moment.

On SIGTERM (or after max_requests) it stops accepting, finishes the requests in flight,
closes idle keep-alive connections (an idle one gets a moment first: a request that was on
its way is answered, with Connection: close), and exits within the graceful timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import os
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from gunicorn.errors import ConfigError
from gunicorn.workers.base import Worker

from serving.transport.board import RESUMED_WINDOW, ConnectionBoard, accept_pause
from serving.transport.protocol import HttpProtocol, Settings
from serving.transport.responses import MAX_FIELD, MAX_HEADERS, MAX_REQUEST_LINE

TICK = 0.5  # seconds between two heartbeats and checks of every connection's deadlines
STOP_KEEPALIVE_LINGER = 2.0  # a stopping worker keeps idle connections this long at most
DEFAULT_LIMITS = (MAX_REQUEST_LINE, MAX_HEADERS, MAX_FIELD)  # gunicorn's, when its are 0


class _Response:
    """What gunicorn's access-log formatter reads of an answer."""

    __slots__ = ("headers", "sent", "status")

    def __init__(self, status: str, sent: int, headers: list[tuple[str, str]]) -> None:
        self.status = status
        self.sent = sent
        self.headers = headers


class TransportWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.board: ConnectionBoard | None = getattr(self.app, "connection_board", None)
        self.board_slot = self.board.claim() if self.board is not None else -1
        self.connections: set[HttpProtocol] = set()
        self.nr_conns = 0
        self._accepting = False
        self._resumed_at = float("-inf")
        self._stopping = False
        self._stop_deadline = 0.0

    @classmethod
    def check_config(cls, cfg: Any, log: Any) -> None:
        if cfg.is_ssl or cfg.http2_cleartext != "off" or "h2" in cfg.http_protocols:
            raise ConfigError(
                "modelreg's worker speaks plain HTTP/1.1: terminate TLS and HTTP/2 at the "
                "reverse proxy in front of it"
            )
        if cfg.proxy_protocol != "off" or getattr(cfg, "protocol", "http") != "http":
            raise ConfigError("modelreg's worker reads plain HTTP/1.1 only (no PROXY, uwsgi)")

    # -- set-up ----------------------------------------------------------------------------

    def init_process(self) -> None:
        import uvloop

        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        super().init_process()

    def init_signals(self) -> None:
        # gunicorn's handlers would interrupt the loop at any point: the loop's own run
        # between callbacks (installed in run, once the loop exists).
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.siginterrupt(signal.SIGUSR1, False)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        from config import load_config

        config = load_config()
        cfg = self.cfg
        self.settings = Settings(
            header_timeout=config.REQUEST_HEADER_TIMEOUT,
            body_timeout=config.REQUEST_BODY_TIMEOUT,
            write_timeout=config.RESPONSE_WRITE_TIMEOUT,
            keepalive=float(cfg.keepalive),
            request_buffer=config.REQUEST_BUFFER_BYTES,
            response_buffer=config.RESPONSE_BUFFER_BYTES,
            # The app refuses bodies past each route's own limit; this bounds the largest.
            max_body=max(
                config.MAX_ARTIFACT_BYTES + config.MAX_METADATA_BYTES + 1024**2,
                config.MAX_PREDICT_BODY_BYTES,
            ),
            max_request_line=cfg.limit_request_line or DEFAULT_LIMITS[0],
            max_headers=cfg.limit_request_fields or DEFAULT_LIMITS[1],
            max_header_field=cfg.limit_request_field_size or DEFAULT_LIMITS[2],
            multiprocess=cfg.workers > 1,
        )
        fastpath = getattr(self.wsgi, "wsgi_app", None)
        # The one hook the loop answers through: everything the fast path learns to answer
        # from memory (predict today; V2, MLflow, V1 as they join it) is answered on the loop.
        self.from_memory = getattr(fastpath, "answer_from_memory", None)
        self.app_after_memory = getattr(fastpath, "app", self.wsgi)
        self.pool = ThreadPoolExecutor(
            max_workers=max(1, cfg.threads), thread_name_prefix="modelreg-app"
        )

    # -- what connections call (the Host protocol) -----------------------------------------

    @property
    def accepting_requests(self) -> bool:
        return self.alive and not self._stopping

    def submit(self, function: Any, *args: Any) -> None:
        self.pool.submit(function, *args)

    def request_answered(
        self,
        environ: dict[str, Any],
        status: str,
        sent: int,
        started: float,
        headers: list[tuple[str, str]],
    ) -> None:
        """An answer given, on the loop or by a thread: it counts toward max_requests, and
        goes to gunicorn's access log when that is on (the app logs its own either way)."""
        self._count_request()
        if self.log.access_log_enabled:
            seconds = time.perf_counter() - started
            self.log.access(
                _Response(status, sent, headers),
                [],
                environ,
                datetime.timedelta(seconds=seconds),
            )

    def connection_closed(self, connection: HttpProtocol) -> None:
        if connection in self.connections:
            self.connections.discard(connection)
            self.nr_conns -= 1
            self._publish()
            if not self._stopping and not self._accepting:
                self._start_accepting()

    def _count_request(self) -> None:
        self.nr += 1
        if self.nr >= self.max_requests and not self._stopping:
            self.log.info("Autorestarting worker after current request.")
            self._begin_stop()

    # -- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        loop = self.loop
        for listener in self.sockets:
            listener.setblocking(False)
        loop.add_signal_handler(signal.SIGTERM, self._begin_stop)
        loop.add_signal_handler(signal.SIGQUIT, self._stop_now)
        loop.add_signal_handler(signal.SIGINT, self._stop_now)
        loop.add_signal_handler(signal.SIGABRT, self._abort)
        loop.add_signal_handler(signal.SIGWINCH, lambda: None)
        self._start_accepting()
        loop.call_soon(self._tick)
        try:
            loop.run_forever()
        finally:
            self._shut_down()

    def _tick(self) -> None:
        self.notify()
        now = time.monotonic()
        if not self._stopping and (not self.alive or not self.is_parent_alive()):
            self._begin_stop()
        for connection in list(self.connections):
            connection.check(now)
        if self._stopping:
            self._stop_step(now)
        self.loop.call_later(TICK, self._tick)

    def is_parent_alive(self) -> bool:
        return self.ppid == os.getppid()

    # -- accepting -------------------------------------------------------------------------

    def _start_accepting(self) -> None:
        if self._accepting or self._stopping:
            return
        self._accepting = True
        for listener in self.sockets:
            self.loop.add_reader(listener.fileno(), self._on_acceptable, listener)

    def _stop_accepting(self) -> None:
        if not self._accepting:
            return
        self._accepting = False
        for listener in self.sockets:
            self.loop.remove_reader(listener.fileno())

    def _on_acceptable(self, listener: Any) -> None:
        now = time.monotonic()
        fewest = self.board.fewest_elsewhere(self.board_slot) if self.board else None
        pause = accept_pause(self.nr_conns, fewest)
        if pause and now - self._resumed_at > RESUMED_WINDOW:
            # Another worker holds fewer connections: let it take this one first.
            self._stop_accepting()
            self.loop.call_later(pause, self._resume_after_pause)
            return
        self._resumed_at = float("-inf")  # one connection per pause, then pause again
        try:
            sock, client = listener.accept()
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK, errno.EINTR):
                return
            if error.errno in (errno.EMFILE, errno.ENFILE):
                self.log.error("Out of file descriptors: pausing accepts")
                self._stop_accepting()
                self.loop.call_later(TICK, self._start_accepting)
                return
            raise
        self._take(sock, client, listener.getsockname())

    def _resume_after_pause(self) -> None:
        self._resumed_at = time.monotonic()
        self._start_accepting()

    def _take(self, sock: socket.socket, client: Any, server: Any) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = HttpProtocol(self, client, server)
        self.connections.add(connection)
        self.nr_conns += 1
        self._publish()
        if self.nr_conns >= self.cfg.worker_connections:
            self._stop_accepting()
        task = self.loop.create_task(self.loop.connect_accepted_socket(lambda: connection, sock))
        task.add_done_callback(lambda done: self._connected(done, connection, sock))

    def _connected(self, done: asyncio.Task, connection: HttpProtocol, sock: socket.socket) -> None:
        if done.cancelled() or done.exception() is not None:
            with contextlib.suppress(OSError):
                sock.close()
            connection.connection_lost(None)

    def _publish(self) -> None:
        if self.board is not None:
            self.board.publish(self.board_slot, self.nr_conns)

    # -- stopping --------------------------------------------------------------------------

    def _begin_stop(self) -> None:
        """Graceful: no new connection, the requests in flight finish."""
        if self._stopping:
            return
        self._stopping = True
        self.alive = False
        self._stop_accepting()
        now = time.monotonic()
        self._stop_deadline = now + self.cfg.graceful_timeout
        self._idle_until = now + STOP_KEEPALIVE_LINGER
        self._stop_step(now)

    def _stop_step(self, now: float) -> None:
        if now >= self._idle_until:
            for connection in list(self.connections):
                connection.close_if_idle()
        if not self.connections or now >= self._stop_deadline:
            self.loop.stop()

    def _stop_now(self) -> None:
        self.alive = False
        self._stopping = True
        self.cfg.worker_int(self)
        self.loop.stop()

    def _abort(self) -> None:
        self.alive = False
        self.cfg.worker_abort(self)
        sys.exit(1)

    def _shut_down(self) -> None:
        self._stop_accepting()
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        self.pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(asyncio.sleep(0))
        for listener in self.sockets:
            with contextlib.suppress(OSError):
                listener.close()
