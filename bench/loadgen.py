"""The load generator: wrk in its own process, driven by post.lua, results parsed from JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().parent / "post.lua"
INSTALL_HINT = "apt-get install -y wrk"


class WrkMissing(RuntimeError):
    pass


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(f"wrk is not installed; install it with: {INSTALL_HINT}")
    return path


def wrk_version() -> str:
    try:
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "unknown"


@dataclass(frozen=True)
class LoadResult:
    requests: int
    duration_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    non_2xx: int  # answers with status >= 400
    socket_errors: int  # connect + read + write errors and timeouts

    @property
    def req_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def failed(self) -> bool:
        return self.non_2xx > 0 or self.socket_errors > 0 or self.requests == 0


def combine(slices: list[LoadResult]) -> LoadResult:
    """Several wrk runs of one side (a cycle's slices) as one result: requests and time
    added, latencies the mean of the runs' (each run's quantiles come from wrk)."""
    n = len(slices)
    return LoadResult(
        requests=sum(r.requests for r in slices),
        duration_s=sum(r.duration_s for r in slices),
        p50_ms=sum(r.p50_ms for r in slices) / n,
        p90_ms=sum(r.p90_ms for r in slices) / n,
        p99_ms=sum(r.p99_ms for r in slices) / n,
        max_ms=max(r.max_ms for r in slices),
        non_2xx=sum(r.non_2xx for r in slices),
        socket_errors=sum(r.socket_errors for r in slices),
    )


def _parse(stdout: str) -> LoadResult:
    line = next((x for x in stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{stdout[-2000:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(
        int(data[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
    )
    return LoadResult(
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1e3,
        p90_ms=data["p90_us"] / 1e3,
        p99_ms=data["p99_us"] / 1e3,
        max_ms=data["max_us"] / 1e3,
        non_2xx=int(data["status_errors"]),
        socket_errors=errors,
    )


def run_wrk(
    url: str,
    body_file: Path,
    *,
    connections: int,
    duration_s: float,
    content_type: str = "application/json",
    timeout_s: float = 30,
    header: str | None = None,
) -> LoadResult:
    """One wrk run: `connections` keep-alive connections, min(connections, 2) wrk threads;
    `header` ("Name: value") is sent with every request."""
    threads = min(connections, 2)
    command = [
        require_wrk(),
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={round(timeout_s)}s",
        f"--script={LUA_SCRIPT}",
        url,
    ]
    env = {
        **os.environ,
        "BENCH_BODY_FILE": str(body_file),
        "BENCH_CONTENT_TYPE": content_type,
        "BENCH_HEADER": header or "",
    }
    out = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration_s + timeout_s + 60
    )
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return _parse(out.stdout)
