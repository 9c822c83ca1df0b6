"""Plain, immutable records that services return (never live ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registry.models import Alias, Event, ModelVersion, RegisteredModel


@dataclass(frozen=True, slots=True)
class ModelRecord:
    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest_version: int | None
    created_at: datetime
    created_by: str
    updated_at: datetime

    @classmethod
    def from_row(
        cls, row: RegisteredModel, aliases: dict[str, int], latest_version: int | None
    ) -> ModelRecord:
        return cls(
            name=row.name,
            description=row.description or "",
            tags=dict(row.tags or {}),
            aliases=aliases,
            latest_version=latest_version,
            created_at=row.created_at,
            created_by=row.created_by,
            updated_at=row.updated_at,
        )


def conversion_blob(acceleration: dict[str, Any] | None) -> tuple[str, int | None] | None:
    """(sha256, size) of a version's verified conversion, from its acceleration record.

    The numpy form of a linear model is recorded under `acceleration.numpy`, where servers of
    releases that knew only ONNX (and read `acceleration.sha256` as an ONNX file) do not look:
    during a rolling upgrade or a rollback they serve such versions with scikit-learn."""
    accel = acceleration or {}
    if accel.get("status") != "ready":
        return None
    numpy_form = accel.get("numpy")
    if isinstance(numpy_form, dict) and numpy_form.get("sha256"):
        return numpy_form["sha256"], numpy_form.get("size")
    if accel.get("sha256"):
        return accel["sha256"], accel.get("size")
    return None


@dataclass(frozen=True, slots=True)
class VersionRecord:
    """Everything known about one version; its identity (name, version, sha256) never changes."""

    name: str
    version: int
    status: str
    format: str
    sha256: str
    size: int
    artifact_key: str
    description: str
    tags: dict[str, str]
    metrics: dict[str, float]
    params: dict[str, Any]
    source: dict[str, Any]
    input_example: list[Any] | None
    signature: dict[str, Any] | None
    created_at: datetime
    created_by: str
    updated_at: datetime
    aliases: tuple[str, ...] = field(default=())
    acceleration: dict[str, Any] | None = None
    # When this record answers an alias: the traffic policy in force on it (serving routes
    # by it), as {"spec", "salt", "revision"}; None otherwise.
    policy: dict[str, Any] | None = None

    @property
    def accel_blob(self) -> tuple[str, int | None] | None:
        """(sha256, size) of the verified conversion, when there is one."""
        return conversion_blob(self.acceleration)

    @property
    def accel_key(self) -> str | None:
        """The content address of the verified conversion (ONNX or numpy), when there is one."""
        blob = self.accel_blob
        return None if blob is None else f"sha256/{blob[0][:2]}/{blob[0]}"

    @property
    def accel_runtime(self) -> str | None:
        """The runtime that loads the conversion at `accel_key`: "numpy" or "onnxruntime"."""
        if self.accel_key is None:
            return None
        accel = self.acceleration or {}
        return "numpy" if isinstance(accel.get("numpy"), dict) else "onnxruntime"

    @classmethod
    def from_row(cls, name: str, row: ModelVersion, aliases: tuple[str, ...] = ()) -> VersionRecord:
        return cls(
            name=name,
            version=row.version,
            status=row.status,
            format=row.format,
            sha256=row.sha256,
            size=row.size,
            artifact_key=row.artifact_key,
            description=row.description or "",
            tags=dict(row.tags or {}),
            metrics=dict(row.metrics or {}),
            params=dict(row.params or {}),
            source=dict(row.source or {}),
            input_example=row.input_example,
            signature=row.signature,
            created_at=row.created_at,
            created_by=row.created_by,
            updated_at=row.updated_at,
            aliases=aliases,
            acceleration=row.acceleration,
        )


@dataclass(frozen=True, slots=True)
class AliasRecord:
    alias: str
    version: int
    updated_at: datetime
    updated_by: str

    @classmethod
    def from_row(cls, row: Alias, version: int) -> AliasRecord:
        return cls(
            alias=row.name, version=version, updated_at=row.updated_at, updated_by=row.updated_by
        )


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    model: str
    type: str
    at: datetime
    actor: str
    reason: str
    version: int | None
    alias: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    @classmethod
    def from_row(cls, name: str, row: Event) -> EventRecord:
        return cls(
            id=row.id,
            model=name,
            type=row.type,
            at=row.at,
            actor=row.actor,
            reason=row.reason or "",
            version=row.version,
            alias=row.alias,
            before=row.before,
            after=row.after,
        )


@dataclass(frozen=True, slots=True)
class AliasMove:
    """The result of a promotion or a rollback."""

    name: str
    alias: str
    version: int
    previous_version: int | None


@dataclass(frozen=True, slots=True)
class PageOf:
    items: list[Any]
    next_cursor: str | None
