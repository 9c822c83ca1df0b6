"""Ending a policy inside another use case's transaction: every move of its alias
(promotion to another version, rollback, deletion) ends it, as DELETE .../policy does."""

from __future__ import annotations

from typing import Any

from registry.changes import AliasMoved
from registry.db import utcnow
from registry.models import RegisteredModel
from registry.policies import store
from registry.policies.tables import AliasPolicy


def public_spec(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if spec is None else {k: v for k, v in spec.items() if k != "ranges"}


def end_policy(
    work: Any,
    model: RegisteredModel,
    alias: str,
    row: AliasPolicy | None = None,
    *,
    actor: str,
    reason: str,
    version: int | None,
    cause: str = "cleared",
) -> None:
    """Clear the alias's policy inside the caller's write transaction (a no-op without one):
    DELETE .../policy, and every move of the alias (promotion, rollback, deletion)."""
    if row is None and not store.has_session(work):
        return
    row = row or store.find(store.session_of(work), model, alias)
    if row is None or row.spec is None:
        return
    before = row.spec
    row.spec = None
    row.revision += 1
    row.updated_at = utcnow()
    row.updated_by = actor
    work.repo.record_event(
        model,
        "policy_cleared",
        actor=actor,
        reason=reason,
        alias=alias,
        version=version,
        before={"policy": public_spec(before), "revision": row.revision - 1},
        after={"policy": None, "revision": row.revision, "cause": cause},
    )
    work.announce(AliasMoved(model.name, alias))
