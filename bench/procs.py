"""Server processes for the benchmark: launch in a new session, measure memory, stop by group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def relative(path: Path) -> str:
    """A path as shown in output and results: relative to the repository when inside it."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path.name


class Process:
    """A command in its own session (process group), its output appended to a log file."""

    def __init__(
        self, command: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO_ROOT
    ) -> None:
        self.command = command
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 4_000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the process group (master and workers), SIGKILL if it lingers."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self._log.close()


# ---- memory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """Memory of a process group: RSS summed (counts shared pages once per process) and PSS."""

    processes: int
    rss_bytes: int
    pss_bytes: int
    rss_by_pid: tuple[int, ...] = ()  # per process, in pid order (the master first)

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / 2**20

    @property
    def pss_mib(self) -> float:
        return self.pss_bytes / 2**20

    def breakdown(self) -> str:
        """`a + b + c` MiB per process (pid order: the gunicorn master, then the workers)."""
        return " + ".join(f"{rss / 2**20:,.0f}" for rss in self.rss_by_pid)


def group_pids(pgid: int) -> list[int]:
    """Every live process whose process group is `pgid` (gunicorn master + workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid:  # state, ppid, pgrp
            pids.append(int(entry.name))
    return sorted(pids)


def _kib_field(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def group_memory(pgid: int) -> Memory:
    pids = group_pids(pgid)
    rss = tuple(_kib_field(Path(f"/proc/{pid}/status"), "VmRSS") for pid in pids)
    pss = sum(_kib_field(Path(f"/proc/{pid}/smaps_rollup"), "Pss") for pid in pids)
    return Memory(len(pids), sum(rss), pss, rss)


def stop_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that `finally` blocks stop the servers and remove
    worktrees and temporary folders as on Ctrl+C."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
