"""The progressive canary's judgement: per-variant counts merged across processes, the
guardrails, and each step as a compare-and-set on the policy's revision.

Serving processes flush what they counted for a running canary (policy_counts, additive);
the one process holding the `canary` lease judges every running canary each tick: a
breached guardrail aborts it (candidate share 0), a step baked long enough with enough
candidate requests advances it, and the last step promotes the candidate through the
normal gated promotion. Each change needs the revision the judgement read, so a leader that
dies mid-step and its successor can never both apply the same step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.changes import AliasMoved
from registry.db import utcnow
from registry.errors import ModelregError
from registry.models import Alias, ModelVersion, RegisteredModel
from registry.monitoring import outcomes
from registry.monitoring.tables import MonitorState
from registry.policies import allocation, latency, store
from registry.policies.tables import AliasPolicy, PolicyCount
from registry.unit_of_work import UnitOfWorkProvider

GUARD_MIN_REQUESTS = 20  # candidate requests before its error rate is compared
# A p99 needs a hundred-odd observations per side to mean anything (one slow first request
# of a freshly loaded version would otherwise decide it).
P99_MIN_REQUESTS = 200
Counts = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Running:
    model: str
    alias: str
    revision: int
    control: int
    candidate: int
    spec: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str  # hold, advance, abort, complete
    reason: str = ""


def write_counts(
    session: Session, writer: str, drained: Iterable[tuple[str, str, int, int, Counts]]
) -> int:
    """One flush of a process's canary counts (the caller commits)."""
    at = utcnow()
    n = 0
    for name, alias, revision, version, counts in drained:
        session.add(
            PolicyCount(
                model=name,
                alias=alias,
                revision=revision,
                version=version,
                writer=writer[:64],
                requests=counts["requests"],
                errors=counts["errors"],
                summary={k: counts[k] for k in ("latency", "rows", "total", "squares")},
                written_at=at,
            )
        )
        n += 1
    return n


def running(session: Session) -> list[Running]:
    """Every canary that is still walking its steps."""
    rows = session.execute(
        select(AliasPolicy, RegisteredModel.name, ModelVersion.version)
        .join(RegisteredModel, RegisteredModel.id == AliasPolicy.model_id)
        .join(
            Alias,
            (Alias.model_id == AliasPolicy.model_id) & (Alias.name == AliasPolicy.alias),
        )
        .join(ModelVersion, ModelVersion.id == Alias.version_id)
        .where(AliasPolicy.spec.is_not(None))
    ).all()
    found = []
    for policy, name, control in rows:
        spec = policy.spec or {}
        if not spec.get("canary") or (spec.get("canary_state") or {}).get("state") != "running":
            continue
        candidate = next(v["version"] for v in spec["variants"] if v["version"] != control)
        found.append(Running(name, policy.alias, policy.revision, control, candidate, spec))
    return found


def merged_counts(session: Session, model: str, alias: str, revision: int) -> dict[int, Counts]:
    """The counts of every process for one revision, per version."""
    merged: dict[int, Counts] = {}
    rows = session.execute(
        select(PolicyCount.version, PolicyCount.requests, PolicyCount.errors, PolicyCount.summary)
        .where(PolicyCount.model == model)
        .where(PolicyCount.alias == alias)
        .where(PolicyCount.revision == revision)
    )
    for version, requests, errors, summary in rows:
        into = merged.setdefault(version, _empty())
        into["requests"] += requests
        into["errors"] += errors
        for i, n in enumerate(summary.get("latency", ())[: latency.BUCKETS]):
            into["latency"][i] += n
        into["rows"] += summary.get("rows", 0)
        into["total"] += summary.get("total", 0.0)
        into["squares"] += summary.get("squares", 0.0)
    return merged


def _empty() -> Counts:
    return {
        "requests": 0,
        "errors": 0,
        "latency": [0] * latency.BUCKETS,
        "rows": 0,
        "total": 0.0,
        "squares": 0.0,
    }


