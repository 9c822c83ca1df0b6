"""Registered models: create, read, update, delete."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from registry import repository as repo
from registry.db import utcnow
from registry.errors import AlreadyExists, Conflict
from registry.models import Alias, ModelVersion, Promotion, RegisteredModel
from registry.names import validate_model_name
from registry.pagination import Page, encode_cursor
from registry.records import ModelRecord, PageOf
from registry.services._patch import apply_edits
from registry.tag_filters import tag_condition
from registry.unit_of_work import UnitOfWorkFactory


def model_record(session: Session, row: RegisteredModel) -> ModelRecord:
    aliases = repo.aliases_by_model(session, [row.id])[row.id]
    latest = repo.latest_by_model(session, [row.id]).get(row.id)
    return ModelRecord.from_row(row, aliases, latest)


def create_or_revive(
    session: Session,
    name: str,
    *,
    description: str,
    tags: Mapping[str, str],
    actor: str,
    exist_ok: bool = False,
) -> RegisteredModel:
    """Insert the model row, or bring back a deleted one so its version counter lives on.

    The name is locked first (FOR UPDATE), so a concurrent creator that committed while we
    waited is seen here: `exist_ok` then returns its row instead of failing.
    """
    now = utcnow()
    row = session.scalars(
        select(RegisteredModel).where(RegisteredModel.name == name).with_for_update()
    ).one_or_none()
    if row is not None and row.deleted_at is None:
        if exist_ok:
            return row
        raise AlreadyExists(f"model '{name}' already exists")
    if row is None:
        row = RegisteredModel(name=name, last_version=0)
        session.add(row)
    row.description = description
    row.tags = dict(tags)
    row.created_at = row.updated_at = now
    row.created_by = actor
    row.deleted_at = None
    session.flush()
    repo.record_event(
        session,
        row,
        "create",
        actor=actor,
        after={"name": name, "description": description, "tags": dict(tags)},
    )
    return row


def create_model(
    uow: UnitOfWorkFactory,
    name: str,
    *,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    actor: str,
) -> ModelRecord:
    validate_model_name(name)
    with uow(write=True) as work:
        row = create_or_revive(
            work.session, name, description=description, tags=tags or {}, actor=actor
        )
        record = model_record(work.session, row)
        work.commit()
    return record


def get_model(uow: UnitOfWorkFactory, name: str) -> ModelRecord:
    with uow() as work:
        return model_record(work.session, repo.get_model(work.session, name))


def list_models(
    uow: UnitOfWorkFactory,
    page: Page,
    *,
    search: str | None = None,
    tags: Sequence[tuple[str, str | None]] = (),
    only: Collection[str] | None = None,
) -> PageOf:
    """One page of live models by name; `only` limits it to the names a token may see."""
    query = select(RegisteredModel).where(RegisteredModel.deleted_at.is_(None))
    if only is not None:
        query = query.where(RegisteredModel.name.in_(sorted(only)))
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(RegisteredModel.name).like(f"%{escaped}%", escape="\\"))
    for key, value in tags:
        query = query.where(tag_condition(RegisteredModel.tags, key, value))
    if page.after is not None:
        query = query.where(RegisteredModel.name > page.after)
    query = query.order_by(RegisteredModel.name).limit(page.limit + 1)
    with uow() as work:
        rows = list(work.session.scalars(query))
        more = len(rows) > page.limit
        rows = rows[: page.limit]
        ids = [row.id for row in rows]
        aliases = repo.aliases_by_model(work.session, ids)
        latest = repo.latest_by_model(work.session, ids)
        items = [ModelRecord.from_row(r, aliases[r.id], latest.get(r.id)) for r in rows]
        # Read the cursor key while the session is open: leaving the unit of work rolls
        # back, which expires every row it loaded.
        cursor = encode_cursor(rows[-1].name) if more else None
    return PageOf(items, cursor)


def update_model(
    uow: UnitOfWorkFactory,
    name: str,
    *,
    description: str | None = None,
    tags: Mapping[str, str | None] | None = None,
    reason: str = "",
    actor: str,
) -> ModelRecord:
    with uow(write=True) as work:
        row = repo.get_model(work.session, name, lock=True)
        before, after = apply_edits(row, description, tags)
        if after:
            row.updated_at = utcnow()
            repo.record_event(
                work.session,
                row,
                "update",
                actor=actor,
                reason=reason,
                before=before,
                after=after,
            )
        record = model_record(work.session, row)
        work.commit()
    return record


def delete_model(uow: UnitOfWorkFactory, name: str, *, reason: str = "", actor: str) -> None:
    """Delete a model and its versions; refused while any alias points into it.

    The row stays (soft delete) so that a model re-created under the same name continues
    its version numbering: a pinned client never gets a different model under a number.
    Artifact bytes are removed later by `modelreg storage gc`, never before this commits.
    """
    with uow(write=True) as work:
        session = work.session
        row = repo.get_model(session, name, lock=True)
        aliases = repo.aliases_by_model(session, [row.id])[row.id]
        if aliases:
            listed = ", ".join(f"{a} -> {v}" for a, v in aliases.items())
            raise Conflict(
                f"model '{name}' still has aliases ({listed}); delete them first",
                {"aliases": "must be empty before the model can be deleted"},
            )
        versions = session.scalar(
            select(func.count()).select_from(ModelVersion).where(ModelVersion.model_id == row.id)
        )
        session.execute(Promotion.__table__.delete().where(Promotion.model_id == row.id))
        session.execute(Alias.__table__.delete().where(Alias.model_id == row.id))
        session.execute(ModelVersion.__table__.delete().where(ModelVersion.model_id == row.id))
        before = {
            "description": row.description,
            "tags": dict(row.tags or {}),
            "versions": versions,
        }
        row.deleted_at = row.updated_at = utcnow()
        repo.record_event(session, row, "delete", actor=actor, reason=reason, before=before)
        work.commit()
