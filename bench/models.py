"""The reference models of the shared PERFORMANCE.md, trained on synthetic data (fixed seeds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import skops.io
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

TRAIN_ROWS = 5_000
SEED = 20_240_601


@dataclass(frozen=True)
class ModelSpec:
    """One model of the matrix: what to fit, on how many features, and its registered name."""

    name: str  # registered name (URL segment)
    label: str  # for tables
    n_features: int
    task: str  # "regression" | "binary"
    make: Callable[[], Any]


@dataclass(frozen=True)
class TrainedModel:
    spec: ModelSpec
    estimator: Any
    skops_path: Path
    joblib_path: Path
    example: np.ndarray  # a small input example (2 rows), registered with the version


REFERENCE_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("bench-linear", "LinearRegression", 8, "regression", LinearRegression),
    ModelSpec(
        "bench-forest",
        "RandomForestRegressor(100 trees, depth 10)",
        8,
        "regression",
        lambda: RandomForestRegressor(n_estimators=100, max_depth=10, random_state=0),
    ),
    ModelSpec(
        "bench-logistic",
        "LogisticRegression (binary)",
        20,
        "binary",
        lambda: LogisticRegression(max_iter=1_000),
    ),
)


def synthetic_data(
    n_rows: int, n_features: int, task: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A linear signal plus noise (thresholded at 0 for a binary task)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_features))
    weights = rng.normal(size=n_features)
    y = X @ weights + 0.1 * rng.normal(size=n_rows)
    if task == "binary":
        y = (y > 0).astype(np.int64)
    return X, y


def request_rows(n_rows: int, n_features: int, seed: int = SEED + 1) -> np.ndarray:
    """The feature rows sent in a request body (same rows for every target)."""
    return np.random.default_rng(seed + n_rows).normal(size=(n_rows, n_features))


def train(spec: ModelSpec, folder: Path, seed: int = SEED) -> TrainedModel:
    """Fit one reference model and save it with skops (registered) and joblib (for peers)."""
    X, y = synthetic_data(TRAIN_ROWS, spec.n_features, spec.task, seed)
    estimator = spec.make().fit(X, y)
    folder.mkdir(parents=True, exist_ok=True)
    skops_path = folder / f"{spec.name}.skops"
    joblib_path = folder / f"{spec.name}.joblib"
    skops.io.dump(estimator, skops_path)
    joblib.dump(estimator, joblib_path)
    return TrainedModel(spec, estimator, skops_path, joblib_path, X[:2].copy())


def train_all(folder: Path, specs: tuple[ModelSpec, ...] = REFERENCE_MODELS) -> list[TrainedModel]:
    return [train(spec, folder) for spec in specs]


def small_logistic(seed: int, n_features: int = 20, n_rows: int = 400) -> Any:
    """A small model for the cache-bound check: one per version, each with its own seed."""
    X, y = synthetic_data(n_rows, n_features, "binary", seed)
    return LogisticRegression(max_iter=1_000).fit(X, y)
