"""Acceleration: serve a scikit-learn model faster, once it is proven to answer the same.

Plain linear models are served by numpy (serving.linear: their own arithmetic, no session);
everything else is converted to ONNX and served by ONNX Runtime.

scikit-learn spends most of a small predict on input validation and dispatch; ONNX Runtime
runs the same model in microseconds. A conversion is only used once it has been checked on
the version's input example plus a few hundred rows synthesized around it: class labels must
match exactly, numbers within |onnx - sklearn| <= ATOL + RTOL * |sklearn|. A conversion that
fails or disagrees is not an error: the version serves with scikit-learn and its record says
why.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RTOL = 1e-4
ATOL = 1e-4
CHECK_ROWS = 300
SEED = 20240611
OPSETS = {"": 17, "ai.onnx.ml": 3}


@dataclass(frozen=True)
class Acceleration:
    """The outcome, as recorded on the version: status is ready, mismatch, failed or
    unsupported; when ready, `detail["runtime"]` says which runtime serves it and `artifact`
    holds what that runtime loads (the numpy form's arrays, or the ONNX conversion)."""

    status: str
    detail: dict[str, Any] = field(default_factory=dict)
    artifact: bytes | None = None


def _converter_version() -> str:
    import onnxruntime
    import skl2onnx

    return f"skl2onnx {skl2onnx.__version__}, onnxruntime {onnxruntime.__version__}"


def verification_rows(
    n_features: int, example: list[Any] | None, feature_names: list[str] | None
) -> np.ndarray:
    """The example's rows, then rows spread around them (or around 0..1 without one)."""
    rng = np.random.default_rng(SEED)
    base = _example_matrix(example, feature_names, n_features)
    if base is None:
        synthesized = np.vstack(
            [
                rng.random((CHECK_ROWS // 2, n_features)),
                rng.normal(0, 3, (CHECK_ROWS // 2, n_features)),
            ]
        )
        return synthesized
    scale = np.maximum(np.abs(base).max(axis=0), 1e-3)
    picks = base[rng.integers(0, len(base), CHECK_ROWS)]
    noise = rng.normal(0, 0.25, picks.shape) * scale
    return np.vstack([base, picks * rng.uniform(0.5, 1.5, picks.shape) + noise])


def _example_matrix(
    example: list[Any] | None, names: list[str] | None, width: int
) -> np.ndarray | None:
    if not example:
        return None
    try:
        if isinstance(example[0], dict):
            if not names:
                return None
            rows = [[row[name] for name in names] for row in example]
        else:
            rows = example
        matrix = np.asarray(rows, dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None
    return matrix if matrix.ndim == 2 and matrix.shape[1] == width else None


def _as_model_input(model: Any, X: np.ndarray, names: list[str] | None) -> Any:
    if names and getattr(model, "feature_names_in_", None) is not None:
        import pandas as pd

        return pd.DataFrame(X, columns=names)
    return X


def _convert(model: Any, width: int, dtype: type) -> bytes:
    from skl2onnx import to_onnx

    options = None
    if callable(getattr(model, "predict_proba", None)):
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        options = {id(final): {"zipmap": False}}
    sample = np.zeros((1, width), dtype=dtype)
    return to_onnx(model, sample, options=options, target_opset=OPSETS).SerializeToString()


def _compare(
    name: str, expected: Any, actual: np.ndarray, exact: bool
) -> tuple[bool, float, float]:
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    if actual.ndim == 2 and actual.shape[1] == 1 and expected.ndim == 1:
        actual = actual.ravel()
    if expected.shape != actual.shape:
        raise ValueError(f"{name}: shape {actual.shape} instead of {expected.shape}")
    if exact or expected.dtype.kind not in "fiub":
        same = bool(np.array_equal(expected.astype(str), actual.astype(str)))
        return same, 0.0 if same else float("inf"), 0.0 if same else float("inf")
    expected = expected.astype(np.float64)
    actual = actual.astype(np.float64)
    diff = np.abs(actual - expected)
    rel = diff / np.maximum(np.abs(expected), 1e-12)
    ok = bool(np.all(diff <= ATOL + RTOL * np.abs(expected)))
    return ok, float(diff.max(initial=0.0)), float(rel.max(initial=0.0))


def _check(
    model: Any, onnx_bytes: bytes, X: np.ndarray, names: list[str] | None, dtype: type
) -> dict[str, Any]:
    from serving.formats import OnnxModel

    onnx_model = OnnxModel.load(onnx_bytes, threads=1)
    onnx_model.label_classes(getattr(model, "classes_", None))
    return _check_candidate(model, onnx_model, X, names, dtype)


def _check_candidate(
    model: Any, candidate: Any, X: np.ndarray, names: list[str] | None, dtype: type
) -> dict[str, Any]:
    """Every method of `model` against the same method of `candidate` on the rows X."""
    inputs = _as_model_input(model, X, names)
    result: dict[str, Any] = {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "matches": True}
    is_classifier = getattr(model, "classes_", None) is not None
    methods = ["predict"] + (
        ["predict_proba"] if callable(getattr(model, "predict_proba", None)) else []
    )
    for method in methods:
        expected = getattr(model, method)(inputs)
        actual = getattr(candidate, method)(X.astype(dtype))
        ok, max_abs, max_rel = _compare(
            method, expected, actual, exact=is_classifier and method == "predict"
        )
        result["max_abs_diff"] = max(result["max_abs_diff"], max_abs)
        result["max_rel_diff"] = max(result["max_rel_diff"], max_rel)
        if not ok:
            result["matches"] = False
            result["failed_method"] = method
    return result


def _try_native(
    model: Any, X: np.ndarray, names: list[str] | None, detail: dict[str, Any]
) -> bytes | None:
    """Linear models first: numpy does their arithmetic bit for bit, with no session. The
    stored form is what is checked: the arrays are read back before the comparison."""
    from serving.linear import NativeLinear, native_linear

    native = native_linear(model)
    if native is None:
        return None
    try:
        stored = native.to_bytes()
        checked = _check_candidate(model, NativeLinear.from_bytes(stored), X, names, np.float64)
    except Exception as error:
        detail.setdefault("errors", {})["numpy"] = f"{type(error).__name__}: {error}"[:300]
        return None
    if not checked.pop("matches"):
        detail["numpy_mismatch"] = checked
        return None
    detail.update(
        checked,
        runtime="numpy",
        precision="float64",
        converter=f"modelreg native linear (numpy {np.__version__})",
    )
    return stored


def accelerate(
    model: Any, signature: Mapping[str, Any] | None, input_example: list[Any] | None
) -> Acceleration:
    """Try to convert `model`; never raises."""
    from sklearn.base import BaseEstimator

    if not isinstance(model, BaseEstimator):
        return Acceleration("unsupported", {"reason": "not a scikit-learn estimator"})
    signature = dict(signature or {})
    width = signature.get("n_features")
    if not isinstance(width, int):
        return Acceleration("unsupported", {"reason": "the number of features is unknown"})
    columns = signature.get("inputs") or []
    if any(col.get("type") in ("string", "boolean") for col in columns):
        return Acceleration("unsupported", {"reason": "non-numeric input columns"})
    names = signature.get("feature_names")
    started = time.perf_counter()
    X = verification_rows(width, input_example, names)
    detail: dict[str, Any] = {
        "converter": _converter_version(),
        "rows_checked": len(X),
        "tolerance": {"rtol": RTOL, "atol": ATOL},
    }
    native = _try_native(model, X, names, detail)
    if native is not None:
        detail["seconds"] = round(time.perf_counter() - started, 3)
        return Acceleration("ready", detail, native)
    outcome = "failed"
    for dtype in (np.float64, np.float32):
        precision = np.dtype(dtype).name
        try:
            onnx_bytes = _convert(model, width, dtype)
            checked = _check(model, onnx_bytes, X, names, dtype)
        except Exception as error:  # converters raise anything for unsupported models
            detail.setdefault("errors", {})[precision] = f"{type(error).__name__}: {error}"[:300]
            continue
        matches = checked.pop("matches")
        detail.update(checked, precision=precision, runtime="onnxruntime")
        if matches:
            detail["seconds"] = round(time.perf_counter() - started, 3)
            return Acceleration("ready", detail, onnx_bytes)
        outcome = "mismatch"
    detail["seconds"] = round(time.perf_counter() - started, 3)
    detail["reason"] = (
        "the converted model disagrees with scikit-learn beyond the tolerance"
        if outcome == "mismatch"
        else "the model could not be converted"
    )
    log.info("acceleration %s: %s", outcome, detail.get("reason"))
    return Acceleration(outcome, detail)
