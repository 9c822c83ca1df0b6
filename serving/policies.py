"""Traffic policies in a serving process: the compiled policy of an alias, variant choice,
per-variant statistics (shadow copies run in serving/shadow_process.py).

A policy arrives with its alias's mapping (serving/resolver.py re-reads both together) and is
compiled once: a 10,000-byte bucket -> variant table, so a request costs one hash (mmh3 of
the policy's salt and the unit key) and one index. Every process and host that reads the same
policy assigns a unit key to the same version; without a key a request is assigned at random.
"""

from __future__ import annotations

import bisect
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import mmh3
import numpy as np

from registry.policies.allocation import BUCKETS, bucket_table
from registry.policies.latency import BUCKETS as LATENCY_BUCKETS
from registry.policies.latency import LATENCY_BOUNDS, quantile

log = logging.getLogger(__name__)

SRM_ALPHA = 0.001  # the sample-ratio-mismatch flag's significance level
SRM_MIN_UNITS = 100
DELTA_RESERVOIR = 2048
MAX_CLASSES = 50
# A routed answer this small is queued for its variant's counters and folded in with the
# next FOLD_AT (a lock and a summary per request cost a few percent of a 1-row predict).
QUEUED_MAX_SIZE = 64
FOLD_AT = 256


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    alias: str
    revision: int
    salt: str
    versions: tuple[int, ...]
    weights: tuple[float, ...]
    table: bytes
    header: str | None  # WSGI environ key of the unit header (HTTP_X_UNIT_ID)
    header_name: str | None  # the header as configured (x-unit-id)
    field: str | None  # the input field holding the unit key
    shadows: tuple[tuple[int, float], ...]
    canary: bool = False  # a running canary: counts are flushed for its leader to judge

    def assign(self, unit: str | None) -> int:
        """The index of the variant serving this unit (random without a unit key)."""
        if unit is None:
            return self.table[int(random.random() * BUCKETS)]
        return self.table[mmh3.hash(self.salt + unit, signed=False) % BUCKETS]


def compile_policy(alias: str, policy: dict[str, Any] | None) -> CompiledPolicy | None:
    """The serving form of a record's `policy` ({"spec", "salt", "revision"})."""
    if not policy:
        return None
    spec = policy["spec"]
    sticky = spec.get("sticky") or {}
    header = sticky.get("header")
    return CompiledPolicy(
        alias=alias,
        revision=int(policy["revision"]),
        salt=str(policy["salt"]) + ":",
        versions=tuple(int(v["version"]) for v in spec["variants"]),
        weights=tuple(float(v["weight"]) for v in spec["variants"]),
        table=bucket_table(spec["ranges"]),
        header="HTTP_" + header.upper().replace("-", "_") if header else None,
        header_name=header,
        field=sticky.get("field"),
        shadows=tuple((int(s["version"]), float(s["sample"])) for s in spec.get("shadows", ())),
        canary=bool(spec.get("canary"))
        and (spec.get("canary_state") or {}).get("state") == "running",
    )


