"""Opaque cursors for keyset pagination: stable under concurrent inserts, no OFFSET scans."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from registry.errors import InvalidInput


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
