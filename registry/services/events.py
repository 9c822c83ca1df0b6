"""The audit trail, newest first."""

from __future__ import annotations

from sqlalchemy import select

from registry.errors import NotFound
from registry.models import Event, RegisteredModel
from registry.pagination import Page, encode_cursor
from registry.records import EventRecord, PageOf
from registry.unit_of_work import UnitOfWorkFactory


def list_events(
    uow: UnitOfWorkFactory, name: str, page: Page, *, type_: str | None = None
) -> PageOf:
    with uow() as work:
        # A deleted model's trail stays readable: the row is kept (soft delete) for this too.
        model = work.session.scalars(
            select(RegisteredModel).where(RegisteredModel.name == name)
        ).one_or_none()
        if model is None:
            raise NotFound(f"model '{name}' not found")
        query = select(Event).where(Event.model_id == model.id)
        if type_ is not None:
            query = query.where(Event.type == type_)
        if page.after is not None:
            query = query.where(Event.id < page.after)
        rows = list(work.session.scalars(query.order_by(Event.id.desc()).limit(page.limit + 1)))
        more = len(rows) > page.limit
        rows = rows[: page.limit]
        items = [EventRecord.from_row(name, row) for row in rows]
        cursor = encode_cursor(rows[-1].id) if more else None  # before the rows expire
    return PageOf(items, cursor)
