"""Shadow copies, run in a child process of each serving process.

A shadow copy is a second decode and inference of a request that has already been answered.
Run on a thread of the serving process, it shares the GIL with the primaries: measured at
concurrency 1, a 100% shadow raised the primary's p50 by 24%, and under saturation it took a
third of the throughput even with copies dropped (bench/POLICIES.md). So each serving process
hands its copies to one child process of its own, which the kernel schedules at SCHED_IDLE:
it runs only on CPU time no one else wants. At low load it uses the idle core; under
saturation it falls behind, the bounded buffer in front of it fills, and further copies are
dropped and counted. The primary's cost per copy is one pickle and one non-blocking send.

The wire is one Unix stream socket (a socketpair):
- parent -> child: the settings (once), then one frame per copy: the model, alias, policy
  revision, shadow version, how to rebuild the request's decoder (`decode.replay`), and the
  primary's outputs. Pickle, since only the parent writes it.
- child -> parent: every SNAPSHOT_SECONDS while it works, the counters gathered since the
  last report (latency, prediction summary, |delta| or agreement, errors) as JSON, which the
  parent adds to its per-policy statistics. JSON, so the child (which parses request bodies)
  can never hand the parent something to execute.

The child exits when its parent's end of the socket closes; the parent starts a new child
after a failure, at most once per RESTART_SECONDS.
"""

from __future__ import annotations

import logging
import os
import pickle
import random
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

import numpy as np
import orjson

from serving.policies import CompiledPolicy, OnRoute, PolicyStats

log = logging.getLogger(__name__)

BUFFER_BYTES = 4 * 1024 * 1024  # copies waiting in the parent beyond the socket's own buffer
SNAPSHOT_SECONDS = 0.2
# Requests only append their copies; the reader thread sends them within READER_SECONDS.
# Each send wakes the child, which costs the sender tens of microseconds: once per request
# would be a tenth of a small request's time.
READER_SECONDS = 0.02
SMALL_OUTPUT = 1024  # primary outputs up to this size go as a list (pickles 10x faster)
RESTART_SECONDS = 5.0
_HEADER = struct.Struct("!I")
_MAX_FRAME = 256 * 1024 * 1024


def frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


def read_frames(buffer: bytearray) -> list[bytes]:
    """The complete frames at the front of `buffer`, removed from it."""
    frames = []
    start = 0
    while len(buffer) - start >= _HEADER.size:
        (size,) = _HEADER.unpack_from(buffer, start)
        if size > _MAX_FRAME:
            raise ValueError(f"a frame of {size} bytes")
        end = start + _HEADER.size + size
        if end > len(buffer):
            break
        frames.append(bytes(buffer[start + _HEADER.size : end]))
        start = end
    del buffer[:start]
    return frames


# This process's pid, kept current across forks (os.getpid() is a system call per request).
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def _portable(outputs: Any) -> Any:
    """The primary's outputs as the child receives them: small arrays as lists."""
    if (
        type(outputs) is np.ndarray
        and outputs.size <= SMALL_OUTPUT
        and outputs.dtype.kind in "fiub"
    ):
        return outputs.tolist()
    return outputs


