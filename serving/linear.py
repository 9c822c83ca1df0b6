"""Linear models served with numpy: scikit-learn's own arithmetic, without its per-call checks
and without an ONNX Runtime session.

A fitted linear model is a weight matrix and an intercept. scikit-learn spends most of a small
predict validating its input (which `serving.inputs` has already done), and an ONNX Runtime
session holds ~80 KiB of native memory whatever the model (serving.formats.ONNX_SESSION_BYTES),
several times a small model's artifact. Here a predict is `X @ coef.T + intercept`, the very
expression scikit-learn evaluates, and a cached model costs the size of its arrays. The answers
are scikit-learn's up to the order in which a BLAS kernel sums the same products: which kernel
runs depends on the input's memory layout, the row count and the thread count, so the last bit
or two may differ. `NativeLinear.error_bound` is the documented promise: each answer is within
2(n+1)·eps·(Σ|x_i·w_i| + |b|) of scikit-learn's (the rounding bound of two float64 dot
products of n terms), which is about 1e-15 relative for the usual widths.

Only exact, known classes are taken (a subclass may override predict), and only dense weights;
classes (labels) must be numbers, booleans or strings, so that the stored form needs no pickle.
Like an ONNX conversion, the form is stored content-addressed beside the original (an .npz of
the arrays), checked against the estimator at registration, verified by its sha256 at every
load, and loaded with numpy alone: a serving process never imports scikit-learn for it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["NativeLinear", "native_linear"]

# predict(X) == X @ coef_.T + intercept_ for these (LinearModel._decision_function).
_REGRESSORS = frozenset(
    {
        "ARDRegression",
        "BayesianRidge",
        "ElasticNet",
        "ElasticNetCV",
        "HuberRegressor",
        "Lars",
        "LarsCV",
        "Lasso",
        "LassoCV",
        "LassoLars",
        "LassoLarsCV",
        "LassoLarsIC",
        "LinearRegression",
        "OrthogonalMatchingPursuit",
        "OrthogonalMatchingPursuitCV",
        "Ridge",
        "RidgeCV",
        "SGDRegressor",
        "TheilSenRegressor",
    }
)
# LinearClassifierMixin.predict, and LogisticRegression.predict_proba.
_CLASSIFIERS = frozenset({"LogisticRegression", "LogisticRegressionCV"})
_MODULE = "sklearn.linear_model"


class NativeLinear:
    """predict (and predict_proba for logistic regression) of a fitted linear model."""

    __slots__ = ("_coef", "_intercept", "classes", "methods", "nbytes")

    def __init__(self, coef: np.ndarray, intercept: Any, classes: np.ndarray | None) -> None:
        # Copies in the estimator's own memory order: the estimator can be dropped, and the
        # matrix product sees the same operands as scikit-learn's (BLAS picks its kernel by
        # layout, and another kernel may round the last bit differently).
        self._coef = np.array(coef, dtype=coef.dtype, copy=True, order="K")
        self._intercept = np.array(intercept, copy=True)
        self.classes = None if classes is None else np.array(classes, copy=True)
        self.methods = ("predict",) if classes is None else ("predict", "predict_proba")
        self.nbytes = (
            self._coef.nbytes
            + self._intercept.nbytes
            + (0 if self.classes is None else self.classes.nbytes)
        )

    def to_bytes(self) -> bytes:
        """The stored form: an .npz of plain arrays (read back without pickle)."""
        arrays = {"coef": self._coef, "intercept": self._intercept}
        if self.classes is not None:
            arrays["classes"] = self.classes
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # keeps each array's memory order
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> NativeLinear:
        """Read `to_bytes` output back; ValueError if it is not such a file."""
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            names = set(stored.files)
            if not {"coef", "intercept"} <= names <= {"coef", "intercept", "classes"}:
                raise ValueError(f"not a linear model's arrays: {sorted(names)}")
            coef, intercept = stored["coef"], stored["intercept"]
            classes = stored["classes"] if "classes" in names else None
        if coef.dtype.kind != "f" or coef.ndim not in (1, 2):
            raise ValueError("unexpected weight shapes or types")
        if intercept.dtype.kind not in "fi" or intercept.ndim > 1:
            raise ValueError("unexpected weight shapes or types")
        return cls(coef, intercept, classes)

    def _scores(self, X: np.ndarray) -> np.ndarray:
        # scikit-learn's LinearModel._decision_function / LinearClassifierMixin, term for term.
        coef = self._coef
        scores = (X @ coef.T if coef.ndim == 2 else X @ coef) + self._intercept
        if scores.ndim > 1 and scores.shape[1] == 1 and self.classes is not None:
            return scores.reshape(-1)
        return scores

    def error_bound(self, X: np.ndarray) -> np.ndarray:
        """How far each score may be from scikit-learn's: both sum the same float64 products,
        perhaps in another order, so each is within (n+1)·eps·(Σ|x_i·w_i| + |b|) of the
        exact value."""
        coef = np.abs(self._coef)
        magnitude = (np.abs(X) @ coef.T if coef.ndim == 2 else np.abs(X) @ coef) + np.abs(
            self._intercept
        )
        width = coef.shape[-1]
        return 2 * (width + 1) * np.finfo(np.float64).eps * magnitude

    def predict(self, X: np.ndarray) -> np.ndarray:
        scores = self._scores(X)
        if self.classes is None:
            return scores
        if scores.ndim == 1:
            return self.classes.take((scores > 0).astype(np.intp))
        return self.classes.take(scores.argmax(axis=1))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.classes is None:
            raise AttributeError("predict_proba: not a classifier")
        scores = self._scores(X)
        if scores.ndim == 1:
            positive = _expit(scores)
            return np.stack([1 - positive, positive], axis=1)
        return _softmax(scores)


def _expit(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow, in numpy alone (scipy costs a worker ~20 MB)."""
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def native_linear(model: Any) -> NativeLinear | None:
    """The numpy form of `model`, or None when it is not a plain, dense, fitted linear model."""
    kind = type(model)
    if not kind.__module__.startswith(_MODULE):
        return None
    name = kind.__name__
    if name not in _REGRESSORS and name not in _CLASSIFIERS:
        return None
    coef = getattr(model, "coef_", None)
    intercept = getattr(model, "intercept_", None)
    if not isinstance(coef, np.ndarray) or coef.dtype.kind != "f" or coef.ndim not in (1, 2):
        return None  # unfitted, sparsified (scipy matrix) or unusual
    if intercept is None or not np.all(np.isfinite(coef)):
        return None
    if name in _CLASSIFIERS:
        classes = getattr(model, "classes_", None)
        if classes is None or coef.ndim != 2 or len(classes) < 2:
            return None
        if len(classes) == 2 and coef.shape[0] != 1:
            return None
        if len(classes) > 2 and coef.shape[0] != len(classes):
            return None
        labels = np.asarray(classes)
        if labels.dtype == object and all(type(label) is str for label in labels):
            labels = labels.astype(str)  # string labels from pandas: the same strings
        if labels.dtype.kind not in "biufU":  # other objects would need pickle to store
            return None
        return NativeLinear(coef, intercept, labels)
    return NativeLinear(coef, intercept, None)