def breach(canary: dict[str, Any], control: Counts, candidate: Counts) -> str | None:
    """Which guardrail the candidate breaks against the control, or None."""
    guard = canary.get("guardrails") or {}
    c_total = candidate["requests"] + candidate["errors"]
    k_total = control["requests"] + control["errors"]
    if c_total < GUARD_MIN_REQUESTS:
        return None
    c_rate = candidate["errors"] / c_total
    k_rate = control["errors"] / k_total if k_total else 0.0
    limit = guard.get("max_error_rate_delta", 0.01)
    if c_rate - k_rate > limit:
        return (
            f"error rate {c_rate:.3f} against the control's {k_rate:.3f} "
            f"(more than {limit} above it)"
        )
    if min(control["requests"], candidate["requests"]) >= P99_MIN_REQUESTS:
        c_p99 = latency.quantile(candidate["latency"], 0.99) or 0.0
        k_p99 = latency.quantile(control["latency"], 0.99) or 0.0
        ratio_limit = guard.get("max_p99_ratio", 2.0)
        # one bucket is 25% wide: below 2 buckets' difference the ratio is noise
        if k_p99 > 0 and c_p99 / k_p99 > max(ratio_limit, 1.25**2):
            return f"p99 latency {c_p99 * 1000:.2f} ms, {c_p99 / k_p99:.2f}x the control's"
    shift_limit = guard.get("max_mean_shift")
    if shift_limit is not None and control["rows"] >= 2 and candidate["rows"] >= 2:
        k_mean = control["total"] / control["rows"]
        k_std = math.sqrt(max(control["squares"] / control["rows"] - k_mean * k_mean, 0.0))
        c_mean = candidate["total"] / candidate["rows"]
        shift = abs(c_mean - k_mean) / max(k_std, 1e-12)
        if shift > shift_limit:
            return f"mean prediction {c_mean:.6g} is {shift:.2f} control std from {k_mean:.6g}"
    return None


def outcome_breach(session: Session, run: Running) -> str | None:
    """The guardrails that read the monitoring tables: a monitor alert firing on the
    candidate (`monitor_alerts: "abort"`), and labelled outcomes worse than the control's by
    more than `max_metric_delta`, judged by the always-valid interval (so watching every
    tick does not inflate the chance of a false abort)."""
    guard = run.spec["canary"].get("guardrails") or {}
    if guard.get("monitor_alerts") == "abort":
        alert = session.scalar(
            select(MonitorState.alert_id)
            .where(MonitorState.model == run.model)
            .where(MonitorState.version == run.candidate)
            .where(MonitorState.state == "firing")
            .limit(1)
        )
        if alert is not None:
            return f"monitor alert {alert} is firing on version {run.candidate}"
    limit = guard.get("max_metric_delta")
    if limit is None:
        return None
    loss, result = outcomes.candidate_comparison(
        session, run.model, run.alias, run.control, run.candidate, started_at(run.spec)
    )
    if result is None or not math.isfinite(result.ci_low) or result.ci_low <= limit:
        return None
    return (
        f"mean {loss} on labelled rows is at least {result.ci_low:.4g} above the control's "
        f"(limit {limit:g}; {result.n_candidate} candidate and {result.n_control} control "
        f"labels, always-valid {1 - outcomes.ALPHA:.0%} interval)"
    )


def started_at(spec: dict[str, Any]) -> datetime:
    """When the policy's experiment began (policies set before it was recorded: when
    their current step began)."""
    if spec.get("started_at"):
        return datetime.fromisoformat(spec["started_at"])
    return datetime.fromtimestamp(spec["canary_state"]["since"], UTC)


def decide(
    canary_run: Running,
    counts: dict[int, Counts],
    now: float,
    outcome_reason: str | None = None,
) -> Decision:
    """`outcome_reason`: what outcome_breach found, judged after the counts' guardrails."""
    canary = canary_run.spec["canary"]
    state = canary_run.spec["canary_state"]
    control = counts.get(canary_run.control, _empty())
    candidate = counts.get(canary_run.candidate, _empty())
    reason = breach(canary, control, candidate) or outcome_reason
    if reason is not None:
        return Decision("abort", reason)
    baked = now - state["since"] >= canary["bake_seconds"]
    if not baked or candidate["requests"] < canary["min_requests"]:
        return Decision("hold")
    if state["step"] + 1 >= len(canary["steps"]):
        return Decision("complete", "every step held its guardrails")
    return Decision("advance")


