"""Turn the body of `POST /models/<name>/<ref>/predict` into what a model's predict() takes.

This runs for every prediction request, so the work is split in two:

* `build_input_plan` runs once when a model is loaded and resolves everything the signature
  tells us (width, names, per-column types, lookup tables, the DataFrame column index).
* A large body of rows of numbers is decoded by `serving.numeric_body` straight into a float64
  matrix, when it can prove the body well-formed.
* A body far over the row limit is refused before it is parsed (`serving.body_budget`), so
  that the Python objects of a request stay within what the limit allows.
* Otherwise the fast path is: `orjson.loads`, C-level type scans (`set(map(type, ...))`) and
  one `np.asarray(rows, dtype=np.float64)`. The type scan is needed because `np.asarray` with
  a float dtype silently accepts `"1.5"`, `true` and `null` (as NaN).

Whenever the fast path declines (wrong type, ragged rows, wrong width...), a slow path walks the
rows in Python. It is the source of truth: it either names the exact rows/fields that are wrong
(at most `MAX_REPORTED_ERRORS` of them) or, if everything is acceptable after all (e.g. numpy
scalars handed in by another protocol), builds the matrix itself.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:
    import pandas as pd

from registry.errors import InvalidInput, MalformedRequest
from serving.body_budget import Budget, enforce, row_budget, tensor_budget
from serving.numeric_body import parse_instances

__all__ = [
    "MAX_REPORTED_ERRORS",
    "PAYLOAD_KEYS",
    "DecodedRequest",
    "InputPlan",
    "build_input_plan",
    "columns_to_matrix",
    "decode_predict_body",
    "decode_predict_document",
    "parse_predict_json",
    "rows_to_matrix",
]

MAX_REPORTED_ERRORS = 10  # a huge bad request must not produce a huge response
PAYLOAD_KEYS = ("instances", "inputs", "dataframe_split", "dataframe_records")
_TOP_LEVEL_KEYS = frozenset((*PAYLOAD_KEYS, "method"))
_ACCEPTED = (
    "exactly one of 'instances', 'inputs', 'dataframe_split', 'dataframe_records', "
    "plus an optional 'method'"
)
_SPLIT_KEYS = ("columns", "data", "index")

_TYPE_ALIASES = {
    "double": "double", "float": "double", "float64": "double", "float32": "double",
    "long": "long", "integer": "long", "int": "long", "int64": "long", "int32": "long",
    "boolean": "boolean", "bool": "boolean",
    "string": "string", "str": "string",
}  # fmt: skip
_NUMERIC_TYPES = frozenset({"double", "long"})
# Exact types orjson yields for JSON numbers. bool is a subclass of int, so exact-type checks
# are what keep `true` out of numeric columns.
_NUMBER_KINDS = frozenset({int, float})
_LIST_KIND = frozenset({list})
_DICT_KIND = frozenset({dict})
_BOOL_KIND = frozenset({bool})
_STR_KIND = frozenset({str})
_INT64_LIMIT = 2.0**63
_NONFINITE_WORDS = frozenset({"nan", "inf", "infinity"})
_Real = (int, float, np.integer, np.floating)


@dataclass(frozen=True, slots=True)
class InputPlan:
    """What a loaded model accepts, resolved once so that requests do only unavoidable work."""

    n_features: int | None  # None = unknown: any consistent width >= 1
    feature_names: tuple[str, ...] | None  # model column order, when known
    column_types: tuple[str, ...] | None  # "double" | "long" | "boolean" | "string"; None = numeric
    needs_dataframe: bool  # fitted on a DataFrame: hand it one, columns in feature_names order
    max_rows: int
    methods: frozenset[str]
    # Derived in __post_init__; not constructor arguments and not part of equality.
    _numeric: bool = dc_field(init=False, repr=False, compare=False)
    _types: tuple[str, ...] | None = dc_field(init=False, repr=False, compare=False)
    _labels: tuple[str, ...] | None = dc_field(init=False, repr=False, compare=False)
    _index: dict[str, int] | None = dc_field(init=False, repr=False, compare=False)
    _getter: Any = dc_field(init=False, repr=False, compare=False)
    _columns: pd.Index | None = dc_field(init=False, repr=False, compare=False)
    _long_cols: tuple[int, ...] = dc_field(init=False, repr=False, compare=False)
    _methods_text: str = dc_field(init=False, repr=False, compare=False)
    # The most a body within max_rows can hold, natively and as V2 tensors (serving.v2_codec):
    # bodies beyond it are refused before they are parsed (serving.body_budget).
    body_budget: Budget = dc_field(init=False, repr=False, compare=False)
    tensor_budget: Budget = dc_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n, names, types = self.n_features, self.feature_names, self.column_types
        if n is not None and (type(n) is not int or n < 1):
            raise ValueError(f"n_features must be a positive integer or None, got {n!r}")
        if names is not None:
            if n is None or len(names) != n:
                raise ValueError(f"{len(names)} feature_names for n_features={n}")
            if not all(type(x) is str for x in names) or len(set(names)) != n:
                raise ValueError("feature_names must be unique strings")
        if types is not None:
            if n is None or len(types) != n:
                raise ValueError(f"{len(types)} column_types for n_features={n}")
            bad = [t for t in types if t not in ("double", "long", "boolean", "string")]
            if bad:
                raise ValueError(f"unsupported column type(s): {bad}")
        if type(self.max_rows) is not int or self.max_rows < 1:
            raise ValueError(f"max_rows must be a positive integer, got {self.max_rows!r}")

        put = object.__setattr__  # frozen dataclass: the documented way to set derived fields
        put(self, "methods", frozenset(self.methods))
        put(self, "_numeric", types is None or all(t in _NUMERIC_TYPES for t in types))
        put(self, "_types", types if types is not None else (("double",) * n if n else None))
        put(self, "_long_cols", tuple(j for j, t in enumerate(types or ()) if t == "long"))
        put(self, "_methods_text", ", ".join(sorted(self.methods)))
        put(self, "body_budget", row_budget(self.max_rows, n))
        put(self, "tensor_budget", tensor_budget(self.max_rows, n))
        if names is not None:
            put(self, "_labels", tuple(f".{x}" for x in names))
            put(self, "_index", {x: j for j, x in enumerate(names)})
            put(self, "_getter", itemgetter(*names))
        else:
            put(self, "_labels", tuple(f"[{j}]" for j in range(n)) if n else None)
            put(self, "_index", None)
            put(self, "_getter", None)
        # The DataFrame column index, only for models that get DataFrames: a worker serving
        # numeric arrays (every ONNX-accelerated model) never imports pandas (~40 MB).
        columns = None
        if self.needs_dataframe or not self._numeric:
            import pandas as pd

            columns = pd.Index(list(names)) if names is not None else None
            columns = pd.RangeIndex(n) if columns is None and n else columns
        put(self, "_columns", columns)


@dataclass(frozen=True, slots=True)
class DecodedRequest:
    """A validated prediction request, ready for `getattr(model, method)(X)`."""

    X: np.ndarray | pd.DataFrame  # 2-D C-contiguous float64, unless a DataFrame is needed
    n_rows: int
    method: str  # "predict" (default) or another name in plan.methods


def build_input_plan(
    signature: Mapping[str, Any] | None,
    *,
    max_rows: int,
    methods: Iterable[str],
    needs_dataframe: bool = False,
) -> InputPlan:
    """Resolve a stored signature into an `InputPlan`, at model load time.

    Raises ValueError if the signature contradicts itself: a broken model version is better
    refused at load than turned into confusing errors on every request.
    """
    sig: Mapping[str, Any] = {} if signature is None else signature
    if not isinstance(sig, Mapping):
        raise ValueError(f"signature must be a mapping, got {type(sig).__name__}")
    n = sig.get("n_features")
    if n is not None and (type(n) is not int or n < 1):
        raise ValueError(f"signature n_features must be a positive integer, got {n!r}")
    names = _names_tuple(sig.get("feature_names"), "feature_names")
    types: tuple[str, ...] | None = None
    inputs = sig.get("inputs")
    if inputs is not None:
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise ValueError("signature 'inputs' must be a non-empty list")
        in_names: list[Any] = []
        in_types: list[str] = []
        for i, spec in enumerate(inputs):
            if not isinstance(spec, Mapping):
                raise ValueError(f"signature inputs[{i}] must be an object")
            raw = spec.get("type") or "double"
            t = _TYPE_ALIASES.get(raw.lower()) if isinstance(raw, str) else None
            if t is None:
                raise ValueError(f"signature inputs[{i}]: unsupported type {raw!r}")
            in_names.append(spec.get("name"))
            in_types.append(t)
        expected = n if n is not None else (len(names) if names is not None else len(in_types))
        if len(in_types) != expected:
            raise ValueError(f"signature lists {len(in_types)} inputs for {expected} features")
        if names is None:
            if all(isinstance(x, str) for x in in_names):
                names = _names_tuple(in_names, "inputs")
        elif len(in_names) == len(names) and set(in_names) == set(names):
            # Same columns listed in another order: take each column's type by name.
            by_name = dict(zip(in_names, in_types, strict=True))
            in_types = [by_name[x] for x in names]
        types = tuple(in_types)
    if n is None:
        n = len(names) if names is not None else (len(types) if types is not None else None)
    if types is not None and all(t == "double" for t in types):
        types = None  # the common case: the plain float64 path
    return InputPlan(
        n_features=n,
        feature_names=names,
        column_types=types,
        needs_dataframe=bool(needs_dataframe),
        max_rows=max_rows,
        methods=frozenset(methods),
    )


def _names_tuple(names: Any, where: str) -> tuple[str, ...] | None:
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or not all(isinstance(x, str) for x in names):
        raise ValueError(f"signature '{where}' must be a list of strings")
    return tuple(names)


# --------------------------------------------------------------------------- request entry point


def decode_predict_body(body: bytes, plan: InputPlan) -> DecodedRequest:
    """Parse and validate a predict body; raises MalformedRequest (400) or InvalidInput (422)."""
    if plan._numeric:
        # Large all-number bodies skip the Python floats (serving.numeric_body); anything it
        # cannot prove well-formed comes back None and takes the path below.
        X = parse_instances(body, plan.n_features, plan.max_rows)
        if X is not None:
            return DecodedRequest(_finish_array(X, plan), X.shape[0], "predict")
    return decode_predict_document(parse_predict_json(body, plan), plan)


def parse_predict_json(body: bytes, plan: InputPlan) -> dict[str, Any]:
    """A predict body's JSON object, refused (413/422) before parsing when it is far beyond
    what the plan's row limit allows."""
    # orjson builds an object per value: count first what a large body would build.
    if len(body) > plan.body_budget.scan_above:
        enforce(body, plan.body_budget)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from None
    if type(doc) is not dict:
        raise MalformedRequest(f"request body must be a JSON object, got {_describe(doc)}")
    return doc


