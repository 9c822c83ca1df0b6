"""Hostile models made only of allowlisted classes: attribute values that reach code, files or
memory at predict time. Each is refused at load with the reason, from skops and joblib."""

from __future__ import annotations

import io
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import skops.io
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    StackingRegressor,
)
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import DistanceMetric
from sklearn.multioutput import MultiOutputRegressor
from sklearn.neighbors import BallTree
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.tree import DecisionTreeRegressor

from registry.errors import InvalidInput
from serving.formats import deserialize
from serving.safeload import TrustPolicy

RNG = np.random.default_rng(0)
X = RNG.random((30, 3))
Y = X @ [1.0, 2.0, 3.0]
TRUST = TrustPolicy(allow_pickle=True)


def _load(model, fmt: str):
    if fmt == "skops":
        data = skops.io.dumps(model)
    elif fmt == "pickle":  # what joblib cannot write, a plain pickle can carry
        data, fmt = pickle.dumps(model, protocol=4), "joblib"
    else:
        buffer = io.BytesIO()
        joblib.dump(model, buffer)
        data = buffer.getvalue()
    return deserialize(io.BytesIO(data), fmt, trust=TRUST)


def _stacking_calling(method: str):
    model = StackingRegressor([("a", LinearRegression())], final_estimator=LinearRegression())
    model.fit(X, Y)
    model.estimators_ = [np.array([b"payload"])]
    model.stack_method_ = [method]
    return model


def _vectorizer_reading_files():
    vectorizer = CountVectorizer(vocabulary=["root", "bin"])
    model = make_pipeline(ColumnTransformer([("v", vectorizer, "path")]), LinearRegression())
    model.fit(pd.DataFrame({"path": ["root bin", "bin", "root"] * 3}), RNG.random(9))
    model[0].transformers_[0][1].input = "filename"
    return model


def _sparse_coef_outside_its_shape():
    model = LinearRegression().fit(X, Y)
    coef = sp.csr_matrix(model.coef_.reshape(1, -1))
    coef.indices = np.array([0, 1, 2**31 - 1], np.int32)
    model.coef_ = coef
    return model


def _tree_wider_than_its_estimator():
    model = DecisionTreeRegressor(max_depth=2).fit(X, Y)
    model.n_features_in_ = 1
    return model


def _boosting_member_wider_than_the_ensemble():
    model = GradientBoostingRegressor(n_estimators=2, max_depth=2).fit(X, Y)
    model.n_features_in_ = 1
    return model


def _categorical_split_outside_the_bin_mapper():
    data = np.c_[RNG.integers(0, 4, 200), RNG.random(200)]
    model = HistGradientBoostingRegressor(max_iter=1, categorical_features=[0], max_depth=2)
    model.fit(data, (data[:, 0] == 2) * 1.0)
    model._bin_mapper.is_categorical_ = np.array([True])
    model._bin_mapper.bin_thresholds_ = model._bin_mapper.bin_thresholds_[:1]
    return model


def _known_category_past_the_bitset():
    data = np.c_[RNG.integers(0, 4, 200), RNG.random(200)]
    model = HistGradientBoostingRegressor(max_iter=1, categorical_features=[0], max_depth=2)
    model.fit(data, (data[:, 0] == 2) * 1.0)
    categorical = int(np.flatnonzero(model._bin_mapper.is_categorical_)[0])
    model._bin_mapper.bin_thresholds_[categorical] = np.array([0.0, 1e9])
    return model


def _mahalanobis_matrix_of_the_wrong_shape():
    tree = BallTree(RNG.random((4, 50)))
    state = list(tree.__getstate__())
    metric = DistanceMetric.get_metric("mahalanobis", VI=np.eye(2))
    metric_state = list(metric.__getstate__())
    metric_state[2] = np.ones((50, 1))
    metric.__setstate__(tuple(metric_state))
    state[11] = metric
    tree.__setstate__(tuple(state))
    return tree


def _classes_of_zero_byte_elements():
    model = LogisticRegression().fit(X, Y.mean() < Y)
    model.classes_ = np.ndarray((10**9,), dtype="V0")
    return model


ATTACKS = {
    "stacking-calls-ndarray-tofile": (lambda: _stacking_calling("tofile"), "tofile"),
    "function-transformer-holds-bytes": (
        lambda: FunctionTransformer(bytes).fit(X),
        "builtins.bytes",
    ),
    "vectorizer-opens-request-paths": (_vectorizer_reading_files, "filename"),
    "sparse-index-outside-the-shape": (_sparse_coef_outside_its_shape, "sparse matrix"),
    "tree-wider-than-its-estimator": (_tree_wider_than_its_estimator, "decision tree"),
    "boosting-member-wider": (_boosting_member_wider_than_the_ensemble, "width"),
    "categorical-split-outside-bin-mapper": (
        _categorical_split_outside_the_bin_mapper,
        "bin mapper",
    ),
    "known-category-past-the-bitset": (_known_category_past_the_bitset, "0..255"),
    "metric-matrix-of-the-wrong-shape": (_mahalanobis_matrix_of_the_wrong_shape, "square"),
    "classes-of-zero-byte-elements": (_classes_of_zero_byte_elements, "zero bytes"),
}
SKOPS_CANNOT_WRITE = {"metric-matrix-of-the-wrong-shape", "classes-of-zero-byte-elements"}
JOBLIB_CANNOT_WRITE = {"classes-of-zero-byte-elements"}