def _policy_row(work: Any, name: str, alias: str, revision: int) -> tuple[Any, AliasPolicy] | None:
    """The model (locked) and the policy row, if it is still at `revision`."""
    model = work.repo.get_model(name, lock=True)
    row = store.find(store.session_of(work), model, alias)
    if row is None or row.revision != revision or row.spec is None:
        return None
    return model, row


def _rewrite(
    uow: UnitOfWorkProvider,
    run: Running,
    share: float,
    state: dict[str, Any],
    event: str,
    reason: str,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Put the candidate at `share` percent and the canary in `state`, as one
    compare-and-set on the revision judged, with its event; False when it moved since."""
    with uow(write=True) as work:
        found = _policy_row(work, run.model, run.alias, run.revision)
        if found is None:
            return False
        model, row = found
        spec = dict(row.spec)
        before = [dict(v) for v in spec["variants"]]
        spec["variants"] = [
            {
                "version": v["version"],
                "weight": share if v["version"] == run.candidate else 100 - share,
            }
            for v in spec["variants"]
        ]
        counts = allocation.bucket_counts([v["weight"] for v in spec["variants"]])
        spec["ranges"] = allocation.reallocate(spec["ranges"], counts)
        spec["canary_state"] = state
        row.spec = spec
        row.revision += 1
        row.updated_at = utcnow()
        row.updated_by = "canary"
        work.repo.record_event(
            model,
            event,
            actor="canary",
            reason=reason,
            alias=run.alias,
            version=run.candidate,
            before={"variants": before, "revision": run.revision, **(extra or {})},
            after={"variants": spec["variants"], "revision": row.revision, **state},
        )
        work.announce(AliasMoved(run.model, run.alias))
        work.commit()
        return True


def advance(uow: UnitOfWorkProvider, run: Running, *, now: float) -> bool:
    """The next step, if the policy is still at the revision judged."""
    step = run.spec["canary_state"]["step"] + 1
    share = run.spec["canary"]["steps"][step]
    state = {"step": step, "state": "running", "since": now}
    reason = f"step {step}: the candidate at {share}%"
    return _rewrite(uow, run, share, state, "canary_step", reason, {"step": step - 1})


def abort(uow: UnitOfWorkProvider, run: Running, reason: str) -> bool:
    """Candidate share 0 and the canary stopped, with the reason; the policy stays in force
    (all traffic on the control) until an operator clears it."""
    state = {**run.spec["canary_state"], "state": "aborted", "reason": reason, "at": time.time()}
    return _rewrite(uow, run, 0, state, "canary_aborted", reason)


def complete(
    uow: UnitOfWorkProvider,
    run: Running,
    promote: Callable[[str, int, str, int], Any],
) -> bool:
    """Promote the candidate through the gated promotion (compare-and-set on the control),
    which ends the policy; then record that the canary completed."""
    with uow() as work:
        model = work.repo.get_model(run.model)
        row = store.find(store.session_of(work), model, run.alias)
        if row is None or row.revision != run.revision:
            return False
    try:
        promote(run.model, run.candidate, run.alias, run.control)
    except ModelregError as error:
        return abort(uow, run, f"the final promotion was refused: {error.detail}")
    with uow(write=True) as work:
        model = work.repo.get_model(run.model, lock=True)
        work.repo.record_event(
            model,
            "canary_completed",
            actor="canary",
            reason="every step held its guardrails",
            alias=run.alias,
            version=run.candidate,
            before={"version": run.control, "revision": run.revision},
            after={"version": run.candidate, "steps": run.spec["canary"]["steps"]},
        )
        work.commit()
    return True


def prune_counts(session: Session, keep: Iterable[tuple[str, str, int]]) -> int:
    """Drop counts of revisions no running canary needs."""
    wanted = set(keep)
    stale = [
        (m, a, r)
        for m, a, r in session.execute(
            select(PolicyCount.model, PolicyCount.alias, PolicyCount.revision).group_by(
                PolicyCount.model, PolicyCount.alias, PolicyCount.revision
            )
        )
        if (m, a, r) not in wanted
    ]
    removed = 0
    for m, a, r in stale:
        removed += (
            session.query(PolicyCount)
            .filter(PolicyCount.model == m, PolicyCount.alias == a, PolicyCount.revision == r)
            .delete()
        )
    return removed
