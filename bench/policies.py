"""What does a traffic policy cost a prediction? A plain alias, a sticky policy and a shadow.

One `modelreg serve --workers 2` serves the 1-row LinearRegression registered twice (v1, v2)
under three aliases:

    plain      -> v1, no policy
    production -> v1 with a 2-variant sticky policy (v1 50, v2 50, header X-Unit-Id)
    shadowed   -> v1 with a policy of one variant (v1) and a 100% shadow on v2

Every request carries the same `X-Unit-Id` header (on every side, so the bytes are equal):
the sticky side still hashes it once per request, as it would a different key. Points:
plain vs sticky at c8 (req/s, the 5% budget), plain vs shadowed at c1 (p50, the 10% budget)
and at c8 (req/s, and the shadow copies dropped by a full queue). Each point warms its sides,
then runs cycles of short slices in a palindrome (A B B A); the report gives medians of the
per-cycle ratios and every cycle.

    .venv/bin/python bench/policies.py --cycles 12 --slice 2 --out bench/POLICIES.md
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

from bench.loadgen import LoadResult, combine, run_wrk, wrk_version  # noqa: E402
from bench.models import REFERENCE_MODELS, request_rows, train  # noqa: E402
from bench.procs import stop_on_sigterm  # noqa: E402
from bench.targets import ModelregTarget, instances_body  # noqa: E402
from registry.client import Client  # noqa: E402

NAME = "bench-linear"
HEADER = "X-Unit-Id: unit-4711"
# (point, side, alias, connections)
POINTS = (
    ("c8", "plain", "plain", 8),
    ("c8", "sticky", "production", 8),
    ("c1", "plain", "plain", 1),
    ("c1", "policy", "policy", 1),
    ("c1", "shadowed", "shadowed", 1),
    ("c8 shadow", "plain", "plain", 8),
    ("c8 shadow", "policy", "policy", 8),
    ("c8 shadow", "shadowed", "shadowed", 8),
)


def set_up(target: ModelregTarget, model_path: Path, example: list) -> None:
    with Client(target.url, timeout=120) as client:
        for _ in range(2):
            client.register(
                NAME, model_path, description="bench policy model", input_example=example
            )
        for alias in ("production", "plain", "policy", "shadowed"):
            client.promote(NAME, 1, alias=alias, reason="benchmark")
    policies = {
        "production": {
            "variants": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}],
            "sticky": {"header": "X-Unit-Id"},
        },
        "policy": {"variants": [{"version": 1, "weight": 1}]},
        "shadowed": {
            "variants": [{"version": 1, "weight": 1}],
            "shadows": [{"version": 2, "sample": 1.0}],
        },
    }
    for alias, body in policies.items():
        answer = requests.put(
            f"{target.url}/models/{NAME}/aliases/{alias}/policy",
            json={**body, "reason": "benchmark"},
            timeout=60,
        )
        answer.raise_for_status()


def dropped_copies(target: ModelregTarget) -> int:
    """Shadow copies dropped so far, summed over the workers (stats are per process: ask
    until each worker has answered, keep each one's count)."""
    seen: dict[int, int] = {}
    for _ in range(40):
        stats = requests.get(
            f"{target.url}/models/{NAME}/aliases/shadowed/policy/stats", timeout=30
        ).json()
        seen[stats["process"]] = sum(s.get("dropped", 0) for s in stats.get("shadows", []))
        if len(seen) >= target.workers:
            break
    return sum(seen.values())


def serving_cpu(target: ModelregTarget) -> float:
    """CPU seconds of the serving workers, without their idle-priority shadow processes."""
    seconds = 0.0
    for pid, used in target.worker_cpu().items():
        try:
            if b"serving.shadow_child" in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
        except OSError:
            continue
        seconds += used
    return seconds


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--slice", type=float, default=2.0, help="seconds per slice")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "POLICIES.md")
    parser.add_argument(
        "--points", default="c8,c1,c8 shadow", help="which points to run (comma-separated)"
    )
    args = parser.parse_args()
    wanted = {p.strip() for p in args.points.split(",")}
    points = tuple(q for q in POINTS if q[0] in wanted)

    work = Path(tempfile.mkdtemp(prefix="modelreg-bench-policies-"))
    spec = next(s for s in REFERENCE_MODELS if s.name == NAME)
    model = train(spec, work / "models")
    body = work / "body.json"
    body.write_bytes(instances_body(request_rows(1, spec.n_features)))
    target = ModelregTarget(work / "home", work, name="modelreg")
    target.launch()
    # Per (point, side): one combined result per cycle.
    results: dict[tuple[str, str], list[LoadResult]] = {(p, s): [] for p, s, _, _ in points}
    # The workers' CPU time per request (steadier than req/s when the machine is shared).
    cpu: dict[tuple[str, str], list[float]] = {(p, s): [] for p, s, _, _ in points}
    drops: list[int] = []
    try:
        target.wait_ready()
        set_up(target, model.skops_path, model.example)
        for point in dict.fromkeys(q[0] for q in points):
            sides = [q for q in points if q[0] == point]
            for _, _, alias, connections in sides:  # warm every side once
                run_wrk(
                    target.version_url(NAME, alias),
                    body,
                    connections=connections,
                    duration_s=2,
                    header=HEADER,
                )
            for n in range(args.cycles):
                # A palindrome (A B C C B A): a drift of the machine's speed within the
                # cycle weighs on every side alike.
                slices: dict[str, list[LoadResult]] = {}
                used: dict[str, float] = {}
                before_drops = 0
                for _, side, alias, connections in sides + sides[::-1]:
                    shadow_point = side == "shadowed" and connections > 1
                    if shadow_point and side not in slices:
                        before_drops = dropped_copies(target)
                    url = target.version_url(NAME, alias)
                    cpu_before = serving_cpu(target)
                    result = run_wrk(
                        url, body, connections=connections, duration_s=args.slice, header=HEADER
                    )
                    used[side] = used.get(side, 0.0) + serving_cpu(target) - cpu_before
                    slices.setdefault(side, []).append(result)
                    if side == "shadowed":
                        time.sleep(0.5)  # its backlog drains before the next side runs
                if any(side == "shadowed" and c > 1 for _, side, _, c in sides):
                    drops.append(dropped_copies(target) - before_drops)
                for _, side, _, _ in sides:
                    combined = combine(slices[side])
                    results[(point, side)].append(combined)
                    cpu[(point, side)].append(used[side] / max(combined.requests, 1) * 1e6)
                    print(
                        f"cycle {n + 1} {point:9s} {side:8s} {combined.req_per_s:9.1f} req/s  "
                        f"p50 {combined.p50_ms:6.3f} ms  p99 {combined.p99_ms:6.2f} ms  "
                        f"cpu {cpu[(point, side)][-1]:6.1f} us/req  "
                        f"errors {combined.non_2xx + combined.socket_errors}",
                        flush=True,
                    )
    finally:
        target.stop()
    write_report(args, results, cpu, drops)


def write_report(
    args: argparse.Namespace,
    results: dict[tuple[str, str], list[LoadResult]],
    cpu: dict[tuple[str, str], list[float]],
    drops: list[int],
) -> None:
    def median(key: tuple[str, str], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results[key])

    lines = [
        "# Traffic policies and predictions",
        "",
        f"Command: `python bench/policies.py --cycles {args.cycles} --slice {args.slice}`",
        "",
        "`modelreg serve --workers 2`, 1-row LinearRegression (v1 and v2 the same model), wrk",
        f"({wrk_version()}) with `{HEADER}` on every request. `sticky`: the alias has a",
        "2-variant sticky policy (50/50 on the header); `shadowed`: a 1-variant policy with a",
        "100% shadow on v2; `policy`: the same 1-variant policy without the shadow; `plain`: an",
        "alias without a policy. Worker CPU leaves out their idle-priority shadow processes.",
        f"Each cycle runs a point's sides as a palindrome of {args.slice:g} s slices (A B B A, or",
        "A B C C B A), so a drift of the machine's speed weighs on every side alike; a side's",
        "numbers per cycle are its two slices together. Medians over cycles below.",
        "",
        "| point | side | req/s | p50 ms | p99 ms | worker CPU µs/req | cycles (req/s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for point, side, _, _ in POINTS:
        key = (point, side)
        if key not in results:
            continue
        rounds = ", ".join(f"{r.req_per_s:,.0f}" for r in results[key])
        lines.append(
            f"| {point} | {side} | {median(key, 'req_per_s'):,.0f} | "
            f"{median(key, 'p50_ms'):.3f} | {median(key, 'p99_ms'):.2f} | "
            f"{statistics.median(cpu[key]):.1f} | {rounds} |"
        )
    lines.append("")

    def paired(side: tuple[str, str], against: tuple[str, str], attr: str) -> float:
        """The median over cycles of side / against, each cycle's pair measured together
        (steadier than a ratio of medians on a machine whose speed drifts)."""
        pairs = zip(results[side], results[against], strict=True)
        return statistics.median(getattr(a, attr) / getattr(b, attr) for a, b in pairs)

    if ("c8", "sticky") in results:
        sticky = paired(("c8", "sticky"), ("c8", "plain"), "req_per_s")
        cpu_ratio = statistics.median(cpu[("c8", "sticky")]) / statistics.median(
            cpu[("c8", "plain")]
        )
        lines.append(
            f"- sticky / plain at c8, req/s: {sticky:.3f} (budget: at least 0.95); worker CPU "
            f"per request: {cpu_ratio:.3f}"
        )
    for against in ("plain", "policy"):
        if ("c1", "shadowed") in results:
            p50 = paired(("c1", "shadowed"), ("c1", against), "p50_ms")
            lines.append(f"- shadowed / {against} at c1, p50: {p50:.3f} (budget: at most 1.10)")
        if ("c8 shadow", "shadowed") in results:
            rps = paired(("c8 shadow", "shadowed"), ("c8 shadow", against), "req_per_s")
            lines.append(f"- shadowed / {against} at c8, req/s: {rps:.3f} (budget: at least 0.90)")
    lines.append("Ratios are medians of the per-cycle ratios.")
    if drops:
        lines.append(f"- shadow copies dropped per c8 cycle: {', '.join(map(str, drops))}")
    lines.append("")
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
