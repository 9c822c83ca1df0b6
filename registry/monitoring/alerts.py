"""The alert job: judge each closed window once, keep the streaks, fire and resolve.

It runs in one process at a time (the lease in registry/monitoring/store.py) and every step
is idempotent: a (version, variant) remembers the last window it judged, so a handover
neither repeats nor skips a window. Firing and resolving are audit events (and so webhooks,
`monitor.alert_fired` / `monitor.alert_resolved`) committed with the state change.

`on_alert: rollback` rolls the monitor's alias back when it points at the alerting version:
once per alert (the state says so), and a repeated attempt after a crash finds the alias
no longer on that version and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from registry.errors import ModelregError
from registry.monitoring import live_metrics, store
from registry.monitoring.drift import judge_window
from registry.monitoring.monitors import MonitorConfig, parse_monitor
from registry.monitoring.tables import Monitor, MonitorState, VersionProfile
from registry.names import Reference
from registry.unit_of_work import UnitOfWorkProvider

log = logging.getLogger(__name__)

LOOKBACK_WINDOWS = 48  # how far back a (version, variant) seen for the first time is judged
MAX_WINDOWS_PER_RUN = 100
ERROR_METRICS = ("rmse", "mae")

Rollback = Callable[[str, str, str], Any]  # (model, alias, reason)


@dataclass(frozen=True, slots=True)
class Transition:
    kind: str  # "fired" | "resolved"
    model: str
    version: int
    variant: str
    alert_id: str
    reasons: list[dict[str, Any]]
    rolled_back: bool = False


def metric_reasons(
    live: dict[str, Any] | None, reference: dict[str, Any] | None, config: MonitorConfig
) -> list[dict[str, Any]]:
    """Why the live metrics are bad against the reference ones (empty when they are not)."""
    if not live or not reference or live.get("labels", 0) < config.metrics.min_labels:
        return []
    reasons = []
    for name in ERROR_METRICS:
        ref, now = reference.get(name), live.get(name)
        if (
            ref is not None
            and now is not None
            and ref > 0
            and now > config.metrics.error_ratio * ref
        ):
            reasons.append({"metric": name, "live": now, "reference": ref, "status": "alert"})
    ref, now = reference.get("accuracy"), live.get("accuracy")
    if ref is not None and now is not None and now < ref - config.metrics.accuracy_drop:
        reasons.append({"metric": "accuracy", "live": now, "reference": ref, "status": "alert"})
    return reasons


def evaluate(
    uow: UnitOfWorkProvider,
    *,
    now: float,
    window_seconds: int,
    grace_seconds: float,
    rollback: Rollback | None = None,
) -> list[Transition]:
    """Judge every closed, not yet judged window of every monitored (version, variant)."""
    closed_before = int((now - grace_seconds) // window_seconds) * window_seconds - window_seconds
    since = closed_before - LOOKBACK_WINDOWS * window_seconds
    with uow() as work:
        keys = store.live_keys(work.session, since)  # type: ignore[attr-defined]
    transitions: list[Transition] = []
    for model, version, variant in keys:
        try:
            transitions.extend(
                _evaluate_key(
                    uow, model, version, variant, since, closed_before, window_seconds, rollback
                )
            )
        except ModelregError as error:  # the model or version is gone: nothing to judge
            log.info("monitoring: %s v%s not judged: %s", model, version, error.detail)
    return transitions


def _evaluate_key(
    uow: UnitOfWorkProvider,
    model_name: str,
    version: int,
    variant: str,
    since: int,
    last_closed: int,
    width: int,
    rollback: Rollback | None,
) -> list[Transition]:
    transitions: list[Transition] = []
    with uow(write=True) as work:
        repo = work.repo
        session = work.session  # type: ignore[attr-defined]
        model = repo.get_model(model_name, lock=True)
        row = repo.find_version(model, Reference(version=version))
        stored = session.scalar(select(VersionProfile).where(VersionProfile.version_id == row.id))
        monitor = session.scalar(select(Monitor).where(Monitor.model_id == model.id))
        config = parse_monitor(monitor.config if monitor else {})
        state = session.scalar(
            select(MonitorState).where(
                MonitorState.model == model_name,
                MonitorState.version == version,
                MonitorState.variant == variant,
            )
        )
        if state is None:
            state = MonitorState(
                model=model_name, version=version, variant=variant, state="ok",
                bad_streak=0, good_streak=0, rolled_back=False,
            )  # fmt: skip
            session.add(state)
        first = since if state.last_window is None else state.last_window + width
        if first > last_closed:
            work.commit()
            return []
        profile = stored.profile if stored is not None else None
        windows = store.merged_windows(
            session, model_name, version, since=first, until=last_closed + width
        )
        start_dt = datetime.fromtimestamp(first, UTC)
        labelled = live_metrics.windows(session, model_name, version, since=start_dt, width=width)
        reference = _reference_metrics(profile, row.metrics or {})
        judged_until = last_closed  # windows without rows are judged by being empty
        seen = 0
        for (window_variant, start), summary in windows.items():
            if window_variant != variant:
                continue
            seen += 1
            if seen > MAX_WINDOWS_PER_RUN:
                judged_until = start - width  # the rest next run
                break
            report = judge_window(profile, summary, config.thresholds) if profile else None
            reasons = list(report["reasons"]) if report else []
            reasons += metric_reasons(labelled.get((variant, start)), reference, config)
            judged = bool(report and report["judged"]) or bool(reasons)
            if not judged:
                continue
            if reasons:
                state.bad_streak += 1
                state.good_streak = 0
                if state.state == "ok" and state.bad_streak >= config.fire_after:
                    state.state = "firing"
                    state.alert_id = f"{model_name}:{version}:{variant or '-'}:{start}"
                    state.fired_at = datetime.fromtimestamp(start + width, UTC)
                    state.reasons = reasons
                    state.rolled_back = False
                    repo.record_event(
                        model,
                        "alert_fired",
                        actor="monitor",
                        reason=_describe(reasons),
                        version=version,
                        alias=config.alias if config.on_alert == "rollback" else None,
                        before={"state": "ok"},
                        after=_alert_body(state, start, width, config),
                    )
                    transitions.append(
                        Transition("fired", model_name, version, variant, state.alert_id, reasons)
                    )
            else:
                state.good_streak += 1
                state.bad_streak = 0
                if state.state == "firing" and state.good_streak >= config.resolve_after:
                    alert_id = state.alert_id or ""
                    state.state = "ok"
                    repo.record_event(
                        model,
                        "alert_resolved",
                        actor="monitor",
                        reason=f"{config.resolve_after} good windows in a row",
                        version=version,
                        before={"state": "firing", "alert_id": alert_id},
                        after=_alert_body(state, start, width, config) | {"state": "ok"},
                    )
                    transitions.append(
                        Transition("resolved", model_name, version, variant, alert_id, [])
                    )
        state.last_window = judged_until
        work.commit()
        firing = state.state == "firing" and not state.rolled_back
        alert_id, reasons = state.alert_id, list(state.reasons or [])
    wanted = firing and config.on_alert == "rollback" and rollback is not None
    if wanted and _roll_back_once(
        uow,
        model_name,
        version,
        variant,
        config,
        alert_id,
        reasons,
        rollback,  # type: ignore[arg-type]
    ):
        transitions = [
            Transition(t.kind, t.model, t.version, t.variant, t.alert_id, t.reasons, True)
            if t.kind == "fired" and t.alert_id == alert_id
            else t
            for t in transitions
        ]
    return transitions


def _roll_back_once(
    uow: UnitOfWorkProvider,
    model_name: str,
    version: int,
    variant: str,
    config: MonitorConfig,
    alert_id: str | None,
    reasons: list[dict[str, Any]],
    rollback: Rollback,
) -> bool:
    with uow() as work:
        model = work.repo.get_model(model_name)
        _, current = work.repo.alias_target(model, config.alias)
    done = False
    if current == version:
        reason = f"monitor alert {alert_id}: {_describe(reasons)}"
        try:
            rollback(model_name, config.alias, reason)
            done = True
        except ModelregError as error:
            log.warning(
                "monitoring: rollback of %s/%s refused: %s", model_name, config.alias, error.detail
            )
    with uow(write=True) as work:
        state = work.session.scalar(  # type: ignore[attr-defined]
            select(MonitorState).where(
                MonitorState.model == model_name,
                MonitorState.version == version,
                MonitorState.variant == variant,
            )
        )
        if state is not None and state.alert_id == alert_id:
            state.rolled_back = True  # attempted once for this alert, whatever the outcome
        work.commit()
    return done


def _reference_metrics(profile: dict[str, Any] | None, registered: dict[str, Any]) -> dict | None:
    reference = ((profile or {}).get("prediction") or {}).get("metrics")
    if reference:
        return reference
    picked = {k: registered[k] for k in ("rmse", "mae", "accuracy") if k in registered}
    return picked or None


def _alert_body(state: MonitorState, start: int, width: int, config: MonitorConfig) -> dict:
    return {
        "state": state.state,
        "alert_id": state.alert_id,
        "variant": state.variant,
        "window_start": datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z"),
        "window_seconds": width,
        "reasons": state.reasons or [],
        "on_alert": config.on_alert,
    }


def _describe(reasons: list[dict[str, Any]]) -> str:
    parts = []
    for reason in reasons[:5]:
        if "feature" in reason:
            stats = ", ".join(f"{k} {v:.3g}" for k, v in reason.items() if isinstance(v, float))
            parts.append(f"{reason['feature']} {reason['status']} ({stats})")
        else:
            metric, live, ref = reason["metric"], reason["live"], reason["reference"]
            parts.append(f"live {metric} {live:.4g} vs reference {ref:.4g}")
    more = f" and {len(reasons) - 5} more" if len(reasons) > 5 else ""
    return "; ".join(parts) + more


def firing_states(uow: UnitOfWorkProvider) -> list[tuple[str, int, str, bool]]:
    """(model, version, variant, firing) of every known state, for the gauges."""
    with uow() as work:
        rows = work.session.execute(  # type: ignore[attr-defined]
            select(
                MonitorState.model, MonitorState.version, MonitorState.variant, MonitorState.state
            )
        ).all()
    return [(m, v, var, s == "firing") for m, v, var, s in rows]
