"""Tiny fitted XGBoost and LightGBM models for the tests, in their own file formats."""

from __future__ import annotations

import numpy as np

RNG = np.random.default_rng(19)
N_FEATURES = 5
X = RNG.normal(size=(400, N_FEATURES))
Y_REG = X @ np.array([3.0, -2.0, 0.5, 0.0, 1.0]) + 10
Y_BIN = (X[:, 0] + X[:, 1] > 0).astype(int)
Y_MULTI = Y_BIN + (X[:, 2] > 0.5).astype(int)
EXAMPLE = X[:3].tolist()


def xgb_model(kind: str, n_estimators: int = 12, max_depth: int = 3):
    import xgboost as xgb

    params = {"n_estimators": n_estimators, "max_depth": max_depth, "n_jobs": 1}
    if kind == "regressor":
        return xgb.XGBRegressor(**params).fit(X, Y_REG)
    return xgb.XGBClassifier(**params).fit(X, Y_BIN if kind == "binary" else Y_MULTI)


def lgb_model(kind: str, n_estimators: int = 12, num_leaves: int = 7):
    import lightgbm as lgb

    params = {"n_estimators": n_estimators, "num_leaves": num_leaves, "verbose": -1, "n_jobs": 1}
    if kind == "regressor":
        return lgb.LGBMRegressor(**params).fit(X, Y_REG)
    return lgb.LGBMClassifier(**params).fit(X, Y_BIN if kind == "binary" else Y_MULTI)


def model_for(fmt: str, kind: str, **params):
    return xgb_model(kind, **params) if fmt == "xgboost" else lgb_model(kind, **params)


def file_bytes(fmt: str, model, raw_format: str = "json") -> bytes:
    """The model file a data scientist saves: XGBoost JSON/UBJSON, LightGBM text."""
    if fmt == "xgboost":
        return bytes(model.get_booster().save_raw(raw_format=raw_format))
    return model.booster_.model_to_string().encode()


FILENAMES = {"xgboost": "model.json", "lightgbm": "model.txt"}
