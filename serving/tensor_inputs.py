"""V2 (Open Inference Protocol) tensors -> what a model's methods take, validated against its
input plan with the checks every protocol shares (serving/inputs.py).

Layouts: one tensor of shape [N, F] (any name), or one tensor per feature named by the model's
feature names, each [N] or [N, 1] (column layout; also forced by the request's
`parameters.content_type == "pd"`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from registry.errors import InvalidInput
from serving.inputs import (
    InputPlan,
    columns_to_matrix,
    feature_count,
    is_numeric,
    row_count_problem,
    rows_to_matrix,
)
from serving.v2_codec import FLOAT_DATATYPES, InferRequest, Tensor

INPUT_NAME = "input"
FIELD = "inputs"
_NOT_NUMERIC = frozenset({"BYTES", "BOOL"})


def _fail(message: str, field: str = FIELD) -> InvalidInput:
    return InvalidInput(message, {field: message})


def _check_finite(X: np.ndarray, tensors: Iterable[Tensor], plan: InputPlan) -> None:
    """Infinity is never an input; NaN (a missing value) only where the signature allows it."""
    if not any(t.datatype in FLOAT_DATATYPES for t in tensors):
        return
    if plan.allow_missing:
        if np.isinf(X).any():
            raise _fail("inputs must be numbers or NaN (missing), not infinity")
    elif not np.isfinite(X).all():
        raise _fail(
            "inputs must be finite numbers (no NaN or infinity): this model does not accept "
            "missing values"
        )


def to_matrix(decoded: InferRequest, plan: InputPlan) -> Any:
    """Decoded tensors -> what the model's methods take (validated against its plan)."""
    if decoded.parameters.get("content_type") == "pd" or len(decoded.inputs) > 1:
        return _from_columns(decoded.inputs, plan)
    return _from_rows(decoded.inputs[0], plan)


def _from_rows(tensor: Tensor, plan: InputPlan) -> Any:
    array = tensor.array
    where = f"input {tensor.name[:64]!r}"
    width = plan.n_features
    if array.ndim == 1 and width in (None, 1):
        array = array.reshape(-1, 1)
    if array.ndim != 2:
        raise _fail(
            f"{where}: expected shape [N, {width or 'F'}] (one row per instance), got "
            f"{list(tensor.shape)}; to send one tensor per feature, name each after a feature"
        )
    rows, columns = array.shape
    reason = row_count_problem(rows, plan, "no rows: send at least one row")
    if reason is not None:
        raise _fail(f"{where}: {reason}")
    if width is not None and columns != width:
        expected = feature_count(width, plan.feature_names)
        raise _fail(f"{where}: expected {expected} per row, got {columns}")
    if columns == 0:
        raise _fail(f"{where}: rows must have at least 1 value")
    if is_numeric(plan) and tensor.datatype not in _NOT_NUMERIC:
        X = np.ascontiguousarray(array, dtype=np.float64)
        _check_finite(X, (tensor,), plan)
        if not X.flags.writeable:  # FP64 binary data is a view of the request body
            X = X.copy()
        if not plan.needs_dataframe:
            return X
        array = X
    # Typed columns or a DataFrame: the shared validation builds it (and names bad values).
    if plan.feature_names is None:
        return rows_to_matrix(array.tolist(), plan, FIELD)
    return columns_to_matrix(
        {name: array[:, j].tolist() for j, name in enumerate(plan.feature_names)}, plan, FIELD
    )


def _from_columns(tensors: list[Tensor], plan: InputPlan) -> Any:
    names = plan.feature_names
    if names is None:
        raise _fail(
            "this model's feature names are unknown, so inputs cannot be matched to features: "
            f"send one input named {INPUT_NAME!r} of shape [N, F]"
        )
    columns: dict[str, np.ndarray] = {}
    for tensor in tensors:
        array = tensor.array
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        elif array.ndim != 1:
            raise _fail(
                f"input {tensor.name[:64]!r}: a per-feature input must have shape [N] or "
                f"[N, 1], got {list(tensor.shape)}"
            )
        columns[tensor.name] = array
    missing = [x for x in names if x not in columns]
    unknown = [x[:64] for x in columns if x not in plan.feature_names]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing input(s) for feature(s) {missing}")
        if unknown:
            parts.append(f"unknown input(s) {unknown}")
        raise _fail(
            "; ".join(parts) + f"; expected one input per feature, named {list(names)}"
            f" (or one input {INPUT_NAME!r} of shape [N, {len(names)}])"
        )
    lengths = {len(array) for array in columns.values()}
    if len(lengths) > 1:
        raise _fail(f"per-feature inputs have different lengths: {sorted(lengths)}")
    rows = lengths.pop()
    reason = row_count_problem(rows, plan, "no rows: the inputs are empty")
    if reason is not None:
        raise _fail(reason)
    if (
        is_numeric(plan)
        and not plan.needs_dataframe
        and not any(t.datatype in _NOT_NUMERIC for t in tensors)
    ):
        X = np.empty((rows, len(names)), dtype=np.float64)
        for j, name in enumerate(names):
            X[:, j] = columns[name]
        _check_finite(X, tensors, plan)
        return X
    return columns_to_matrix({x: columns[x].tolist() for x in names}, plan, FIELD)
