"""SQL for the live side of monitoring: one transaction per flush, merged reads, the lease.

These rows are not registry entities (no audit event, no compare-and-set): they are
counts and samples that any number of processes append to and readers add up.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from registry.db import utcnow
from registry.models import ModelVersion, RegisteredModel
from registry.monitoring import summary as summary_format
from registry.monitoring.tables import (
    FeedbackLabel,
    JobLease,
    Monitor,
    MonitorSummary,
    PayloadLogEntry,
    VersionProfile,
)

SessionFactory = sessionmaker[Session]


def write_flush(
    sessions: SessionFactory, summaries: list[dict[str, Any]], payload: list[dict[str, Any]]
) -> None:
    """Everything one process folded since its last flush, in one transaction."""
    if not summaries and not payload:
        return
    now = utcnow()
    with sessions() as session, session.begin():
        if summaries:
            session.execute(
                insert(MonitorSummary), [{**row, "written_at": now} for row in summaries]
            )
        if payload:
            session.execute(insert(PayloadLogEntry), payload)


def profiles(
    sessions: SessionFactory, keys: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], tuple[datetime, dict[str, Any]]]:
    """The stored profiles of (model, version) pairs, with when each was computed."""
    keys = set(keys)
    if not keys:
        return {}
    names = {name for name, _ in keys}
    query = (
        select(
            RegisteredModel.name,
            ModelVersion.version,
            VersionProfile.created_at,
            VersionProfile.profile,
        )
        .join(ModelVersion, ModelVersion.model_id == RegisteredModel.id)
        .join(VersionProfile, VersionProfile.version_id == ModelVersion.id)
        .where(RegisteredModel.name.in_(names), RegisteredModel.deleted_at.is_(None))
    )
    with sessions() as session:
        rows = session.execute(query).all()
    return {(n, v): (at, p) for n, v, at, p in rows if (n, v) in keys}


def profile_stamps(
    sessions: SessionFactory, keys: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], datetime]:
    keys = set(keys)
    if not keys:
        return {}
    names = {name for name, _ in keys}
    query = (
        select(RegisteredModel.name, ModelVersion.version, VersionProfile.created_at)
        .join(ModelVersion, ModelVersion.model_id == RegisteredModel.id)
        .join(VersionProfile, VersionProfile.version_id == ModelVersion.id)
        .where(RegisteredModel.name.in_(names))
    )
    with sessions() as session:
        return {(n, v): at for n, v, at in session.execute(query).all() if (n, v) in keys}


def monitor_configs(sessions: SessionFactory, names: Iterable[str] | None = None) -> dict[str, Any]:
    """Each model's monitor config (only models that have one)."""
    query = (
        select(RegisteredModel.name, Monitor.config)
        .join(Monitor, Monitor.model_id == RegisteredModel.id)
        .where(RegisteredModel.deleted_at.is_(None))
    )
    if names is not None:
        query = query.where(RegisteredModel.name.in_(set(names)))
    with sessions() as session:
        return {name: config for name, config in session.execute(query).all()}


