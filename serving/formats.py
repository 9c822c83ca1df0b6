"""Model formats: turn verified artifact bytes into a predictor, and read its signature.

- `skops`: safe. Every type and function the file names is checked against an explicit
  allowlist of model classes before anything is built (serving/safeload).
- `onnx`: safe. Run by onnxruntime behind a small adapter with predict/predict_proba; a model
  whose tensors live in external files is refused before a session is built.
- `xgboost`, `lightgbm`: safe. The libraries' own model files (JSON/UBJSON, text), read in
  Python first and then loaded by the library's own loader (serving/boosters).
- `joblib`: pickle. Refused unless pickles are allowed, and then unpickled by an unpickler
  that imports nothing outside the same allowlist.
Every model built from skops or joblib has its compiled index structures checked too.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from typing import Any, BinaryIO

import numpy as np

from registry.errors import InvalidInput
from serving.boosters import BOOSTER_FORMATS, BoosterModel, load_booster
from serving.complete_rows import without_missing_tracks
from serving.linear import NativeLinear
from serving.missing import accepts_missing
from serving.safeload import TrustPolicy
from serving.safeload.onnx_files import check_onnx_inline
from serving.safeload.pickle_files import PickleRefused, UntrustedGlobal, load_pickle
from serving.safeload.skops_files import UntrustedTypes, load_skops
from serving.safeload.structure import check_model_structure

log = logging.getLogger(__name__)

PICKLE_FORMATS = frozenset({"joblib"})

__all__ = [
    "PICKLE_FORMATS",
    "OnnxModel",
    "PickleRefused",
    "TrustPolicy",
    "UntrustedGlobal",
    "UntrustedTypes",
    "deserialize",
    "infer_signature",
]


def deserialize(file: BinaryIO, fmt: str, *, trust: TrustPolicy, onnx_threads: int = 1) -> Any:
    """Load an artifact whose bytes were already verified. Raises InvalidInput subclasses."""
    if fmt == "joblib":
        if not trust.allow_pickle:
            raise PickleRefused(
                "pickle-based formats (joblib) are disabled on this server; "
                "register the model as skops or onnx",
                {"metadata.format": "joblib is not allowed (ALLOW_PICKLE=false)"},
            )
        return _judged(
            lambda: load_pickle(file, extra_classes=trust.extra_classes, limits=trust.skops_limits)
        )
    if fmt == "skops":
        data = file.read()
        return _judged(
            lambda: load_skops(data, limits=trust.skops_limits, extra_classes=trust.extra_classes)
        )
    if fmt == "onnx":
        return OnnxModel.load(file.read(), threads=onnx_threads)
    if fmt in BOOSTER_FORMATS:
        return load_booster(file.read(), fmt, threads=onnx_threads)
    raise InvalidInput(f"unknown format {fmt!r}", {"metadata.format": "unknown format"})


def _judged(load: Any) -> Any:
    """Build the model and check what it holds; a file that breaks either step in any other
    way is not a model either (a 422 naming the failure, never a 500)."""
    try:
        model = load()
        check_model_structure(model)
    except InvalidInput:
        raise
    except (Exception, RecursionError) as error:
        raise InvalidInput(
            "the artifact could not be loaded as a model",
            {"artifact": f"unloadable ({type(error).__name__}: {str(error)[:200]})"},
        ) from None
    return model


def _plain(values: Sequence[Any]) -> list[Any]:
    """numpy scalars -> JSON-friendly Python values."""
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def infer_signature(model: Any) -> dict[str, Any]:
    """What the fitted model reveals: feature count and names, classes, methods, and whether
    it accepts missing values."""
    if isinstance(model, OnnxModel | BoosterModel):
        return model.signature()
    _require_fitted(model)
    signature: dict[str, Any] = {}
    width = getattr(model, "n_features_in_", None)
    if isinstance(width, int | np.integer):
        signature["n_features"] = int(width)
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        signature["feature_names"] = [str(n) for n in names]
    classes = getattr(model, "classes_", None)
    if classes is not None and np.ndim(classes) == 1:
        signature["classes"] = _plain(list(classes))
    methods = [m for m in ("predict", "predict_proba") if callable(getattr(model, m, None))]
    if not methods:
        raise InvalidInput(
            "the artifact is not a model: it has no predict method",
            {"artifact": f"a {type(model).__name__} has no predict()"},
        )
    signature["methods"] = methods
    if accepts_missing(model):
        signature["allow_missing"] = True
    return signature


def _require_fitted(model: Any) -> None:
    """An unfitted estimator has predict() too, but every call would fail."""
    from sklearn.base import BaseEstimator
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if not isinstance(model, BaseEstimator):
        return
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise InvalidInput(
            f"the artifact is an unfitted {type(model).__name__}: fit it before registering",
            {"artifact": "estimator is not fitted"},
        ) from None


# What an onnxruntime session holds whatever its model: ~70-80 KiB of native allocations for a
# small scikit-learn conversion (glibc's count, onnxruntime 1.32; ~33 KiB for a bare Identity
# graph). Neither the ORT file format, shared allocators nor lower optimization levels
# reduce it much (docs/performance.md, Memory).
ONNX_SESSION_BYTES = 80 * 1024
# Python objects around a numpy-served linear model (plan, servable, bound methods).
NATIVE_OVERHEAD_BYTES = 4 * 1024


def estimate_nbytes(model: Any, artifact_size: int) -> int:
    """Memory a loaded model holds, for the cache's byte bound.

    scikit-learn estimators hold their weight in arrays that pickle copies verbatim, so the
    pickled size is a close, cheap estimate. An ONNX session holds its graph (about twice the
    file) plus its fixed cost; a numpy-served linear model, its arrays plus the Python objects
    around them; other objects fall back to twice the artifact.
    """
    if isinstance(model, OnnxModel):
        sessions = 1 if model.complete_rows_session is None else 2
        return sessions * (2 * artifact_size + ONNX_SESSION_BYTES)
    if isinstance(model, NativeLinear):
        return model.nbytes + NATIVE_OVERHEAD_BYTES
    if isinstance(model, BoosterModel):
        return model.nbytes
    try:
        return max(len(pickle.dumps(model, protocol=5)), artifact_size)
    except Exception:  # an unpicklable object only loses the estimate
        return 2 * artifact_size


class OnnxModel:
    """An onnxruntime session with the predict/predict_proba surface of an estimator."""

    def __init__(self, session: Any, complete_rows_session: Any = None) -> None:
        self.session = session
        # The same graph without missing-value tracking, for batches without NaN
        # (serving/complete_rows.py); None when it would not be faster or not the same.
        self.complete_rows_session = complete_rows_session
        inputs = session.get_inputs()
        self._inputs = [(i.name, i.type, i.shape) for i in inputs]
        self._outputs = [o.name for o in session.get_outputs()]
        self._float32 = all(t == "tensor(float)" for _, t, _ in self._inputs)
        self._bool_labels = False

    def label_classes(self, classes: Sequence[Any] | None) -> None:
        """Converters emit boolean class labels as 0/1 integers: give them back as booleans."""
        self._bool_labels = classes is not None and np.asarray(classes).dtype == bool

    @classmethod
    def load(cls, model: bytes, *, threads: int = 1) -> OnnxModel:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Per-session memory: the CPU arena keeps freed buffers for reuse and the extended
        # graph optimizations (fusions for neural networks) build more; neither buys anything
        # measurable for the ML operators scikit-learn converts to (docs/performance.md).
        options.enable_cpu_mem_arena = False
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        parsed = check_onnx_inline(model)
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        untracked = without_missing_tracks(parsed)
        complete = (
            None
            if untracked is None
            else ort.InferenceSession(untracked, options, providers=["CPUExecutionProvider"])
        )
        return cls(session, complete)

    def signature(self) -> dict[str, Any]:
        signature: dict[str, Any] = {}
        if len(self._inputs) == 1:
            shape = self._inputs[0][2]
            if len(shape) == 2 and isinstance(shape[1], int):
                signature["n_features"] = shape[1]
        else:
            signature["feature_names"] = [name for name, _, _ in self._inputs]
            signature["n_features"] = len(self._inputs)
        signature["methods"] = (
            ["predict", "predict_proba"] if len(self._outputs) > 1 else ["predict"]
        )
        return signature

    def _feed(self, X: Any) -> dict[str, Any]:
        array = np.asarray(X, dtype=np.float32 if self._float32 else np.float64)
        if len(self._inputs) == 1:
            return {self._inputs[0][0]: array}
        return {name: array[:, [i]] for i, (name, _, _) in enumerate(self._inputs)}

    def _run(self, index: int, X: Any) -> np.ndarray:
        feed = self._feed(X)
        session = self.session
        if self.complete_rows_session is not None and not any(
            np.isnan(array).any() for array in feed.values()
        ):
            session = self.complete_rows_session
        result = session.run([self._outputs[index]], feed)[0]
        if isinstance(result, list):  # ZipMap output: a list of {class: probability}
            return np.array([list(row.values()) for row in result])
        return np.asarray(result)

    def predict(self, X: Any) -> np.ndarray:
        result = self._run(0, X)
        if result.ndim == 2 and result.shape[1] == 1:
            result = result.ravel()
        return result.astype(bool) if self._bool_labels else result

    def predict_proba(self, X: Any) -> np.ndarray:
        if len(self._outputs) < 2:
            raise AttributeError("this ONNX model has no probability output")
        return self._run(1, X)
