"""Soak: predictions at concurrency 16 while the registry changes under them, for minutes.

Two `modelreg serve --workers 2` processes share a throwaway PostgreSQL cluster and a
SeaweedFS S3 bucket (the production shape). While 16 threads predict through an alias, a
control loop registers versions, promotes them, rolls back and revokes the readers' tokens,
alternating between the two processes; with --outages the database and then the object store
are stopped for a few seconds each. Every version's model predicts its own version number, so
an answer whose prediction disagrees with its X-Model-Version header is a mixed answer.

    .venv/bin/python bench/soak.py                 # 10 minutes, outages included
    .venv/bin/python bench/soak.py --seconds 60    # a short run

Pass criteria (exit status 1 otherwise): no failed or mixed answers, no 5xx other than 503
inside an outage window, versions numbered 1..N without gaps or duplicates, every revoked
token refused everywhere within the revocation bound, and memory flat (the servers' RSS
after warm-up grows by less than --max-growth-mib). The figures go to --out as Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.servers import (  # noqa: E402
    ServerProcess,
    ThrowawayPostgres,
    env_strings,
    modelreg_cli,
)
from tests.s3 import launch  # noqa: E402

MODEL = "soak"
WIDTH = 4
REVOCATION_BOUND = 1.0  # seconds: the same bound as a promotion
OUTAGE_GRACE = 5.0  # seconds after a restart during which 503s still count as the outage


def model_bytes(version: int) -> bytes:
    """A linear model that predicts `version` for every row, as skops."""
    import skops.io
    from sklearn.linear_model import LinearRegression

    X = np.random.default_rng(version).random((20, WIDTH))
    return skops.io.dumps(LinearRegression().fit(X, np.full(20, float(version))))


@dataclass
class Outages:
    windows: list[list[float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def begin(self) -> None:
        with self.lock:
            self.windows.append([time.monotonic(), float("inf")])

    def end(self) -> None:
        with self.lock:
            self.windows[-1][1] = time.monotonic() + OUTAGE_GRACE

    def covers(self, started: float, ended: float) -> bool:
        with self.lock:
            return any(start <= ended and started <= stop for start, stop in self.windows)

    def active(self) -> bool:
        now = time.monotonic()
        return self.covers(now, now)


@dataclass
class Tally:
    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: int = 0
    ok: int = 0
    outage_503: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    revocation_delays: list[float] = field(default_factory=list)
    propagation: list[float] = field(default_factory=list)
    registered: list[int] = field(default_factory=list)
    promotions: int = 0
    rollbacks: int = 0
    revocations: int = 0
    control_refusals_in_outage: int = 0

    def fail(self, what: str) -> None:
        with self.lock:
            if len(self.failures) < 200:
                self.failures.append(what)


class Tokens:
    """Reader tokens the predictors use; the control loop revokes and replaces them."""

    def __init__(self, mint) -> None:
        self.mint = mint
        self.lock = threading.Lock()
        self.active = [mint() for _ in range(4)]
        self.revoked: dict[str, tuple[str, float]] = {}  # secret -> (name, revoked at)

    def pick(self) -> tuple[str, str]:
        with self.lock:
            return random.choice(self.active)

    def revoke(self, revoke) -> str:
        """Revoke one active token; a predictor may still hold it, so it counts as revoked
        from the moment the revocation is sent."""
        with self.lock:
            name, secret = self.active.pop(random.randrange(len(self.active)))
            self.revoked[secret] = (name, time.monotonic())
        revoke(name)
        with self.lock:
            self.active.append(self.mint())
        return secret

    def revoked_at(self, secret: str) -> float | None:
        with self.lock:
            entry = self.revoked.get(secret)
        return entry[1] if entry else None


def predictor(
    urls,
    tokens: Tokens,
    tally: Tally,
    outages: Outages,
    stop: threading.Event,
    max_version: list[int],
    bound: float,
) -> None:
    sessions = {url: requests.Session() for url in urls}
    rows = np.random.default_rng(threading.get_ident() % 1000).random((3, WIDTH)).tolist()
    body = json.dumps({"instances": rows})
    while not stop.is_set():
        url = random.choice(urls)
        name, secret = tokens.pick()
        started = time.monotonic()
        try:
            response = sessions[url].post(
                f"{url}/models/{MODEL}/production/predict",
                data=body,
                timeout=30,
                headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
            )
        except requests.RequestException as error:
            tally.fail(f"{url}: {type(error).__name__}: {error}")
            continue
        ended = time.monotonic()
        revoked = tokens.revoked_at(secret)
        with tally.lock:
            tally.answers += 1
            tally.latencies.append(ended - started)
        status = response.status_code
        if status == 200:
            version = int(response.headers["X-Model-Version"])
            predictions = response.json()["predictions"]
            if any(round(p) != version or abs(p - version) > 1e-6 for p in predictions):
                tally.fail(f"mixed answer: version {version} predicted {predictions}")
            elif version < 1 or version > max_version[0]:
                tally.fail(f"version {version} was never registered")
            elif revoked is not None and started > revoked + bound:
                tally.fail(f"{name} answered {started - revoked:.2f}s after its revocation")
            else:
                with tally.lock:
                    tally.ok += 1
        elif status == 401 and revoked is not None:
            with tally.lock:
                tally.revocation_delays.append(max(0.0, started - revoked))
        elif status == 503 and outages.covers(started, ended):
            with tally.lock:
                tally.outage_503 += 1
        else:
            tally.fail(f"{url}: {status} {response.text[:200]}")


def control(
    urls,
    admin: requests.Session,
    tokens: Tokens,
    tally: Tally,
    outages: Outages,
    stop: threading.Event,
    max_version: list[int],
) -> None:
    step = 0
    while not stop.wait(1.0):
        step += 1
        url = urls[step % len(urls)]
        if outages.active():
            continue
        try:
            if step % 3 == 0:
                version = max_version[0] + 1
                response = admin.post(
                    f"{url}/models/{MODEL}/versions",
                    timeout=60,
                    files={
                        "artifact": ("m.skops", model_bytes(version)),
                        "metadata": (
                            None,
                            json.dumps({"format": "skops", "input_example": [[0.5] * WIDTH]}),
                        ),
                    },
                )
                if response.status_code == 201:
                    got = response.json()["version"]
                    with tally.lock:
                        tally.registered.append(got)
                    if got != version:
                        tally.fail(f"registered version {got}, expected {version}")
                    max_version[0] = max(max_version[0], got)
                    promoted = admin.post(
                        f"{url}/models/{MODEL}/versions/{got}/promote",
                        json={"reason": "soak"},
                        timeout=60,
                    )
                    _expect(promoted, 200, "promote", tally, outages)
                    tally.promotions += promoted.status_code == 200
                else:
                    _expect(response, 201, "register", tally, outages)
            elif step % 7 == 0:
                response = admin.post(
                    f"{url}/models/{MODEL}/aliases/production/rollback",
                    json={"reason": "soak"},
                    timeout=60,
                )
                if response.status_code != 409:  # nothing left to roll back to
                    _expect(response, 200, "rollback", tally, outages)
                    tally.rollbacks += response.status_code == 200
            elif step % 5 == 0:

                def revoke(name: str, url: str = url) -> None:
                    _expect(
                        admin.delete(f"{url}/tokens/{name}", timeout=30),
                        200,
                        "revoke",
                        tally,
                        outages,
                    )

                secret = tokens.revoke(revoke)
                tally.revocations += 1
                delay = _refused_everywhere(urls, secret)
                with tally.lock:
                    tally.propagation.append(delay)
        except requests.RequestException as error:
            if not outages.active():
                tally.fail(f"control: {type(error).__name__}: {error}")


def _refused_everywhere(urls, secret: str, give_up: float = 10.0) -> float:
    """Seconds from the revocation until every process refuses the token, probed on fresh
    connections (so that each worker of each process is asked)."""
    revoked = time.monotonic()
    pending = {(url, probe) for url in urls for probe in range(4)}
    while pending and time.monotonic() - revoked < give_up:
        for url, probe in sorted(pending):
            with requests.Session() as fresh:
                answer = fresh.post(
                    f"{url}/models/{MODEL}/production/predict",
                    timeout=10,
                    json={"instances": [[0.5] * WIDTH]},
                    headers={"Authorization": f"Bearer {secret}"},
                )
            if answer.status_code == 401:
                pending.discard((url, probe))
        if pending:
            time.sleep(0.02)
    return time.monotonic() - revoked


def _expect(response, status: int, what: str, tally: Tally, outages: Outages) -> None:
    if response.status_code == status:
        return
    if response.status_code == 503 and outages.active():
        tally.control_refusals_in_outage += 1
        return
    tally.fail(f"{what}: {response.status_code} {response.text[:200]}")


def group_rss(pid: int) -> int:
    """Resident bytes of every process in the group `pid` leads (arbiter and workers)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            pgrp = int(stat.rsplit(")", 1)[1].split()[2])
            if pgrp == pid:
                status = Path(f"/proc/{entry}/status").read_text()
                rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
                total += int(rss.split()[1]) * 1024
        except (OSError, StopIteration, ValueError, IndexError):
            continue
    return total


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="modelreg-soak-"))
    postgres = ThrowawayPostgres()
    weed = launch(workdir / "weed")
    servers: list[ServerProcess] = []
    try:
        env = {
            "MODELREG_ENV": "production",
            "DATABASE_URL": postgres.url,
            "STORAGE_URL": f"s3://{weed.bucket}/soak",
            **env_strings(weed.config_overrides()),
            "INSTANCE_PATH": str(workdir / "instance"),
            "DB_CONNECT_TIMEOUT": "2",
        }
        modelreg_cli("db", "upgrade", env=env)
        secret = modelreg_cli(
            "tokens", "create", "--name", "soak-admin", "--role", "admin", env=env
        ).strip()
        servers = [ServerProcess(env, workdir, workers=args.workers, name=n) for n in "ab"]
        urls = [s.url for s in servers]
        admin = requests.Session()
        admin.headers["Authorization"] = f"Bearer {secret}"
        # A fresh connection per control call: a POST sent on a kept-alive connection just as
        # the server closes it idle is reset, and requests does not retry a POST.
        admin.headers["Connection"] = "close"
        counter = iter(range(1, 10**6))

        def mint() -> tuple[str, str]:
            name = f"reader-{next(counter)}"
            response = admin.post(
                f"{urls[0]}/tokens", json={"name": name, "role": "reader"}, timeout=30
            )
            response.raise_for_status()
            return name, response.json()["token"]

        tally, outages, stop = Tally(), Outages(), threading.Event()
        first = admin.post(
            f"{urls[0]}/models/{MODEL}/versions",
            timeout=60,
            files={
                "artifact": ("m.skops", model_bytes(1)),
                "metadata": (
                    None,
                    json.dumps({"format": "skops", "input_example": [[0.5] * WIDTH]}),
                ),
            },
        )
        first.raise_for_status()
        admin.post(
            f"{urls[0]}/models/{MODEL}/versions/1/promote", json={}, timeout=60
        ).raise_for_status()
        tally.registered.append(1)
        max_version = [1]
        tokens = Tokens(mint)
        threads = [
            threading.Thread(
                target=predictor,
                daemon=True,
                args=(urls, tokens, tally, outages, stop, max_version, args.revocation_bound),
            )
            for _ in range(args.concurrency)
        ]
        threads.append(
            threading.Thread(
                target=control,
                daemon=True,
                args=(urls, admin, tokens, tally, outages, stop, max_version),
            )
        )
        started = time.monotonic()
        for thread in threads:
            thread.start()
        memory: list[tuple[float, int]] = []
        plan = _outage_plan(args, postgres, weed)
        while (elapsed := time.monotonic() - started) < args.seconds:
            if plan and elapsed >= plan[0][0]:
                _, what, action = plan.pop(0)
                print(f"[{elapsed:6.1f}s] {what}", flush=True)
                if action == "down":
                    outages.begin()
                (
                    postgres.stop
                    if "database" in what and action == "down"
                    else postgres.start
                    if "database" in what
                    else weed.stop
                    if action == "down"
                    else weed.start
                )()
                if action == "up":
                    outages.end()
            memory.append((elapsed, sum(group_rss(s.process.pid) for s in servers)))
            time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        # An outage the loop began but had no time left to end (restarts are slow on a
        # loaded machine) ends here: the final listing needs the database back.
        # (Only the next step can be one: later ones never began.)
        if plan and plan[0][2] == "up":
            what = plan[0][1]
            print(f"[{time.monotonic() - started:6.1f}s] {what} (after the run)", flush=True)
            (postgres.start if "database" in what else weed.start)()
            outages.end()
        listed = _all_versions(admin, urls[1])
        report = _report(args, tally, memory, listed, time.monotonic() - started)
        print(report)
        if args.out:
            Path(args.out).write_text(report)
        args.report = report
        return 0 if "**PASS**" in report else 1
    finally:
        for server in servers:
            server.stop()
        weed.close()
        postgres.destroy()