@pytest.mark.parametrize("fmt", ["skops", "joblib"])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_an_allowlisted_model_with_a_hostile_attribute_is_refused(attack, fmt):
    build, reason = ATTACKS[attack]
    if attack in SKOPS_CANNOT_WRITE:
        fmt = {"skops": "pickle"}.get(fmt, fmt)  # skops refuses to write these itself
    if attack in JOBLIB_CANNOT_WRITE and fmt == "joblib":
        fmt = "pickle"
    with pytest.raises(InvalidInput, match=reason):
        _load(build(), fmt)


@pytest.mark.parametrize("fmt", ["skops", "joblib"])
def test_n_jobs_never_starts_processes_at_predict(fmt):
    model = MultiOutputRegressor(LinearRegression()).fit(X, np.c_[Y, -Y])
    model.n_jobs = 16
    loaded = _load(model, fmt)
    assert loaded.n_jobs is None
    np.testing.assert_allclose(loaded.predict(X[:2]), model.predict(X[:2]))


class _ForgedDtype:
    def __init__(self, *state):
        self.state = state

    def __reduce__(self):
        return (np.dtype, ("O8", False, True), self.state)


class _ArrayOf:
    def __init__(self, dtype, raw: bytes):
        self.dtype, self.raw = dtype, raw

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), self.dtype, False, self.raw))


@pytest.mark.parametrize(
    "dtype",
    [
        _ForgedDtype(3, "|", None, None, None, -1, -1, 0),  # an object dtype without its flags
        _ForgedDtype(3, "|", None, ("a",), {"a": (np.dtype("f8"), 1 << 40)}, 8, 1, 0),
    ],
    ids=["object-pointers-from-bytes", "field-far-past-the-item"],
)
def test_a_pickled_dtype_numpy_would_not_build_is_refused(dtype):
    model = LinearRegression().fit(X, Y)
    model.evil = _ArrayOf(dtype, (0x4141414141414141).to_bytes(8, "little"))
    with pytest.raises(InvalidInput, match="dtype"):
        deserialize(io.BytesIO(pickle.dumps(model, protocol=4)), "joblib", trust=TRUST)
    assert np.dtype("O").hasobject and np.dtype("O").flags != 0  # the shared dtype is intact


def test_a_pickle_cannot_set_attributes_on_a_shared_class():
    """BUILD on a class object would replace LinearRegression.predict for every model in the
    process; the stream below is the class, then the state (None, {"predict": positive})."""
    original = LinearRegression.predict
    hostile = b"csklearn.linear_model._base\nLinearRegression\n(N(Vpredict\ncnumpy\npositive\ndtb."
    with pytest.raises(InvalidInput, match="class or function"):
        deserialize(io.BytesIO(hostile), "joblib", trust=TRUST)
    assert LinearRegression.predict is original


# --- second review: counts that compiled predict code trusts ---------------------------------


def _svc_support_outside_training_set():
    from sklearn.svm import SVC

    model = SVC(kernel="precomputed").fit(X @ X.T, Y.mean() < Y)
    model.support_ = model.support_.copy()
    model.support_[0] = 2**20
    return model


def _neighbors_data_narrower_than_input():
    from sklearn.neighbors import KNeighborsRegressor

    model = KNeighborsRegressor(2, algorithm="brute").fit(X, Y)
    model._fit_X = model._fit_X[:, :1].copy()
    model.n_features_in_ = 200_000
    return model


def _kmeans_centers_wider_than_input():
    from sklearn.cluster import KMeans

    model = KMeans(2, n_init=1, random_state=0).fit(X)
    model.cluster_centers_ = np.zeros((2, 1000))
    return model


def _spline_coefficients_short_of_their_knots():
    from scipy.interpolate import BSpline
    from sklearn.preprocessing import SplineTransformer

    model = SplineTransformer().fit(X)
    spline = model.bsplines_[0]
    model.bsplines_[0] = BSpline.construct_fast(spline.t, spline.c[:1], spline.k)
    return model


def _polynomial_degree_of_a_billion():
    from sklearn.preprocessing import PolynomialFeatures

    model = PolynomialFeatures(2).fit(X)
    model._max_degree = model.degree = 10**9
    return model


