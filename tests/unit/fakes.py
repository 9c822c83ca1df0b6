"""An in-memory repository and unit of work: the registry services' storage, without a database.

It implements registry.repository.Repository over plain dataclass rows with the ORM rows'
attributes. A unit of work works on a copy of the committed tables: commit publishes the
copy, leaving without commit throws it away (so a service that edits a row and then raises
changes nothing, as on SQL). Announcements and their delivery are the real base class's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from registry.changes import ChangeListener, RegistryChange
from registry.errors import NotFound
from registry.names import Reference
from registry.pagination import Page, cut_page
from registry.records import AliasRecord, EventRecord, ModelRecord, PageOf, VersionRecord
from registry.unit_of_work import UnitOfWork


@dataclass
class ModelRow:
    id: int
    name: str
    description: str
    tags: dict[str, str]
    created_at: datetime
    created_by: str
    updated_at: datetime
    last_version: int = 0
    deleted_at: datetime | None = None


@dataclass
class VersionRow:
    id: int
    model_id: int
    version: int
    status: str
    format: str
    artifact_key: str
    sha256: str
    size: int
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
    acceleration: dict[str, Any] | None = None
    accel_sha256: str | None = None


@dataclass
class AliasRow:
    id: int
    model_id: int
    name: str
    version_id: int
    updated_at: datetime
    updated_by: str


@dataclass
class PromotionRow:
    id: int
    model_id: int
    alias: str
    version: int
    previous_version: int | None
    promoted_at: datetime
    promoted_by: str
    rolled_back_at: datetime | None = None


@dataclass
class EventRow:
    id: int
    model_id: int
    type: str
    at: datetime
    actor: str
    reason: str
    version: int | None
    alias: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass
class PendingRow:
    id: int
    sha256: str
    started_at: datetime


@dataclass
class Tables:
    models: list[ModelRow] = field(default_factory=list)
    versions: list[VersionRow] = field(default_factory=list)
    aliases: list[AliasRow] = field(default_factory=list)
    promotions: list[PromotionRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    pending: list[PendingRow] = field(default_factory=list)
    last_id: int = 0

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id


def _tags_match(tags: dict[str, str], wanted: Sequence[tuple[str, str | None]]) -> bool:
    return all(key in tags and (value is None or tags[key] == value) for key, value in wanted)


def _page(rows: list[Any], page: Page, key: Callable[[Any], Any], *, descending: bool) -> list:
    """Rows after the cursor in key order (what the SQL keyset query selects)."""
    rows = sorted(rows, key=key, reverse=descending)
    if page.after is not None:
        rows = [r for r in rows if (key(r) < page.after if descending else key(r) > page.after)]
    return rows


class FakeRepository:
    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    # ---- models
    def find_model(
        self, name: str, *, lock: bool = False, include_deleted: bool = False
    ) -> ModelRow | None:
        for row in self.tables.models:
            if row.name == name and (include_deleted or row.deleted_at is None):
                return row
        return None

    def get_model(self, name: str, *, lock: bool = False) -> ModelRow:
        row = self.find_model(name, lock=lock)
        if row is None:
            raise NotFound(f"model '{name}' not found")
        return row

    def add_model(
        self, name: str, *, description: str, tags: dict[str, str], at: datetime, actor: str
    ) -> ModelRow:
        assert self.find_model(name, include_deleted=True) is None, "UNIQUE(name)"
        row = ModelRow(self.tables.next_id(), name, description, tags, at, actor, at)
        self.tables.models.append(row)
        return row

    def list_models(
        self,
        page: Page,
        *,
        search: str | None = None,
        tags: Sequence[tuple[str, str | None]] = (),
        only: Collection[str] | None = None,
    ) -> PageOf:
        rows = [
            r
            for r in self.tables.models
            if r.deleted_at is None
            and (only is None or r.name in only)
            and (not search or search.lower() in r.name.lower())
            and _tags_match(r.tags, tags)
        ]
        kept, cursor = cut_page(
            _page(rows, page, lambda r: r.name, descending=False), page, lambda r: r.name
        )
        return PageOf(self.model_records(kept), cursor)

    def model_records(self, rows: list[ModelRow]) -> list[ModelRecord]:
        ids = [r.id for r in rows]
        aliases, latest = self.aliases_by_model(ids), self.latest_by_model(ids)
        return [ModelRecord.from_row(r, aliases[r.id], latest.get(r.id)) for r in rows]

    def remove_model_contents(self, model: ModelRow) -> int:
        t = self.tables
        count = sum(1 for v in t.versions if v.model_id == model.id)
        t.promotions = [p for p in t.promotions if p.model_id != model.id]
        t.aliases = [a for a in t.aliases if a.model_id != model.id]
        t.versions = [v for v in t.versions if v.model_id != model.id]
        return count

    def next_version_number(self, model: ModelRow) -> int:
        model.last_version += 1
        return model.last_version

    # ---- versions
    def _versions(self, model: ModelRow) -> list[VersionRow]:
        return [v for v in self.tables.versions if v.model_id == model.id]

    def find_version(self, model: ModelRow, ref: Reference) -> VersionRow:
        versions = self._versions(model)
        if ref.version is not None:
            found = [v for v in versions if v.version == ref.version]
            missing = f"model '{model.name}' has no version {ref.version}"
        elif ref.latest:
            found = sorted((v for v in versions if v.status == "ready"), key=lambda v: -v.version)
            missing = f"model '{model.name}' has no version that is ready"
        else:
            ids = {a.version_id for a in self.tables.aliases if a.model_id == model.id}
            ids &= {a.version_id for a in self.tables.aliases if a.name == ref.alias}
            found = [v for v in versions if v.id in ids]
            missing = f"model '{model.name}' has no alias '{ref.alias}'"
        if not found:
            raise NotFound(missing)
        return found[0]

    def add_version(self, **fields: Any) -> VersionRow:
        assert not any(
            v.model_id == fields["model_id"] and v.version == fields["version"]
            for v in self.tables.versions
        ), "UNIQUE(model_id, version)"
        row = VersionRow(id=self.tables.next_id(), **fields)
        self.tables.versions.append(row)
        return row

    def delete_version(self, row: VersionRow) -> None:
        self.tables.versions.remove(row)

    def list_versions(
        self,
        model: ModelRow,
        page: Page,
        *,
        status: str | None = None,
        tags: Sequence[tuple[str, str | None]] = (),
    ) -> PageOf:
        rows = [
            v
            for v in self._versions(model)
            if (status is None or v.status == status) and _tags_match(v.tags, tags)
        ]
        ordered = _page(rows, page, lambda v: v.version, descending=True)
        kept, cursor = cut_page(ordered, page, lambda v: v.version)
        return PageOf(
            [VersionRecord.from_row(model.name, v, self.aliases_of_version(v)) for v in kept],
            cursor,
        )

    def aliases_by_model(self, model_ids: list[int]) -> dict[int, dict[str, int]]:
        result: dict[int, dict[str, int]] = {model_id: {} for model_id in model_ids}
        by_id = {v.id: v.version for v in self.tables.versions}
        for alias in sorted(self.tables.aliases, key=lambda a: a.name):
            if alias.model_id in result:
                result[alias.model_id][alias.name] = by_id[alias.version_id]
        return result

    def latest_by_model(self, model_ids: list[int]) -> dict[int, int]:
        latest: dict[int, int] = {}
        for v in self.tables.versions:
            if v.model_id in model_ids and v.status == "ready":
                latest[v.model_id] = max(latest.get(v.model_id, 0), v.version)
        return latest

    def aliases_of_version(self, row: VersionRow) -> tuple[str, ...]:
        return tuple(sorted(a.name for a in self.tables.aliases if a.version_id == row.id))

    # ---- aliases and promotions
    def alias_target(self, model: ModelRow, alias: str) -> tuple[AliasRow | None, int | None]:
        for row in self.tables.aliases:
            if row.model_id == model.id and row.name == alias:
                target = next(v for v in self.tables.versions if v.id == row.version_id)
                return row, target.version
        return None, None

    def point_alias(
        self, model: ModelRow, alias: str, target: VersionRow, *, actor: str, at: datetime
    ) -> None:
        row, _ = self.alias_target(model, alias)
        if row is None:
            self.tables.aliases.append(
                AliasRow(self.tables.next_id(), model.id, alias, target.id, at, actor)
            )
        else:
            row.version_id, row.updated_at, row.updated_by = target.id, at, actor

    def delete_alias(self, model: ModelRow, alias: str) -> None:
        t = self.tables
        t.aliases = [a for a in t.aliases if not (a.model_id == model.id and a.name == alias)]
        t.promotions = [
            p for p in t.promotions if not (p.model_id == model.id and p.alias == alias)
        ]

    def list_aliases(self, model: ModelRow, page: Page) -> PageOf:
        rows = [a for a in self.tables.aliases if a.model_id == model.id]
        kept, cursor = cut_page(
            _page(rows, page, lambda a: a.name, descending=False), page, lambda a: a.name
        )
        versions = self.aliases_by_model([model.id])[model.id]
        return PageOf([AliasRecord.from_row(a, versions[a.name]) for a in kept], cursor)

    def add_promotion(
        self,
        model: ModelRow,
        alias: str,
        *,
        version: int,
        previous_version: int | None,
        actor: str,
        at: datetime,
    ) -> None:
        self.tables.promotions.append(
            PromotionRow(
                self.tables.next_id(), model.id, alias, version, previous_version, at, actor
            )
        )

    def last_promotion(self, model: ModelRow, alias: str) -> PromotionRow | None:
        stack = [
            p
            for p in self.tables.promotions
            if p.model_id == model.id and p.alias == alias and p.rolled_back_at is None
        ]
        return max(stack, key=lambda p: p.id, default=None)

    # ---- audit trail
    def record_event(
        self,
        model: ModelRow,
        type_: str,
        *,
        actor: str,
        reason: str = "",
        version: int | None = None,
        alias: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        self.tables.events.append(
            EventRow(
                self.tables.next_id(),
                model.id,
                type_,
                datetime.now(),
                actor,
                reason,
                version,
                alias,
                before,
                after,
            )
        )

    def list_events(self, model: ModelRow, page: Page, *, type_: str | None = None) -> PageOf:
        rows = [
            e
            for e in self.tables.events
            if e.model_id == model.id and (type_ is None or e.type == type_)
        ]
        kept, cursor = cut_page(
            _page(rows, page, lambda e: e.id, descending=True), page, lambda e: e.id
        )
        return PageOf([EventRecord.from_row(model.name, e) for e in kept], cursor)

    # ---- blobs
    def lock_blob(self, sha256: str) -> None:
        pass  # one thread: nothing to serialize

    def add_pending_uploads(self, digests: Sequence[str], *, at: datetime) -> list[int]:
        rows = [PendingRow(self.tables.next_id(), sha256, at) for sha256 in digests]
        self.tables.pending.extend(rows)
        return [row.id for row in rows]

    def delete_pending_uploads(self, ids: Sequence[int]) -> None:
        self.tables.pending = [p for p in self.tables.pending if p.id not in ids]

    def delete_pending_uploads_before(self, before: datetime) -> int:
        kept = [p for p in self.tables.pending if p.started_at >= before]
        removed, self.tables.pending = len(self.tables.pending) - len(kept), kept
        return removed

    def blob_in_use(self, sha256: str, *, pending_since: datetime) -> bool:
        return any(sha256 in (v.sha256, v.accel_sha256) for v in self.tables.versions) or any(
            p.sha256 == sha256 and p.started_at > pending_since for p in self.tables.pending
        )


class FakeUnitOfWork(UnitOfWork):
    def __init__(self, owner: FakeUnitOfWorkFactory, listeners: Iterable[ChangeListener]) -> None:
        super().__init__(listeners)
        self._owner = owner

    def _begin(self) -> None:
        self.repo = FakeRepository(copy.deepcopy(self._owner.tables))

    def _commit(self) -> None:
        if self._owner.fail_commits:
            raise RuntimeError("the commit failed (simulated)")
        self._owner.tables = copy.deepcopy(self.repo.tables)
        self._owner.commits += 1

    def _rollback(self) -> None:
        self.repo.tables = copy.deepcopy(self._owner.tables)

    def _end(self, exc: BaseException | None) -> None:
        self._rollback()


class FakeUnitOfWorkFactory:
    """Implements registry.unit_of_work.UnitOfWorkProvider; keeps the committed tables."""

    def __init__(self) -> None:
        self.tables = Tables()
        self.listeners: list[ChangeListener] = []
        self.commits = 0
        self.fail_commits = False
        self.delivered: list[RegistryChange] = []
        self.listeners.append(self.delivered.append)

    def subscribe(self, listener: ChangeListener) -> None:
        self.listeners.append(listener)

    def __call__(self, *, write: bool = False) -> FakeUnitOfWork:
        return FakeUnitOfWork(self, self.listeners)