def decode_predict_document(doc: dict[str, Any], plan: InputPlan) -> DecodedRequest:
    """A parsed predict body (`instances`, `inputs`, `dataframe_split`, `dataframe_records`,
    optional `method`), validated against the plan."""
    # Fast path for the most common body: {"instances": [...]}.
    if len(doc) == 1:
        rows = doc.get("instances")
        if rows is not None:
            X = _rows_to_matrix(rows, plan, "instances", True)
            return DecodedRequest(X, X.shape[0], "predict")
    return _decode_envelope(doc, plan)


def _decode_envelope(doc: dict[str, Any], plan: InputPlan) -> DecodedRequest:
    unknown = [_clip(k) for k in doc if k not in _TOP_LEVEL_KEYS][:MAX_REPORTED_ERRORS]
    if unknown:
        raise InvalidInput(
            f"unknown top-level key(s) {', '.join(map(repr, unknown))}: the body takes {_ACCEPTED}",
            {k: "unknown key" for k in unknown},
        )
    present = [k for k in PAYLOAD_KEYS if k in doc]
    if not present:
        raise InvalidInput(
            f"no input rows: the body takes {_ACCEPTED}", {"body": f"expected {_ACCEPTED}"}
        )
    if len(present) > 1:
        raise InvalidInput(
            f"send only one of {', '.join(present)}: the body takes {_ACCEPTED}",
            {k: "only one payload key is allowed" for k in present},
        )
    method = _check_method(doc["method"], plan) if "method" in doc else "predict"
    key = present[0]
    value = doc[key]
    if key == "dataframe_split":
        X = _split_to_matrix(value, plan)
    elif key == "inputs" and type(value) is dict:
        X = _columns_to_matrix(value, plan, key, True)
    else:
        X = _rows_to_matrix(value, plan, key, True)
    return DecodedRequest(X, X.shape[0], method)


