"""serving.missing: which fitted models accept NaN, as scikit-learn's tags and pipelines say."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from serving.formats import infer_signature
from serving.missing import accepts_missing

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 3))
Y = X[:, 0] * 2 + 1
LABELS = np.where(X[:, 1] > 0, "a", "b")

CASES = {
    "linear": (LinearRegression(), Y, False),
    "hist-gradient-boosting": (HistGradientBoostingRegressor(max_iter=5), Y, True),
    "hist-gradient-boosting-classifier": (HistGradientBoostingClassifier(max_iter=5), LABELS, True),
    "imputer-first": (make_pipeline(SimpleImputer(), LinearRegression()), Y, True),
    "scaler-then-imputer": (
        make_pipeline(StandardScaler(), SimpleImputer(), LogisticRegression()),
        LABELS,
        True,
    ),
    "scaler-then-linear": (make_pipeline(StandardScaler(), LinearRegression()), Y, False),
    "scaler-then-boosting": (
        make_pipeline(StandardScaler(), HistGradientBoostingRegressor(max_iter=5)),
        Y,
        True,
    ),
    "columns-imputed": (
        make_pipeline(
            ColumnTransformer([("i", SimpleImputer(), [0, 1]), ("j", SimpleImputer(), [2])]),
            LinearRegression(),
        ),
        Y,
        True,
    ),
    "columns-partly-imputed": (
        make_pipeline(
            ColumnTransformer([("i", SimpleImputer(), [0])], remainder="passthrough"),
            LinearRegression(),
        ),
        Y,
        False,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_accepts_missing_follows_what_the_model_does_with_nan(name: str) -> None:
    model, y, expected = CASES[name]
    model.fit(X, y)
    assert accepts_missing(model) is expected
    holed = X[:5].copy()
    holed[0, 2] = np.nan  # a column every case passes on to its model
    if expected:  # the inference is only ever "yes" when predict really takes NaN
        assert len(model.predict(holed)) == 5
    else:
        with pytest.raises(ValueError):
            model.predict(holed)
    signature = infer_signature(model)
    assert signature.get("allow_missing", False) is expected
