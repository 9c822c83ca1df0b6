"""Folding predicted rows into a window's counts, vectorized with numpy.

A version's reference profile is compiled once into arrays (bin edges per numeric feature,
category codes per categorical one, and where each feature sits in the model's input). A
fold is then a handful of numpy calls per feature (`isnan`, `searchsorted` on the edges,
`bincount`), on many requests at once: the observer only queues rows, and the flusher
folds the queue in one go (serving/monitoring/live.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from registry.monitoring import summary as summary_format

MAX_ROWS_BINNED_PER_REQUEST = 256


@dataclass(frozen=True, slots=True)
class NumericFeature:
    name: str
    column: int  # position in the model's input (a DataFrame's columns are in model order)
    edges: np.ndarray
    low: float
    high: float


@dataclass(frozen=True, slots=True)
class CategoricalFeature:
    name: str
    column: int
    categories: tuple[str, ...]
    index: dict[str, int]


@dataclass(frozen=True, slots=True)
class CompiledProfile:
    numeric: tuple[NumericFeature, ...]
    categorical: tuple[CategoricalFeature, ...]
    prediction: NumericFeature | CategoricalFeature | None
    problem: str | None = None  # why the inputs cannot be followed (then only rows count)


def compile_profile(
    profile: dict[str, Any] | None, feature_names: tuple[str, ...] | None, n_features: int | None
) -> CompiledProfile:
    """Line the profile's features up with the model's input: by name when the model knows
    its feature names, else by position."""
    if not profile:
        return CompiledProfile((), (), None, "no reference profile")
    features = profile.get("features") or []
    names = [f["name"] for f in features]
    if feature_names is not None:
        where: dict[str, int] = {n: j for j, n in enumerate(feature_names)}
        missing = [n for n in names if n not in where]
        if missing:
            return CompiledProfile(
                (), (), _prediction(profile), f"reference columns not in the model: {missing[:5]}"
            )
    elif n_features is not None and len(names) != n_features:
        return CompiledProfile(
            (),
            (),
            _prediction(profile),
            f"the reference has {len(names)} features, the model {n_features}",
        )
    else:
        where = {n: j for j, n in enumerate(names)}
    numeric, categorical = [], []
    for feature in features:
        compiled = _compile_feature(feature, where[feature["name"]])
        if isinstance(compiled, NumericFeature):
            numeric.append(compiled)
        elif compiled is not None:
            categorical.append(compiled)
    return CompiledProfile(tuple(numeric), tuple(categorical), _prediction(profile))


def _compile_feature(feature: dict[str, Any], column: int) -> Any:
    if feature.get("type") == "numeric":
        if feature.get("min") is None:
            return None
        return NumericFeature(
            feature["name"],
            column,
            np.asarray(feature["edges"], dtype=np.float64),
            float(feature["min"]),
            float(feature["max"]),
        )
    categories = tuple(feature.get("categories") or {})
    return CategoricalFeature(
        feature["name"], column, categories, {c: i for i, c in enumerate(categories)}
    )


def _prediction(profile: dict[str, Any]) -> NumericFeature | CategoricalFeature | None:
    prediction = profile.get("prediction")
    if not prediction:
        return None
    return _compile_feature({"name": "prediction", **prediction}, 0)


@dataclass(slots=True)
class Accumulator:
    """One window's counts for one version and variant, in this process, since the last
    flush. Its size depends only on the profile (bins and categories), never on traffic."""

    profile: CompiledProfile
    rows: int = 0
    binned: int = 0
    num: list[dict[str, Any]] = field(default_factory=list)
    cat: list[dict[str, Any]] = field(default_factory=list)
    pred: dict[str, Any] | None = None
    refused: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.num = [_numeric_counts(f) for f in self.profile.numeric]
        self.cat = [_categorical_counts(f) for f in self.profile.categorical]
        prediction = self.profile.prediction
        if isinstance(prediction, NumericFeature):
            self.pred = _numeric_counts(prediction)
        elif isinstance(prediction, CategoricalFeature):
            self.pred = _categorical_counts(prediction)

    def fold(self, X: Any, y: Any, rows: int) -> None:
        """`rows` were predicted; `X`, `y` are those rows or a systematic sample of them."""
        self.rows += rows
        profile = self.profile
        if X is None or not (profile.numeric or profile.categorical or self.pred is not None):
            return  # nothing to bin against (no profile yet): the rows only count
        n = len(X)
        self.binned += n
        frame = hasattr(X, "iloc")
        for feature, acc in zip(profile.numeric, self.num, strict=True):
            column = _numeric(X.iloc[:, feature.column] if frame else X[:, feature.column])
            _fold_numeric(feature, acc, column)
        for feature, acc in zip(profile.categorical, self.cat, strict=True):
            column = X.iloc[:, feature.column] if frame else X[:, feature.column]
            _fold_categorical(feature, acc, column)
        if self.pred is not None and y is not None:
            prediction = profile.prediction
            if isinstance(prediction, NumericFeature):
                _fold_numeric(prediction, self.pred, _numeric(y))
            else:
                _fold_categorical(prediction, self.pred, y)

    def refuse(self, field_name: str) -> None:
        self.refused[field_name] = self.refused.get(field_name, 0) + 1

    def to_summary(self) -> dict[str, Any]:
        out = summary_format.empty()
        out["rows"], out["binned"] = self.rows, self.binned
        for feature, acc in zip(self.profile.numeric, self.num, strict=True):
            out["features"][feature.name] = _numeric_json(acc)
        for feature, acc in zip(self.profile.categorical, self.cat, strict=True):
            out["features"][feature.name] = _categorical_json(acc)
        if self.pred is not None:
            out["prediction"] = (
                _numeric_json(self.pred) if "sums" in self.pred else _categorical_json(self.pred)
            )
        out["refused"] = dict(self.refused)
        return out


def _numeric_counts(feature: NumericFeature) -> dict[str, Any]:
    k = feature.edges.size + 1
    return {
        "counts": np.zeros(k, dtype=np.int64),
        "sums": np.zeros(k, dtype=np.float64),
        "missing": 0,
        "below": 0,
        "above": 0,
    }


def _categorical_counts(feature: CategoricalFeature) -> dict[str, Any]:
    return {
        "counts": np.zeros(len(feature.categories), dtype=np.int64),
        "other": 0,
        "missing": 0,
        "new": {},
    }


def _numeric(column: Any) -> np.ndarray:
    values = np.asarray(column)
    if values.ndim > 1:
        values = values.reshape(values.shape[0], -1)[:, 0]
    if values.dtype.kind == "f":
        return values.astype(np.float64, copy=False)
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError):  # text where a number was profiled: all "missing"
        return np.full(values.shape[0], np.nan)


def _fold_numeric(feature: NumericFeature, acc: dict[str, Any], values: np.ndarray) -> None:
    missing = np.isnan(values)
    n_missing = int(missing.sum())
    if n_missing:
        acc["missing"] += n_missing
        values = values[~missing]
    if values.size == 0:
        return
    k = feature.edges.size + 1
    index = np.searchsorted(feature.edges, values, side="right")
    acc["counts"] += np.bincount(index, minlength=k)
    acc["sums"] += np.bincount(index, weights=values, minlength=k)
    acc["below"] += int(np.count_nonzero(values < feature.low))
    acc["above"] += int(np.count_nonzero(values > feature.high))


def _fold_categorical(feature: CategoricalFeature, acc: dict[str, Any], values: Any) -> None:
    counts = acc["counts"]
    index = feature.index
    new = acc["new"]
    for value in np.asarray(values, dtype=object).ravel().tolist():
        if value is None or (isinstance(value, float) and value != value):
            acc["missing"] += 1
            continue
        text = value if isinstance(value, str) else str(value)
        j = index.get(text)
        if j is not None:
            counts[j] += 1
        else:
            acc["other"] += 1
            if text in new or len(new) < summary_format.MAX_NEW_CATEGORIES:
                new[text] = new.get(text, 0) + 1


def _numeric_json(acc: dict[str, Any]) -> dict[str, Any]:
    return {
        "counts": [int(c) for c in acc["counts"]],
        "sums": [float(s) for s in acc["sums"]],
        "missing": int(acc["missing"]),
        "below": int(acc["below"]),
        "above": int(acc["above"]),
    }


def _categorical_json(acc: dict[str, Any]) -> dict[str, Any]:
    return {
        "counts": [int(c) for c in acc["counts"]],
        "other": int(acc["other"]),
        "missing": int(acc["missing"]),
        "new": dict(acc["new"]),
    }


def sample_rows(X: Any, y: Any, rows: int, limit: int = MAX_ROWS_BINNED_PER_REQUEST) -> tuple:
    """At most `limit` rows of a large request, every k-th one (copied: the request's
    arrays are not kept alive until the flush)."""
    if rows <= limit:
        return X, y
    step = -(-rows // limit)
    Xs = X.iloc[::step].copy() if hasattr(X, "iloc") else np.ascontiguousarray(X[::step])
    ys = None if y is None else np.ascontiguousarray(np.asarray(y)[::step])
    return Xs, ys
