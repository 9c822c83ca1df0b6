"""The alias_policies table: at most one row per (model, alias), kept when a policy is
cleared so that its revision keeps counting (compare-and-set never sees a revision twice)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from registry.db import Base, UTCDateTime


class AliasPolicy(Base):
    __tablename__ = "alias_policies"
    __table_args__ = (UniqueConstraint("model_id", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    # The validated policy plus its bucket ranges; None while no policy is in force.
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    salt: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(128))


class PolicyCount(Base):
    """One process's counts for one variant of one policy revision since its last flush.
    The canary's leader sums a revision's rows: processes and hosts merge by addition."""

    __tablename__ = "policy_counts"
    __table_args__ = (Index("ix_policy_counts_policy", "model", "alias", "revision"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(128))
    alias: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    writer: Mapped[str] = mapped_column(String(64))
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    # {"latency": [counts per bucket], "rows", "total", "squares"}
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    written_at: Mapped[datetime] = mapped_column(UTCDateTime())
