"""Refuse a predict body that holds far more than the row limit allows, before parsing it.

orjson builds a Python object for every JSON value, and only then can the row limit be
checked: 8 million one-value rows (`{"inputs": [[1],[2],...]}`, 63 MiB, under the body size
limit) became 8 million lists, ~1.5 GiB, before being refused. So the body's bytes are counted
first. Every list or object begins with `[` or `{`, and every value after the first in a list
or object follows a `,`; a request within the limits holds at most so many of each (the
`Budget`). Counted over the raw bytes (numpy, a few GB/s, in 1 MiB pieces so the count takes
no memory), these are upper bounds: a string may hold the same characters. Only a body whose
raw counts exceed the budget is counted again exactly, skipping strings, and that pass stops
as soon as the budget is exceeded. What orjson then builds is bounded by the rows a request
may carry, not by the bytes it may send.

A body of `size` bytes holds at most size / 2 of either (`[]`, `1,`), so a body smaller than
twice its budget is never counted at all: small requests pay one comparison.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from registry.errors import InvalidInput

__all__ = ["Budget", "enforce", "row_budget", "tensor_budget"]

_PIECE = 1 << 20
_OPEN_LIST, _OPEN_OBJECT, _COMMA = ord("["), ord("{"), ord(",")
# A JSON string (an unterminated one runs to the end, so that no match ever backtracks into
# a rescan), or a character to count. Strings come first: their content is skipped whole.
_STRING = rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)'
_CONTAINERS = re.compile(_STRING + rb"|([\[{])", re.S)
_CONTAINERS_AND_COMMAS = re.compile(_STRING + rb"|([\[{])|(,)", re.S)


@dataclass(frozen=True, slots=True)
class Budget:
    """The most lists/objects and commas a request within `max_rows` can hold.

    `commas` None: no bound (the width is unknown, so any number of values per row is valid).
    """

    max_rows: int
    containers: int
    commas: int | None
    what: str  # names the bound in messages, e.g. "rows of 8 features"
    scan_above: int = field(init=False)  # bodies up to this size cannot exceed the budget

    def __post_init__(self) -> None:
        smallest = self.containers if self.commas is None else min(self.containers, self.commas)
        object.__setattr__(self, "scan_above", 2 * smallest)


def enforce(body: bytes | memoryview, budget: Budget) -> None:
    """Raise InvalidInput when `body` holds more lists/objects or values than `budget`."""
    size = len(body)
    if size <= budget.scan_above:
        return
    # A body can only exceed a bound it is more than twice as large as: count just those.
    max_containers = budget.containers
    max_commas = -1 if budget.commas is None else budget.commas
    containers = size > 2 * max_containers
    commas = max_commas >= 0 and size > 2 * max_commas
    n_containers, n_commas = _count_raw(body, containers, commas)
    if not ((containers and n_containers > max_containers) or (commas and n_commas > max_commas)):
        return
    exceeded = _exceeded_exactly(body, budget)
    if exceeded == "containers":
        reason = (
            f"too many rows: the body holds more than {budget.containers} lists or objects; "
            f"the limit is {budget.max_rows} rows per request"
        )
    elif exceeded == "commas":
        reason = (
            f"too many values: the body holds more than {budget.commas} values; "
            f"the limit is {budget.max_rows} {budget.what} per request"
        )
    else:
        return
    raise InvalidInput(reason, {"body": reason})


def _count_raw(body: bytes | memoryview, containers: bool, commas: bool) -> tuple[int, int]:
    """`[` plus `{`, and `,`, anywhere in the body (each only when asked)."""
    data = np.frombuffer(body, dtype=np.uint8)
    hits = np.empty(min(len(data), _PIECE), dtype=bool)
    n_containers = n_commas = 0
    for start in range(0, len(data), _PIECE):
        piece = data[start : start + _PIECE]
        out = hits[: len(piece)]
        if containers:
            n_containers += int(np.count_nonzero(np.equal(piece, _OPEN_LIST, out=out)))
            n_containers += int(np.count_nonzero(np.equal(piece, _OPEN_OBJECT, out=out)))
        if commas:
            n_commas += int(np.count_nonzero(np.equal(piece, _COMMA, out=out)))
    return n_containers, n_commas


def _exceeded_exactly(body: bytes | memoryview, budget: Budget) -> str | None:
    """Which bound the body exceeds outside its strings, if any; stops at the first."""
    max_containers, max_commas = budget.containers, budget.commas
    n_containers = n_commas = 0
    if max_commas is None:
        for match in _CONTAINERS.finditer(body):
            if match.lastindex:
                n_containers += 1
                if n_containers > max_containers:
                    return "containers"
        return None
    for match in _CONTAINERS_AND_COMMAS.finditer(body):
        kind = match.lastindex
        if kind == 1:
            n_containers += 1
            if n_containers > max_containers:
                return "containers"
        elif kind == 2:
            n_commas += 1
            if n_commas > max_commas:
                return "commas"
    return None


def row_budget(max_rows: int, n_features: int | None) -> Budget:
    """What a native predict body (`serving.inputs`) within `max_rows` can hold.

    Lists and objects: the envelope, one per row (a list or a record), one per column, and
    a `dataframe_split` index that pandas writes as one list per row (a MultiIndex). Commas:
    between the values of a row and between rows, the index, the column names. Without a
    known width, any number of values per row is valid, so only lists and objects count.
    """
    width = n_features or 0
    containers = 2 * max_rows + width + 8
    if n_features is None:
        return Budget(max_rows, containers, None, "rows")
    commas = (max_rows + 2) * (width + 3) + width + 8
    return Budget(max_rows, containers, commas, _rows_of(width))


def tensor_budget(max_rows: int, n_features: int | None) -> Budget:
    """What an Open Inference Protocol request's JSON within `max_rows` can hold.

    One tensor of [N, F] (flat data, or nested with a list per row), or one tensor per
    feature of [N] or [N, 1] (nested: a list per value), each with its shape, parameters and
    a few more members, plus the requested outputs and the request's parameters.
    """
    width = max(n_features or 1, 1)
    containers = (max_rows + 4) * width + 32
    if n_features is None:
        return Budget(max_rows, containers, None, "rows")
    commas = (max_rows + 8) * width + 64
    return Budget(max_rows, containers, commas, _rows_of(width))


def _rows_of(width: int) -> str:
    return f"rows of {width} feature{'s' if width != 1 else ''}"