def _check_method(method: Any, plan: InputPlan) -> str:
    if type(method) is str and method in plan.methods:
        return method
    got = repr(_clip(method)) if isinstance(method, str) else _describe(method)
    allowed = plan._methods_text
    raise InvalidInput(
        f"method {got} is not supported by this model; allowed: {allowed}",
        {"method": f"expected one of: {allowed}; got {got}"},
    )


def _split_to_matrix(split: Any, plan: InputPlan) -> np.ndarray | pd.DataFrame:
    """MLflow `dataframe_split`: `columns` optional (positional if absent), `index` ignored."""
    field = "dataframe_split"
    if type(split) is not dict:
        raise _fail(field, f"expected an object with 'columns' and 'data', got {_describe(split)}")
    unknown = [_clip(k) for k in split if k not in _SPLIT_KEYS][:MAX_REPORTED_ERRORS]
    if unknown:
        raise InvalidInput(
            f"unknown key(s) in {field}: {', '.join(map(repr, unknown))}; "
            "accepted: columns, data, index",
            {f"{field}.{k}": "unknown key" for k in unknown},
        )
    if "data" not in split:
        raise _fail(f"{field}.data", "missing: the list of rows")
    data, columns = split["data"], split.get("columns")
    dfield, cfield = f"{field}.data", f"{field}.columns"
    if columns is None:
        return _rows_to_matrix(data, plan, dfield, True)
    if type(columns) is not list or not columns or not all(type(c) is str for c in columns):
        raise _fail(cfield, "expected a non-empty list of column names (strings)")
    if len(set(columns)) != len(columns):
        raise _fail(cfield, "column names must be unique")
    names = plan.feature_names
    if names is None:  # names unknown: columns are positional and only fix the width
        if plan.n_features is None:
            return _rows_to_matrix(data, replace(plan, n_features=len(columns)), dfield, True)
        if len(columns) != plan.n_features:
            raise _fail(cfield, f"expected {plan.n_features} columns, got {len(columns)}")
        return _rows_to_matrix(data, plan, dfield, True)
    if len(columns) == len(names) and tuple(columns) == names:
        return _rows_to_matrix(data, plan, dfield, True)
    given = set(columns)
    missing = [_clip(x) for x in names if x not in given][:MAX_REPORTED_ERRORS]
    extra = [_clip(c) for c in columns if c not in plan._index][:MAX_REPORTED_ERRORS]
    if missing or extra:
        parts = [f"missing: {', '.join(missing)}"] if missing else []
        parts += [f"unknown: {', '.join(extra)}"] if extra else []
        raise _fail(cfield, "columns do not match the model's features; " + "; ".join(parts))
    # Same columns in another order: decode in the client's order, then reorder (rare path).
    types = plan.column_types
    if types is not None:
        types = tuple(types[plan._index[c]] for c in columns)
    sub = replace(plan, feature_names=tuple(columns), column_types=types)
    X = _rows_to_matrix(data, sub, dfield, True)
    if is_dataframe(X):
        return X[list(names)]
    pos = {c: j for j, c in enumerate(columns)}
    return np.ascontiguousarray(X[:, [pos[x] for x in names]])


