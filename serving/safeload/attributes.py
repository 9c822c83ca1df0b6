"""Checks on what a loaded model's attributes hold, for attributes that reach code.

The allowlist says which classes a model is built from; these attributes of allowed classes
decide what runs at predict time and are plain data in the file:
- method names that an estimator looks up with getattr and calls (StackingRegressor's
  `stack_method_` once called `ndarray.tofile` on a path taken from the request);
- classes kept as values, which an estimator may call with the request (`bytes` as a
  FunctionTransformer's func turns floats into a path);
- text vectorizers' `input`, which makes "filename" open the paths a request sends;
- `n_jobs`, which makes a predict start worker processes.
"""

from __future__ import annotations

import numbers
import re
from typing import Any

import numpy as np

from serving.safeload.allowlist import FIT_ONLY_FUNCTIONS, FIT_ONLY_PLACES
from serving.safeload.errors import refuse

# Attributes whose strings are method names resolved with getattr, and what they may name.
METHOD_ATTRIBUTES = frozenset(
    {
        "stack_method_",
        "stack_method",
        "response_method",
        "_response_method",
        "chain_method",
        "chain_method_",
    }
)
SAFE_METHODS = frozenset(
    {
        "auto",
        "predict",
        "predict_proba",
        "predict_log_proba",
        "decision_function",
        "transform",
        "score_samples",
    }
)
# SelectFromModel's importance_getter is an attribute path (operator.attrgetter).
_ATTRIBUTE_PATH = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\Z")
# Classes that may be values (dtype parameters, the abstract number types of parameter
# constraints): calling one with an array is a numeric conversion, never bytes or text.
_VALUE_CLASSES = (np.number, np.bool_, numbers.Number)


def _strings(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple | np.ndarray):
        return [item for item in np.asarray(value, dtype=object).ravel()]
    return [value]


def check_class_value(value: type) -> None:
    """A class held as a value must be a numeric type (a dtype parameter)."""
    if value in (object, np.object_) or issubclass(value, (*_VALUE_CLASSES, np.dtype)):
        return
    name = f"{value.__module__}.{value.__qualname__}"
    raise refuse("model", f"holds the class {name} as a value; only numeric types may be")


def is_fit_only(value: Any) -> bool:
    module, name = getattr(value, "__module__", None), getattr(value, "__name__", None)
    return callable(value) and f"{module}.{name}" in FIT_ONLY_FUNCTIONS


def check_fit_only_placement(container: Any) -> None:
    """A container (list, dict, partial) holding a fit-only function: predict could call it."""
    items = container.values() if isinstance(container, dict) else container
    if any(is_fit_only(item) for item in items):
        raise refuse("model", "a fitting function is held where predict could call it")


def check_attributes(obj: Any) -> None:
    """Refuse attributes that would make predict call or open something the file chose, and
    keep predictions in-process. `obj` has a __dict__."""
    attributes = vars(obj)
    for name, value in attributes.items():
        if name not in FIT_ONLY_PLACES and is_fit_only(value):
            raise refuse(
                "model",
                f"{type(obj).__name__}.{name} holds a fitting function where predict could call it",
            )
    for name in METHOD_ATTRIBUTES & attributes.keys():
        value = attributes[name]
        if value is None:
            continue
        for item in _strings(value):
            if item is not None and item not in SAFE_METHODS:
                raise refuse(
                    "model", f"{type(obj).__name__}.{name} names {item!r}, not a prediction method"
                )
    getter = attributes.get("importance_getter")
    if isinstance(getter, str) and getter != "auto" and not _ATTRIBUTE_PATH.match(getter):
        raise refuse("model", f"importance_getter {getter!r} is not a plain attribute path")
    if (
        "input" in attributes
        and hasattr(obj, "build_analyzer")
        and (attributes["input"] != "content")
    ):
        raise refuse(
            "model",
            f"a text vectorizer reads its input as "
            f"{attributes['input']!r}; only 'content' is served",
        )
    if attributes.get("n_jobs") not in (None, 1):
        obj.n_jobs = None  # serving parallelism comes from workers, never from processes
