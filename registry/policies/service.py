"""Policy use cases: set (checked like a promotion, compare-and-set), show, clear, and end a
policy when its alias moves. Every change is an audit event (and so a webhook) and reaches
every serving process like an alias move: it is announced as one, and serving processes
re-read an alias and its policy together (serving/resolver.py)."""

from __future__ import annotations

import dataclasses
import secrets
import time
from datetime import datetime
from typing import Any

from registry.changes import AliasMoved
from registry.db import utcnow
from registry.errors import Conflict, InvalidInput, NotFound
from registry.models import ModelVersion, RegisteredModel
from registry.monitoring import outcomes
from registry.names import Reference, validate_alias
from registry.policies import allocation, store
from registry.policies.lifecycle import end_policy, public_spec
from registry.policies.spec import PolicySpec, Variant, parse_policy
from registry.policies.tables import AliasPolicy
from registry.records import VersionRecord
from registry.repository import Repository
from registry.services.aliases import VersionCheck
from registry.unit_of_work import UnitOfWorkProvider


def _ready(repo: Repository, model: RegisteredModel, number: int, field: str) -> ModelVersion:
    try:
        row = repo.find_version(model, Reference(version=number))
    except NotFound:
        raise InvalidInput(
            f"model '{model.name}' has no version {number}", {field: "no such version"}
        ) from None
    if row.status != "ready":
        raise InvalidInput(
            f"version {number} of '{model.name}' is {row.status}; a policy routes only to "
            "ready versions",
            {field: f"is {row.status}"},
        )
    return row


def _fields(spec: PolicySpec) -> dict[int, str]:
    named = {v.version: f"variants[{i}].version" for i, v in enumerate(spec.variants)}
    named |= {s.version: f"shadows[{i}].version" for i, s in enumerate(spec.shadows)}
    return named


def with_canary_weights(spec: PolicySpec, control: int, share: float) -> PolicySpec:
    """The spec with the candidate at `share` percent and the control at the rest."""
    variants = tuple(
        Variant(v.version, 100.0 - share if v.version == control else float(share))
        for v in spec.variants
    )
    return dataclasses.replace(spec, variants=variants)


def policy_view(
    name: str, alias: str, row: AliasPolicy | None, control: int | None
) -> dict[str, Any]:
    """What GET .../policy answers."""
    view: dict[str, Any] = {
        "model": name,
        "alias": alias,
        "control": control,
        "revision": row.revision if row else 0,
        "state": "active" if row is not None and row.spec is not None else "none",
        "variants": None,
        "sticky": None,
        "shadows": [],
        "canary": None,
        "started_at": None,
        "updated_at": row.updated_at.isoformat() if row else None,
        "updated_by": row.updated_by if row else None,
    }
    if row is not None and row.spec is not None:
        spec = row.spec
        total = sum(v["weight"] for v in spec["variants"])
        buckets = allocation.owned(spec["ranges"], len(spec["variants"]))
        view["variants"] = [
            {**v, "share": v["weight"] / total, "buckets": n}
            for v, n in zip(spec["variants"], buckets, strict=True)
        ]
        view["sticky"] = spec["sticky"]
        view["started_at"] = spec.get("started_at")
        view["shadows"] = spec["shadows"]
        if spec.get("canary"):
            state = spec.get("canary_state") or {}
            view["canary"] = {
                **spec["canary"],
                "state": state.get("state"),
                "step": state.get("step"),
                "share": spec["canary"]["steps"][state.get("step", 0)],
                "since": state.get("since"),
                "reason": state.get("reason"),
            }
    return view


def get_policy(uow: UnitOfWorkProvider, name: str, alias: str) -> dict[str, Any]:
    validate_alias(alias)
    with uow() as work:
        model = work.repo.get_model(name)
        _, control = work.repo.alias_target(model, alias)
        if control is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'")
        return policy_view(name, alias, store.find(store.session_of(work), model, alias), control)


def _check_revision(row: AliasPolicy | None, expected: int | None, name: str, alias: str) -> int:
    current = row.revision if row else 0
    if expected is not None and expected != current:
        raise Conflict(
            f"the policy of '{name}/{alias}' is at revision {current}, not {expected}; "
            "nothing changed",
            {"expected_revision": f"current revision is {current}"},
        )
    return current


def _started_at(before: dict[str, Any] | None, spec: PolicySpec, at: datetime) -> str:
    """When the experiment began: kept while the same versions compete (a weight change or a
    canary step goes on comparing the same arms), new when the set of variants changes. The
    outcome comparison counts labelled rows from then on."""
    versions = sorted(v.version for v in spec.variants)
    same_arms = before is not None and (
        sorted(v["version"] for v in before["variants"]) == versions
    )
    if same_arms and before.get("started_at"):
        return str(before["started_at"])
    return at.isoformat()