def is_dataframe(value: Any) -> bool:
    """isinstance(value, pandas.DataFrame), without importing pandas to find out."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


# --------------------------------------------------------------------------- rows


def row_count_problem(n: int, plan: InputPlan, empty: str) -> str | None:
    """Why `n` rows cannot be predicted in one request (`empty` says it for none), or None.
    Every protocol's bound."""
    if n == 0:
        return empty
    if n > plan.max_rows:
        return f"too many rows: {n}; the limit is {plan.max_rows} per request"
    return None


def is_numeric(plan: InputPlan) -> bool:
    """Every column is a number (double or long): a float64 matrix holds the input."""
    return plan._numeric


def rows_to_matrix(rows: Any, plan: InputPlan, field: str) -> np.ndarray | pd.DataFrame:
    """Validate a list of rows (lists of values, or objects keyed by feature name).

    `field` prefixes error paths (`instances[3].sqft`). Shared by every request protocol.
    """
    return _rows_to_matrix(rows, plan, field, False)


def _rows_to_matrix(
    rows: Any, plan: InputPlan, field: str, finite_known: bool
) -> np.ndarray | pd.DataFrame:
    # finite_known: values come from orjson, which rejects NaN/Infinity and overflowing numbers.
    if type(rows) is not list and not isinstance(rows, (list, tuple)):
        raise _fail(field, f"expected a list of rows, got {_describe(rows)}")
    n = len(rows)
    reason = row_count_problem(n, plan, "no rows: send at least one row")
    if reason is not None:
        raise _fail(field, reason)
    X = _rows_fast(rows, plan, finite_known)
    return X if X is not None else _rows_slow(rows, plan, field)


