"""The shadow process: `python -m serving.shadow_child <fd>`, started by serving/shadow_process.py.

It reads the serving process's settings, builds its own serving stack from them (registry
lookups, artifact store, model cache; no background jobs, no metrics files, no shadows of its
own), then runs each copy it receives: rebuild the request's decoder, load the shadow version,
predict, compare with the primary's outputs. Counters go back to the parent every
SNAPSHOT_SECONDS while there is work. It exits when the parent's end of the socket closes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import pickle
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger("serving.shadow")

# How each protocol's decoder is rebuilt from what `decode.replay` carries: (protocol, *args).
REPLAYS = {
    "native": ("serving.native", "decoder"),
    "invocations": ("serving.invocations", "decoder"),
    "v1": ("serving.v1", "decoder"),
    "v2": ("serving.v2", "decoder"),
}
GATE_SECONDS = 0.1
# Read little at a time: what stays in the socket and the parent's buffer keeps them full, and
# a serving process with a full buffer drops a copy without even pickling it.
RECV_BYTES = 64 * 1024


def _idle_priority() -> None:
    """Run only on CPU time nobody else wants (SCHED_IDLE; the lowest nice value where the
    platform has no such policy)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


Sample = Callable[[], "tuple[float, float, float] | None"]


def machine_sample() -> tuple[float, float, float] | None:
    """(now, idle CPU seconds of all cores, this process's CPU seconds); None without /proc."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    idle = (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")  # idle + iowait
    return time.monotonic(), idle, time.process_time()


class ParentAvoider:
    """Keeps the child off the CPU its serving process last ran on (where there is another
    one): the worker then keeps its caches warm while the child works next to it."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        try:
            self.cpus = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.cpus = set()
        self._avoided: int | None = None

    def step(self) -> None:
        if len(self.cpus) < 2:
            return
        try:
            text = open(f"/proc/{self.parent}/stat", "rb").read()  # noqa: SIM115
            cpu = int(text[text.rindex(b")") + 2 :].split()[36])  # field 39: last CPU
        except (OSError, ValueError, IndexError):
            return
        if cpu != self._avoided and cpu in self.cpus:
            self._avoided = cpu
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, self.cpus - {cpu})


class IdleGate:
    """Whether the machine has CPU to spare. Idle priority alone still lets the child run in
    the short gaps of a saturated server, where its cache footprint slows the workers that
    preempt it. So it also pauses (its copies back up in the parent, then drop) while fewer
    than `min_cores` cores were idle over the last `period`, its own use counted as idle."""

    def __init__(
        self,
        min_cores: float,
        period: float = GATE_SECONDS,
        sample: Sample = machine_sample,
        every_period: Callable[[], None] | None = None,
    ) -> None:
        self.min_cores = min_cores
        self._every_period = every_period
        self.period = period
        self._sample = sample
        self._last = sample() if min_cores > 0 else None
        self._open = True
        self._checked = time.monotonic()

    def open(self) -> bool:
        """Whether to work now; judged again once per period."""
        now = time.monotonic()
        if now - self._checked < self.period:
            return self._open
        self._checked = now
        if self._every_period is not None:
            self._every_period()
        if self.min_cores <= 0:
            return True
        sample = self._sample()
        if sample is None or self._last is None:
            return True
        (t0, idle0, own0), (t1, idle1, own1) = self._last, sample
        self._last = sample
        if t1 > t0:
            self._open = ((idle1 - idle0) + (own1 - own0)) / (t1 - t0) >= self.min_cores
        return self._open


def _build(settings: Any) -> Any:
    from manage import EXTENSION_KEY, create_app

    quiet = dataclasses.replace(
        settings,
        AUTO_MIGRATE=False,
        WEBHOOK_DISPATCH=False,
        CANARY_BACKGROUND=False,
        MONITORING=False,
        MONITOR_BACKGROUND=False,
        SHADOWS=False,
        ACCESS_LOG=False,
    )
    return create_app(quiet).extensions[EXTENSION_KEY].dataplane


class Runner:
    def __init__(self, dataplane: Any) -> None:
        from serving.policies import _Arm

        self._dataplane = dataplane
        self._new_arm = _Arm
        self.arms: dict[tuple[str, str, int, int], Any] = {}
        self.done = 0

    def run(self, data: bytes) -> None:
        try:
            copy = pickle.loads(data)
        except Exception:  # the parent wrote it: a bug, not a request's fault
            log.exception("a shadow copy could not be read")
            self.done += 1
            return
        name, alias, revision, version, replay, primary = copy
        key = (name, alias, revision, version)
        arm = self.arms.get(key)
        if arm is None:
            arm = self.arms[key] = self._new_arm()
        try:
            module, function = REPLAYS[replay[0]]
            decode = getattr(importlib.import_module(module), function)(*replay[1:])
            started = time.perf_counter()
            outputs = self._dataplane.run_copy(name, version, decode)
            seconds = time.perf_counter() - started
        except Exception as error:  # counted; a shadow never answers anyone
            arm.errors += 1
            log.debug("a shadow copy to %s version %d failed: %s", name, version, error)
        else:
            arm.observe(seconds, outputs[0])
            arm.compare(primary, outputs[0])
        finally:
            self.done += 1

    def report(self) -> bytes:
        arms = [[*key, arm.counts()] for key, arm in self.arms.items()]
        self.arms = {}
        return orjson.dumps({"done": self.done, "arms": arms}, option=orjson.OPT_SERIALIZE_NUMPY)


def serve(sock: socket.socket) -> None:
    from serving.shadow_process import SNAPSHOT_SECONDS, frame, read_frames

    buffer = bytearray()
    while len(frames := read_frames(buffer)) == 0:
        data = sock.recv(1 << 16)
        if not data:
            return
        buffer += data
    settings = pickle.loads(frames[0])
    from registry.logs import configure_logging

    configure_logging(settings.LOG_LEVEL, settings.LOG_FORMAT)
    runner = Runner(_build(settings))
    gate = IdleGate(
        float(settings.SHADOW_MIN_IDLE_CORES), every_period=ParentAvoider(os.getppid()).step
    )
    pending = frames[1:]
    reported = time.monotonic()
    while True:
        done = 0
        while done < len(pending):
            if not gate.open():  # the machine is busy: the copies wait
                time.sleep(gate.period)
                continue
            runner.run(pending[done])
            done += 1
            if time.monotonic() - reported >= SNAPSHOT_SECONDS:
                sock.sendall(frame(runner.report()))
                reported = time.monotonic()
        busy = bool(runner.arms)
        timeout = max(SNAPSHOT_SECONDS - (time.monotonic() - reported), 0) if busy else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            data = sock.recv(RECV_BYTES)
            if not data:
                return
            buffer += data
            pending = read_frames(buffer)
        else:
            pending = []
        if busy and time.monotonic() - reported >= SNAPSHOT_SECONDS:
            sock.sendall(frame(runner.report()))
            reported = time.monotonic()


def main() -> None:
    _idle_priority()
    # Ctrl-C reaches the whole process group: the child ends when its parent closes the
    # socket, not with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    try:
        serve(sock)
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.close()


if __name__ == "__main__":
    main()