def set_policy(
    uow: UnitOfWorkProvider,
    name: str,
    alias: str,
    body: Any,
    *,
    actor: str,
    reason: str = "",
    expected_revision: int | None = None,
    check: VersionCheck | None = None,
) -> dict[str, Any]:
    """Put `body`'s policy in force on the alias once every version in it passed the
    promotion gate. The alias's version (the control) must be one of the variants."""
    validate_alias(alias)
    spec = parse_policy(body)
    fields = _fields(spec)
    with uow() as work:
        repo = work.repo
        model = repo.get_model(name)
        _, control = repo.alias_target(model, alias)
        if control is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'")
        records = [
            VersionRecord.from_row(name, _ready(repo, model, number, field))
            for number, field in fields.items()
        ]
        # A stale revision fails before the (slow) checks, and again under the lock below.
        _check_revision(
            store.find(store.session_of(work), model, alias), expected_revision, name, alias
        )
    if control not in {v.version for v in spec.variants}:
        raise InvalidInput(
            f"the variants must include version {control}, the version '{alias}' points at "
            "(the control)",
            {"variants": f"must include version {control} (the control)"},
        )
    checked = {}
    for record in records:  # outside any transaction: loading may take seconds
        if check is not None:
            try:
                checked[str(record.version)] = dict(check(record) or {})
            except InvalidInput as error:
                raise type(error)(error.detail, {fields[record.version]: error.detail}) from None
    with uow(write=True) as work:
        repo = work.repo
        model = repo.get_model(name, lock=True)
        _, now_control = repo.alias_target(model, alias)
        if now_control != control:
            raise Conflict(
                f"alias '{alias}' of '{name}' moved while the policy was checked; retry",
                {"alias": f"now at version {now_control}"},
            )
        for number, field in fields.items():
            _ready(repo, model, number, field)
        session = store.session_of(work)
        row = store.find(session, model, alias)
        current = _check_revision(row, expected_revision, name, alias)
        before = row.spec if row else None
        if spec.canary is not None:  # the first step decides the weights
            spec = with_canary_weights(spec, control, spec.canary.steps[0])
        counts = allocation.bucket_counts([v.weight for v in spec.variants])
        if before is not None:
            old = [v["version"] for v in before["variants"]]
            index = {v.version: i for i, v in enumerate(spec.variants)}
            previous = [[index.get(old[i], -1), s, e] for i, s, e in before["ranges"]]
            ranges = allocation.reallocate(previous, counts)
        else:
            ranges = allocation.fresh_ranges(counts)
        at = utcnow()
        if row is None:
            row = AliasPolicy(model_id=model.id, alias=alias, revision=0, salt="")
            session.add(row)
        if before is None:  # a new policy: a new salt, so its units are assigned afresh
            row.salt = secrets.token_hex(8)
        row.spec = {
            **spec.as_dict(),
            "ranges": ranges,
            "started_at": _started_at(before, spec, at),
        }
        if spec.canary is not None:
            row.spec["canary_state"] = {"step": 0, "state": "running", "since": time.time()}
        row.revision = current + 1
        row.updated_at = at
        row.updated_by = actor
        repo.record_event(
            model,
            "policy_set",
            actor=actor,
            reason=reason,
            alias=alias,
            version=control,
            before={"policy": public_spec(before), "revision": current},
            after={"policy": public_spec(row.spec), "revision": row.revision, "check": checked},
        )
        work.announce(AliasMoved(name, alias))
        work.commit()
        return policy_view(name, alias, row, control)


def clear_policy(
    uow: UnitOfWorkProvider,
    name: str,
    alias: str,
    *,
    actor: str,
    reason: str = "",
    expected_revision: int | None = None,
) -> dict[str, Any]:
    """All of the alias's traffic back to its version."""
    validate_alias(alias)
    with uow(write=True) as work:
        repo = work.repo
        model = repo.get_model(name, lock=True)
        _, control = repo.alias_target(model, alias)
        if control is None:
            raise NotFound(f"model '{name}' has no alias '{alias}'")
        row = store.find(store.session_of(work), model, alias)
        _check_revision(row, expected_revision, name, alias)
        if row is None or row.spec is None:
            raise NotFound(f"alias '{alias}' of '{name}' has no policy")
        end_policy(work, model, alias, row, actor=actor, reason=reason, version=control)
        work.commit()
        return policy_view(name, alias, row, control)


def version_for_serving(uow: UnitOfWorkProvider, name: str, ref: Reference) -> VersionRecord:
    """The version a reference names, with the alias's policy when it has one: serving
    re-reads both together, so a policy change is seen as soon as an alias move is."""
    with uow() as work:
        repo = work.repo
        model = repo.get_model(name)
        row = repo.find_version(model, ref)
        record = VersionRecord.from_row(name, row, repo.aliases_of_version(row))
        if ref.alias is None:
            return record
        found = store.active_spec(store.session_of(work), model.id, ref.alias)
        if found is None:
            return record
        spec, salt, revision = found
        # Serving routes by its variants' statuses: an archived or deleted one answers no more.
        others = [v["version"] for v in spec["variants"] if v["version"] != record.version]
        statuses = store.variant_statuses(store.session_of(work), model.id, others)
        return dataclasses.replace(
            record,
            policy={"spec": spec, "salt": salt, "revision": revision, "statuses": statuses},
        )


def outcome_comparison(uow: UnitOfWorkProvider, view: dict[str, Any]) -> dict[str, Any]:
    """The labelled outcome of each variant of an active policy (`view` is get_policy's),
    each candidate against the control, merged over every process (it reads the database)."""
    control = view["control"]
    candidates = [v["version"] for v in view["variants"] if v["version"] != control]
    since = datetime.fromisoformat(view["started_at"] or view["updated_at"])
    with uow() as work:
        return outcomes.compare_variants(
            store.session_of(work), view["model"], view["alias"], control, candidates, since
        )