def _rows_fast(rows: Any, plan: InputPlan, finite_known: bool) -> np.ndarray | pd.DataFrame | None:
    """Vectorised happy path; None means "let the slow path decide (and explain)"."""
    n = plan.n_features
    kinds = set(map(type, rows))
    if kinds == _LIST_KIND:
        seqs = rows
    elif kinds == _DICT_KIND:
        if plan._getter is None or set(map(len, rows)) != {n}:
            return None  # no names, or some row has missing/unknown keys
        try:
            seqs = list(map(plan._getter, rows)) if n != 1 else list(zip(map(plan._getter, rows)))
        except KeyError:
            return None
    elif n == 1:  # a flat list of scalars is one value per row
        if not plan._numeric:
            return _columns_fast([rows], plan, finite_known)
        if not kinds <= _NUMBER_KINDS:
            return None
        X = _as_float_matrix(rows, finite_known)
        return None if X is None else _finish_array(X.reshape(-1, 1), plan)
    else:
        return None
    if plan._numeric:
        if not _NUMBER_KINDS.issuperset(map(type, chain.from_iterable(seqs))):
            return None
        X = _as_float_matrix(seqs, finite_known)
        if X is None or X.ndim != 2 or (X.shape[1] != n if n is not None else X.shape[1] == 0):
            return None
        return _finish_array(X, plan)
    if set(map(len, seqs)) != {n}:
        return None
    return _columns_fast(list(zip(*seqs, strict=True)), plan, finite_known)


def _as_float_matrix(seqs: Any, finite_known: bool) -> np.ndarray | None:
    try:
        X = np.asarray(seqs, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):  # ragged rows, ints beyond float range
        return None
    if not finite_known and not np.isfinite(X).all():
        return None
    return X


