"""Shadow copies through a real server (gunicorn, 2 workers): each worker hands its copies to
a child process of its own, which runs at idle priority, compares with the primary, reports
back, and dies with its worker."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests

from tests.conftest import fit_linear, joblib_bytes
from tests.e2e.servers import ServerProcess, register_joblib, wait_until

pytestmark = pytest.mark.slow

ROW = {"instances": [[0.5, 0.5, 0.5]]}


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def shadow_children(pgid: int) -> dict[int, int]:
    """{child pid: its parent's pid} for the shadow processes in a server's process group."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"serving.shadow_child" not in (entry / "cmdline").read_bytes():
                continue
            fields = _stat(int(entry.name))
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            found[int(entry.name)] = int(fields[1])
    return found


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def server(tmp_path):
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "STORAGE_URL": (tmp_path / "artifacts").as_uri(),
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "AUTH_DISABLED": "true",
        "SHADOW_MIN_IDLE_CORES": "0",  # the suite keeps both cores busy
    }
    started = ServerProcess(env, tmp_path, workers=2, threads=2)
    yield started
    started.stop()


def _predict_many(url: str, n: int) -> None:
    for _ in range(n):  # fresh connections: both workers get some
        answer = requests.post(
            f"{url}/models/price/production/predict",
            json=ROW,
            headers={"Connection": "close"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["version"] == 1


def _shadow_counts(url: str) -> dict[int, dict]:
    """Each worker's shadow counters (the stats are per process: ask until both answered)."""
    seen: dict[int, dict] = {}
    for _ in range(60):
        stats = requests.get(
            f"{url}/models/price/aliases/production/policy/stats",
            headers={"Connection": "close"},
            timeout=30,
        ).json()
        seen[stats["process"]] = stats["shadows"][0]
        if len(seen) == 2:
            break
    return seen


def test_copies_run_in_idle_priority_children_that_die_with_their_worker(server):
    for seed in (1, 2):
        register_joblib(server.url, "price", joblib_bytes(fit_linear(seed=seed, offset=seed)))
    promoted = requests.post(f"{server.url}/models/price/versions/1/promote", timeout=30)
    assert promoted.status_code == 200
    policy = {"variants": [{"version": 1, "weight": 1}], "shadows": [{"version": 2}]}
    assert (
        requests.put(
            f"{server.url}/models/price/aliases/production/policy", json=policy, timeout=30
        ).status_code
        == 200
    )
    _predict_many(server.url, 60)

    def every_copy_compared() -> bool:
        counts = _shadow_counts(server.url)
        return sum(c["sampled"] for c in counts.values()) == 60 and all(
            c["requests"] == c["sampled"] and c["dropped"] == 0 for c in counts.values()
        )

    wait_until(every_copy_compared, timeout=60, interval=0.2, what="every copy compared")
    counts = _shadow_counts(server.url)
    assert all(c["abs_delta"]["max"] > 0 for c in counts.values() if c["requests"])

    children = shadow_children(server.process.pid)
    assert children, "no shadow process found"
    for child, worker in children.items():
        assert os.sched_getscheduler(child) == os.SCHED_IDLE
        assert worker != server.process.pid  # a worker's child, not the arbiter's

    child, worker = next(iter(children.items()))
    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not _alive(child), timeout=15, what="the orphaned shadow process to exit")
    # The arbiter replaces the worker; predictions go on, and copies with them.
    _predict_many(server.url, 20)
    wait_until(
        lambda: len(shadow_children(server.process.pid)) >= 1, timeout=30, what="a shadow process"
    )
