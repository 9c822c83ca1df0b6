"""serving.trees: float64 TreeEnsemble graphs answer as scikit-learn does, NaN included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

from serving.formats import OnnxModel
from serving.trees import tree_ensemble_onnx

RNG = np.random.default_rng(5)
X = RNG.normal(size=(150, 4))
Y = X @ np.array([1.5, -2.0, 0.25, 3.0]) + 7
HOLED = X.copy()
HOLED[RNG.random(X.shape) < 0.15] = np.nan
PROBE = RNG.normal(size=(60, 4))
PROBE_HOLED = PROBE.copy()
PROBE_HOLED[RNG.random(PROBE.shape) < 0.3] = np.nan

REGRESSORS = {
    "tree": lambda: DecisionTreeRegressor(max_depth=6, random_state=0).fit(HOLED, Y),
    "tree-fitted-without-nan": lambda: DecisionTreeRegressor(max_depth=6).fit(X, Y),
    "forest": lambda: RandomForestRegressor(n_estimators=15, random_state=0).fit(HOLED, Y),
    "extra-trees": lambda: ExtraTreesRegressor(n_estimators=10, random_state=0).fit(X, Y),
    "two-targets": lambda: RandomForestRegressor(n_estimators=5, random_state=0).fit(
        X, np.column_stack([Y, -Y])
    ),
    "boosting": lambda: GradientBoostingRegressor(n_estimators=30, random_state=0).fit(X, Y),
    "hist-boosting": lambda: HistGradientBoostingRegressor(max_iter=30).fit(HOLED, Y),
    "stump": lambda: DecisionTreeRegressor().fit(X, np.ones(len(X))),  # a single leaf
}


def _served(model) -> OnnxModel:
    built = tree_ensemble_onnx(model, X.shape[1])
    assert built is not None
    served = OnnxModel.load(built)
    served.label_classes(getattr(model, "classes_", None))
    return served


@pytest.mark.parametrize("name", list(REGRESSORS))
def test_regressors_answer_in_float64_as_scikit_learn_does(name):
    model = REGRESSORS[name]()
    served = _served(model)
    rows = PROBE if name in ("extra-trees", "two-targets", "boosting") else PROBE_HOLED
    got = served.predict(rows)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, model.predict(rows), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "labels",
    [np.where(Y > 7, "high", "low"), np.digitize(Y, [0, 7, 14]), Y > 7],
    ids=["strings", "integers", "booleans"],
)
@pytest.mark.parametrize("forest", [True, False])
def test_classifiers_give_exact_labels_and_float64_probabilities(labels, forest):
    estimator = (
        RandomForestClassifier(n_estimators=10, random_state=0)
        if forest
        else (DecisionTreeClassifier(max_depth=5, random_state=0))
    )
    model = estimator.fit(HOLED, labels)
    served = _served(model)
    assert served.predict(PROBE_HOLED).tolist() == model.predict(PROBE_HOLED).tolist()
    np.testing.assert_allclose(
        served.predict_proba(PROBE_HOLED), model.predict_proba(PROBE_HOLED), rtol=1e-12, atol=1e-15
    )


def test_what_it_does_not_know_is_left_to_skl2onnx():
    assert tree_ensemble_onnx(GradientBoostingClassifier(n_estimators=3).fit(X, Y > 7), 4) is None
    absolute = GradientBoostingRegressor(loss="absolute_error", n_estimators=3).fit(X, Y)
    assert tree_ensemble_onnx(absolute, 4) is None
    poisson = HistGradientBoostingRegressor(loss="poisson", max_iter=3).fit(X, np.abs(Y))
    assert tree_ensemble_onnx(poisson, 4) is None