def _rows_slow(rows: Any, plan: InputPlan, field: str) -> np.ndarray | pd.DataFrame:
    """Precise per-row validation: names the offending rows/fields, or builds the matrix."""
    n = plan.n_features
    if n != 1 and not any(isinstance(r, (list, tuple, Mapping)) for r in rows):
        raise _fail(
            field,
            "expected a list of rows, e.g. [[1.0, 2.0], [3.0, 4.0]], got a flat list of values; "
            "to send one row, wrap it in a list",
        )
    width = n
    if width is None:  # unknown width: the first non-empty list row sets it
        width = next((len(r) for r in rows if isinstance(r, (list, tuple)) and r), 0)
    types = plan._types or ("double",) * width
    labels = plan._labels or tuple(f"[{j}]" for j in range(width))
    names, index = plan.feature_names, plan._index
    errs = _Errors()
    out: list[list[Any]] = []
    try:
        for i, row in enumerate(rows):
            path = f"{field}[{i}]"
            if isinstance(row, (list, tuple)):
                if len(row) != width or not width:
                    errs.add(path, _width_reason(n, width, len(row)))
                    continue
                vals = []
                for j, v in enumerate(row):
                    val, reason = _check_value(v, types[j])
                    if reason is not None:
                        errs.add(path + labels[j], reason)
                    vals.append(val)
                out.append(vals)
            elif isinstance(row, Mapping):
                if names is None or index is None:
                    errs.add(
                        path,
                        "rows given as objects need the model's feature names, which "
                        "are unknown: send each row as a list of values",
                    )
                    continue
                vals, found = [], 0
                for j, name in enumerate(names):
                    if name in row:
                        found += 1
                        val, reason = _check_value(row[name], types[j])
                        if reason is not None:
                            errs.add(path + labels[j], reason)
                        vals.append(val)
                    else:
                        errs.add(path + labels[j], "missing")
                if len(row) != found:
                    for k in row:
                        if k not in index:
                            errs.add(f"{path}.{_clip(k)}", "unknown feature")
                out.append(vals)
            elif n == 1:
                val, reason = _check_value(row, types[0])
                if reason is not None:
                    errs.add(path, reason)
                out.append([val])
            else:
                errs.add(
                    path, f"expected a row (a list of values or an object), got {_describe(row)}"
                )
    except _TooMany:
        pass
    if errs.items:
        raise errs.error()
    if plan._numeric:
        return _finish_array(np.array(out, dtype=np.float64).reshape(len(out), width), plan)
    return _assemble_columns(list(zip(*out, strict=True)), plan)


def _width_reason(n: int | None, width: int, got: int) -> str:
    if n is not None:
        return f"expected {n} values, got {got}"
    if not width:
        return "expected at least 1 value, got 0"
    return f"expected {width} values like the other rows, got {got}"


# --------------------------------------------------------------------------- columns


def columns_to_matrix(
    columns: Mapping[str, Any], plan: InputPlan, field: str
) -> np.ndarray | pd.DataFrame:
    """Validate columns keyed by feature name (`{"sqft": [...], "age": [...]}`)."""
    return _columns_to_matrix(columns, plan, field, False)


