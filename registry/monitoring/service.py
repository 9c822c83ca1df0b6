"""Monitoring use cases: set a reference, read a profile or a version's windows, post
labels, set a monitor. Each opens one unit of work; changes carry their audit event."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select

from registry.db import utcnow
from registry.errors import Conflict, InvalidInput, NotFound
from registry.monitoring import live_metrics, store
from registry.monitoring.drift import Thresholds, judge_window
from registry.monitoring.monitors import MonitorConfig, parse_monitor
from registry.monitoring.profile import build_profile, prediction_profile
from registry.monitoring.reference import ReferenceTable
from registry.monitoring.tables import FeedbackLabel, Monitor, MonitorState, VersionProfile
from registry.names import Reference
from registry.unit_of_work import UnitOfWorkProvider

# (model, version, the feature table) -> (predictions, indices of the rows predicted)
ReferencePredictor = Callable[[str, int, ReferenceTable], tuple[Any, list[int]]]
MAX_LABELS_PER_REQUEST = 10_000
MAX_WINDOWS = 500


@dataclass(frozen=True, slots=True)
class ProfileChanged:
    """A version's reference profile was set: serving processes compile it again."""

    name: str
    version: int


def set_reference(
    uow: UnitOfWorkProvider,
    name: str,
    ref: Reference,
    table: ReferenceTable,
    target: str | None,
    predict: ReferencePredictor | None,
    *,
    actor: str,
    reason: str = "",
) -> dict[str, Any]:
    """Profile `table` (and the version's predictions on it) and keep it with the version,
    replacing any earlier profile. A failure stores nothing."""
    profile, features, target_values = build_profile(table, target)
    with uow() as work:
        row = work.repo.find_version(work.repo.get_model(name), ref)
        version, registered = row.version, dict(row.metrics or {})
    if predict is not None:
        predictions, kept = predict(name, version, features)
        target_kept = [target_values[i] for i in kept] if target_values is not None else None
        profile["prediction"] = prediction_profile(predictions, target_kept, registered)
        profile["prediction"]["rows"] = len(kept)
    with uow(write=True) as work:
        repo = work.repo
        model = repo.get_model(name, lock=True)
        row = repo.find_version(model, Reference(version=version))
        session = work.session  # type: ignore[attr-defined]
        previous = session.scalar(select(VersionProfile).where(VersionProfile.version_id == row.id))
        if previous is not None:
            session.delete(previous)
            session.flush()
        session.add(
            VersionProfile(
                version_id=row.id, profile=profile, created_at=utcnow(), created_by=actor
            )
        )
        repo.record_event(
            model,
            "reference_set",
            actor=actor,
            reason=reason,
            version=version,
            before={"profiled": previous is not None},
            after={"rows": profile["rows"], "sampled": profile["sampled"], "target": target},
        )
        work.announce(ProfileChanged(name, version))  # type: ignore[arg-type]
        work.commit()
    return {"name": name, "version": version, **profile}


def get_profile(uow: UnitOfWorkProvider, name: str, ref: Reference) -> dict[str, Any]:
    with uow() as work:
        row = work.repo.find_version(work.repo.get_model(name), ref)
        session = work.session  # type: ignore[attr-defined]
        stored = session.scalar(select(VersionProfile).where(VersionProfile.version_id == row.id))
        if stored is None:
            raise NotFound(f"version {row.version} of '{name}' has no reference profile")
        return {
            "name": name,
            "version": row.version,
            "created_at": stored.created_at,
            "created_by": stored.created_by,
            **stored.profile,
        }


def monitoring_report(
    uow: UnitOfWorkProvider,
    name: str,
    ref: Reference,
    *,
    since: datetime | None,
    window: int | None,
    default_window: int,
) -> dict[str, Any]:
    """Per window and variant: drift and data quality per feature, prediction drift,
    refused inputs, live metrics where labels arrived; and the alert state."""
    with uow() as work:
        repo = work.repo
        model = repo.get_model(name)
        row = repo.find_version(model, ref)
        version, registered = row.version, dict(row.metrics or {})
        session = work.session  # type: ignore[attr-defined]
        stored = session.scalar(select(VersionProfile).where(VersionProfile.version_id == row.id))
        profile = stored.profile if stored is not None else None
        monitor = session.scalar(select(Monitor).where(Monitor.model_id == model.id))
        config = parse_monitor(monitor.config if monitor else {})
        width = window or default_window
        if width % default_window:
            raise InvalidInput(
                "window must be a multiple of the server's window",
                {"window": f"a multiple of {default_window} seconds"},
            )
        start = since or utcnow() - timedelta(seconds=width * 24)
        since_epoch = int(start.timestamp())
        since_epoch -= since_epoch % width
        windows = store.merged_windows(
            session,
            name,
            version,
            since=since_epoch,
            width=width if width != default_window else None,
        )
        metrics = live_metrics.windows(session, name, version, since=start, width=width)
        states = session.scalars(
            select(MonitorState).where(MonitorState.model == name, MonitorState.version == version)
        ).all()
        alerts = [_state_out(s) for s in states]
    thresholds = config.thresholds
    out_windows = []
    for (variant, begin), summary in list(windows.items())[-MAX_WINDOWS:]:
        report = judge_window(profile, summary, thresholds) if profile else _no_profile(summary)
        out_windows.append(
            {
                "start": _iso(begin),
                "end": _iso(begin + width),
                "variant": variant,
                **report,
                "metrics": metrics.get((variant, begin)),
            }
        )
    return {
        "name": name,
        "version": version,
        "window_seconds": width,
        "profiled": profile is not None,
        "registered_metrics": registered,
        "reference_metrics": ((profile or {}).get("prediction") or {}).get("metrics"),
        "thresholds": config.as_dict()["thresholds"],
        "windows": out_windows,
        "alerts": alerts,
    }


