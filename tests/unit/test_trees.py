"""serving.trees: float64 TreeEnsemble graphs answer as scikit-learn does, NaN included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, PolynomialFeatures, StandardScaler
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
    # Every GradientBoostingRegressor loss predicts the raw score; the baseline differs.
    "boosting-absolute": lambda: GradientBoostingRegressor(
        loss="absolute_error", n_estimators=20, random_state=0
    ).fit(X, Y),
    "boosting-quantile": lambda: GradientBoostingRegressor(
        loss="quantile", alpha=0.8, n_estimators=20, random_state=0
    ).fit(X, Y),
    "boosting-zero-init": lambda: GradientBoostingRegressor(
        init="zero", n_estimators=20, random_state=0
    ).fit(X, Y),
    # Log-link losses: exp of the raw score.
    "hist-poisson": lambda: HistGradientBoostingRegressor(loss="poisson", max_iter=20).fit(
        HOLED, np.abs(Y)
    ),
}
FLOAT_INPUTS = ("extra-trees", "two-targets", "boosting", "boosting-absolute")
FLOAT_INPUTS += ("boosting-quantile", "boosting-zero-init")


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
    rows = PROBE if name in FLOAT_INPUTS else PROBE_HOLED
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


BOOSTING_CLASSIFIERS = {
    "boosting": lambda: GradientBoostingClassifier(n_estimators=20, random_state=0),
    "boosting-exponential": lambda: GradientBoostingClassifier(
        loss="exponential", n_estimators=20, random_state=0
    ),
    "boosting-zero-init": lambda: GradientBoostingClassifier(
        init="zero", n_estimators=10, random_state=0
    ),
    "hist-boosting": lambda: HistGradientBoostingClassifier(max_iter=20),
}


@pytest.mark.parametrize(
    "labels",
    [np.where(Y > 7, "high", "low"), np.digitize(Y, [0, 7, 14]), Y > 7],
    ids=["binary-strings", "three-integers", "booleans"],
)
@pytest.mark.parametrize("name", list(BOOSTING_CLASSIFIERS))
def test_boosting_classifiers_answer_in_float64_as_scikit_learn_does(name, labels):
    """Issue 14: boosting classifiers were served through skl2onnx's float32 conversion."""
    if name == "boosting-exponential" and len(np.unique(labels)) > 2:
        pytest.skip("the exponential loss is binary only")
    hist = name.startswith("hist")
    model = BOOSTING_CLASSIFIERS[name]().fit(HOLED if hist else X, labels)
    served = _served(model)
    rows = PROBE_HOLED if hist else PROBE  # histogram boosting routes NaN per node
    assert served.predict(rows).tolist() == model.predict(rows).tolist()
    proba = served.predict_proba(rows)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba, model.predict_proba(rows), rtol=1e-12, atol=1e-15)


def test_binary_boosting_labels_follow_scikit_learns_tie_rule():
    """At a raw score of exactly 0 GradientBoosting says the second class, histogram boosting
    the first ("> 0"): balanced labels and leaves that cannot split score 0 everywhere."""
    y = np.arange(len(X)) % 2
    tied = {
        1: GradientBoostingClassifier(init="zero", n_estimators=1, min_samples_leaf=len(X)),
        0: HistGradientBoostingClassifier(max_iter=1, min_samples_leaf=len(X)),
    }
    for label, estimator in tied.items():
        model = estimator.fit(X, y)
        assert set(model.predict(PROBE)) == {label}
        assert _served(model).predict(PROBE).tolist() == model.predict(PROBE).tolist()


def test_what_it_does_not_know_is_left_to_skl2onnx():
    fitted_init = GradientBoostingRegressor(init=LinearRegression(), n_estimators=3).fit(X, Y)
    assert tree_ensemble_onnx(fitted_init, 4) is None  # a baseline that depends on the row
    colors = np.column_stack([RNG.integers(0, 3, len(X)), X[:, 1:]])
    categorical = HistGradientBoostingClassifier(categorical_features=[0], max_iter=3)
    assert tree_ensemble_onnx(categorical.fit(colors, Y > 7), 4) is None  # bitset splits


PIPELINES = {
    "scaled-forest": lambda: make_pipeline(
        StandardScaler(), RandomForestRegressor(n_estimators=10, random_state=0)
    ),
    "imputed-boosting-classifier": lambda: make_pipeline(
        SimpleImputer(strategy="median"),
        MinMaxScaler(),
        GradientBoostingClassifier(n_estimators=10, random_state=0),
    ),
    "imputed-hist-boosting": lambda: make_pipeline(
        SimpleImputer(), HistGradientBoostingClassifier(max_iter=10)
    ),
}


@pytest.mark.parametrize("name", list(PIPELINES))
def test_pipelines_of_scalers_and_imputers_before_trees_answer_in_float64(name):
    model = PIPELINES[name]().fit(HOLED, Y > 7 if "classifier" in name or "hist" in name else Y)
    served = _served(model)
    if hasattr(model, "predict_proba"):
        assert served.predict(PROBE_HOLED).tolist() == model.predict(PROBE_HOLED).tolist()
        got, expected = served.predict_proba(PROBE_HOLED), model.predict_proba(PROBE_HOLED)
    else:
        got, expected = served.predict(PROBE), model.predict(PROBE)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_pipelines_with_other_steps_are_left_to_skl2onnx():
    others = make_pipeline(PolynomialFeatures(), RandomForestRegressor(n_estimators=3))
    assert tree_ensemble_onnx(others.fit(X, Y), 4) is None
    clipped = make_pipeline(MinMaxScaler(clip=True), RandomForestRegressor(n_estimators=3))
    assert tree_ensemble_onnx(clipped.fit(X, Y), 4) is None