def _columns_to_matrix(
    columns: Any, plan: InputPlan, field: str, finite_known: bool
) -> np.ndarray | pd.DataFrame:
    if not isinstance(columns, Mapping):
        raise _fail(field, f"expected an object of columns, got {_describe(columns)}")
    names, index = plan.feature_names, plan._index
    if names is None or index is None:
        raise _fail(
            field,
            "columns by name need the model's feature names, which are unknown: "
            'send rows as lists instead, e.g. {"instances": [[...], ...]}',
        )
    errs = _Errors()
    try:
        for name in names:
            if name not in columns:
                errs.add(f"{field}.{name}", "missing column")
            elif not isinstance(columns[name], (list, tuple)):
                errs.add(
                    f"{field}.{name}", f"expected a list of values, got {_describe(columns[name])}"
                )
        if len(columns) != len(names) or errs.items:
            for k in columns:
                if k not in index:
                    errs.add(f"{field}.{_clip(k)}", "unknown column")
    except _TooMany:
        pass
    if errs.items:
        raise errs.error()
    cols = [columns[x] for x in names]
    lengths = set(map(len, cols))
    if len(lengths) > 1:
        first = len(cols[0])
        bad = {
            f"{field}.{x}": f"expected {first} values like column {names[0]!r}, got {len(c)}"
            for x, c in zip(names, cols, strict=True)
            if len(c) != first
        }
        raise InvalidInput(
            f"columns in {field} have different lengths",
            dict(list(bad.items())[:MAX_REPORTED_ERRORS]),
        )
    n_rows = lengths.pop()
    if n_rows == 0:
        raise _fail(field, "no rows: columns are empty")
    reason = row_count_problem(n_rows, plan, "")
    if reason is not None:
        raise _fail(field, reason)
    if plan._numeric:
        if _NUMBER_KINDS.issuperset(map(type, chain.from_iterable(cols))):
            X = _as_float_matrix(cols, finite_known)
            if X is not None:
                return _finish_array(np.ascontiguousarray(X.T), plan)
    else:
        out = _columns_fast(cols, plan, finite_known)
        if out is not None:
            return out
    # Slow path: name each bad value as field.column[row].
    types = plan._types or ()
    checked: list[list[Any]] = []
    try:
        for x, ctype, col in zip(names, types, cols, strict=True):
            vals = []
            for i, v in enumerate(col):
                val, reason = _check_value(v, ctype)
                if reason is not None:
                    errs.add(f"{field}.{x}[{i}]", reason)
                vals.append(val)
            checked.append(vals)
    except _TooMany:
        pass
    if errs.items:
        raise errs.error()
    if plan._numeric:
        return _finish_array(np.ascontiguousarray(np.array(checked, dtype=np.float64).T), plan)
    return _assemble_columns(checked, plan)


def _columns_fast(cols: list[Any], plan: InputPlan, finite_known: bool) -> pd.DataFrame | None:
    """Typed (mixed) columns: one C-level type scan per column; None defers to the slow path."""
    for ctype, col in zip(plan._types or (), cols, strict=True):
        kinds = set(map(type, col))
        if ctype == "boolean":
            if kinds != _BOOL_KIND:
                return None
        elif ctype == "string":
            if kinds != _STR_KIND:
                return None
        elif not kinds <= _NUMBER_KINDS:
            return None
    try:
        return _assemble_columns(cols, plan, check_finite=not finite_known)
    except (ValueError, OverflowError):  # non-finite or out-of-range number
        return None


def _assemble_columns(cols: list[Any], plan: InputPlan, check_finite: bool = False) -> pd.DataFrame:
    """Build the DataFrame from type-checked columns, each with its own dtype."""
    import pandas as pd

    labels = plan._columns if plan._columns is not None else pd.RangeIndex(len(cols))
    data: dict[Any, Any] = {}
    for label, ctype, col in zip(labels, plan._types or (), cols, strict=True):
        if ctype == "boolean":
            data[label] = np.asarray(col, dtype=bool)
        elif ctype == "string":
            # Explicit object dtype: pandas 3 would otherwise infer its own string dtype.
            data[label] = pd.Series(np.asarray(col, dtype=object), dtype=object, copy=False)
        else:
            arr = np.asarray(col, dtype=np.float64)
            if check_finite and not np.isfinite(arr).all():
                raise ValueError("non-finite value")
            data[label] = _maybe_int64(arr) if ctype == "long" else arr
    return pd.DataFrame(data, columns=labels, copy=False)


