"""What the use-case services may ask of storage: the registry's reads and writes, no commits.

`registry.sql_repository.SqlRepository` is the implementation; unit tests use an in-memory
one (tests/unit/fakes.py). Rows are the ORM classes' shape; services read and set their
attributes and the unit of work's commit (or rollback) makes that durable (or undoes it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Protocol

from registry.models import Alias, ModelVersion, Promotion, RegisteredModel
from registry.names import Reference
from registry.pagination import Page
from registry.records import ModelRecord, PageOf

TagFilter = Sequence[tuple[str, str | None]]


class Repository(Protocol):
    # ---- models
    def find_model(
        self, name: str, *, lock: bool = False, include_deleted: bool = False
    ) -> RegisteredModel | None: ...

    def get_model(self, name: str, *, lock: bool = False) -> RegisteredModel:
        """The live model called `name`, or NotFound."""
        ...

    def add_model(
        self, name: str, *, description: str, tags: dict[str, str], at: datetime, actor: str
    ) -> RegisteredModel:
        """Insert a model; a concurrent creator of the same name fails with IntegrityError."""
        ...

    def list_models(
        self,
        page: Page,
        *,
        search: str | None = None,
        tags: TagFilter = (),
        only: Collection[str] | None = None,
    ) -> PageOf:
        """A page of ModelRecord by name."""
        ...

    def model_records(self, rows: list[RegisteredModel]) -> list[ModelRecord]: ...

    def remove_model_contents(self, model: RegisteredModel) -> int:
        """Delete its versions, aliases and promotions; returns how many versions it had."""
        ...

    def next_version_number(self, model: RegisteredModel) -> int:
        """Advance the model's version counter atomically and return the new number."""
        ...

    # ---- versions
    def find_version(self, model: RegisteredModel, ref: Reference) -> ModelVersion:
        """The version a number, alias or `latest` names, or NotFound."""
        ...

    def add_version(self, **fields: Any) -> ModelVersion: ...

    def delete_version(self, row: ModelVersion) -> None: ...

    def list_versions(
        self,
        model: RegisteredModel,
        page: Page,
        *,
        status: str | None = None,
        tags: TagFilter = (),
    ) -> PageOf:
        """A page of VersionRecord, newest first."""
        ...

    def aliases_by_model(self, model_ids: list[int]) -> dict[int, dict[str, int]]: ...

    def latest_by_model(self, model_ids: list[int]) -> dict[int, int]: ...

    def aliases_of_version(self, row: ModelVersion) -> tuple[str, ...]: ...

    # ---- aliases and promotions
    def alias_target(
        self, model: RegisteredModel, alias: str
    ) -> tuple[Alias | None, int | None]: ...

    def point_alias(
        self,
        model: RegisteredModel,
        alias: str,
        target: ModelVersion,
        *,
        actor: str,
        at: datetime,
    ) -> None: ...

    def delete_alias(self, model: RegisteredModel, alias: str) -> None:
        """Remove the alias and its promotion history."""
        ...

    def list_aliases(self, model: RegisteredModel, page: Page) -> PageOf:
        """A page of AliasRecord by name."""
        ...

    def add_promotion(
        self,
        model: RegisteredModel,
        alias: str,
        *,
        version: int,
        previous_version: int | None,
        actor: str,
        at: datetime,
    ) -> None: ...

    def last_promotion(self, model: RegisteredModel, alias: str) -> Promotion | None:
        """The most recent promotion of `alias` not rolled back yet."""
        ...

    # ---- audit trail
    def record_event(
        self,
        model: RegisteredModel,
        type_: str,
        *,
        actor: str,
        reason: str = "",
        version: int | None = None,
        alias: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None: ...

    def list_events(
        self, model: RegisteredModel, page: Page, *, type_: str | None = None
    ) -> PageOf:
        """A page of EventRecord, newest first."""
        ...

    # ---- blobs (registration and storage gc)
    def lock_blob(self, sha256: str) -> None:
        """Serialize registration and garbage collection of one blob until commit."""
        ...

    def add_pending_uploads(self, digests: Sequence[str], *, at: datetime) -> list[int]: ...

    def delete_pending_uploads(self, ids: Sequence[int]) -> None: ...

    def delete_pending_uploads_before(self, before: datetime) -> int: ...

    def blob_in_use(self, sha256: str, *, pending_since: datetime) -> bool: ...
