"""The audit trail, newest first."""

from __future__ import annotations

from sqlalchemy import select

from registry import repository as repo
from registry.models import Event, RegisteredModel
from registry.pagination import Page, encode_cursor
from registry.records import EventRecord, PageOf
from registry.unit_of_work import UnitOfWorkFactory


def list_events(
    uow: UnitOfWorkFactory, name: str, page: Page, *, type_: str | None = None
) -> PageOf:
    with uow() as work:
        model: RegisteredModel = repo.get_model(work.session, name)
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