def _finish_array(X: np.ndarray, plan: InputPlan) -> np.ndarray | pd.DataFrame:
    """Numeric matrix → itself, or the DataFrame a model fitted on one expects."""
    if not plan.needs_dataframe:
        return X
    import pandas as pd

    labels = plan._columns if plan._columns is not None else pd.RangeIndex(X.shape[1])
    if not plan._long_cols:
        return pd.DataFrame(X, columns=labels, copy=False)  # one float64 block, no copy
    longs = set(plan._long_cols)
    return pd.DataFrame(
        {x: _maybe_int64(X[:, j]) if j in longs else X[:, j] for j, x in enumerate(labels)},
        columns=labels,
    )


def _maybe_int64(arr: np.ndarray) -> np.ndarray:
    """`long` columns become int64 when every value is integral (else they stay float64)."""
    if np.array_equal(arr, np.trunc(arr)) and bool((np.abs(arr) < _INT64_LIMIT).all()):
        return arr.astype(np.int64)
    return arr


# --------------------------------------------------------------------------- values and errors


def _check_value(v: Any, ctype: str) -> tuple[Any, str | None]:
    """One value against its column type: (converted value, None) or (None, reason)."""
    if v is None:
        return None, "missing value (null)"
    if ctype == "double" or ctype == "long":
        if isinstance(v, (bool, np.bool_)):
            return None, "expected a number, got a boolean"
        if isinstance(v, _Real):
            try:
                f = float(v)
            except OverflowError:
                return None, "number out of range"
            if not math.isfinite(f):
                return None, "expected a finite number"
            return f, None
        if isinstance(v, str) and v.strip().lower().lstrip("+-") in _NONFINITE_WORDS:
            return None, f"expected a finite number, got {_describe(v)}"
        return None, f"expected a number, got {_describe(v)}"
    if ctype == "boolean":
        if isinstance(v, (bool, np.bool_)):
            return bool(v), None
        return None, f"expected a boolean (true or false), got {_describe(v)}"
    if isinstance(v, str):
        return v, None
    return None, f"expected a string, got {_describe(v)}"


def _describe(v: Any) -> str:
    """Short, size-bounded description of a client value for error messages."""
    if v is None:
        return "null"
    if isinstance(v, (bool, np.bool_)):
        return "a boolean"
    if isinstance(v, str):
        return f"the string {_clip(v)!r}"
    if isinstance(v, _Real):
        return "a number"
    if isinstance(v, (list, tuple)):
        return "a list"
    if isinstance(v, Mapping):
        return "an object"
    return type(v).__name__


def _clip(s: Any, limit: int = 40) -> str:
    s = s if isinstance(s, str) else str(s)
    return s if len(s) <= limit else s[:limit] + "..."


def _fail(path: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{path}: {reason}", {path: reason})


class _TooMany(Exception):
    """Internal: stop scanning once enough errors have been collected."""


class _Errors:
    __slots__ = ("items", "more")

    def __init__(self) -> None:
        self.items: dict[str, str] = {}
        self.more = False

    def add(self, path: str, reason: str) -> None:
        if len(self.items) >= MAX_REPORTED_ERRORS:
            self.more = True
            raise _TooMany
        self.items.setdefault(path, reason)

    def error(self) -> InvalidInput:
        path, reason = next(iter(self.items.items()))
        detail = f"{path}: {reason}"
        if self.more:
            detail += f" (and more; the first {len(self.items)} problems are listed)"
        elif len(self.items) > 1:
            detail += f" (and {len(self.items) - 1} more)"
        return InvalidInput(detail, self.items)


# Named for the API description (serving.api_docs), so that it states no grammar of its own.
DEFAULT_METHOD = "predict"
PREDICT_METHODS = (DEFAULT_METHOD, "predict_proba")  # the most a model offers: InputPlan.methods
SPLIT_KEYS = _SPLIT_KEYS
