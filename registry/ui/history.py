"""Alias history from the audit trail: a timeline per alias, and which version an alias
pointed at on a given day (the end of that day, UTC)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from registry.pagination import Page, decode_cursor
from registry.records import EventRecord
from registry.services import events as event_service
from registry.unit_of_work import UnitOfWorkProvider

ALIAS_EVENTS = ("promote", "rollback", "delete_alias")
MAX_EVENTS = 20_000  # a bound on one page view's reading; years of promotions fit


@dataclass(frozen=True, slots=True)
class AliasStep:
    at: datetime
    alias: str
    version: int | None  # None: the alias was deleted
    previous: int | None
    kind: str
    actor: str
    reason: str


def alias_steps(events: Iterable[EventRecord]) -> list[AliasStep]:
    """The alias moves among `events`, oldest first."""
    steps = []
    for event in events:
        if event.type not in ALIAS_EVENTS or event.alias is None:
            continue
        before = (event.before or {}).get("version")
        version = None if event.type == "delete_alias" else event.version
        steps.append(
            AliasStep(event.at, event.alias, version, before, event.type, event.actor, event.reason)
        )
    steps.sort(key=lambda step: step.at)
    return steps


def read_alias_steps(uow: UnitOfWorkProvider, name: str, page_size: int) -> list[AliasStep]:
    """Every alias move of a model, read a page at a time (newest first) up to MAX_EVENTS."""
    found: list[EventRecord] = []
    for kind in ALIAS_EVENTS:
        page = Page(limit=page_size)
        while len(found) < MAX_EVENTS:
            result = event_service.list_events(uow, name, page, type_=kind)
            found.extend(result.items)
            if result.next_cursor is None:
                break
            page = Page(limit=page_size, after=decode_cursor(result.next_cursor, int))
    return alias_steps(found)


def version_on(steps: Iterable[AliasStep], alias: str, day: date) -> int | None:
    """The version `alias` pointed at at the end of `day` (UTC); None if it did not exist."""
    version = None
    for step in steps:
        if step.alias == alias and step.at.date() <= day:
            version = step.version
    return version


def timelines(steps: Iterable[AliasStep]) -> dict[str, list[AliasStep]]:
    """Each alias's moves, newest first (the order a reader scans)."""
    by_alias: dict[str, list[AliasStep]] = {}
    for step in steps:
        by_alias.setdefault(step.alias, []).append(step)
    return {alias: list(reversed(moves)) for alias, moves in sorted(by_alias.items())}
