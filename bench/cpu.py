"""CPU accounting, to tell a clean measurement from one disturbed by other work on the machine.

The benchmark shares its cores with whatever else runs (test suites, editors...). Around each
point it compares the machine's busy time (/proc/stat) with the CPU time of the processes it
knows (the target's processes, wrk, itself): the rest is "other load", in cores.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.procs import group_pids

HZ = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle, summed over all cores, since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / HZ


def group_cpu_by_pid(pgid: int) -> dict[int, float]:
    """user + system CPU seconds of each live process of a process group."""
    seconds = {}
    for pid in group_pids(pgid):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds[pid] = (int(fields[11]) + int(fields[12])) / HZ  # utime, stime
    return seconds


def cores_by_pid(before: dict[int, float], after: dict[int, float], wall_s: float) -> list[float]:
    """Average cores each process used between two `group_cpu_by_pid` snapshots."""
    if wall_s <= 0:
        return []
    return [(after[pid] - before.get(pid, 0.0)) / wall_s for pid in sorted(after)]


def _own_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuWindow:
    """Start it, run something, `other_cores()` = average cores used by unknown processes."""

    known: Callable[[], float]  # CPU seconds of the processes under test (target)
    started_wall: float = 0.0
    started_busy: float = 0.0
    started_known: float = 0.0
    started_own: float = 0.0

    def start(self) -> CpuWindow:
        self.started_wall = time.monotonic()
        self.started_busy = machine_busy_seconds()
        self.started_known = self.known()
        self.started_own = _own_seconds(resource.RUSAGE_SELF) + _own_seconds(
            resource.RUSAGE_CHILDREN
        )  # children = wrk runs reaped in the window
        return self

    def other_cores(self) -> float:
        wall = time.monotonic() - self.started_wall
        busy = machine_busy_seconds() - self.started_busy
        known = self.known() - self.started_known
        own = (
            _own_seconds(resource.RUSAGE_SELF)
            + _own_seconds(resource.RUSAGE_CHILDREN)
            - self.started_own
        )
        return max(0.0, busy - known - own) / wall if wall > 0 else 0.0


def wait_for_quiet(
    known: Callable[[], float],
    *,
    threshold_cores: float,
    max_wait_s: float,
    sample_s: float = 1.0,
    say: Callable[[str], None] = print,
) -> float:
    """Wait (up to max_wait_s) until other processes use less than threshold_cores; return
    the last sample's other load."""
    deadline = time.monotonic() + max_wait_s
    warned = False
    while True:
        window = CpuWindow(known).start()
        time.sleep(sample_s)
        other = window.other_cores()
        if other < threshold_cores or time.monotonic() >= deadline:
            return other
        if not warned:
            say(f"  (waiting for other load on the machine to settle: {other:.2f} cores busy)")
            warned = True
