"""The audit trail, newest first."""

from __future__ import annotations

from registry.errors import NotFound
from registry.pagination import Page
from registry.records import PageOf
from registry.unit_of_work import UnitOfWorkProvider


def list_events(
    uow: UnitOfWorkProvider, name: str, page: Page, *, type_: str | None = None
) -> PageOf:
    with uow() as work:
        # A deleted model's trail stays readable: the row is kept (soft delete) for this too.
        model = work.repo.find_model(name, include_deleted=True)
        if model is None:
            raise NotFound(f"model '{name}' not found")
        return work.repo.list_events(model, page, type_=type_)
