"""The monitoring tables. Live rows name their model by name (no foreign key) so that a
serving process writes a flush without looking anything up; retention removes old rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base, UTCDateTime


class VersionProfile(Base):
    """The reference profile of one version (registry/monitoring/profile.py)."""

    __tablename__ = "version_profiles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), unique=True
    )
    profile: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(128))


class MonitorSummary(Base):
    """One process's additive counts for one (version, variant, window) since its last
    flush. Readers sum the rows of a window: processes and hosts merge by addition."""

    __tablename__ = "monitor_summaries"
    __table_args__ = (
        Index("ix_monitor_summaries_window", "model", "version", "variant", "window_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    variant: Mapped[str] = mapped_column(String(64), default="")
    window_start: Mapped[int] = mapped_column(BigInteger)  # epoch seconds
    window_seconds: Mapped[int] = mapped_column(Integer)
    writer: Mapped[str] = mapped_column(String(64))
    rows: Mapped[int] = mapped_column(BigInteger)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    written_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PayloadLogEntry(Base):
    """A sampled request: its rows and outputs, kept for label joins and audits."""

    __tablename__ = "payload_log"
    __table_args__ = (
        Index("ix_payload_log_request", "model", "request_id"),
        Index("ix_payload_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    variant: Mapped[str] = mapped_column(String(64), default="")
    request_id: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    window_start: Mapped[int] = mapped_column(BigInteger)
    method: Mapped[str] = mapped_column(String(32))
    inputs: Mapped[list[Any]] = mapped_column(JSON)
    outputs: Mapped[list[Any]] = mapped_column(JSON)
    classes: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)


class FeedbackLabel(Base):
    """Ground truth for one row of one request; posting it again replaces it."""

    __tablename__ = "feedback_labels"
    __table_args__ = (UniqueConstraint("model", "request_id", "row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    request_id: Mapped[str] = mapped_column(String(128))
    row: Mapped[int] = mapped_column(Integer)
    label: Mapped[Any] = mapped_column(JSON, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(128))


class Monitor(Base):
    """A model's thresholds and reaction; `revision` makes changes compare-and-set."""

    __tablename__ = "monitors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), unique=True
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    revision: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(128))


class MonitorState(Base):
    """Where one (version, variant)'s alert stands: streaks of bad and good windows, the
    last window judged (a job step is idempotent: each window is judged once)."""

    __tablename__ = "monitor_states"
    __table_args__ = (UniqueConstraint("model", "version", "variant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    variant: Mapped[str] = mapped_column(String(64), default="")
    state: Mapped[str] = mapped_column(String(16), default="ok")  # ok | firing
    bad_streak: Mapped[int] = mapped_column(Integer, default=0)
    good_streak: Mapped[int] = mapped_column(Integer, default=0)
    last_window: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    alert_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    reasons: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    rolled_back: Mapped[bool] = mapped_column(Boolean, default=False)


class JobLease(Base):
    """One leader per periodic job across processes and hosts: whoever holds an unexpired
    lease runs it; a crashed holder's lease simply expires."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