def _outage_plan(args, postgres, weed) -> list[tuple[float, str, str]]:
    if not args.outages:
        return []
    s, down = args.seconds, args.outage_seconds
    return [
        (0.3 * s, "database down", "down"),
        (0.3 * s + down, "database up", "up"),
        (0.55 * s, "object store down", "down"),
        (0.55 * s + down, "object store up", "up"),
        (0.8 * s, "database down", "down"),
        (0.8 * s + down, "database up", "up"),
    ]


def _all_versions(admin: requests.Session, url: str) -> list[int]:
    versions, cursor = [], None
    while True:
        params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        page = admin.get(f"{url}/models/{MODEL}/versions", params=params, timeout=30).json()
        versions += [v["version"] for v in page["versions"]]
        cursor = page.get("next_cursor")
        if not cursor:
            return versions


def _report(args, tally: Tally, memory, listed: list[int], seconds: float) -> str:
    # Flatness is judged over the second half: by then every one-time path (first
    # registration on a worker, first outage) has run; a leak keeps growing through it, and
    # the second half holds an outage of each kind again.
    warm = [rss for t, rss in memory if t >= min(60.0, seconds / 3)]
    half = [rss for t, rss in memory if t >= seconds / 2]
    growth = (max(half[-10:]) - min(half[:10])) / 2**20 if len(half) >= 2 else 0.0
    gaps = sorted(listed) != list(range(1, len(listed) + 1))
    duplicates = len(tally.registered) != len(set(tally.registered))
    latencies = sorted(tally.latencies) or [0.0]
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    delays = tally.propagation
    late = [d for d in delays if d > args.revocation_bound]
    checks = {
        "no failed or mixed answers": not tally.failures,
        "versions 1..N, no gaps or duplicates": not gaps and not duplicates,
        f"memory growth under {args.max_growth_mib} MiB": growth < args.max_growth_mib,
        f"revocations refused within {args.revocation_bound:g} s": not late,
    }
    passed = all(checks.values())
    lines = [
        f"# Soak run: {seconds:.0f} s, concurrency {args.concurrency}, 2 processes x "
        f"{args.workers} workers, PostgreSQL + SeaweedFS"
        + (f", outages of {args.outage_seconds:g} s" if args.outages else ""),
        "",
        f"Result: {'**PASS**' if passed else '**FAIL**'}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| predictions answered | {tally.answers:,} ({tally.answers / seconds:,.0f}/s) |",
        f"| 200 with a consistent version | {tally.ok:,} |",
        f"| 503 inside outage windows | {tally.outage_503:,} |",
        f"| failed or mixed answers | {len(tally.failures)} |",
        f"| latency p50 / p99 / max | {p(0.5):.1f} / {p(0.99):.1f} / {latencies[-1] * 1000:.0f}"
        " ms |",
        f"| versions registered (listed) | {len(tally.registered)} ({len(listed)}); gaps: "
        f"{'yes' if gaps else 'none'}, duplicates: {'yes' if duplicates else 'none'} |",
        f"| promotions / rollbacks / revocations | {tally.promotions} / {tally.rollbacks} / "
        f"{tally.revocations} |",
        f"| control calls refused with 503 in outages | {tally.control_refusals_in_outage} |",
        "| revocation refused by every process after (median / max) | "
        + (f"{statistics.median(delays):.2f} / {max(delays):.2f} s |" if delays else "none |"),
        "| servers' RSS after warm-up: first / last; growth over the second half | "
        + (
            f"{min(warm[:10]) / 2**20:.0f} / {warm[-1] / 2**20:.0f} MiB; {growth:+.1f} MiB |"
            if warm and half
            else "n/a |"
        ),
        "| servers' RSS by minute | "
        + " / ".join(f"{rss / 2**20:.0f}" for t, rss in memory if int(t) % 60 == 0 and t >= 1)
        + " MiB |",
        "",
        *(f"- {'ok' if ok else 'FAILED'}: {name}" for name, ok in checks.items()),
    ]
    if tally.failures:
        lines += ["", "First failures:", *(f"    {f}" for f in tally.failures[:20])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--outages", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--outage-seconds", type=float, default=8.0)
    parser.add_argument("--max-growth-mib", type=float, default=64.0)
    parser.add_argument("--revocation-bound", type=float, default=REVOCATION_BOUND)
    parser.add_argument("--out", default=str(ROOT / "bench" / "SOAK.md"))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