def merged_windows(
    session: Session,
    model: str,
    version: int,
    *,
    since: int,
    until: int | None = None,
    width: int | None = None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """(variant, window start) -> the sum of every process's summaries of that window;
    with `width`, windows are grouped into wider ones starting at multiples of it."""
    query = select(
        MonitorSummary.variant, MonitorSummary.window_start, MonitorSummary.summary
    ).where(
        MonitorSummary.model == model,
        MonitorSummary.version == version,
        MonitorSummary.window_start >= since,
    )
    if until is not None:
        query = query.where(MonitorSummary.window_start < until)
    merged: dict[tuple[str, int], dict[str, Any]] = {}
    for variant, start, summary in session.execute(query.order_by(MonitorSummary.id)):
        if width:
            start = start - start % width
        target = merged.get((variant, start))
        if target is None:
            target = merged[(variant, start)] = summary_format.empty()
        summary_format.merge(target, summary)
    return dict(sorted(merged.items(), key=lambda item: (item[0][1], item[0][0])))


def live_keys(session: Session, since: int) -> list[tuple[str, int, str]]:
    """(model, version, variant) with summaries since `since`."""
    query = (
        select(MonitorSummary.model, MonitorSummary.version, MonitorSummary.variant)
        .where(MonitorSummary.window_start >= since)
        .distinct()
    )
    return [tuple(row) for row in session.execute(query).all()]  # type: ignore[misc]


def logged_payload(
    session: Session, model: str, version: int, since: datetime
) -> list[PayloadLogEntry]:
    query = select(PayloadLogEntry).where(
        PayloadLogEntry.model == model,
        PayloadLogEntry.version == version,
        PayloadLogEntry.at >= since,
    )
    return list(session.scalars(query.order_by(PayloadLogEntry.id)))


def labels_for(
    session: Session, model: str, request_ids: Iterable[str]
) -> dict[tuple[str, int], Any]:
    ids = list(set(request_ids))
    out: dict[tuple[str, int], Any] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists
        chunk = ids[start : start + 500]
        query = select(FeedbackLabel.request_id, FeedbackLabel.row, FeedbackLabel.label).where(
            FeedbackLabel.model == model, FeedbackLabel.request_id.in_(chunk)
        )
        out.update({(rid, row): label for rid, row, label in session.execute(query)})
    return out


def prune(
    sessions: SessionFactory,
    *,
    summaries_before: int,
    payload_before: datetime,
    labels_before: datetime,
    payload_max_rows: int,
) -> None:
    """Retention: old windows, old or excess payload entries, old labels."""
    with sessions() as session, session.begin():
        session.execute(
            delete(MonitorSummary).where(MonitorSummary.window_start < summaries_before)
        )
        session.execute(delete(PayloadLogEntry).where(PayloadLogEntry.at < payload_before))
        session.execute(delete(FeedbackLabel).where(FeedbackLabel.at < labels_before))
        cutoff = session.scalar(
            select(PayloadLogEntry.id)
            .order_by(PayloadLogEntry.id.desc())
            .offset(payload_max_rows)
            .limit(1)
        )
        if cutoff is not None:
            session.execute(delete(PayloadLogEntry).where(PayloadLogEntry.id <= cutoff))


def compact(sessions: SessionFactory, *, before: int, limit: int = 200) -> int:
    """Replace the rows of each closed window (start < `before`) by their sum, so reads stay
    short however many processes and flushes wrote. Only the rows read are deleted: a late
    flush of the same window adds a row and the sums stay exact. Returns windows compacted."""
    groups = (
        select(
            MonitorSummary.model,
            MonitorSummary.version,
            MonitorSummary.variant,
            MonitorSummary.window_start,
        )
        .where(MonitorSummary.window_start < before)
        .group_by(
            MonitorSummary.model,
            MonitorSummary.version,
            MonitorSummary.variant,
            MonitorSummary.window_start,
        )
        .having(func.count() > 1)
        .limit(limit)
    )
    with sessions() as session:
        keys = session.execute(groups).all()
    for model, version, variant, start in keys:
        with sessions() as session, session.begin():
            rows = session.scalars(
                select(MonitorSummary).where(
                    MonitorSummary.model == model,
                    MonitorSummary.version == version,
                    MonitorSummary.variant == variant,
                    MonitorSummary.window_start == start,
                )
            ).all()
            if len(rows) < 2:
                continue
            merged = summary_format.empty()
            for row in rows:
                summary_format.merge(merged, row.summary)
            session.execute(
                delete(MonitorSummary).where(MonitorSummary.id.in_([r.id for r in rows]))
            )
            session.add(
                MonitorSummary(
                    model=model,
                    version=version,
                    variant=variant,
                    window_start=start,
                    window_seconds=rows[0].window_seconds,
                    writer="compacted",
                    rows=merged["rows"],
                    summary=merged,
                    written_at=utcnow(),
                )
            )
    return len(keys)


def take_lease(sessions: SessionFactory, name: str, holder: str, seconds: float) -> bool:
    """Whether `holder` leads job `name` for the next `seconds` (renewing its own lease,
    or taking an expired one). One UPDATE decides, so two processes cannot both win."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    with sessions() as session, session.begin():
        result = session.execute(
            update(JobLease)
            .where(JobLease.name == name)
            .where((JobLease.holder == holder) | (JobLease.expires_at < now))
            .values(holder=holder, expires_at=until)
        )
        if result.rowcount == 1:
            return True
        if session.get(JobLease, name) is not None:
            return False
    try:
        with sessions() as session, session.begin():
            session.add(JobLease(name=name, holder=holder, expires_at=until))
        return True
    except sa_exc.IntegrityError:  # another process created it first
        return False
