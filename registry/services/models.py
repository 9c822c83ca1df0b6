"""Registered models: create, read, update, delete."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from registry.changes import ModelRemoved
from registry.db import utcnow
from registry.errors import AlreadyExists, Conflict
from registry.models import RegisteredModel
from registry.names import validate_model_name
from registry.pagination import Page
from registry.records import ModelRecord, PageOf
from registry.repository import Repository
from registry.services._patch import apply_edits
from registry.unit_of_work import UnitOfWorkProvider


def model_record(repo: Repository, row: RegisteredModel) -> ModelRecord:
    return repo.model_records([row])[0]


def create_or_revive(
    repo: Repository,
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
    row = repo.find_model(name, lock=True, include_deleted=True)
    if row is not None and row.deleted_at is None:
        if exist_ok:
            return row
        raise AlreadyExists(f"model '{name}' already exists")
    if row is None:
        row = repo.add_model(name, description=description, tags=dict(tags), at=now, actor=actor)
    else:
        row.description = description
        row.tags = dict(tags)
        row.created_at = row.updated_at = now
        row.created_by = actor
        row.deleted_at = None
    repo.record_event(
        row,
        "create",
        actor=actor,
        after={"name": name, "description": description, "tags": dict(tags)},
    )
    return row


def create_model(
    uow: UnitOfWorkProvider,
    name: str,
    *,
    description: str = "",
    tags: Mapping[str, str] | None = None,
    actor: str,
) -> ModelRecord:
    validate_model_name(name)
    with uow(write=True) as work:
        row = create_or_revive(
            work.repo, name, description=description, tags=tags or {}, actor=actor
        )
        record = model_record(work.repo, row)
        work.commit()
    return record


def get_model(uow: UnitOfWorkProvider, name: str) -> ModelRecord:
    with uow() as work:
        return model_record(work.repo, work.repo.get_model(name))


def list_models(
    uow: UnitOfWorkProvider,
    page: Page,
    *,
    search: str | None = None,
    tags: Sequence[tuple[str, str | None]] = (),
    only: Collection[str] | None = None,
) -> PageOf:
    """One page of live models by name; `only` limits it to the names a token may see."""
    with uow() as work:
        return work.repo.list_models(page, search=search, tags=tags, only=only)


def update_model(
    uow: UnitOfWorkProvider,
    name: str,
    *,
    description: str | None = None,
    tags: Mapping[str, str | None] | None = None,
    reason: str = "",
    actor: str,
) -> ModelRecord:
    with uow(write=True) as work:
        row = work.repo.get_model(name, lock=True)
        before, after = apply_edits(row, description, tags)
        if after:
            row.updated_at = utcnow()
            work.repo.record_event(
                row, "update", actor=actor, reason=reason, before=before, after=after
            )
        record = model_record(work.repo, row)
        work.commit()
    return record


def delete_model(uow: UnitOfWorkProvider, name: str, *, reason: str = "", actor: str) -> None:
    """Delete a model and its versions; refused while any alias points into it.

    The row stays (soft delete) so that a model re-created under the same name continues
    its version numbering: a pinned client never gets a different model under a number.
    Artifact bytes are removed later by `modelreg storage gc`, never before this commits.
    """
    with uow(write=True) as work:
        repo = work.repo
        row = repo.get_model(name, lock=True)
        aliases = repo.aliases_by_model([row.id])[row.id]
        if aliases:
            listed = ", ".join(f"{a} -> {v}" for a, v in aliases.items())
            raise Conflict(
                f"model '{name}' still has aliases ({listed}); delete them first",
                {"aliases": "must be empty before the model can be deleted"},
            )
        versions = repo.remove_model_contents(row)
        before = {
            "description": row.description,
            "tags": dict(row.tags or {}),
            "versions": versions,
        }
        row.deleted_at = row.updated_at = utcnow()
        repo.record_event(row, "delete", actor=actor, reason=reason, before=before)
        work.announce(ModelRemoved(name))
        work.commit()
