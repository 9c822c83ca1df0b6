"""Model signatures: what a version expects as input and can return.

A signature is a JSON object with any of these keys:
`n_features` (int), `feature_names` (list of str), `inputs` (list of {"name", "type"}),
`classes` (list), `methods` (list of "predict" / "predict_proba"), `allow_missing` (bool),
`objective` (str: an XGBoost or LightGBM model's training objective).
What the publisher declares is merged with what the artifact reveals; a contradiction is
refused at registration rather than discovered at predict time.

`allow_missing` is the one rule for missing values (null in JSON, NaN in tensors) in numeric
and string columns: refused everywhere (registration's input example, the promotion gate,
every predict protocol) unless it is true. It is inferred where scikit-learn tells
(serving/missing.py) and the publisher's declaration wins either way: inference only ever
answers "yes", and a publisher may know better (or want missing values refused).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from registry.errors import InvalidInput

SIGNATURE_KEYS = ("n_features", "feature_names", "inputs", "classes", "methods", "objective")
COLUMN_TYPES = frozenset({"double", "long", "boolean", "string"})
MAX_EXAMPLE_ROWS = 100
MISSING_REFUSED = (
    "missing value (null): this model does not accept missing values; "
    "declare signature.allow_missing=true if it does"
)


def merge_signature(
    declared: Mapping[str, Any] | None, inferred: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    declared = dict(declared or {})
    inferred = dict(inferred or {})
    merged: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for key in SIGNATURE_KEYS:
        mine, theirs = declared.get(key), inferred.get(key)
        if mine is not None and theirs is not None and mine != theirs:
            errors[f"signature.{key}"] = f"declared {mine!r} but the artifact has {theirs!r}"
        value = theirs if theirs is not None else mine
        if value is not None:
            merged[key] = value
    allow_missing = declared.get("allow_missing", inferred.get("allow_missing"))
    if allow_missing is not None:
        merged["allow_missing"] = bool(allow_missing)
    if errors:
        raise InvalidInput("the declared signature contradicts the artifact", errors)
    names = merged.get("feature_names")
    inputs = merged.get("inputs")
    if names is None and inputs and all(col.get("name") for col in inputs):
        merged["feature_names"] = names = [col["name"] for col in inputs]
    width = merged.get("n_features")
    for key, count in (("feature_names", names), ("inputs", inputs)):
        if count is not None and width is not None and len(count) != width:
            errors[f"signature.{key}"] = f"has {len(count)} entries but n_features is {width}"
    if width is None and names is not None:
        merged["n_features"] = len(names)
    if errors:
        raise InvalidInput("the signature is inconsistent", errors)
    return merged or None


def infer_column_types(example: list[Any], signature: Mapping[str, Any]) -> list[dict] | None:
    """Column types from the input example when the signature has none (e.g. string columns)."""
    if signature.get("inputs") or not example:
        return None
    names = signature.get("feature_names")
    if isinstance(example[0], dict):
        if not names or not all(isinstance(row, dict) for row in example):
            return None
        rows = [[row.get(name) for name in names] for row in example]
    else:
        rows = [list(row) for row in example]
    if len({len(row) for row in rows}) != 1:
        return None
    # Each column's first value that is not missing (a null says nothing of the type).
    columns_of = zip(*rows, strict=True)
    values = [next((v for v in column if v is not None), None) for column in columns_of]
    columns = []
    for index, value in enumerate(values):
        if isinstance(value, bool):
            kind = "boolean"
        elif isinstance(value, int):
            kind = "long"
        elif isinstance(value, float):
            kind = "double"
        elif isinstance(value, str):
            kind = "string"
        else:
            return None
        columns.append({"name": names[index] if names else None, "type": kind})
    if all(col["type"] in ("double", "long") for col in columns):
        return None  # purely numeric: the fast float64 path needs no per-column types
    return columns


def check_input_example(example: list[Any] | None, signature: Mapping[str, Any] | None) -> None:
    """The example must be a small list of rows shaped like the signature says."""
    if example is None:
        return
    field = "metadata.input_example"
    if not isinstance(example, list) or not example:
        raise InvalidInput("invalid input example", {field: "must be a non-empty list of rows"})
    if len(example) > MAX_EXAMPLE_ROWS:
        raise InvalidInput(
            "invalid input example", {field: f"at most {MAX_EXAMPLE_ROWS} rows are kept"}
        )
    signature = signature or {}
    width = signature.get("n_features")
    names = signature.get("feature_names")
    for index, row in enumerate(example):
        where = f"{field}[{index}]"
        if isinstance(row, dict):
            if not names:
                raise InvalidInput(
                    "invalid input example",
                    {where: "rows as objects need feature names in the signature"},
                )
            missing = [n for n in names if n not in row]
            extra = [k for k in row if k not in set(names)]
            if missing or extra:
                raise InvalidInput(
                    "invalid input example", {where: f"missing {missing}, unknown {extra}"}
                )
        elif isinstance(row, list):
            if width is not None and len(row) != width:
                raise InvalidInput(
                    "invalid input example",
                    {where: f"expected {width} features{_named(names)}, got {len(row)}"},
                )
        else:
            raise InvalidInput("invalid input example", {where: "must be a list or an object"})
        cells = list(row.values() if isinstance(row, dict) else row)
        if not all(cell is None or isinstance(cell, str | int | float) for cell in cells):
            raise InvalidInput(
                "invalid input example",
                {where: "values must be numbers, strings, booleans or null"},
            )
        if not allows_missing(signature) and any(
            cell is None or (isinstance(cell, float) and math.isnan(cell)) for cell in cells
        ):
            raise InvalidInput(
                "invalid input example: it holds a missing value the model does not accept",
                {where: MISSING_REFUSED},
            )


def allows_missing(signature: Mapping[str, Any] | None) -> bool:
    """The one rule: missing values are accepted only where the signature says so."""
    return bool(signature and signature.get("allow_missing"))


def _named(names: list[str] | None) -> str:
    if not names:
        return ""
    shown = ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")
    return f" ({shown})"