# ---- statistics -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Arm:
    """One variant's (or shadow's) counters in this process; bounded memory."""

    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * LATENCY_BUCKETS)
    rows: int = 0
    total: float = 0.0
    squares: float = 0.0
    classes: dict[str, int] = field(default_factory=dict)
    # shadows only
    sampled: int = 0
    dropped: int = 0
    compared_rows: int = 0
    agreeing_rows: int = 0
    deltas: list[float] = field(default_factory=list)
    delta_seen: float = 0  # weighted when merged from a subsample
    # Answers not yet counted: their latencies and outputs, each appended without a lock (an
    # append is atomic; the latency first), taken by `take_queued` under the stats' lock.
    queued_seconds: list[float] = field(default_factory=list)
    queued_outputs: list[Any] = field(default_factory=list)

    def observe(self, seconds: float, outputs: Any) -> None:
        self.requests += 1
        self.latency[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self._summarize(outputs)

    def take_queued(self) -> tuple[list[float], list[Any]]:
        """The queued answers' latencies and outputs, removed from the queue (the caller
        holds the stats' lock). What is appended meanwhile stays: only the first n go."""
        outputs = self.queued_outputs
        n = len(outputs)  # each has its latency queued before it
        if not n:
            return [], []
        seconds = self.queued_seconds
        batch = seconds[:n], outputs[:n]
        del seconds[:n], outputs[:n]
        return batch

    def observe_many(self, seconds: list[float], outputs: list[Any]) -> None:
        slots = np.searchsorted(LATENCY_BOUNDS, seconds, side="left")  # as bisect_left
        counts = np.bincount(slots, minlength=len(self.latency)).tolist()
        self.latency = [a + b for a, b in zip(self.latency, counts, strict=True)]
        self.requests += len(outputs)
        try:
            joined = np.concatenate(outputs)  # 1-row answers of one version: one array
        except ValueError:  # of different shapes
            for output in outputs:
                self._summarize(output)
            return
        self._summarize(joined)

    def _summarize(self, outputs: Any) -> None:
        if type(outputs) is np.ndarray and outputs.shape == (1,) and outputs.dtype == np.float64:
            value = float(outputs[0])  # the usual 1-row regression answer: no reductions
            self.rows += 1
            self.total += value
            self.squares += value * value
            return
        array = outputs if type(outputs) is np.ndarray else np.asarray(outputs)
        if array.ndim != 1 or array.size == 0:
            return
        if array.dtype.kind == "f":  # a regressor: mean and spread; else class counts
            if array.size == 1:  # the usual 1-row request, without numpy reductions
                value = float(array[0])
                self.rows += 1
                self.total += value
                self.squares += value * value
                return
            self.rows += int(array.size)
            wide = array.astype(np.float64, copy=False)
            self.total += float(wide.sum())
            self.squares += float(np.dot(wide, wide))
            return
        self.rows += int(array.size)
        values, counts = np.unique(array, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            key = str(value)
            if key in self.classes or len(self.classes) < MAX_CLASSES:
                self.classes[key] = self.classes.get(key, 0) + count

    def view(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"rows": self.rows}
        if self.classes:
            summary["classes"] = dict(sorted(self.classes.items()))
        elif self.rows:
            mean = self.total / self.rows
            summary["mean"] = mean
            summary["std"] = math.sqrt(max(self.squares / self.rows - mean * mean, 0.0))
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / (self.requests + self.errors)
            if self.requests + self.errors
            else None,
            "latency_seconds": {
                "p50": quantile(self.latency, 0.5),
                "p90": quantile(self.latency, 0.9),
                "p99": quantile(self.latency, 0.99),
            },
            "predictions": summary,
        }

    def compare(self, primary: Any, shadow: Any) -> None:
        a, b = np.asarray(primary), np.asarray(shadow)
        if a.shape != b.shape:
            return
        n = int(a.size)
        self.compared_rows += n
        if a.dtype.kind == "f" and b.dtype.kind == "f":
            for delta in np.abs(a - b).ravel().tolist():
                self._keep_delta(delta)
        else:
            self.agreeing_rows += int(np.count_nonzero(a == b))

    def counts(self) -> dict[str, Any]:
        """What `merge` adds: the counters a shadow process reports (JSON-ready)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency": self.latency,
            "rows": self.rows,
            "total": self.total,
            "squares": self.squares,
            "classes": self.classes,
            "compared_rows": self.compared_rows,
            "agreeing_rows": self.agreeing_rows,
            "deltas": self.deltas,
            "delta_seen": self.delta_seen,
        }

    def merge(self, counts: dict[str, Any]) -> None:
        """Add another process's counters (a shadow process's report) to these."""
        self.requests += counts["requests"]
        self.errors += counts["errors"]
        self.latency = [a + b for a, b in zip(self.latency, counts["latency"], strict=True)]
        self.rows += counts["rows"]
        self.total += counts["total"]
        self.squares += counts["squares"]
        for key, count in counts["classes"].items():
            if key in self.classes or len(self.classes) < MAX_CLASSES:
                self.classes[key] = self.classes.get(key, 0) + count
        self.compared_rows += counts["compared_rows"]
        self.agreeing_rows += counts["agreeing_rows"]
        deltas, seen = counts["deltas"], counts["delta_seen"]
        if deltas:  # each reported delta stands for seen / len(deltas) of those seen
            weight = seen / len(deltas)
            for delta in deltas:
                self._keep_delta(delta, weight)

    def _keep_delta(self, delta: float, weight: float = 1.0) -> None:
        self.delta_seen += weight
        if len(self.deltas) < DELTA_RESERVOIR:
            self.deltas.append(delta)
        else:  # a uniform reservoir sample of every delta seen
            slot = random.randrange(max(int(self.delta_seen), 1))
            if slot < DELTA_RESERVOIR:
                self.deltas[slot] = delta

    def shadow_view(self) -> dict[str, Any]:
        view = self.view()
        view.update(sampled=self.sampled, dropped=self.dropped, compared_rows=self.compared_rows)
        if self.deltas:
            q = np.quantile(np.asarray(self.deltas), [0.5, 0.9, 0.99, 1.0]).tolist()
            view["abs_delta"] = dict(zip(("p50", "p90", "p99", "max"), q, strict=True))
        elif self.compared_rows:
            view["agreement"] = self.agreeing_rows / self.compared_rows
        return view


def sample_ratio_mismatch(assigned: list[int], weights: tuple[float, ...]) -> dict[str, Any]:
    """Chi-square test of the units assigned to each variant against the weights: a small
    p-value means the split is broken (a bug in assignment, a variant failing silently...)."""
    from scipy.stats import chi2

    total = sum(assigned)
    share = sum(weights)
    expected = [total * w / share for w in weights]
    cells = [(o, e) for o, e in zip(assigned, expected, strict=True) if e > 0]
    if total < SRM_MIN_UNITS or len(cells) < 2:
        return {"units": total, "chi2": None, "p_value": None, "mismatch": False}
    statistic = sum((o - e) ** 2 / e for o, e in cells)
    p_value = float(chi2.sf(statistic, len(cells) - 1))
    return {
        "units": total,
        "chi2": statistic,
        "p_value": p_value,
        "mismatch": p_value < SRM_ALPHA,
        "alpha": SRM_ALPHA,
    }


OnRoute = Callable[..., None]  # (model, alias, version, outcome[, count])
# A policy revision's counters: (revision, variants, shadows, whether a canary is running)
_Arms = tuple[int, dict[int, _Arm], dict[int, _Arm], bool]


class PolicyStats:
    """Per (model, alias): per-variant and per-shadow counters of this process, for
    GET .../policy/stats; reset when the policy's revision changes."""

    def __init__(self, on_route: OnRoute | None = None) -> None:
        self._lock = threading.Lock()
        self._policies: dict[tuple[str, str], _Arms] = {}
        self.on_route = on_route
        self.started = time.time()
        # Counts of running canaries since the last flush: (name, alias, revision, version)
        self._pending: dict[tuple[str, str, int, int], _Arm] = {}
        # Routed requests not yet given to on_route: (name, alias, version, outcome) -> n.
        # Published in batches (each scrape, each canary tick), off the request path.
        self._unpublished: dict[tuple[str, str, int, str], int] = {}

    def _arms(self, name: str, policy: CompiledPolicy) -> tuple[dict[int, _Arm], dict[int, _Arm]]:
        found = self._policies.get((name, policy.alias))
        if found is None or found[0] != policy.revision:
            found = self._new_arms(name, policy)
        return found[1], found[2]

    def _new_arms(self, name: str, policy: CompiledPolicy) -> _Arms:
        key = (name, policy.alias)
        with self._lock:
            found = self._policies.get(key)
            if found is None or found[0] != policy.revision:
                if found is not None:
                    self._fold(key, found)  # the old revision's last answers still count
                found = (
                    policy.revision,
                    {v: _Arm() for v in policy.versions},
                    {v: _Arm() for v, _ in policy.shadows},
                    policy.canary,
                )
                self._policies[key] = found
        return found

    def success(
        self, name: str, policy: CompiledPolicy, version: int, seconds: float, outputs: Any
    ) -> None:
        found = self._policies.get((name, policy.alias))
        if found is None or found[0] != policy.revision:
            found = self._new_arms(name, policy)
        arm = found[1].get(version)
        if arm is None:
            return
        if type(outputs) is np.ndarray and outputs.size <= QUEUED_MAX_SIZE:
            arm.queued_seconds.append(seconds)
            queued = arm.queued_outputs
            queued.append(outputs)
            if len(queued) >= FOLD_AT:
                with self._lock:
                    self._fold((name, policy.alias), found)
            return
        with self._lock:  # a large answer is summarized now, not held until a fold
            arm.observe(seconds, outputs)
            if found[3]:
                self._pending_arm(name, policy.alias, policy.revision, version).observe(
                    seconds, outputs
                )
            key = (name, policy.alias, version, "success")
            self._unpublished[key] = self._unpublished.get(key, 0) + 1

    def _fold(self, key: tuple[str, str], found: _Arms) -> None:
        """Count the queued answers of one policy's variants (the caller holds the lock)."""
        name, alias = key
        revision, variants, _, canary = found
        for version, arm in variants.items():
            seconds, outputs = arm.take_queued()
            if not outputs:
                continue
            arm.observe_many(seconds, outputs)
            if canary:
                self._pending_arm(name, alias, revision, version).observe_many(seconds, outputs)
            key = (name, alias, version, "success")
            self._unpublished[key] = self._unpublished.get(key, 0) + len(outputs)

    def _fold_all(self) -> None:
        """The caller holds the lock."""
        for key, found in self._policies.items():
            self._fold(key, found)

    def failure(self, name: str, policy: CompiledPolicy, version: int) -> None:
        arm = self._arms(name, policy)[0].get(version)
        if arm is None:
            return
        key = (name, policy.alias, version, "error")
        with self._lock:
            arm.errors += 1
            if policy.canary:
                self._pending_arm(name, policy.alias, policy.revision, version).errors += 1
            self._unpublished[key] = self._unpublished.get(key, 0) + 1

    def publish(self) -> None:
        """Hand the routed-request counts gathered since the last call to on_route."""
        with self._lock:
            self._fold_all()
            if not self._unpublished:
                return
            batch, self._unpublished = self._unpublished, {}
        if self.on_route is not None:
            for (name, alias, version, outcome), count in batch.items():
                self.on_route(name, alias, version, outcome, count)

    def _pending_arm(self, name: str, alias: str, revision: int, version: int) -> _Arm:
        """The caller holds the lock."""
        key = (name, alias, revision, version)
        arm = self._pending.get(key)
        if arm is None:
            arm = self._pending[key] = _Arm()
        return arm

    def drain(self) -> list[tuple[str, str, int, int, dict[str, Any]]]:
        """The canary counts since the last drain, as (name, alias, revision, version,
        counts), and start again from zero."""
        with self._lock:
            self._fold_all()
            pending, self._pending = self._pending, {}
        return [
            (
                name,
                alias,
                revision,
                version,
                {
                    "requests": arm.requests,
                    "errors": arm.errors,
                    "latency": arm.latency,
                    "rows": arm.rows,
                    "total": arm.total,
                    "squares": arm.squares,
                },
            )
            for (name, alias, revision, version), arm in pending.items()
        ]

    def _shadow_arm(self, name: str, alias: str, revision: int, version: int) -> _Arm | None:
        """A shadow's counters while (name, alias) still has policy `revision`."""
        found = self._policies.get((name, alias))
        if found is None or found[0] != revision:
            return None
        return found[2].get(version)

    def add_offers(
        self, name: str, alias: str, revision: int, version: int, sampled: int, dropped: int
    ) -> None:
        """Copies of requests handed to a shadow (`sampled`) or dropped, at `revision`."""
        arm = self._shadow_arm(name, alias, revision, version)
        if arm is not None:
            with self._lock:
                arm.sampled += sampled
                arm.dropped += dropped

    def merge_shadow(
        self, name: str, alias: str, revision: int, version: int, counts: dict[str, Any]
    ) -> None:
        """A shadow process's counters for one shadow of (name, alias) at `revision`;
        dropped when the policy has changed since."""
        arm = self._shadow_arm(name, alias, revision, version)
        if arm is not None:
            with self._lock:
                arm.merge(counts)

    def view(self, name: str, policy: CompiledPolicy | None) -> dict[str, Any]:
        if policy is None:
            return {"revision": None, "variants": [], "shadows": [], "sample_ratio": None}
        variants, shadows = self._arms(name, policy)
        with self._lock:
            self._fold_all()
            arms = [(v, variants[v].view()) for v in policy.versions]
            shadow_views = [(v, shadows[v].shadow_view()) for v, _ in policy.shadows]
        assigned = [view["requests"] + view["errors"] for _, view in arms]
        return {
            "revision": policy.revision,
            "since": self.started,
            "variants": [
                {"version": v, "weight": w, **view}
                for (v, view), w in zip(arms, policy.weights, strict=True)
            ],
            "shadows": [
                {"version": v, "sample": s, **view}
                for (v, view), (_, s) in zip(shadow_views, policy.shadows, strict=True)
            ],
            "sample_ratio": sample_ratio_mismatch(assigned, policy.weights),
        }
