"""Tag filters that work for any tag key on every backend.

SQLite's JSON path syntax cannot address keys holding quotes or backslashes (and matches
non-ASCII keys only as stored escapes), so on SQLite the filter walks the map with
json_each; PostgreSQL looks the key up with ->>, which takes the key as a plain string.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement


class _TagEquals(FunctionElement[bool]):
    type = Boolean()
    inherit_cache = True
    name = "tag_equals"


class _TagPresent(FunctionElement[bool]):
    type = Boolean()
    inherit_cache = True
    name = "tag_present"


def tag_condition(column: Any, key: str, value: str | None) -> Any:
    """`key` present (value None) or `key` equal to `value` in the JSON map `column`."""
    if value is None:
        return _TagPresent(column, literal(key))
    return _TagEquals(column, literal(key), literal(value))


def _args(element: FunctionElement[bool], compiler: Any, **kw: Any) -> list[str]:
    return [compiler.process(clause, **kw) for clause in element.clauses.clauses]


@compiles(_TagEquals)
def _equals_default(element: _TagEquals, compiler: Any, **kw: Any) -> str:
    column, key, value = _args(element, compiler, **kw)
    return f"(({column}) ->> ({key})) = ({value})"


@compiles(_TagPresent)
def _present_default(element: _TagPresent, compiler: Any, **kw: Any) -> str:
    column, key = _args(element, compiler, **kw)
    return f"(({column}) ->> ({key})) IS NOT NULL"


@compiles(_TagEquals, "sqlite")
def _equals_sqlite(element: _TagEquals, compiler: Any, **kw: Any) -> str:
    column, key, value = _args(element, compiler, **kw)
    return (
        f"EXISTS (SELECT 1 FROM json_each({column}) AS tag "
        f"WHERE tag.key = {key} AND tag.type = 'text' AND tag.value = {value})"
    )


@compiles(_TagPresent, "sqlite")
def _present_sqlite(element: _TagPresent, compiler: Any, **kw: Any) -> str:
    column, key = _args(element, compiler, **kw)
    return f"EXISTS (SELECT 1 FROM json_each({column}) AS tag WHERE tag.key = {key})"
