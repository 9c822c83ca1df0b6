"""What does a traffic policy cost a prediction? Side by side in one run, one server.

`modelreg serve --workers 2` serves the 1-row LinearRegression (versions 1 and 2, the same
model) on three aliases of one model:

- `production`: a plain alias (the reference);
- `ab`: a two-variant sticky policy (50/50 by `X-Unit-Id`);
- `shadow`: all traffic on version 1 with a 100% shadow copy to version 2.

Every request carries a different `X-Unit-Id` on every side (bench/post.lua), so the client's
work is the same. Rounds alternate the sides; the table gives medians and ratios to the plain
alias: the policy at c8 (bound: >= 0.95), the shadow's p50 at c1 (bound: <= 1.10) and its
throughput at c8 under saturation (bound: >= 0.90), with the shadow copies dropped there.

    .venv/bin/python bench/policies.py --rounds 5 --duration 8 --out bench/POLICIES.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadgen import LoadResult, run_wrk, wrk_version  # noqa: E402
from bench.models import REFERENCE_MODELS, request_rows, train  # noqa: E402
from bench.procs import stop_on_sigterm  # noqa: E402
from bench.targets import ModelregTarget, instances_body  # noqa: E402
from registry.client import Client  # noqa: E402

UNIT = "X-Unit-Id"
POINTS = [  # (label, alias, connections)
    ("plain c8", "production", 8),
    ("sticky 2-variant c8", "ab", 8),
    ("plain c1", "production", 1),
    ("shadow 100% c1", "shadow", 1),
    ("shadow 100% c8", "shadow", 8),
]


def setup(target: ModelregTarget, model) -> None:
    with Client(target.url, timeout=120) as client:
        name = model.spec.name
        second = client.register(name, model.skops_path, input_example=model.example)
        for alias in ("ab", "shadow"):
            client.promote(name, 1, alias=alias, reason="benchmark")
        client.set_policy(name, "ab", {1: 50, second["version"]: 50}, sticky={"header": UNIT})
        client.set_policy(name, "shadow", {1: 1}, shadows={second["version"]: 1.0})


def shadow_counts(target: ModelregTarget, name: str) -> tuple[int, int]:
    """(sampled, dropped) summed over what a few calls reach (each is one process's)."""
    seen: dict[int, tuple[int, int]] = {}
    for _ in range(12):
        stats = requests.get(
            f"{target.url}/models/{name}/aliases/shadow/policy/stats", timeout=30
        ).json()
        shadow = stats["shadows"][0]
        seen[stats["process"]] = (shadow["sampled"], shadow["dropped"])
    return sum(s for s, _ in seen.values()), sum(d for _, d in seen.values())


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "POLICIES.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-policies-"))
    spec = next(s for s in REFERENCE_MODELS if s.name == "bench-linear")
    model = train(spec, work / "models")
    body = work / "body.json"
    body.write_bytes(instances_body(request_rows(1, spec.n_features)))
    target = ModelregTarget(work / "home", work, name="modelreg")
    target.launch()
    results: dict[str, list[LoadResult]] = {label: [] for label, _, _ in POINTS}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        target.wait_ready()
        target.deploy([model])
        setup(target, model)
        for alias in ("production", "ab", "shadow"):
            for _ in range(16):
                requests.post(
                    target.version_url(spec.name, alias),
                    data=body.read_bytes(),
                    headers={"Content-Type": "application/json"},
                    timeout=30,
                )
        for n in range(args.rounds):
            order = POINTS if n % 2 == 0 else list(reversed(POINTS))
            for label, alias, connections in order:
                url = target.version_url(spec.name, alias)
                run_wrk(url, body, connections=connections, duration_s=2, unit_header=UNIT)
                result = run_wrk(
                    url, body, connections=connections, duration_s=args.duration, unit_header=UNIT
                )
                results[label].append(result)
                print(
                    f"round {n + 1} {label:22s} {result.req_per_s:9.1f} req/s  "
                    f"p50 {result.p50_ms:6.3f} ms  p99 {result.p99_ms:6.2f} ms  "
                    f"errors {result.non_2xx + result.socket_errors}",
                    flush=True,
                )
        sampled, dropped = shadow_counts(target, spec.name)
    finally:
        target.stop()
    write_report(args, results, started, sampled, dropped)


def write_report(
    args: argparse.Namespace,
    results: dict[str, list[LoadResult]],
    started: str,
    sampled: int,
    dropped: int,
) -> None:
    def med(label: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results[label])

    def pair_ratio(label: str, reference: str, attr: str) -> float:
        """Median of the per-round ratios (rounds are measured next to each other)."""
        return statistics.median(
            getattr(a, attr) / getattr(b, attr)
            for a, b in zip(results[label], results[reference], strict=True)
        )

    sticky = pair_ratio("sticky 2-variant c8", "plain c8", "req_per_s")
    shadow_p50 = pair_ratio("shadow 100% c1", "plain c1", "p50_ms")
    shadow_c8 = pair_ratio("shadow 100% c8", "plain c8", "req_per_s")
    lines = [
        "# Traffic policies and predictions",
        "",
        f"Command: `python bench/policies.py --rounds {args.rounds} --duration {args.duration}`"
        f" on {started}",
        "",
        "`modelreg serve --workers 2`, 1-row LinearRegression, wrk "
        f"({wrk_version()}), a new `X-Unit-Id` per request on every side; rounds alternate "
        "the order of the points; medians below, ratios are medians of per-round ratios.",
        "",
        "| point | req/s | p50 ms | p99 ms | rounds (req/s) |",
        "|---|---|---|---|---|",
    ]
    for label, _, _ in POINTS:
        rounds = ", ".join(f"{r.req_per_s:,.0f}" for r in results[label])
        lines.append(
            f"| {label} | {med(label, 'req_per_s'):,.0f} | {med(label, 'p50_ms'):.3f} | "
            f"{med(label, 'p99_ms'):.2f} | {rounds} |"
        )
    lines += [
        "",
        f"- sticky 2-variant / plain, req/s at c8: **{sticky:.3f}** (bound >= 0.95: "
        f"{'met' if sticky >= 0.95 else 'NOT met'})",
        f"- 100% shadow / plain, p50 at c1: **{shadow_p50:.3f}** (bound <= 1.10: "
        f"{'met' if shadow_p50 <= 1.10 else 'NOT met'})",
        f"- 100% shadow / plain, req/s at c8 (saturated): **{shadow_c8:.3f}** (bound >= 0.90: "
        f"{'met' if shadow_c8 >= 0.90 else 'NOT met'}); shadow copies sampled {sampled:,}, "
        f"dropped by a full queue {dropped:,} (the processes the stats calls reached)",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