def _kmeans_step_as_a_transform():
    from sklearn.cluster._kmeans import _kmeans_single_lloyd

    return FunctionTransformer(_kmeans_single_lloyd).fit(X)


def _array_arguments_to_a_function():
    return FunctionTransformer(np.add, kw_args={"out": np.zeros(1)}).fit(X)


def _n_jobs_as_a_function_argument():
    return FunctionTransformer(np.sum, kw_args={"n_jobs": 8}).fit(X)


COUNT_ATTACKS = {
    "svc-support-index-outside-training-set": (_svc_support_outside_training_set, "support"),
    "neighbors-data-narrower-than-input": (_neighbors_data_narrower_than_input, "width"),
    "kmeans-centers-wider-than-input": (_kmeans_centers_wider_than_input, "cluster_centers_"),
    "spline-coefficients-short-of-knots": (_spline_coefficients_short_of_their_knots, "spline"),
    "polynomial-degree-of-a-billion": (_polynomial_degree_of_a_billion, "polynomial"),
    "kmeans-step-as-a-transform": (_kmeans_step_as_a_transform, "fitting function"),
    "array-arguments-to-a-function": (_array_arguments_to_a_function, "plain value"),
    "n-jobs-as-a-function-argument": (_n_jobs_as_a_function_argument, "n_jobs"),
}


@pytest.mark.parametrize("fmt", ["skops", "joblib"])
@pytest.mark.parametrize("attack", sorted(COUNT_ATTACKS))
def test_a_model_whose_counts_disagree_is_refused(attack, fmt):
    build, reason = COUNT_ATTACKS[attack]
    with pytest.raises(InvalidInput, match=reason):
        _load(build(), fmt)


@pytest.mark.parametrize(
    "stream",
    [
        b"\x80\x04cbuiltins\nbytearray\nJ\x00^\xd0\xb2\x85R.",  # bytearray(3_000_000_000)
        b"\x80\x04cnumpy\nndarray\nK@\x85R.",  # numpy.ndarray(64): uninitialized memory
        b"\x80\x04cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\nK@\x85C\x01b\x87R.",
    ],
    ids=["bytearray-of-3-GB", "uninitialized-ndarray", "reconstruct-with-a-shape"],
)
def test_a_pickle_may_not_size_an_allocation(stream):
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="calls"):
            deserialize(io.BytesIO(stream), "joblib", trust=TRUST)
        assert tracemalloc.get_traced_memory()[1] < 64 * 1024**2
    finally:
        tracemalloc.stop()


def test_a_compressed_joblib_file_is_bounded_while_it_inflates():
    from serving.safeload import SkopsLimits

    buffer = io.BytesIO()
    joblib.dump(np.zeros(8 * 1024**2), buffer, compress=3)  # 64 MiB of zeros, ~70 KB stored
    limits = SkopsLimits(max_uncompressed_bytes=16 * 1024**2)
    with pytest.raises(InvalidInput, match="inflates"):
        deserialize(
            io.BytesIO(buffer.getvalue()),
            "joblib",
            trust=TrustPolicy(allow_pickle=True, skops_limits=limits),
        )


def test_a_file_that_breaks_the_build_is_a_422_not_a_crash():
    model = HistGradientBoostingRegressor(max_iter=2).fit(X, Y)
    model._bin_mapper.bin_thresholds_ = 5
    with pytest.raises(InvalidInput):
        _load(model, "joblib")


# --- third review ----------------------------------------------------------------------------


def test_gradient_boosting_stages_must_match_the_trees_per_iteration():
    """predict_stages writes tree k into column k of an (n, n_trees_per_iteration_) array."""
    model = GradientBoostingRegressor(n_estimators=2, max_depth=2, init="zero").fit(X, Y)
    tree = model.estimators_[0, 0]
    wide = np.empty((1, 64), dtype=object)
    wide[:] = tree
    model.estimators_ = wide
    with pytest.raises(InvalidInput, match="one row of trees per stage"):
        _load(model, "joblib")


def test_a_one_hot_encoder_must_size_its_output_by_its_categories():
    from sklearn.preprocessing import OneHotEncoder

    model = OneHotEncoder().fit(RNG.integers(0, 3, (20, 2)))
    model._n_features_outs = [0, 0]
    with pytest.raises(InvalidInput, match="one-hot"):
        _load(model, "joblib")


def test_a_graph_shared_under_many_widths_is_not_walked_once_per_width():
    """Owners of W distinct widths sharing one subgraph: the walk stays linear."""
    from sklearn.gaussian_process.kernels import RBF
    from sklearn.preprocessing import StandardScaler

    shared = RBF()
    owners = []
    for width in range(1, 201):
        scaler = StandardScaler()
        scaler.n_features_in_ = width
        scaler.shared = [shared, [None] * 1000]
        owners.append(scaler)
    with pytest.raises(InvalidInput, match="too many widths"):  # refused at the ninth
        _load(owners, "joblib")