def _no_profile(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "rows": summary.get("rows", 0),
        "binned": 0,
        "judged": False,
        "features": {},
        "prediction": None,
        "refused": dict(summary.get("refused") or {}),
        "reasons": [],
    }


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _state_out(state: MonitorState) -> dict[str, Any]:
    return {
        "variant": state.variant,
        "state": state.state,
        "alert_id": state.alert_id,
        "fired_at": state.fired_at,
        "bad_streak": state.bad_streak,
        "good_streak": state.good_streak,
        "reasons": state.reasons or [],
        "rolled_back": state.rolled_back,
    }


def post_feedback(
    uow: UnitOfWorkProvider, name: str, labels: list[dict[str, Any]], *, actor: str
) -> dict[str, Any]:
    """Store ground truth keyed by (request id, row); a label posted again replaces the
    earlier one. Returns how many were stored and how many match a logged prediction."""
    if len(labels) > MAX_LABELS_PER_REQUEST:
        raise InvalidInput(
            "too many labels in one request", {"labels": f"at most {MAX_LABELS_PER_REQUEST}"}
        )
    keys = set()
    for i, item in enumerate(labels):
        label = item["label"]
        if isinstance(label, float) and not math.isfinite(label):
            raise InvalidInput("labels must be finite", {f"labels[{i}].label": "not finite"})
        key = (item["request_id"], item["row"])
        if key in keys:
            raise InvalidInput(
                "a (request_id, row) is labelled twice",
                {f"labels[{i}]": "repeats an earlier label"},
            )
        keys.add(key)
    now = utcnow()
    with uow(write=True) as work:
        model = work.repo.get_model(name)
        session = work.session  # type: ignore[attr-defined]
        ids = {rid for rid, _ in keys}
        for start in range(0, len(labels), 500):
            chunk = labels[start : start + 500]
            for item in chunk:
                session.execute(
                    delete(FeedbackLabel).where(
                        FeedbackLabel.model == name,
                        FeedbackLabel.request_id == item["request_id"],
                        FeedbackLabel.row == item["row"],
                    )
                )
            session.add_all(
                FeedbackLabel(
                    model=name,
                    request_id=item["request_id"],
                    row=item["row"],
                    label=item["label"],
                    at=now,
                    actor=actor,
                )
                for item in chunk
            )
        matched = live_metrics.count_matches(session, name, keys, ids)
        del model
        work.commit()
    return {"accepted": len(labels), "matched": matched}


def get_monitor(uow: UnitOfWorkProvider, name: str) -> dict[str, Any]:
    with uow() as work:
        model = work.repo.get_model(name)
        session = work.session  # type: ignore[attr-defined]
        monitor = session.scalar(select(Monitor).where(Monitor.model_id == model.id))
        config = parse_monitor(monitor.config if monitor else {})
        return {
            "name": name,
            **config.as_dict(),
            "revision": monitor.revision if monitor else 0,
            "updated_at": monitor.updated_at if monitor else None,
            "updated_by": monitor.updated_by if monitor else None,
            "defaults": monitor is None,
        }


def set_monitor(
    uow: UnitOfWorkProvider,
    name: str,
    body: dict[str, Any],
    *,
    actor: str,
    reason: str = "",
    expected_revision: int | None = None,
) -> dict[str, Any]:
    """Replace the model's monitor (compare-and-set on `expected_revision`)."""
    config: MonitorConfig = parse_monitor(body)
    with uow(write=True) as work:
        repo = work.repo
        model = repo.get_model(name, lock=True)
        session = work.session  # type: ignore[attr-defined]
        monitor = session.scalar(select(Monitor).where(Monitor.model_id == model.id))
        current = monitor.revision if monitor else 0
        if expected_revision is not None and expected_revision != current:
            raise Conflict(
                f"the monitor of '{name}' is at revision {current}, not {expected_revision}",
                {"expected_revision": f"current revision is {current}"},
            )
        before = monitor.config if monitor else None
        now = utcnow()
        if monitor is None:
            monitor = Monitor(
                model_id=model.id, config={}, revision=0, updated_at=now, updated_by=actor
            )
            session.add(monitor)
        monitor.config = config.as_dict()
        monitor.revision = current + 1
        monitor.updated_at = now
        monitor.updated_by = actor
        repo.record_event(
            model,
            "monitor_set",
            actor=actor,
            reason=reason,
            before={"monitor": before, "revision": current},
            after={"monitor": monitor.config, "revision": monitor.revision},
        )
        work.commit()
        revision = monitor.revision
    return {**get_monitor(uow, name), "revision": revision}


__all__ = [
    "ProfileChanged",
    "Thresholds",
    "get_monitor",
    "get_profile",
    "monitoring_report",
    "post_feedback",
    "set_monitor",
    "set_reference",
]