class ShadowProcess:
    """The serving process's side: offers copies, keeps the child running, and folds its
    reports into `stats` (the data plane calls `offer`; the stats view `publish` and
    `pending`; tests `join`)."""

    def __init__(
        self,
        settings: Any,
        stats: PolicyStats,
        *,
        on_outcome: OnRoute | None = None,
        buffer_bytes: int = BUFFER_BYTES,
        socket_buffer_bytes: int | None = None,
        restart_seconds: float = RESTART_SECONDS,
    ) -> None:
        self._settings = settings  # the Config the child builds its own serving stack from
        self._stats = stats
        self._on_outcome = on_outcome
        self._limit = buffer_bytes
        self._socket_buffer = socket_buffer_bytes  # None: the kernel's default
        self._restart_seconds = restart_seconds
        self._lock = threading.Lock()
        self._outbox = bytearray()
        self._sock: socket.socket | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._owner = 0  # the pid that started the child (a fork must start its own)
        self._failed_at = 0.0
        self.sent = 0  # copies accepted for the current child
        self.done = 0  # copies the current child reported finished
        self.dropped = 0
        self._offers: dict[tuple[str, str, int, int], list[int]] = {}  # [sampled, dropped]

    # -- the request path ----------------------------------------------------------------

    def offer(
        self, name: str, policy: CompiledPolicy, decode: Any, outputs: tuple[Any, ...]
    ) -> None:
        replay = getattr(decode, "replay", None)
        primary = None
        for version, sample in policy.shadows:
            if sample < 1.0 and random.random() >= sample:
                continue
            data = None
            if replay is not None and len(self._outbox) < self._limit:  # else: not worth a pickle
                if primary is None:
                    primary = _portable(outputs[0])
                copy = (name, policy.alias, policy.revision, version, replay, primary)
                data = frame(pickle.dumps(copy, protocol=5))
            key = (name, policy.alias, policy.revision, version)
            with self._lock:
                accepted = data is not None and self._queue(data)
                # Tallied here, added to the statistics and metrics off the request path.
                counts = self._offers.get(key)
                if counts is None:
                    counts = self._offers[key] = [0, 0]
                counts[0 if accepted else 1] += 1

    def _queue(self, data: bytes) -> bool:
        """Queue one copy for the child (lock held); False: dropped."""
        sock = self._sock
        if sock is None or self._owner != _PID[0]:  # not started, failed, or forked
            sock = self._start()
        if sock is None or len(self._outbox) + len(data) > self._limit:
            return False
        self._outbox += data  # the reader thread sends it (a send here costs a wake-up)
        self.sent += 1
        return True

    def publish(self) -> None:
        """Add the copies offered since the last call to the statistics and metrics (the
        reader thread does it every READER_SECONDS; the stats view before it reads)."""
        if not self._offers:
            return
        with self._lock:
            offers, self._offers = self._offers, {}
        for (name, alias, revision, version), (sampled, dropped) in offers.items():
            self._stats.add_offers(name, alias, revision, version, sampled, dropped)
            self.dropped += dropped
            if dropped and self._on_outcome is not None:
                self._on_outcome(name, alias, version, "dropped", dropped)

    def _flush(self, sock: socket.socket) -> None:
        """Send what the socket takes now (reader thread, lock held)."""
        try:
            sent = sock.send(self._outbox)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._outbox.clear()
            return
        del self._outbox[:sent]

    # -- the child ---------------------------------------------------------------------

    def _start(self) -> socket.socket | None:
        """Start the child (lock held); None while a failed one is in its restart pause."""
        if self._failed_at and time.monotonic() - self._failed_at < self._restart_seconds:
            return None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if self._socket_buffer is not None:
            parent.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._socket_buffer)
            child.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._socket_buffer)
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "serving.shadow_child", str(child.fileno())],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            log.exception("the shadow process could not start")
            parent.close()
            self._failed_at = time.monotonic()
            return None
        finally:
            child.close()  # the child holds its own copy
        parent.sendall(frame(pickle.dumps(self._settings, protocol=5)))
        parent.setblocking(False)
        self._sock, self._child, self._owner = parent, process, _PID[0]
        self._outbox.clear()
        self.sent = self.done = 0
        threading.Thread(
            target=self._read, args=(parent, process), name="modelreg-shadow-reader", daemon=True
        ).start()
        return parent

    def _read(self, sock: socket.socket, process: subprocess.Popen[bytes]) -> None:
        """Reports from the child; sends the copies `_queue` appended (within READER_SECONDS)."""
        buffer = bytearray()
        next_send = 0.0
        try:
            while True:
                # One send per READER_SECONDS at most: a thread that sent whenever the socket
                # could take more would wake up for every copy, and take the GIL from the
                # requests each time.
                wait = max(next_send - time.monotonic(), 0.0)
                sending = self._outbox and not wait
                writing = [sock] if sending else []
                readable, writable, _ = select.select(
                    [sock], writing, [], READER_SECONDS if sending or not self._outbox else wait
                )
                if writable:
                    with self._lock:
                        if self._sock is sock and self._outbox:
                            self._flush(sock)
                    next_send = time.monotonic() + READER_SECONDS
                self.publish()
                if readable:
                    data = sock.recv(1 << 16)
                    if not data:
                        break
                    buffer += data
                    for report in read_frames(buffer):
                        self._fold(orjson.loads(report))
        except (OSError, ValueError):
            if self._sock is sock:  # not a stop()
                log.exception("the shadow process's reports could not be read")
        with self._lock:
            stopped = self._sock is not sock
            if not stopped:
                self._sock = None
                self._outbox.clear()
                self._failed_at = time.monotonic()
        sock.close()
        if stopped:
            return
        code = process.poll()
        if code is None:
            process.kill()
            code = process.wait()
        log.warning("the shadow process exited (status %s); a new one starts when needed", code)

    def _fold(self, report: dict[str, Any]) -> None:
        self.done = int(report["done"])
        for name, alias, revision, version, counts in report["arms"]:
            self._stats.merge_shadow(name, alias, revision, version, counts)
            if self._on_outcome is not None:
                if counts["requests"]:
                    self._on_outcome(name, alias, version, "compared", counts["requests"])
                if counts["errors"]:
                    self._on_outcome(name, alias, version, "error", counts["errors"])

    # -- for the stats view and tests ----------------------------------------------------

    def pending(self) -> int:
        """Copies handed over and not yet reported finished."""
        self.publish()
        return max(self.sent - self.done, 0)

    def join(self, timeout: float = 30.0) -> bool:
        """Wait until every copy handed over is reported finished; whether it was in time.
        (The first copy also waits for the child to start: a second or two.)"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.done >= self.sent:
                self.publish()
                return True
            time.sleep(0.01)
        return False

    def child_pid(self) -> int | None:
        return self._child.pid if self._child is not None and self._sock is not None else None

    def stop(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # the child sees the end of its input and exits
        if self._child is not None:
            try:
                self._child.wait(5)
            except subprocess.TimeoutExpired:
                self._child.kill()
