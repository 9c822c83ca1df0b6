"""The allowlist is not a toy: every scikit-learn estimator that fits with its defaults, and
the composite models people ship, load through the safe skops and joblib loaders, pass the
structure checks and predict what they predicted before they were saved."""

from __future__ import annotations

import io
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
from sklearn.ensemble import (
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    IsolationForest,
    RandomForestClassifier,
    StackingClassifier,
    VotingRegressor,
)
from sklearn.feature_selection import SelectKBest, mutual_info_classif
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, WhiteKernel
from sklearn.linear_model import LogisticRegression, Ridge, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, SplineTransformer, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils import all_estimators

from serving.safeload.pickle_files import load_pickle
from serving.safeload.skops_files import load_skops
from serving.safeload.structure import check_model_structure

RNG = np.random.default_rng(0)
X = RNG.random((60, 4))
Y_CLASS = (X[:, 0] + X[:, 1] > 1).astype(int)
Y_REG = X @ [1.0, 2.0, 3.0, 4.0]
FRAME = pd.DataFrame({"size": X[:, 0], "age": X[:, 1], "city": RNG.choice(["a", "b", "c"], 60)})

# skops cannot write these at all (its own limitation, not the allowlist's)
SKOPS_UNSUPPORTED = {"Birch"}


def _outputs(model, data):
    for method in ("predict_proba", "predict", "transform", "score_samples"):
        if hasattr(model, method):
            try:
                result = getattr(model, method)(data)
            except Exception:  # e.g. predict on a transformer-only estimator
                continue
            return np.asarray(result.toarray() if hasattr(result, "toarray") else result)
    return None


def _assert_same_model(original, loaded, data):
    check_model_structure(loaded)
    expected, got = _outputs(original, data), _outputs(loaded, data)
    if expected is not None and expected.dtype.kind in "fiub":
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    elif expected is not None:
        assert (got == expected).all()


def _round_trip(model, data, *, skops_too: bool = True):
    if skops_too:
        _assert_same_model(model, load_skops(skops.io.dumps(model)), data)
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    _assert_same_model(model, load_pickle(io.BytesIO(buffer.getvalue())), data)


DEFAULT_ESTIMATORS = [
    pytest.param(cls, id=name)
    for name, cls in all_estimators(
        type_filter=["classifier", "regressor", "transformer", "cluster"]
    )
]


@pytest.mark.parametrize("cls", DEFAULT_ESTIMATORS)
def test_every_estimator_fitted_with_defaults_loads_safely(cls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = cls()
            target = Y_REG if getattr(model, "_estimator_type", None) == "regressor" else Y_CLASS
            model.fit(X, target)
        except Exception:
            pytest.skip("needs constructor arguments or another kind of data")
        _round_trip(model, X, skops_too=cls.__name__ not in SKOPS_UNSUPPORTED)


COMPOSITES = {
    "column-transformer-on-a-frame": (
        make_pipeline(
            ColumnTransformer(
                [
                    ("num", StandardScaler(), ["size", "age"]),
                    ("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]),
                ]
            ),
            LogisticRegression(),
        ),
        FRAME,
        Y_CLASS,
    ),
    "hist-gradient-boosting-categorical": (
        HistGradientBoostingClassifier(max_iter=5, categorical_features=[3]),
        np.column_stack([X[:, :3], RNG.integers(0, 4, 60)]),
        Y_CLASS,
    ),
    "kd-tree-neighbors": (KNeighborsClassifier(3, algorithm="kd_tree"), X, Y_CLASS),
    "ball-tree-manhattan": (
        KNeighborsClassifier(3, algorithm="ball_tree", metric="manhattan"),
        X,
        Y_CLASS,
    ),
    "forest": (RandomForestClassifier(5, max_depth=4, random_state=0), X, Y_CLASS),
    "boosting": (GradientBoostingRegressor(n_estimators=5, random_state=0), X, Y_REG),
    "select-k-best-mutual-info": (
        make_pipeline(SelectKBest(mutual_info_classif, k=2), DecisionTreeClassifier()),
        X,
        Y_CLASS,
    ),
    "stacking": (
        StackingClassifier([("lr", LogisticRegression()), ("tree", DecisionTreeClassifier())]),
        X,
        Y_CLASS,
    ),
    "voting": (
        VotingRegressor([("ridge", Ridge()), ("gb", GradientBoostingRegressor(n_estimators=3))]),
        X,
        Y_REG,
    ),
    "calibrated-svc": (CalibratedClassifierCV(LinearSVC()), X, Y_CLASS),
    "log-target": (
        TransformedTargetRegressor(Ridge(), func=np.log1p, inverse_func=np.expm1),
        X,
        Y_REG,
    ),
    "splines": (make_pipeline(SplineTransformer(), Ridge()), X, Y_REG),
    "gaussian-process": (GaussianProcessRegressor(RBF() + WhiteKernel()), X, Y_REG),
    "sgd-log-loss": (SGDClassifier(loss="log_loss", random_state=0), X, Y_CLASS),
    "isolation-forest": (IsolationForest(n_estimators=5, random_state=0), X, None),
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_composite_models_load_safely(name):
    model, data, target = COMPOSITES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(data, target)
        _round_trip(model, data)
