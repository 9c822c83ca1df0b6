"""Reference data as sent: CSV with a header row, or JSON rows, parsed into named columns.

Numbers stay numbers (CSV cells that parse as floats become floats); empty cells, `null`
and NaN are missing. Errors name the part and the reason, and nothing is stored for them.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

import orjson

from registry.errors import InvalidInput, MalformedRequest

FIELD = "reference"
MAX_COLUMNS = 500


@dataclass(frozen=True, slots=True)
class ReferenceTable:
    """Columns in the order sent; each a list of values (float, str, bool or None)."""

    columns: tuple[str, ...]
    values: dict[str, list[Any]]

    @property
    def n_rows(self) -> int:
        return len(self.values[self.columns[0]]) if self.columns else 0


def parse_reference(raw: bytes, *, filename: str = "", content_type: str = "") -> ReferenceTable:
    """CSV when the part says so (name or type), else JSON rows; a JSON parse failure on a
    part that looks like CSV is read as CSV."""
    text_start = raw.lstrip()[:1]
    is_json = text_start in (b"[", b"{") and not filename.lower().endswith(".csv")
    if "csv" in content_type or filename.lower().endswith(".csv") or not is_json:
        table = _from_csv(raw)
    else:
        table = _from_json(raw)
    if not table.columns:
        raise InvalidInput("the reference has no columns", {FIELD: "no columns"})
    if len(table.columns) > MAX_COLUMNS:
        raise InvalidInput(
            "the reference has too many columns", {FIELD: f"over {MAX_COLUMNS} columns"}
        )
    if table.n_rows == 0:
        raise InvalidInput("the reference has no rows", {FIELD: "no rows"})
    return table


def _from_csv(raw: bytes) -> ReferenceTable:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MalformedRequest("the reference is not UTF-8", {FIELD: "not UTF-8 text"}) from None
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise InvalidInput("the reference is empty", {FIELD: "empty"}) from None
    except csv.Error as error:
        raise MalformedRequest("the reference CSV cannot be parsed", {FIELD: str(error)}) from None
    columns = tuple(name.strip() for name in header)
    _check_names(columns)
    values: dict[str, list[Any]] = {name: [] for name in columns}
    lists = [values[name] for name in columns]
    try:
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(columns):
                raise InvalidInput(
                    "a reference row has the wrong number of cells",
                    {f"{FIELD}.line {line}": f"{len(row)} cells for {len(columns)} columns"},
                )
            for target, cell in zip(lists, row, strict=True):
                target.append(_cell(cell))
    except csv.Error as error:
        raise MalformedRequest("the reference CSV cannot be parsed", {FIELD: str(error)}) from None
    return ReferenceTable(columns, values)


def _cell(cell: str) -> Any:
    cell = cell.strip()
    if cell == "" or cell.lower() in ("na", "nan", "null", "none"):
        return None
    try:
        number = float(cell)
    except ValueError:
        return cell
    return number if math.isfinite(number) else None


def _from_json(raw: bytes) -> ReferenceTable:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest("the reference is not valid JSON", {FIELD: str(error)}) from None
    if isinstance(doc, dict) and "columns" in doc and "data" in doc:  # split orientation
        columns = doc["columns"]
        rows = doc["data"]
        if not isinstance(columns, list) or not isinstance(rows, list):
            raise InvalidInput(
                "reference 'columns' and 'data' must be lists", {FIELD: "expected lists"}
            )
        return _from_lists(tuple(str(c) for c in columns), rows)
    if not isinstance(doc, list) or not doc:
        raise InvalidInput(
            "the reference must be a non-empty list of rows",
            {FIELD: "expected a list of objects or {'columns', 'data'}"},
        )
    if all(isinstance(row, dict) for row in doc):
        columns: list[str] = []
        seen: set[str] = set()
        for row in doc:
            for key in row:
                if key not in seen:
                    seen.add(key)
                    columns.append(key)
        names = tuple(columns)
        _check_names(names)
        values = {name: [_json_value(row.get(name)) for row in doc] for name in names}
        return ReferenceTable(names, values)
    raise InvalidInput(
        "reference rows must be objects keyed by column name",
        {FIELD: "use a list of objects, {'columns', 'data'} or CSV with a header"},
    )


def _from_lists(columns: tuple[str, ...], rows: list[Any]) -> ReferenceTable:
    _check_names(columns)
    values: dict[str, list[Any]] = {name: [] for name in columns}
    lists = [values[name] for name in columns]
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise InvalidInput(
                "a reference row has the wrong shape",
                {f"{FIELD}.data[{i}]": f"expected a list of {len(columns)} values"},
            )
        for target, value in zip(lists, row, strict=True):
            target.append(_json_value(value))
    return ReferenceTable(columns, values)


def _json_value(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    return str(value)


def _check_names(columns: tuple[str, ...]) -> None:
    if any(not name for name in columns):
        raise InvalidInput("a reference column has no name", {FIELD: "empty column name"})
    if len(set(columns)) != len(columns):
        raise InvalidInput("reference column names repeat", {FIELD: "duplicate column names"})
