"""Reading and writing alias_policies rows inside a unit of work's session."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import ModelVersion, RegisteredModel
from registry.policies.tables import AliasPolicy


def session_of(work: Any) -> Session:
    return work.session  # the SQL unit of work's session


def has_session(work: Any) -> bool:
    """False for the in-memory unit of work of the service unit tests (no policies there)."""
    return getattr(work, "session", None) is not None


def find(session: Session, model: RegisteredModel, alias: str) -> AliasPolicy | None:
    return session.scalar(
        select(AliasPolicy).where(AliasPolicy.model_id == model.id, AliasPolicy.alias == alias)
    )


def active_spec(
    session: Session, model_id: int, alias: str
) -> tuple[dict[str, Any], str, int] | None:
    """(spec, salt, revision) of the policy in force on the alias, or None."""
    row = session.execute(
        select(AliasPolicy.spec, AliasPolicy.salt, AliasPolicy.revision).where(
            AliasPolicy.model_id == model_id, AliasPolicy.alias == alias
        )
    ).first()
    if row is None or row.spec is None:
        return None
    return row.spec, row.salt, row.revision


def variant_statuses(session: Session, model_id: int, versions: list[int]) -> dict[int, str]:
    """The status of each of these versions that still exists (one query, none for none)."""
    if not versions:
        return {}
    rows = session.execute(
        select(ModelVersion.version, ModelVersion.status).where(
            ModelVersion.model_id == model_id, ModelVersion.version.in_(versions)
        )
    )
    return {version: status for version, status in rows}
