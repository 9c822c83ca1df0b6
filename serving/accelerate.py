"""Acceleration: serve a scikit-learn model faster, once it is proven to answer the same.

Plain linear models are served by numpy (serving.linear: their own arithmetic, no session);
tree ensembles by a float64 ONNX graph written from their trees (serving.trees); everything
else by skl2onnx's conversion, float64 first, else float32. All run in ONNX Runtime but the
numpy form.

scikit-learn spends most of a small predict on input validation and dispatch; ONNX Runtime
runs the same model in microseconds. A conversion is only used once it has been checked on
the version's input example plus a few hundred rows synthesized around it: class labels must
match exactly, numbers within |onnx - sklearn| <= ATOL + RTOL * |sklearn|; when the signature
allows missing values, on rows holding NaN too. A conversion that fails or disagrees is not
an error: the next form is tried, or the version serves with scikit-learn, and its record
lists each attempt and says what is served.
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
    n_features: int,
    example: list[Any] | None,
    feature_names: list[str] | None,
    missing: bool = False,
) -> np.ndarray:
    """The example's rows, then rows spread around them (or around 0..1 without one); with
    `missing` (the signature allows missing values), a third more with NaN in a quarter of
    their cells, so that a conversion must treat NaN as scikit-learn does to be used."""
    rng = np.random.default_rng(SEED)
    base = _example_matrix(example, feature_names, n_features)
    if base is None:
        rows = np.vstack(
            [
                rng.random((CHECK_ROWS // 2, n_features)),
                rng.normal(0, 3, (CHECK_ROWS // 2, n_features)),
            ]
        )
    else:
        filled = np.where(np.isnan(base), 0.0, base)  # an example may hold missing values
        scale = np.maximum(np.abs(filled).max(axis=0), 1e-3)
        picks = filled[rng.integers(0, len(filled), CHECK_ROWS)]
        noise = rng.normal(0, 0.25, picks.shape) * scale
        rows = np.vstack([base, picks * rng.uniform(0.5, 1.5, picks.shape) + noise])
    if not missing:
        return rows
    holed = rows[rng.integers(0, len(rows), CHECK_ROWS // 3)].copy()
    holed[rng.random(holed.shape) < 0.25] = np.nan
    holed[np.arange(len(holed)), rng.integers(0, n_features, len(holed))] = np.nan
    return np.vstack([rows, holed])


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
        matrix = np.asarray(rows, dtype=np.float64)  # null -> NaN
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
    # NaN answers agree only with NaN answers.
    both = np.isnan(expected) & np.isnan(actual)
    diff = np.where(both, 0.0, np.abs(actual - expected))
    diff = np.where(np.isnan(diff), np.inf, diff)
    scale = np.where(both, 0.0, np.abs(expected))
    rel = diff / np.maximum(scale, 1e-12)
    ok = bool(np.all(diff <= ATOL + RTOL * scale))
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
    """Every method of `model` against the same method of `candidate` on the rows X. Rows
    with and without missing values go in separate batches: a served ONNX tree ensemble runs
    a batch without NaN on its own session (serving/complete_rows.py), and both are checked."""
    holed = np.isnan(X).any(axis=1)
    complete = int((~holed).sum())
    batches = [slice(0, len(X))]
    if 0 < complete < len(X):
        X = np.vstack([X[~holed], X[holed]])
        batches = [slice(0, complete), slice(complete, len(X))]
    inputs = _as_model_input(model, X, names)
    result: dict[str, Any] = {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "matches": True}
    is_classifier = getattr(model, "classes_", None) is not None
    methods = ["predict"] + (
        ["predict_proba"] if callable(getattr(model, "predict_proba", None)) else []
    )
    for method in methods:
        expected = getattr(model, method)(inputs)
        cast = X.astype(dtype)
        parts = [getattr(candidate, method)(cast[rows]) for rows in batches]
        actual = np.concatenate([np.asarray(part) for part in parts])
        ok, max_abs, max_rel = _compare(
            method, expected, actual, exact=is_classifier and method == "predict"
        )
        result["max_abs_diff"] = max(result["max_abs_diff"], max_abs)
        result["max_rel_diff"] = max(result["max_rel_diff"], max_rel)
        if not ok:
            result["matches"] = False
            result["failed_method"] = method
    return result


def _attempt(form: str, precision: str) -> dict[str, Any]:
    return {"form": form, "precision": precision}


def _verified(attempt: dict[str, Any], checked: dict[str, Any]) -> bool:
    """Record a comparison on its attempt; True when the form may be served."""
    matches = checked.pop("matches")
    attempt.update(checked)
    if matches:
        attempt["outcome"] = "matched"
        return True
    attempt["outcome"] = "mismatch"
    attempt["reason"] = (
        f"{checked.get('failed_method', 'predict')} disagrees with the original beyond the "
        "tolerance"
    )
    return False


def _failed(attempt: dict[str, Any], step: str, error: BaseException) -> None:
    attempt["outcome"] = "failed"
    # Converters put whole attribute dumps in their messages: the first line says it.
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    attempt["reason"] = f"{step}: {type(error).__name__}: {first}"[:300]


def _try_native(
    model: Any, X: np.ndarray, names: list[str] | None, attempts: list[dict[str, Any]]
) -> bytes | None:
    """Linear models first: numpy does their arithmetic bit for bit, with no session. The
    stored form is what is checked: the arrays are read back before the comparison."""
    from serving.linear import NativeLinear, native_linear

    native = native_linear(model)
    if native is None:
        return None
    attempt = _attempt("numpy", "float64")
    attempts.append(attempt)
    try:
        stored = native.to_bytes()
        checked = _check_candidate(model, NativeLinear.from_bytes(stored), X, names, np.float64)
    except Exception as error:
        _failed(attempt, "check", error)
        return None
    return stored if _verified(attempt, checked) else None


def _try_onnx(
    model: Any,
    width: int,
    X: np.ndarray,
    names: list[str] | None,
    dtype: type,
    attempts: list[dict[str, Any]],
    form: str = "onnx",
) -> bytes | None:
    """skl2onnx's conversion in `dtype` (form "onnx"), or the tree ensemble built by
    serving/trees.py (form "onnx-tree-ensemble", only for the ensembles it knows; float64,
    or its float32 ensemble when `dtype` is float32)."""
    if form == "onnx-tree-ensemble":
        from serving.boosters import BoosterModel
        from serving.boosters.plans import booster_onnx
        from serving.trees import tree_ensemble_onnx

        precision = np.dtype(dtype).name
        try:
            if isinstance(model, BoosterModel):
                onnx_bytes = booster_onnx(model) if precision == "float64" else None
            else:
                onnx_bytes = tree_ensemble_onnx(model, width, float32=precision == "float32")
        except Exception as error:  # a fitted structure this release does not know
            attempts.append(_attempt(form, precision))
            _failed(attempts[-1], "conversion", error)
            return None
        if onnx_bytes is None:
            return None  # not a tree ensemble it knows: nothing was tried
        attempt = _attempt(form, precision)
        attempts.append(attempt)
    else:
        attempt = _attempt(form, np.dtype(dtype).name)
        attempts.append(attempt)
        try:
            onnx_bytes = _convert(model, width, dtype)
        except Exception as error:  # converters raise anything for unsupported models
            _failed(attempt, "conversion", error)
            return None
    try:
        # The tree ensemble's graph takes float64 whatever its ensemble computes in.
        fed = np.float64 if form == "onnx-tree-ensemble" else dtype
        checked = _check(model, onnx_bytes, X, names, fed)
    except Exception as error:  # a runtime that cannot load or run what was emitted
        _failed(attempt, "check", error)
        return None
    return onnx_bytes if _verified(attempt, checked) else None


# What a served form does to inputs and answers, said on the version record.
PRECISION_NOTES = {
    "float64": "computed in float64, as scikit-learn does",
    "float32": (
        "inputs are rounded to float32 and the model is evaluated in float32: answers agree "
        "with scikit-learn's within the tolerance, not to the last digit (about 7 significant "
        "digits)"
    ),
    "float32-trees": (
        "every row takes scikit-learn's path through each tree (float32 features, as "
        "scikit-learn compares them, against thresholds rounded down to float32); leaf values "
        "and their sum are float32: answers agree with scikit-learn's within the tolerance, "
        "about 7 significant digits"
    ),
}


# Boosters' trees in float64: what that does to their answers, beside the library's own.
BOOSTER_NOTES = {
    "xgboost": (
        "inputs are rounded to float32 and compared with the float32 splits as XGBoost does; "
        "leaves are summed in float64 (XGBoost sums in float32): answers agree with "
        "XGBoost's within the tolerance, about 7 significant digits"
    ),
    "lightgbm": "computed in float64, as LightGBM does",
}


def _booster_converter(model: Any) -> str:
    import importlib.metadata

    import onnxruntime

    return (
        f"modelreg tree ensemble from the {model.format} model file (ai.onnx.ml opset 5), "
        f"checked against {model.format} {importlib.metadata.version(model.format)}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def accelerate(
    model: Any,
    signature: Mapping[str, Any] | None,
    input_example: list[Any] | None,
    *,
    prefer_float32: bool = False,
) -> Acceleration:
    """Try the numpy form, then ONNX in float64, then in float32, and keep the first that
    agrees with scikit-learn; never raises. The record lists every attempt (form,
    precision, outcome, reason) and says what is served.

    `prefer_float32` (the publisher's `"accelerate": "float32"`) tries the float32 tree
    ensemble (serving/trees.py; regressors only), then skl2onnx's float32 conversion, before
    the float64 ONNX forms: a float32 ensemble moves half the bytes per node, which shows with
    many rows per request, at the price of answers within the tolerance instead of equal to
    scikit-learn's. The numpy form (linear models, float64) stays first: it is faster than
    either."""
    from sklearn.base import BaseEstimator

    from serving.boosters import BoosterModel

    booster = isinstance(model, BoosterModel)
    if not isinstance(model, BaseEstimator) and not booster:
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
    missing = bool(signature.get("allow_missing"))
    X = verification_rows(width, input_example, names, missing=missing)
    attempts: list[dict[str, Any]] = []
    detail: dict[str, Any] = {
        "converter": _converter_version(),
        "rows_checked": len(X),
        "rows_with_missing_values": int(np.isnan(X).any(axis=1).sum()),
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "attempts": attempts,
    }
    if prefer_float32:
        detail["requested"] = "float32"
    served: bytes | None = None if booster else _try_native(model, X, names, attempts)
    if served is None and prefer_float32 and not booster:
        served = _try_onnx(model, width, X, names, np.float32, attempts, "onnx-tree-ensemble")
        if served is None:
            served = _try_onnx(model, width, X, names, np.float32, attempts)
    if served is None:
        served = _try_onnx(model, width, X, names, np.float64, attempts, "onnx-tree-ensemble")
    if served is None and not booster:
        for dtype in (np.float64,) if prefer_float32 else (np.float64, np.float32):
            served = _try_onnx(model, width, X, names, dtype, attempts)
            if served is not None:
                break
    detail["seconds"] = round(time.perf_counter() - started, 3)
    if served is not None:
        chosen = attempts[-1]
        precision = chosen["precision"]
        runtime = "numpy" if chosen["form"] == "numpy" else "onnxruntime"
        if chosen["form"] == "onnx-tree-ensemble":
            detail["converter"] = (
                f"modelreg tree ensemble (ai.onnx.ml opset 5), {detail['converter']}"
            )
        note = PRECISION_NOTES[precision]
        if chosen["form"] == "onnx-tree-ensemble" and precision == "float32":
            note = PRECISION_NOTES["float32-trees"]
        if booster:
            detail["converter"] = _booster_converter(model)
            note = BOOSTER_NOTES[model.format]
        detail.update(
            runtime=runtime,
            precision=precision,
            served={
                "form": chosen["form"],
                "runtime": runtime,
                "precision": precision,
                "note": note,
            },
            max_abs_diff=chosen["max_abs_diff"],
            max_rel_diff=chosen["max_rel_diff"],
        )
        if runtime == "numpy":
            detail["converter"] = f"modelreg native linear (numpy {np.__version__})"
        return Acceleration("ready", detail, served)
    compared = [a for a in attempts if "max_abs_diff" in a]
    outcome = "mismatch" if compared else "failed"
    if compared:
        detail.update(
            max_abs_diff=compared[-1]["max_abs_diff"], max_rel_diff=compared[-1]["max_rel_diff"]
        )
    detail["served"] = {
        "form": "original",
        "runtime": model.format if booster else "sklearn",
        "precision": "float32" if booster and model.format == "xgboost" else "float64",
        "note": f"the {model.format} library's own predict"
        if booster
        else PRECISION_NOTES["float64"],
    }
    detail["reason"] = (
        "every converted form disagrees with scikit-learn beyond the tolerance (or failed)"
        if outcome == "mismatch"
        else "the model could not be converted"
    )
    log.info("acceleration %s: %s", outcome, detail["reason"])
    return Acceleration(outcome, detail)
