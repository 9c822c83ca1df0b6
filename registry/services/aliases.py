"""Aliases: promotion (checked, compare-and-set), rollback through history, listing, deletion.

Every alias move happens under the model row's lock, so concurrent promotions of the same
alias are serialized and each one records the version it replaced: the promotions table is
a consistent stack that rollback pops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from registry.changes import AliasMoved
from registry.db import utcnow
from registry.errors import Conflict, NotFound, PromotionRefused
from registry.models import ModelVersion, RegisteredModel
from registry.names import Reference, validate_alias
from registry.pagination import Page
from registry.policies.lifecycle import end_policy
from registry.records import AliasMove, PageOf, VersionRecord
from registry.repository import Repository
from registry.unit_of_work import UnitOfWorkProvider


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Final = _NotGiven()

# Loads the version, verifies its integrity and predicts its input example; raises
# PromotionRefused (or ArtifactIntegrityError) when the version must not be served, else
# returns what it checked, which the promote (or rollback) event records.
VersionCheck = Callable[[VersionRecord], Mapping[str, Any] | None]

DEFAULT_ALIAS = "production"


def _ready_version(repo: Repository, model: RegisteredModel, number: int) -> ModelVersion:
    row = repo.find_version(model, Reference(version=number))
    if row.status != "ready":
        raise Conflict(
            f"version {number} of '{model.name}' is {row.status}; only ready "
            "versions can be aliased",
            {"version": f"is {row.status}"},
        )
    return row


def example_required_for(setting: str) -> frozenset[str]:
    """Parse REQUIRE_INPUT_EXAMPLE_FOR: a comma-separated list of aliases (empty: none)."""
    return frozenset(a.strip() for a in setting.split(",") if a.strip())


def _require_example(record: VersionRecord, alias: str, required_for: Iterable[str]) -> None:
    """Without an input example the gate would predict nothing: refuse, and say how to add one."""
    if record.input_example or alias not in required_for:
        return
    where = f"/models/{record.name}/versions/{record.version}"
    raise PromotionRefused(
        f"version {record.version} of '{record.name}' has no input example, and a promotion "
        f"to '{alias}' needs one so that the version is predicted before it serves "
        f"(server setting REQUIRE_INPUT_EXAMPLE_FOR): add one with PATCH {where} "
        '{"input_example": [[...], ...]} (rows like the model\'s input), then promote again',
        {"input_example": f"required to promote to '{alias}'; PATCH {where} to add one"},
    )


def _checked(check: VersionCheck | None, record: VersionRecord) -> dict[str, Any]:
    """Run the gate; what it checked, for the audit trail."""
    if check is None:
        return {"performed": False}
    return {"performed": True, **(check(record) or {})}


def promote_version(
    uow: UnitOfWorkProvider,
    name: str,
    version: int,
    *,
    alias: str = DEFAULT_ALIAS,
    reason: str = "",
    expected_version: int | _NotGiven | None = NOT_GIVEN,
    actor: str,
    check: VersionCheck | None = None,
    example_required_for: Iterable[str] = (),
) -> AliasMove:
    """Move `alias` to `version` once the version passed `check`.

    `expected_version` makes it a compare-and-set: an int means "the alias must point
    there now", None means "the alias must not exist yet"; otherwise 409 and no change.
    A version without an input example is refused for the aliases in `example_required_for`.
    The check runs outside any transaction (loading may take seconds); the alias moves in a
    short write transaction that re-reads everything under the model's row lock.
    """
    validate_alias(alias)
    with uow() as work:
        model = work.repo.get_model(name)
        record = VersionRecord.from_row(name, _ready_version(work.repo, model, version))
    _require_example(record, alias, example_required_for)
    checked = _checked(check, record)
    with uow(write=True) as work:
        repo = work.repo
        model = repo.get_model(name, lock=True)
        target = _ready_version(repo, model, version)
        _, current = repo.alias_target(model, alias)
        if not isinstance(expected_version, _NotGiven) and current != expected_version:
            expected = "absent" if expected_version is None else f"version {expected_version}"
            actual = "absent" if current is None else f"at version {current}"
            raise Conflict(
                f"alias '{alias}' of '{name}' is {actual}, expected {expected}; not moved",
                {"expected_version": f"alias is {actual}"},
            )
        # Announced even when the alias is already there: this process may still hold an
        # older answer (another process moved it), and the caller has just asked for this one.
        work.announce(AliasMoved(name, alias))
        if current == version:
            work.commit()  # nothing to record; ends the transaction so the news goes out
            return AliasMove(name, alias, version, current)
        now = utcnow()
        repo.point_alias(model, alias, target, actor=actor, at=now)
        repo.add_promotion(
            model, alias, version=version, previous_version=current, actor=actor, at=now
        )
        end_policy(
            work, model, alias, actor=actor, reason=reason, version=version, cause="promoted"
        )
        repo.record_event(
            model,
            "promote",
            actor=actor,
            reason=reason,
            version=version,
            alias=alias,
            before={"version": current},
            after={"version": version, "check": checked},
        )
        work.commit()
    return AliasMove(name, alias, version, current)


def rollback_alias(
    uow: UnitOfWorkProvider,
    name: str,
    alias: str,
    *,
    reason: str = "",
    actor: str,
    check: VersionCheck | None = None,
    expected_version: int | _NotGiven | None = NOT_GIVEN,
) -> AliasMove:
    """Undo the most recent promotion of `alias` that has not been undone yet.

    Successive rollbacks walk back through the history (v3 -> v2 -> v1) and never
    flip-flop; when the oldest promotion had no predecessor there is nothing to return to.
    `expected_version`, as for a promotion, makes it a compare-and-set on where the alias
    points now (the web UI's confirmation page sends what it showed).
    """
    with uow() as work:
        repo = work.repo
        model = repo.get_model(name)
        if repo.alias_target(model, alias)[0] is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'")
        top = repo.last_promotion(model, alias)
        if top is None or top.previous_version is None:
            raise Conflict(f"alias '{alias}' of '{name}' has no earlier version to roll back to")
        top_id, target_number = top.id, top.previous_version
        try:
            target = _ready_version(repo, model, target_number)
        except NotFound:
            raise Conflict(
                f"alias '{alias}' of '{name}' would roll back to version "
                f"{target_number}, which has been deleted"
            ) from None
        record = VersionRecord.from_row(name, target)
    # A rollback returns to a version this alias already served: it is checked (loaded, its
    # example predicted when it has one) but not held to REQUIRE_INPUT_EXAMPLE_FOR.
    checked = _checked(check, record)
    with uow(write=True) as work:
        repo = work.repo
        model = repo.get_model(name, lock=True)
        top = repo.last_promotion(model, alias)
        if top is None or top.id != top_id:
            raise Conflict(f"alias '{alias}' of '{name}' moved during the rollback; retry")
        target = _ready_version(repo, model, target_number)
        _, current = repo.alias_target(model, alias)
        if not isinstance(expected_version, _NotGiven) and current != expected_version:
            expected = "absent" if expected_version is None else f"version {expected_version}"
            actual = "absent" if current is None else f"at version {current}"
            raise Conflict(
                f"alias '{alias}' of '{name}' is {actual}, expected {expected}; not rolled back",
                {"expected_version": f"alias is {actual}"},
            )
        now = utcnow()
        repo.point_alias(model, alias, target, actor=actor, at=now)
        top.rolled_back_at = now
        end_policy(
            work,
            model,
            alias,
            actor=actor,
            reason=reason,
            version=target_number,
            cause="rolled_back",
        )
        repo.record_event(
            model,
            "rollback",
            actor=actor,
            reason=reason,
            version=target_number,
            alias=alias,
            before={"version": current},
            after={"version": target_number, "check": checked},
        )
        work.announce(AliasMoved(name, alias))
        work.commit()
    return AliasMove(name, alias, target_number, current)


def rollback_target(uow: UnitOfWorkProvider, name: str, alias: str) -> int | None:
    """The version a rollback of `alias` would return to now; None when there is none."""
    with uow() as work:
        model = work.repo.get_model(name)
        top = work.repo.last_promotion(model, alias)
        return None if top is None else top.previous_version


def list_aliases(uow: UnitOfWorkProvider, name: str, page: Page) -> PageOf:
    with uow() as work:
        return work.repo.list_aliases(work.repo.get_model(name), page)


def delete_alias(
    uow: UnitOfWorkProvider, name: str, alias: str, *, reason: str = "", actor: str
) -> None:
    """Remove the alias and its promotion history (the events trail keeps the record)."""
    with uow(write=True) as work:
        repo = work.repo
        model = repo.get_model(name, lock=True)
        alias_row, current = repo.alias_target(model, alias)
        if alias_row is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'")
        end_policy(
            work, model, alias, actor=actor, reason=reason, version=current, cause="alias_deleted"
        )
        repo.delete_alias(model, alias)
        repo.record_event(
            model,
            "delete_alias",
            actor=actor,
            reason=reason,
            version=current,
            alias=alias,
            before={"version": current},
        )
        work.announce(AliasMoved(name, alias))
        work.commit()
