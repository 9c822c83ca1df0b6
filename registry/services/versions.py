"""Model versions: register (race-free numbering), read, update, archive, delete, download."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from sqlalchemy.exc import IntegrityError

from registry.changes import AliasMoved, VersionRemoved, VersionStatusChanged
from registry.db import utcnow
from registry.errors import (
    ArtifactIntegrityError,
    Conflict,
    DependencyUnavailable,
    InvalidInput,
)
from registry.models import ModelVersion
from registry.names import Reference, validate_model_name
from registry.pagination import Page, decode_cursor
from registry.records import PageOf, VersionRecord, conversion_blob
from registry.services._patch import apply_edits
from registry.services.models import create_or_revive
from registry.signatures import check_input_example, infer_column_types, merge_signature
from registry.unit_of_work import UnitOfWorkProvider
from storage import ArtifactNotFound, ArtifactStore, StagedUpload, StorageError

log = logging.getLogger(__name__)

# Reads a staged artifact of a format and returns what it reveals of its signature.
# Raises InvalidInput when the bytes are not a loadable model of that format (or the format
# is not allowed by policy). Supplied by the composition root (serving knows the formats).
ArtifactInspector = Callable[[str, str], "Inspection | None"]


class Acceleration(Protocol):
    status: str  # ready | mismatch | failed | unsupported
    detail: dict[str, Any]  # detail["runtime"]: "numpy" or "onnxruntime" when ready
    artifact: bytes | None  # what that runtime loads, stored content-addressed


class Inspection(Protocol):
    """What registration learns by loading the artifact once."""

    signature: dict[str, Any] | None

    def accelerate(
        self,
        signature: Mapping[str, Any] | None,
        input_example: list[Any] | None,
        *,
        prefer_float32: bool = False,
    ) -> Acceleration: ...


REGISTER_ATTEMPTS = 5
STATUSES = ("ready", "archived")


@dataclass(frozen=True, slots=True)
class NewVersion:
    format: str
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    source: Mapping[str, Any] = field(default_factory=dict)
    input_example: list[Any] | None = None
    signature: Mapping[str, Any] | None = None
    accelerate: bool | str = True  # True, False or "float32" (prefer a float32 form)


def register_version(
    uow: UnitOfWorkProvider,
    store: ArtifactStore,
    inspect: ArtifactInspector,
    *,
    name: str,
    staged: StagedUpload,
    meta: NewVersion,
    actor: str,
    accelerate: bool = False,
) -> VersionRecord:
    """Check the artifact, store it, and give it the model's next version number.

    With `accelerate` (and unless the publisher opted out), a verified ONNX conversion is
    stored beside the artifact and recorded on the version.

    The number comes from an atomic increment on the model row inside the same transaction
    as the version insert; UNIQUE(model_id, version) backs it. A conflict (two first
    registrations creating the model at once) is retried in a fresh unit of work.
    """
    validate_model_name(name)
    staged.finish()
    if staged.size == 0:
        raise InvalidInput("empty artifact", {"artifact": "the file is empty"})
    inspection = inspect(staged.path, meta.format)
    signature = merge_signature(meta.signature, inspection.signature if inspection else None)
    check_input_example(meta.input_example, signature)
    if signature is not None and meta.input_example:
        columns = infer_column_types(meta.input_example, signature)
        if columns is not None:
            signature["inputs"] = columns
    extra: StagedUpload | None = None
    acceleration: dict[str, Any] | None = None
    if accelerate and meta.accelerate and inspection is not None and meta.format != "onnx":
        outcome = inspection.accelerate(
            signature, meta.input_example, prefer_float32=meta.accelerate == "float32"
        )
        acceleration = {"status": outcome.status, **outcome.detail}
        if outcome.artifact:
            extra = store.stage()
            extra.write(outcome.artifact)
            extra.finish()
    elif not meta.accelerate:
        acceleration = {"status": "off", "reason": "turned off by the publisher"}
    try:
        pending = _mark_pending(uow, [staged.sha256] + ([extra.sha256] if extra else []))
        try:
            return _store_and_record(
                uow,
                store,
                name=name,
                staged=staged,
                meta=meta,
                signature=signature,
                actor=actor,
                pending=pending,
                conversion=extra,
                acceleration=acceleration,
            )
        except BaseException:
            _unmark_pending(uow, pending)
            raise
    finally:
        if extra is not None:
            extra.discard()


def _mark_pending(uow: UnitOfWorkProvider, digests: list[str]) -> list[int]:
    """Record the registration in flight before its blobs are stored (see storage gc)."""
    with uow(write=True) as work:
        for sha256 in digests:
            work.repo.lock_blob(sha256)
        ids = work.repo.add_pending_uploads(digests, at=utcnow())
        work.commit()
    return ids


def _unmark_pending(uow: UnitOfWorkProvider, pending: list[int]) -> None:
    try:
        with uow(write=True) as work:
            work.repo.delete_pending_uploads(pending)
            work.commit()
    except DependencyUnavailable:
        log.warning("could not clear pending uploads %s; storage gc expires them", pending)


def _store_and_record(
    uow: UnitOfWorkProvider,
    store: ArtifactStore,
    *,
    name: str,
    staged: StagedUpload,
    meta: NewVersion,
    signature: dict[str, Any] | None,
    actor: str,
    pending: list[int],
    conversion: StagedUpload | None,
    acceleration: dict[str, Any] | None,
) -> VersionRecord:
    try:
        stored = store.commit(staged)
        if conversion is not None:
            accelerated = store.commit(conversion)
            where = {"sha256": accelerated.sha256, "size": accelerated.size}
            acceleration = dict(acceleration or {})
            if acceleration.get("runtime") == "numpy":
                acceleration["numpy"] = where  # see VersionRecord.accel_blob
            else:
                acceleration.update(where, runtime="onnxruntime")
    except StorageError as error:
        log.error("artifact store failed during registration: %s", error)
        raise DependencyUnavailable(
            "the artifact store is unavailable; try again shortly"
        ) from None

    blob = conversion_blob(acceleration)
    for attempt in range(1, REGISTER_ATTEMPTS + 1):
        try:
            with uow(write=True) as work:
                repo = work.repo
                model = repo.find_model(name, lock=True)
                if model is None:
                    model = create_or_revive(
                        repo, name, description="", tags={}, actor=actor, exist_ok=True
                    )
                number = repo.next_version_number(model)
                now = utcnow()
                row = repo.add_version(
                    model_id=model.id,
                    version=number,
                    status="ready",
                    format=meta.format,
                    artifact_key=stored.key,
                    sha256=stored.sha256,
                    size=stored.size,
                    description=meta.description,
                    tags=dict(meta.tags),
                    metrics=dict(meta.metrics),
                    params=dict(meta.params),
                    source=dict(meta.source),
                    input_example=meta.input_example,
                    signature=signature,
                    acceleration=acceleration,
                    accel_sha256=blob[0] if blob else None,  # what storage gc keeps
                    created_at=now,
                    created_by=actor,
                    updated_at=now,
                )
                repo.delete_pending_uploads(pending)
                repo.record_event(
                    model, "register", actor=actor, version=number, after=version_summary(row)
                )
                record = VersionRecord.from_row(name, row)
                work.announce(AliasMoved(name, "latest"))
                work.commit()
            return record
        except IntegrityError:
            log.info("registration of %s conflicted (attempt %d); retrying", name, attempt)
    raise Conflict(f"could not register a version of '{name}' under contention; retry")


def get_version(uow: UnitOfWorkProvider, name: str, ref: Reference) -> VersionRecord:
    with uow() as work:
        row = work.repo.find_version(work.repo.get_model(name), ref)
        return VersionRecord.from_row(name, row, work.repo.aliases_of_version(row))


def list_versions(
    uow: UnitOfWorkProvider,
    name: str,
    page: Page,
    *,
    status: str | None = None,
    tags: Sequence[tuple[str, str | None]] = (),
) -> PageOf:
    with uow() as work:
        model = work.repo.get_model(name)
        return work.repo.list_versions(model, page, status=status, tags=tags)


def update_version(
    uow: UnitOfWorkProvider,
    name: str,
    ref: Reference,
    *,
    description: str | None = None,
    tags: Mapping[str, str | None] | None = None,
    status: str | None = None,
    input_example: list[Any] | None = None,
    reason: str = "",
    actor: str,
) -> VersionRecord:
    """Edit a version's metadata; `input_example` replaces the example (for the promotion
    gate), checked against the signature as at registration."""
    with uow(write=True) as work:
        repo = work.repo
        model = repo.get_model(name, lock=True)
        row = repo.find_version(model, ref)
        aliases = repo.aliases_of_version(row)
        before, after = apply_edits(row, description, tags)
        if input_example is not None and input_example != row.input_example:
            check_input_example(input_example, row.signature)
            before["input_example"], after["input_example"] = row.input_example, input_example
            row.input_example = input_example
        if after:
            repo.record_event(
                model,
                "update_version",
                actor=actor,
                reason=reason,
                version=row.version,
                before=before,
                after=after,
            )
        if status is not None and status != row.status:
            if status == "archived" and aliases:
                raise Conflict(
                    f"version {row.version} of '{name}' is aliased as {', '.join(aliases)}; "
                    "move or delete the alias before archiving it",
                    {"status": "an aliased version cannot be archived"},
                )
            repo.record_event(
                model,
                "archive" if status == "archived" else "restore",
                actor=actor,
                reason=reason,
                version=row.version,
                before={"status": row.status},
                after={"status": status},
            )
            row.status = status
            work.announce(AliasMoved(name, "latest"))  # only ready versions can be `latest`
            work.announce(VersionStatusChanged(name, row.version))
        if after or status is not None:
            row.updated_at = utcnow()
        record = VersionRecord.from_row(name, row, aliases)
        work.commit()
    return record


def delete_version(
    uow: UnitOfWorkProvider, name: str, ref: Reference, *, reason: str = "", actor: str
) -> VersionRecord:
    """Delete one version; its number is never reused and its bytes wait for `storage gc`."""
    with uow(write=True) as work:
        repo = work.repo
        model = repo.get_model(name, lock=True)
        row = repo.find_version(model, ref)
        aliases = repo.aliases_of_version(row)
        if aliases:
            raise Conflict(
                f"version {row.version} of '{name}' is aliased as {', '.join(aliases)}; "
                "move or delete the alias first",
                {"version": "an aliased version cannot be deleted"},
            )
        record = VersionRecord.from_row(name, row)
        repo.record_event(
            model,
            "delete_version",
            actor=actor,
            reason=reason,
            version=row.version,
            before=version_summary(row),
        )
        repo.delete_version(row)
        work.announce(VersionRemoved(name, record.version))
        work.commit()
    return record


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


def open_artifact(
    uow: UnitOfWorkProvider,
    store: ArtifactStore,
    name: str,
    ref: Reference,
    byte_range: Callable[[int], tuple[int, int] | None] | None = None,
) -> tuple[VersionRecord, BinaryIO, tuple[int, int] | None]:
    """The version and a stream of its artifact; `byte_range(size)` may pick (start, stop)."""
    record = get_version(uow, name, ref)
    span = byte_range(record.size) if byte_range is not None else None
    try:
        if span is None:
            return record, store.open(record.artifact_key), None
        start, stop = span
        return record, store.open(record.artifact_key, start, stop - start), span
    except ArtifactNotFound:
        log.error(
            "INTEGRITY: the artifact of %s v%d is missing from the store", name, record.version
        )
        raise ArtifactIntegrityError(
            f"the artifact of version {record.version} of '{name}' is missing from the store",
            {"version": str(record.version)},
        ) from None
    except StorageError:
        raise DependencyUnavailable("the artifact store is unavailable") from None


MAX_LISTED_READY_VERSIONS = 10_000


def ready_version_numbers(uow: UnitOfWorkProvider, name: str) -> list[int]:
    """The numbers of a model's ready versions, newest first, at most 10,000 (V2 metadata
    lists them)."""
    numbers: list[int] = []
    page = Page(limit=500)
    while len(numbers) < MAX_LISTED_READY_VERSIONS:
        result = list_versions(uow, name, page, status="ready")
        numbers.extend(record.version for record in result.items)
        if not result.next_cursor:
            break
        page = Page(limit=500, after=decode_cursor(result.next_cursor, int))
    return numbers[:MAX_LISTED_READY_VERSIONS]
