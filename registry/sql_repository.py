"""The registry's queries on SQL (SQLAlchemy), behind the `Repository` interface. No commits."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, exists, func, or_, select, text, update
from sqlalchemy.orm import Session

from registry.db import utcnow
from registry.errors import NotFound
from registry.models import (
    Alias,
    Event,
    ModelVersion,
    PendingUpload,
    Promotion,
    RegisteredModel,
)
from registry.names import Reference
from registry.pagination import Page, paginate
from registry.records import AliasRecord, EventRecord, ModelRecord, PageOf, VersionRecord
from registry.tag_filters import tag_condition
from registry.webhooks.outbox import enqueue_audit_event

TagFilter = Sequence[tuple[str, str | None]]


class SqlRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # ---- models --------------------------------------------------------------------------

    def find_model(
        self, name: str, *, lock: bool = False, include_deleted: bool = False
    ) -> RegisteredModel | None:
        """The model called `name` (live only, unless `include_deleted`); `lock` serializes
        writers on its row."""
        query = select(RegisteredModel).where(RegisteredModel.name == name)
        if not include_deleted:
            query = query.where(RegisteredModel.deleted_at.is_(None))
        if lock:
            query = query.with_for_update()
        return self.session.scalars(query).one_or_none()

    def get_model(self, name: str, *, lock: bool = False) -> RegisteredModel:
        model = self.find_model(name, lock=lock)
        if model is None:
            raise NotFound(f"model '{name}' not found")
        return model

    def add_model(
        self, name: str, *, description: str, tags: dict[str, str], at: datetime, actor: str
    ) -> RegisteredModel:
        """Insert a model row; flushed, so a concurrent creator fails here (IntegrityError)."""
        row = RegisteredModel(
            name=name,
            last_version=0,
            description=description,
            tags=tags,
            created_at=at,
            updated_at=at,
            created_by=actor,
            deleted_at=None,
        )
        self.session.add(row)
        self.session.flush()
        return row

    def list_models(
        self,
        page: Page,
        *,
        search: str | None = None,
        tags: TagFilter = (),
        only: Collection[str] | None = None,
    ) -> PageOf:
        query = select(RegisteredModel).where(RegisteredModel.deleted_at.is_(None))
        if only is not None:
            query = query.where(RegisteredModel.name.in_(sorted(only)))
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query = query.where(func.lower(RegisteredModel.name).like(f"%{escaped}%", escape="\\"))
        for key, value in tags:
            query = query.where(tag_condition(RegisteredModel.tags, key, value))
        return paginate(self.session, query, RegisteredModel.name, page, self.model_records)

    def model_records(self, rows: list[RegisteredModel]) -> list[ModelRecord]:
        ids = [row.id for row in rows]
        aliases = self.aliases_by_model(ids)
        latest = self.latest_by_model(ids)
        return [ModelRecord.from_row(r, aliases[r.id], latest.get(r.id)) for r in rows]

    def remove_model_contents(self, model: RegisteredModel) -> int:
        """Delete the model's versions, aliases and promotions; returns how many versions."""
        versions = self.session.scalar(
            select(func.count()).select_from(ModelVersion).where(ModelVersion.model_id == model.id)
        )
        self.session.execute(delete(Promotion).where(Promotion.model_id == model.id))
        self.session.execute(delete(Alias).where(Alias.model_id == model.id))
        self.session.execute(delete(ModelVersion).where(ModelVersion.model_id == model.id))
        return versions or 0

    def next_version_number(self, model: RegisteredModel) -> int:
        """Advance the model's counter atomically (and lock its row until commit)."""
        number = self.session.execute(
            update(RegisteredModel)
            .where(RegisteredModel.id == model.id)
            .values(last_version=RegisteredModel.last_version + 1)
            .returning(RegisteredModel.last_version)
        ).scalar_one()
        return number

    # ---- versions ------------------------------------------------------------------------

    def find_version(self, model: RegisteredModel, ref: Reference) -> ModelVersion:
        """Resolve a version number, alias or `latest` to its row, or raise NotFound."""
        query = select(ModelVersion).where(ModelVersion.model_id == model.id)
        if ref.version is not None:
            query = query.where(ModelVersion.version == ref.version)
            missing = f"model '{model.name}' has no version {ref.version}"
        elif ref.latest:
            query = (
                query.where(ModelVersion.status == "ready")
                .order_by(ModelVersion.version.desc())
                .limit(1)
            )
            missing = f"model '{model.name}' has no version that is ready"
        else:
            query = query.join(Alias, Alias.version_id == ModelVersion.id).where(
                Alias.name == ref.alias
            )
            missing = f"model '{model.name}' has no alias '{ref.alias}'"
        row = self.session.scalars(query).first()
        if row is None:
            raise NotFound(missing)
        return row

    def add_version(self, **fields: Any) -> ModelVersion:
        """Insert a version row (flushed: UNIQUE(model_id, version) is checked here)."""
        row = ModelVersion(**fields)
        self.session.add(row)
        self.session.flush()
        return row

    def delete_version(self, row: ModelVersion) -> None:
        self.session.delete(row)

    def list_versions(
        self,
        model: RegisteredModel,
        page: Page,
        *,
        status: str | None = None,
        tags: TagFilter = (),
    ) -> PageOf:
        """Newest first."""
        query = select(ModelVersion).where(ModelVersion.model_id == model.id)
        if status is not None:
            query = query.where(ModelVersion.status == status)
        for key, value in tags:
            query = query.where(tag_condition(ModelVersion.tags, key, value))

        def to_records(rows: list[ModelVersion]) -> list[VersionRecord]:
            by_version: dict[int, list[str]] = {}
            for alias, version in self.aliases_by_model([model.id])[model.id].items():
                by_version.setdefault(version, []).append(alias)
            return [
                VersionRecord.from_row(model.name, r, tuple(by_version.get(r.version, ())))
                for r in rows
            ]

        return paginate(
            self.session, query, ModelVersion.version, page, to_records, descending=True
        )

    def aliases_by_model(self, model_ids: list[int]) -> dict[int, dict[str, int]]:
        rows = self.session.execute(
            select(Alias.model_id, Alias.name, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == Alias.version_id)
            .where(Alias.model_id.in_(model_ids))
            .order_by(Alias.name)
        )
        result: dict[int, dict[str, int]] = {model_id: {} for model_id in model_ids}
        for model_id, alias, version in rows:
            result[model_id][alias] = version
        return result

    def latest_by_model(self, model_ids: list[int]) -> dict[int, int]:
        rows = self.session.execute(
            select(ModelVersion.model_id, func.max(ModelVersion.version))
            .where(ModelVersion.model_id.in_(model_ids), ModelVersion.status == "ready")
            .group_by(ModelVersion.model_id)
        )
        return {model_id: version for model_id, version in rows}

    def aliases_of_version(self, row: ModelVersion) -> tuple[str, ...]:
        names = self.session.scalars(
            select(Alias.name).where(Alias.version_id == row.id).order_by(Alias.name)
        )
        return tuple(names)

    # ---- aliases and promotions ----------------------------------------------------------

    def alias_target(self, model: RegisteredModel, alias: str) -> tuple[Alias | None, int | None]:
        """The alias row and the version number it points at (None, None when absent)."""
        row = self.session.scalars(
            select(Alias).where(Alias.model_id == model.id, Alias.name == alias)
        ).one_or_none()
        if row is None:
            return None, None
        return row, self.session.get(ModelVersion, row.version_id).version

    def point_alias(
        self,
        model: RegisteredModel,
        alias: str,
        target: ModelVersion,
        *,
        actor: str,
        at: datetime,
    ) -> None:
        """Create the alias, or move it, to `target`."""
        row, _ = self.alias_target(model, alias)
        if row is None:
            self.session.add(
                Alias(
                    model_id=model.id,
                    name=alias,
                    version_id=target.id,
                    updated_at=at,
                    updated_by=actor,
                )
            )
        else:
            row.version_id = target.id
            row.updated_at = at
            row.updated_by = actor

    def delete_alias(self, model: RegisteredModel, alias: str) -> None:
        """Remove the alias and its promotion history."""
        self.session.execute(delete(Alias).where(Alias.model_id == model.id, Alias.name == alias))
        self.session.execute(
            delete(Promotion).where(Promotion.model_id == model.id, Promotion.alias == alias)
        )

    def list_aliases(self, model: RegisteredModel, page: Page) -> PageOf:
        query = (
            select(Alias, ModelVersion.version)
            .join(ModelVersion, ModelVersion.id == Alias.version_id)
            .where(Alias.model_id == model.id)
        )
        return paginate(
            self.session,
            query,
            Alias.name,
            page,
            lambda rows: [AliasRecord.from_row(alias, version) for alias, version in rows],
        )

    def add_promotion(
        self,
        model: RegisteredModel,
        alias: str,
        *,
        version: int,
        previous_version: int | None,
        actor: str,
        at: datetime,
    ) -> None:
        self.session.add(
            Promotion(
                model_id=model.id,
                alias=alias,
                version=version,
                previous_version=previous_version,
                promoted_at=at,
                promoted_by=actor,
            )
        )

    def last_promotion(self, model: RegisteredModel, alias: str) -> Promotion | None:
        """The most recent promotion of `alias` not rolled back yet: the top of its stack."""
        return self.session.scalars(
            select(Promotion)
            .where(
                Promotion.model_id == model.id,
                Promotion.alias == alias,
                Promotion.rolled_back_at.is_(None),
            )
            .order_by(Promotion.id.desc())
            .limit(1)
        ).first()

    # ---- audit trail ---------------------------------------------------------------------

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
    ) -> None:
        event = Event(
            model_id=model.id,
            type=type_,
            at=utcnow(),
            actor=actor,
            reason=reason,
            version=version,
            alias=alias,
            before=before,
            after=after,
        )
        self.session.add(event)
        # Its webhook deliveries commit (or roll back) with it: the outbox.
        enqueue_audit_event(self.session, event, model.name)

    def list_events(
        self, model: RegisteredModel, page: Page, *, type_: str | None = None
    ) -> PageOf:
        """Newest first."""
        query = select(Event).where(Event.model_id == model.id)
        if type_ is not None:
            query = query.where(Event.type == type_)
        return paginate(
            self.session,
            query,
            Event.id,
            page,
            lambda rows: [EventRecord.from_row(model.name, row) for row in rows],
            descending=True,
        )

    # ---- blobs ---------------------------------------------------------------------------

    def lock_blob(self, sha256: str) -> None:
        """Serialize registration and garbage collection of one blob.

        PostgreSQL: a transaction-scoped advisory lock keyed by the digest. SQLite: the write
        transaction (BEGIN IMMEDIATE) already excludes every other writer.
        """
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": int(sha256[:15], 16)}
            )

    def add_pending_uploads(self, digests: Sequence[str], *, at: datetime) -> list[int]:
        """Mark blobs as being registered (storage gc keeps them); returns the markers' ids."""
        rows = [PendingUpload(sha256=sha256, started_at=at) for sha256 in digests]
        self.session.add_all(rows)
        self.session.flush()
        return [row.id for row in rows]

    def delete_pending_uploads(self, ids: Sequence[int]) -> None:
        self.session.execute(delete(PendingUpload).where(PendingUpload.id.in_(ids)))

    def delete_pending_uploads_before(self, before: datetime) -> int:
        result = self.session.execute(
            delete(PendingUpload).where(PendingUpload.started_at < before)
        )
        return result.rowcount or 0

    def blob_in_use(self, sha256: str, *, pending_since: datetime) -> bool:
        """Whether a version (or its conversion) references the blob, or a registration
        started after `pending_since` is writing it."""
        return bool(
            self.session.scalar(
                select(
                    or_(
                        exists().where(ModelVersion.sha256 == sha256),
                        exists().where(ModelVersion.accel_sha256 == sha256),
                        exists().where(
                            PendingUpload.sha256 == sha256,
                            PendingUpload.started_at > pending_since,
                        ),
                    )
                )
            )
        )
