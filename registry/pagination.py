"""Opaque cursors for keyset pagination: stable under concurrent inserts, no OFFSET scans."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from registry.errors import InvalidInput
from registry.records import PageOf

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    after: Any = None  # the sort key of the last item of the previous page


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"k": key})).decode().rstrip("=")


def decode_cursor(cursor: str, expected: type) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = orjson.loads(base64.urlsafe_b64decode(padded.encode("ascii")))["k"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeEncodeError):
        raise InvalidInput("invalid cursor", {"cursor": "not a cursor from this API"}) from None
    if not isinstance(key, expected) or isinstance(key, bool):
        raise InvalidInput("invalid cursor", {"cursor": "not a cursor from this API"})
    return key


def make_page(
    limit: int | None, cursor: str | None, *, default: int, maximum: int, key_type: type
) -> Page:
    if limit is None:
        limit = default
    if not 1 <= limit <= maximum:
        raise InvalidInput("invalid limit", {"limit": f"must be between 1 and {maximum}"})
    return Page(limit=limit, after=decode_cursor(cursor, key_type) if cursor else None)


def cut_page(
    rows: Sequence[Row], page: Page, key_of: Callable[[Row], Any]
) -> tuple[list[Row], str | None]:
    """The page's rows and the cursor to the next page, from rows in sort order after the
    cursor: up to `limit + 1` of them, the extra one only telling that there is more."""
    if len(rows) <= page.limit:
        return list(rows), None
    kept = list(rows[: page.limit])
    return kept, encode_cursor(key_of(kept[-1]))


def paginate(
    session: Session,
    query: Select[Any],
    key: InstrumentedAttribute[Any],
    page: Page,
    to_records: Callable[[list[Any]], list[Any]],
    *,
    descending: bool = False,
) -> PageOf:
    """One keyset page of `query` ordered by the unique column `key`.

    Rows are what the query selects (an entity, or a tuple for several columns). They are
    mapped to records in one call, so a mapper can fetch what the page's rows share (their
    aliases, say) in one query; and inside the session, before leaving it expires them.
    """
    width = len(query.column_descriptions)  # entities and columns selected, not table columns
    if page.after is not None:
        query = query.where(key < page.after if descending else key > page.after)
    query = query.add_columns(key)  # the cursor key, last in each row
    query = query.order_by(key.desc() if descending else key).limit(page.limit + 1)
    found = session.execute(query).all()
    kept, cursor = cut_page(found, page, lambda row: row[width])
    rows = [row[0] if width == 1 else tuple(row[:width]) for row in kept]
    return PageOf(to_records(rows), cursor)
