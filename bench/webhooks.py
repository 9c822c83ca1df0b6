"""Does webhook dispatch slow predictions? The same run with and without subscribers.

One `modelreg serve --workers 2` serves the 1-row LinearRegression at concurrency 8 (wrk)
while a loop edits a version's description every 20 ms (a registry change, hence an audit
event, 50 per second). Rounds alternate between no subscription and four subscriptions to
every event, all pointing at a receiver that takes 2 s to answer each delivery (the queue
grows throughout: every sender thread of both workers is busy). A third side, `queued`, is a
second server with the same four subscriptions and WEBHOOK_DISPATCH=false: its edits write
their deliveries to the outbox but nothing sends them, which separates what the outbox costs
the editing requests from what dispatching costs. Each round is measured after a warm-up;
the table gives the median req/s and p99 per side and their ratios.

    .venv/bin/python bench/webhooks.py --rounds 4 --duration 8 --out bench/WEBHOOKS.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadResult, run_wrk, wrk_version  # noqa: E402
from bench.models import REFERENCE_MODELS, request_rows, train  # noqa: E402
from bench.procs import stop_on_sigterm  # noqa: E402
from bench.targets import ModelregTarget, instances_body  # noqa: E402

RECEIVER_DELAY_S = 2.0
SUBSCRIBERS = 4
EDIT_INTERVAL_S = 0.02


class SlowReceiver:
    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(RECEIVER_DELAY_S)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Editor:
    """Registry changes in the background, the same in both kinds of round."""

    def __init__(self, base: str, name: str) -> None:
        self.url = f"{base}/models/{name}/versions/1"
        self.stop = threading.Event()
        self.edits = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            session.patch(self.url, json={"description": f"edit {self.edits}"}, timeout=30)
            self.edits += 1
            self.stop.wait(EDIT_INTERVAL_S)

    def __enter__(self) -> Editor:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def measure(
    target: ModelregTarget, url: str, body: Path, duration: float
) -> tuple[LoadResult, float]:
    """One round: (the load's result, the workers' CPU µs per prediction). CPU per request
    is steadier than req/s on a shared machine, and it counts what the dispatcher and the
    outbox take from the same processes."""
    with Editor(target.url, "bench-linear"):
        run_wrk(url, body, connections=8, duration_s=2)  # warm-up
        before = sum(target.worker_cpu().values())
        result = run_wrk(url, body, connections=8, duration_s=duration)
        used = sum(target.worker_cpu().values()) - before
    return result, used / max(result.requests, 1) * 1e6


SIDES = ("none", "subscribed", "queued")


def subscribe(target: ModelregTarget, receiver: SlowReceiver) -> list[int]:
    hooks = []
    for _ in range(SUBSCRIBERS):
        answer = requests.post(
            f"{target.url}/webhooks", json={"url": receiver.url, "events": ["*"]}, timeout=30
        )
        answer.raise_for_status()
        hooks.append(answer.json()["id"])
    return hooks


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "WEBHOOKS.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-webhooks-"))
    spec = next(s for s in REFERENCE_MODELS if s.name == "bench-linear")
    model = train(spec, work / "models")
    body = work / "body.json"
    body.write_bytes(instances_body(request_rows(1, spec.n_features)))
    receiver = SlowReceiver()
    allowed = {"WEBHOOK_ALLOWED_HOSTS": "127.0.0.1"}
    dispatching = ModelregTarget(work / "home", work, env=allowed, name="modelreg")
    queueing = ModelregTarget(
        work / "home-queued",
        work,
        env={**allowed, "WEBHOOK_DISPATCH": "false"},
        name="modelreg-queued",
    )
    results: dict[str, list[LoadResult]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    try:
        for target in (dispatching, queueing):
            target.launch()
            target.wait_ready()
            target.deploy([model])
            target.warm([model])
        subscribe(queueing, receiver)
        hooks: list[int] = []
        for n in range(args.rounds):
            for side in SIDES:
                if side == "subscribed" and not hooks:
                    hooks = subscribe(dispatching, receiver)
                if side == "none" and hooks:
                    for hook in hooks:
                        requests.delete(f"{dispatching.url}/webhooks/{hook}", timeout=30)
                    hooks = []
                target = queueing if side == "queued" else dispatching
                result, per_request = measure(target, target.predict_url(spec), body, args.duration)
                results[side].append(result)
                cpu[side].append(per_request)
                print(
                    f"round {n + 1} {side:10s} {result.req_per_s:9.1f} req/s  "
                    f"p99 {result.p99_ms:6.2f} ms  cpu {per_request:6.1f} us/req  "
                    f"errors {result.non_2xx + result.socket_errors}",
                    flush=True,
                )
    finally:
        dispatching.stop()
        queueing.stop()
    write_report(args, results, cpu)


def write_report(
    args: argparse.Namespace, results: dict[str, list[LoadResult]], cpu: dict[str, list[float]]
) -> None:
    def median(side: str, attr: str) -> float:
        if attr == "cpu":
            return statistics.median(cpu[side])
        values = [r.req_per_s if attr == "rps" else r.p99_ms for r in results[side]]
        return statistics.median(values)

    lines = [
        "# Webhook dispatch and predictions",
        "",
        f"Command: `python bench/webhooks.py --rounds {args.rounds} --duration {args.duration}`",
        "",
        f"`modelreg serve --workers 2`, 1-row LinearRegression, wrk c=8 ({wrk_version()}), a",
        f"registry edit every {EDIT_INTERVAL_S * 1000:.0f} ms in both kinds of round; "
        f"`subscribed`: {SUBSCRIBERS} subscriptions to every event, at a receiver answering",
        f"each delivery after {RECEIVER_DELAY_S:.0f} s; `queued`: a second server with the same",
        "subscriptions and WEBHOOK_DISPATCH=false (deliveries written, never sent). Rounds",
        "alternate; medians below.",
        "",
        "| side | req/s | p99 ms | worker CPU µs/req | rounds (req/s) |",
        "|---|---|---|---|---|",
    ]
    for side in SIDES:
        rounds = ", ".join(f"{r.req_per_s:,.0f}" for r in results[side])
        lines.append(
            f"| {side} | {median(side, 'rps'):,.0f} | {median(side, 'p99'):.2f} | "
            f"{median(side, 'cpu'):.1f} | {rounds} |"
        )
    lines.append("")
    for side, against in (("subscribed", "none"), ("queued", "none"), ("subscribed", "queued")):
        rps = median(side, "rps") / median(against, "rps")
        p99 = median(side, "p99") / median(against, "p99")
        used = median(side, "cpu") / median(against, "cpu")
        lines.append(f"- {side} / {against}: req/s {rps:.3f}, p99 {p99:.3f}, CPU/req {used:.3f}")
    lines.append("")
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
