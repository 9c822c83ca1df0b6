"""Consistency of the fitted arrays that compiled predict code indexes by the estimator's own
counts: libsvm's support vectors, neighbors' training data, k-means centers, splines.

Each of these reads (or writes) memory by a count taken from one attribute while the array it
indexes comes from another; a file that makes them disagree turns predict into an
out-of-bounds read of the heap, or a write. The checks compare them with the estimator's
validated input width (n_features_in_), and cap the sizes that decide predict's cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.safeload.errors import refuse

MAX_SPLINE_DEGREE = 30
MAX_POLYNOMIAL_OUTPUTS = 10_000_000
# Argument dictionaries passed to a function at predict time may hold only plain values.
KWARG_ATTRIBUTES = ("kw_args", "inv_kw_args", "func_kwargs", "kwargs")


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(np.shape(value))


def check_libsvm(model: Any, width: int) -> None:
    """SVC, NuSVC, SVR, NuSVR, OneClassSVM: libsvm trusts every count it is given."""
    support = np.asarray(model.support_)
    n_support = np.asarray(model._n_support)
    vectors = model.support_vectors_
    samples = int(model.shape_fit_[0])
    n = len(support)
    if support.dtype != np.int32 or support.ndim != 1:
        raise refuse("support vector model", "support_ is not a vector of int32")
    if n and (support.min() < 0 or support.max() >= samples):
        raise refuse("support vector model", "a support index outside the training set")
    classifier = hasattr(model, "classes_")
    if n_support.ndim != 1 or np.any(n_support < 0) or len(n_support) < 2:
        raise refuse("support vector model", "_n_support is not a count per class")
    if (classifier and int(n_support.sum()) != n) or (not classifier and n_support.max() > n):
        raise refuse("support vector model", "_n_support disagrees with support_")
    precomputed = model.kernel == "precomputed"
    rows = _shape(vectors)[:1]
    if not (
        (precomputed and rows in ((0,), (n,)) and samples == width)
        or (not precomputed and _shape(vectors) == (n, width))
    ):
        raise refuse(
            "support vector model", "support_vectors_ disagree with support_ or the input width"
        )
    classes = len(n_support) if classifier else 2
    pairs = classes * (classes - 1) // 2
    if _shape(model._dual_coef_) != (classes - 1, n):
        raise refuse("support vector model", "dual coefficients disagree with support_")
    if np.asarray(model._intercept_).size != pairs:
        raise refuse("support vector model", "intercepts disagree with the classes")
    for name in ("_probA", "_probB"):
        value = np.asarray(getattr(model, name, np.empty(0)))
        if value.size not in (0, pairs):
            raise refuse("support vector model", f"{name} disagrees with the classes")


def check_neighbors(model: Any, width: int) -> None:
    fitted = model._fit_X
    samples = int(model.n_samples_fit_)
    if _shape(fitted)[:1] != (samples,):
        raise refuse("neighbors model", "its training data disagrees with n_samples_fit_")
    metric = getattr(model, "effective_metric_", getattr(model, "metric", None))
    if metric == "precomputed":
        if width != samples:
            raise refuse("neighbors model", "a precomputed metric wider than its training set")
    elif np.ndim(fitted) != 2 or _shape(fitted)[1] != width:
        raise refuse("neighbors model", "its training data disagrees with the input width")
    labels = getattr(model, "_y", None)
    if labels is not None and len(labels) != samples:
        raise refuse("neighbors model", "its labels disagree with its training data")
    k = getattr(model, "n_neighbors", None)
    if isinstance(k, int | np.integer) and not 0 < k <= samples:
        raise refuse("neighbors model", "n_neighbors exceeds its training set")


def check_centers(model: Any, width: int) -> None:
    centers = np.asarray(model.cluster_centers_)
    if centers.ndim != 2 or centers.shape[1] != width or centers.dtype.kind != "f":
        raise refuse("clustering model", "cluster_centers_ disagree with the input width")
    clusters = getattr(model, "n_clusters", None)
    if isinstance(clusters, int | np.integer) and centers.shape[0] != clusters:
        raise refuse("clustering model", "cluster_centers_ disagree with n_clusters")


def check_splines(model: Any, width: int) -> None:
    from scipy.interpolate import BSpline

    splines = model.bsplines_
    degree = model.degree
    if not isinstance(degree, int | np.integer) or not 0 <= degree <= MAX_SPLINE_DEGREE:
        raise refuse("spline transformer", f"degree must be 0..{MAX_SPLINE_DEGREE}")
    if len(splines) != width:
        raise refuse("spline transformer", "one spline per input feature is expected")
    outputs = None
    for spline in splines:
        t, c, k = np.asarray(spline.t), np.asarray(spline.c), spline.k
        if k != degree or t.ndim != 1 or not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
            raise refuse("spline transformer", "a spline's knots or degree are inconsistent")
        if c.ndim != 2 or c.shape[0] != len(t) - k - 1 or (outputs not in (None, c.shape[1])):
            raise refuse("spline transformer", "a spline's coefficients disagree with its knots")
        outputs = c.shape[1]
        try:
            BSpline(t, c, k, extrapolate=spline.extrapolate)  # scipy's own checks
        except (ValueError, TypeError) as error:
            raise refuse("spline transformer", str(error)[:200]) from None


def check_polynomial(model: Any, width: int) -> None:
    from math import comb

    low, high = model._min_degree, model._max_degree
    degree = model.degree
    expected_high = degree[1] if isinstance(degree, tuple) else degree
    if not isinstance(high, int | np.integer) or high != expected_high or not 0 <= low <= high:
        raise refuse("polynomial features", "its degrees disagree with its parameters")
    outputs = comb(width + high, high)
    if outputs > MAX_POLYNOMIAL_OUTPUTS or model.n_output_features_ > outputs:
        raise refuse(
            "polynomial features", f"it would produce more than {MAX_POLYNOMIAL_OUTPUTS:,} features"
        )


def check_gradient_boosting(model: Any) -> None:
    """predict_stages writes tree k's output to column k of an array as wide as
    n_trees_per_iteration_, for every k the estimators_ array has, unchecked."""
    from sklearn.tree import DecisionTreeRegressor

    members = model.estimators_
    trees = model.n_trees_per_iteration_
    classes = getattr(model, "n_classes_", None)
    expected = 1 if classes is None or classes <= 2 else classes
    if trees != expected:
        raise refuse("gradient boosting", "n_trees_per_iteration_ disagrees with the classes")
    if not isinstance(members, np.ndarray) or members.ndim != 2 or members.shape[1] != trees:
        raise refuse("gradient boosting", "estimators_ is not one row of trees per stage")
    for member in members.ravel():
        if not isinstance(member, DecisionTreeRegressor) or not hasattr(member, "tree_"):
            raise refuse("gradient boosting", "a stage holds something other than a tree")
        if member.tree_.n_outputs != 1 or member.tree_.max_n_classes != 1:
            raise refuse("gradient boosting", "a stage's tree has more than one output")


def check_one_hot(model: Any) -> None:
    """transform sizes its sparse output by _n_features_outs without checking the indices."""
    if model._n_features_outs != model._compute_n_features_outs():
        raise refuse("one-hot encoder", "its output widths disagree with its categories")


def check_kwargs(obj: Any) -> None:
    """Arguments passed to a function at predict time: plain values only, no n_jobs."""
    for name in KWARG_ATTRIBUTES:
        arguments = vars(obj).get(name)
        if not arguments:
            continue
        if not isinstance(arguments, dict):
            raise refuse("model", f"{name} is not a dictionary")
        for key, value in arguments.items():
            if key == "n_jobs" or not isinstance(value, str | int | float | bool | type(None)):
                raise refuse("model", f"{name}[{key!r}] must be a plain value (and never n_jobs)")


def check_estimator(obj: Any, width: int | None) -> None:
    """The per-estimator consistency checks, for the estimators that need them."""
    from sklearn.ensemble._gb import BaseGradientBoosting
    from sklearn.neighbors._base import NeighborsBase
    from sklearn.preprocessing import OneHotEncoder, PolynomialFeatures, SplineTransformer
    from sklearn.svm._base import BaseLibSVM

    attributes = vars(obj)
    check_kwargs(obj)
    fitted = isinstance(width, int)
    if isinstance(obj, BaseLibSVM) and "support_" in attributes:
        _need_width(fitted, "support vector model")
        check_libsvm(obj, width)
    elif isinstance(obj, NeighborsBase) and "_fit_X" in attributes:
        _need_width(fitted, "neighbors model")
        check_neighbors(obj, width)
    elif isinstance(obj, SplineTransformer) and "bsplines_" in attributes:
        _need_width(fitted, "spline transformer")
        check_splines(obj, width)
    elif isinstance(obj, PolynomialFeatures) and "_max_degree" in attributes:
        _need_width(fitted, "polynomial features")
        check_polynomial(obj, width)
    if isinstance(obj, BaseGradientBoosting) and "estimators_" in attributes:
        check_gradient_boosting(obj)
    if isinstance(obj, OneHotEncoder) and "_n_features_outs" in attributes:
        check_one_hot(obj)
    if "cluster_centers_" in attributes and hasattr(obj, "predict"):
        _need_width(fitted, "clustering model")
        check_centers(obj, width)


def _need_width(fitted: bool, what: str) -> None:
    if not fitted:
        raise refuse(what, "no n_features_in_ declares its input width")
