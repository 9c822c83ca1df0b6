"""Queries over the registry tables, shared by the use-case services. No commits here."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from registry.db import utcnow
from registry.errors import NotFound
from registry.models import Alias, Event, ModelVersion, RegisteredModel
from registry.names import Reference


def find_model(session: Session, name: str, *, lock: bool = False) -> RegisteredModel | None:
    """The live (not deleted) model called `name`; `lock` serializes writers on its row."""
    query = select(RegisteredModel).where(
        RegisteredModel.name == name, RegisteredModel.deleted_at.is_(None)
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def get_model(session: Session, name: str, *, lock: bool = False) -> RegisteredModel:
    model = find_model(session, name, lock=lock)
    if model is None:
        raise NotFound(f"model '{name}' not found")
    return model


def aliases_by_model(session: Session, model_ids: list[int]) -> dict[int, dict[str, int]]:
    rows = session.execute(
        select(Alias.model_id, Alias.name, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == Alias.version_id)
        .where(Alias.model_id.in_(model_ids))
        .order_by(Alias.name)
    )
    result: dict[int, dict[str, int]] = {model_id: {} for model_id in model_ids}
    for model_id, alias, version in rows:
        result[model_id][alias] = version
    return result


def latest_by_model(session: Session, model_ids: list[int]) -> dict[int, int]:
    rows = session.execute(
        select(ModelVersion.model_id, func.max(ModelVersion.version))
        .where(ModelVersion.model_id.in_(model_ids), ModelVersion.status == "ready")
        .group_by(ModelVersion.model_id)
    )
    return {model_id: version for model_id, version in rows}


def aliases_of_version(session: Session, version_id: int) -> tuple[str, ...]:
    names = session.scalars(
        select(Alias.name).where(Alias.version_id == version_id).order_by(Alias.name)
    )
    return tuple(names)


def find_alias(session: Session, model_id: int, alias: str) -> Alias | None:
    return session.scalars(
        select(Alias).where(Alias.model_id == model_id, Alias.name == alias)
    ).one_or_none()


def find_version(session: Session, model: RegisteredModel, ref: Reference) -> ModelVersion:
    """Resolve a version number, alias or `latest` to its row, or raise NotFound."""
    query = select(ModelVersion).where(ModelVersion.model_id == model.id)
    if ref.version is not None:
        query = query.where(ModelVersion.version == ref.version)
        missing = f"model '{model.name}' has no version {ref.version}"
    elif ref.latest:
        query = (
            query.where(ModelVersion.status == "ready")
            .order_by(ModelVersion.version.desc())
            .limit(1)
        )
        missing = f"model '{model.name}' has no version that is ready"
    else:
        query = query.join(Alias, Alias.version_id == ModelVersion.id).where(
            Alias.name == ref.alias
        )
        missing = f"model '{model.name}' has no alias '{ref.alias}'"
    row = session.scalars(query).first()
    if row is None:
        raise NotFound(missing)
    return row


def next_version_number(session: Session, model_id: int) -> int:
    """Advance the model's counter atomically (and lock its row until commit)."""
    return session.execute(
        update(RegisteredModel)
        .where(RegisteredModel.id == model_id)
        .values(last_version=RegisteredModel.last_version + 1)
        .returning(RegisteredModel.last_version)
    ).scalar_one()


def lock_blob(session: Session, sha256: str) -> None:
    """Serialize registration and garbage collection of one blob.

    PostgreSQL: a transaction-scoped advisory lock keyed by the digest. SQLite: the write
    transaction (BEGIN IMMEDIATE) already excludes every other writer.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(sha256[:15], 16)})


def record_event(
    session: Session,
    model: RegisteredModel,
    type_: str,
    *,
    actor: str,
    reason: str = "",
    version: int | None = None,
    alias: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    session.add(
        Event(
            model_id=model.id,
            type=type_,
            at=utcnow(),
            actor=actor,
            reason=reason,
            version=version,
            alias=alias,
            before=before,
            after=after,
        )
    )


def version_summary(row: ModelVersion) -> dict[str, Any]:
    """What the audit trail keeps of a version."""
    return {
        "version": row.version,
        "status": row.status,
        "format": row.format,
        "sha256": row.sha256,
        "size": row.size,
        "description": row.description,
        "tags": dict(row.tags or {}),
    }
