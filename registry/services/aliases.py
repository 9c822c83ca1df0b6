"""Aliases: promotion (checked, compare-and-set), rollback through history, listing, deletion.

Every alias move happens under the model row's lock, so concurrent promotions of the same
alias are serialized and each one records the version it replaced: the promotions table is
a consistent stack that rollback pops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry import repository as repo
from registry.db import utcnow
from registry.errors import Conflict, NotFound
from registry.models import Alias, ModelVersion, Promotion, RegisteredModel
from registry.names import Reference, validate_alias
from registry.pagination import Page, encode_cursor
from registry.records import AliasMove, AliasRecord, PageOf, VersionRecord
from registry.unit_of_work import UnitOfWorkFactory


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGiven()

# Loads the version, verifies its integrity and predicts its input example; raises
# PromotionRefused (or ArtifactIntegrityError) when the version must not be served.
VersionCheck = Callable[[VersionRecord], None]

DEFAULT_ALIAS = "production"


def _ready_version(session: Session, model: RegisteredModel, number: int) -> ModelVersion:
    row = repo.find_version(session, model, Reference(version=number))
    if row.status != "ready":
        raise Conflict(
            f"version {number} of '{model.name}' is {row.status}; only ready "
            "versions can be aliased",
            {"version": f"is {row.status}"},
        )
    return row


def _current_target(
    session: Session, model: RegisteredModel, alias: str
) -> tuple[Alias | None, int | None]:
    row = repo.find_alias(session, model.id, alias)
    if row is None:
        return None, None
    return row, session.get(ModelVersion, row.version_id).version


def _point(
    session: Session,
    model: RegisteredModel,
    alias_row: Alias | None,
    alias: str,
    version_row: ModelVersion,
    actor: str,
) -> None:
    now = utcnow()
    if alias_row is None:
        session.add(
            Alias(
                model_id=model.id,
                name=alias,
                version_id=version_row.id,
                updated_at=now,
                updated_by=actor,
            )
        )
    else:
        alias_row.version_id = version_row.id
        alias_row.updated_at = now
        alias_row.updated_by = actor


def promote_version(
    uow: UnitOfWorkFactory,
    name: str,
    version: int,
    *,
    alias: str = DEFAULT_ALIAS,
    reason: str = "",
    expected_version: int | _NotGiven | None = NOT_GIVEN,
    actor: str,
    check: VersionCheck | None = None,
) -> AliasMove:
    """Move `alias` to `version` once the version passed `check`.

    `expected_version` makes it a compare-and-set: an int means "the alias must point
    there now", None means "the alias must not exist yet"; otherwise 409 and no change.
    The check runs outside any transaction (loading may take seconds); the alias moves in a
    short write transaction that re-reads everything under the model's row lock.
    """
    validate_alias(alias)
    with uow() as work:
        model = repo.get_model(work.session, name)
        record = VersionRecord.from_row(name, _ready_version(work.session, model, version))
    if check is not None:
        check(record)
    with uow(write=True) as work:
        session = work.session
        model = repo.get_model(session, name, lock=True)
        target = _ready_version(session, model, version)
        alias_row, current = _current_target(session, model, alias)
        if not isinstance(expected_version, _NotGiven) and current != expected_version:
            expected = "absent" if expected_version is None else f"version {expected_version}"
            actual = "absent" if current is None else f"at version {current}"
            raise Conflict(
                f"alias '{alias}' of '{name}' is {actual}, expected {expected}; not moved",
                {"expected_version": f"alias is {actual}"},
            )
        if current == version:
            return AliasMove(name, alias, version, current)  # already there: nothing to record
        _point(session, model, alias_row, alias, target, actor)
        session.add(
            Promotion(
                model_id=model.id,
                alias=alias,
                version=version,
                previous_version=current,
                promoted_at=utcnow(),
                promoted_by=actor,
            )
        )
        repo.record_event(
            session,
            model,
            "promote",
            actor=actor,
            reason=reason,
            version=version,
            alias=alias,
            before={"version": current},
            after={"version": version},
        )
        work.commit()
    return AliasMove(name, alias, version, current)


def _last_promotion(session: Session, model_id: int, alias: str) -> Promotion | None:
    return session.scalars(
        select(Promotion)
        .where(
            Promotion.model_id == model_id,
            Promotion.alias == alias,
            Promotion.rolled_back_at.is_(None),
        )
        .order_by(Promotion.id.desc())
        .limit(1)
    ).first()


def rollback_alias(
    uow: UnitOfWorkFactory,
    name: str,
    alias: str,
    *,
    reason: str = "",
    actor: str,
    check: VersionCheck | None = None,
) -> AliasMove:
    """Undo the most recent promotion of `alias` that has not been undone yet.

    Successive rollbacks walk back through the history (v3 -> v2 -> v1) and never
    flip-flop; when the oldest promotion had no predecessor there is nothing to return to.
    """
    with uow() as work:
        model = repo.get_model(work.session, name)
        if repo.find_alias(work.session, model.id, alias) is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'")
        top = _last_promotion(work.session, model.id, alias)
        if top is None or top.previous_version is None:
            raise Conflict(f"alias '{alias}' of '{name}' has no earlier version to roll back to")
        top_id, target_number = top.id, top.previous_version
        try:
            target = _ready_version(work.session, model, target_number)
        except NotFound:
            raise Conflict(
                f"alias '{alias}' of '{name}' would roll back to version "
                f"{target_number}, which has been deleted"
            ) from None
        record = VersionRecord.from_row(name, target)
    if check is not None:
        check(record)
    with uow(write=True) as work:
        session = work.session
        model = repo.get_model(session, name, lock=True)
        top = _last_promotion(session, model.id, alias)
        if top is None or top.id != top_id:
            raise Conflict(f"alias '{alias}' of '{name}' moved during the rollback; retry")
        target = _ready_version(session, model, target_number)
        alias_row, current = _current_target(session, model, alias)
        _point(session, model, alias_row, alias, target, actor)
        top.rolled_back_at = utcnow()
        repo.record_event(
            session,
            model,
            "rollback",
            actor=actor,
            reason=reason,
            version=target_number,
            alias=alias,
            before={"version": current},
            after={"version": target_number},
        )
        work.commit()
    return AliasMove(name, alias, target_number, current)


def list_aliases(uow: UnitOfWorkFactory, name: str, page: Page) -> PageOf:
    with uow() as work:
        model = repo.get_model(work.session, name)
        query = (
            select(Alias, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == Alias.version_id)
            .where(Alias.model_id == model.id)
        )
        if page.after is not None:
            query = query.where(Alias.name > page.after)
        rows = list(work.session.execute(query.order_by(Alias.name).limit(page.limit + 1)))
        items = [AliasRecord.from_row(alias, version) for alias, version in rows[: page.limit]]
    cursor = encode_cursor(items[-1].alias) if len(rows) > page.limit else None
    return PageOf(items, cursor)


def delete_alias(
    uow: UnitOfWorkFactory, name: str, alias: str, *, reason: str = "", actor: str
) -> None:
    """Remove the alias and its promotion history (the events trail keeps the record)."""
    with uow(write=True) as work:
        session = work.session
        model = repo.get_model(session, name, lock=True)
        alias_row, current = _current_target(session, model, alias)
        if alias_row is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'")
        session.delete(alias_row)
        session.execute(
            Promotion.__table__.delete().where(
                Promotion.model_id == model.id, Promotion.alias == alias
            )
        )
        repo.record_event(
            session,
            model,
            "delete_alias",
            actor=actor,
            reason=reason,
            version=current,
            alias=alias,
            before={"version": current},
        )
        work.commit()
