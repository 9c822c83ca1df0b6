"""A version's reference profile: what its inputs and predictions looked like in training.

Per feature: its type, missing rate, range, moments, and either quantile bins (interior edges,
counts and the mean inside each bin, for PSI and Wasserstein) or category frequencies (the
top `TOP_K`, the rest pooled). The size is bounded whatever the reference: a reference over
`MAX_ROWS` rows is sampled (the profile says so), and a feature holds at most `BINS` bins
or `TOP_K` categories.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from registry.errors import InvalidInput
from registry.monitoring.reference import FIELD, ReferenceTable

BINS = 10
TOP_K = 20
MAX_ROWS = 100_000
SAMPLE_SEED = 0
PROFILE_VERSION = 1


def numeric_column(values: list[Any]) -> np.ndarray | None:
    """The column as float64 with NaN for missing, or None when it holds text."""
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if value is None:
            out[i] = np.nan
        elif isinstance(value, bool):
            out[i] = float(value)
        elif isinstance(value, int | float):
            out[i] = value
        else:
            return None
    return out


def numeric_profile(column: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    """Quantile bins of the present values; `edges` are the interior edges, so a value's bin
    is `searchsorted(edges, x, side="right")`, the same code live windows use."""
    n = int(column.size)
    present = column[~np.isnan(column)]
    profile: dict[str, Any] = {
        "type": "numeric",
        "count": n,
        "missing_rate": float(1 - present.size / n) if n else 0.0,
    }
    if present.size == 0:
        profile.update(min=None, max=None, mean=None, std=None, edges=[], counts=[], bin_means=[])
        return profile
    quantiles = np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique(quantiles)
    index = np.searchsorted(edges, present, side="right")
    counts = np.bincount(index, minlength=edges.size + 1)
    sums = np.bincount(index, weights=present, minlength=edges.size + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    profile.update(
        min=float(present.min()),
        max=float(present.max()),
        mean=float(present.mean()),
        std=float(present.std()),
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        bin_means=[None if np.isnan(m) else float(m) for m in means],
    )
    return profile


def categorical_profile(values: list[Any], top_k: int = TOP_K) -> dict[str, Any]:
    n = len(values)
    present = [str(v) for v in values if v is not None]
    counts = Counter(present)
    top = counts.most_common(top_k)
    kept = sum(c for _, c in top)
    return {
        "type": "categorical",
        "count": n,
        "missing_rate": float(1 - len(present) / n) if n else 0.0,
        "distinct": len(counts),
        "categories": {value: int(c) for value, c in top},
        "other": int(len(present) - kept),
    }


def column_profile(values: list[Any]) -> dict[str, Any]:
    column = numeric_column(values)
    if column is None:
        return categorical_profile(values)
    return numeric_profile(column)


def sample_rows(n_rows: int, max_rows: int = MAX_ROWS) -> np.ndarray | None:
    """Row indices to keep (sorted), or None to keep them all."""
    if n_rows <= max_rows:
        return None
    rng = np.random.default_rng(SAMPLE_SEED)
    return np.sort(rng.choice(n_rows, size=max_rows, replace=False))


def build_profile(
    table: ReferenceTable, target: str | None, *, max_rows: int = MAX_ROWS
) -> tuple[dict[str, Any], ReferenceTable, list[Any] | None]:
    """The input part of the profile, the (sampled) feature table the predictions will be
    computed on, and the target values (or None)."""
    if target is not None and target not in table.values:
        raise InvalidInput(
            "the target column is not in the reference",
            {"metadata.target": f"no column {target!r} in the reference"},
        )
    total = table.n_rows
    keep = sample_rows(total, max_rows)
    if keep is not None:
        values = {name: [col[i] for i in keep] for name, col in table.values.items()}
        table = ReferenceTable(table.columns, values)
    features = tuple(c for c in table.columns if c != target)
    if not features:
        raise InvalidInput("the reference has no feature columns", {FIELD: "only the target"})
    feature_table = ReferenceTable(features, {c: table.values[c] for c in features})
    profile: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "rows": table.n_rows if keep is None else int(keep.size),
        "sampled": None
        if keep is None
        else {"from_rows": total, "rows": int(keep.size), "seed": SAMPLE_SEED},
        "target": target,
        "bins": BINS,
        "top_k": TOP_K,
        "features": [{"name": c, **column_profile(table.values[c])} for c in features],
    }
    return profile, feature_table, (table.values[target] if target is not None else None)


def prediction_profile(
    predictions: np.ndarray, target: list[Any] | None, registered: dict[str, float]
) -> dict[str, Any]:
    """The predictions' distribution on the reference and, with a target, the metric it
    gives there (beside the version's registered metrics)."""
    predictions = np.asarray(predictions)
    if predictions.ndim > 1:
        predictions = predictions.reshape(predictions.shape[0], -1)[:, 0]
    regression = predictions.dtype.kind in "fc"
    if regression:
        out = numeric_profile(predictions.astype(np.float64))
    else:
        out = categorical_profile(list(predictions.tolist()))
    out["task"] = "regression" if regression else "classification"
    if target is not None:
        out["metrics"] = reference_metrics(predictions, target, regression)
    out["registered_metrics"] = dict(registered)
    return out


def reference_metrics(predictions: np.ndarray, target: list[Any], regression: bool) -> dict:
    if regression:
        y = numeric_column(target)
        if y is None:
            raise InvalidInput(
                "the target column of a regression model must be numeric",
                {"metadata.target": "holds text"},
            )
        ok = ~np.isnan(y)
        err = predictions[ok].astype(np.float64) - y[ok]
        return {
            "rows": int(ok.sum()),
            "rmse": float(np.sqrt(np.mean(err**2))) if ok.any() else None,
            "mae": float(np.mean(np.abs(err))) if ok.any() else None,
        }
    pairs = [(p, t) for p, t in zip(predictions.tolist(), target, strict=True) if t is not None]
    hits = sum(1 for p, t in pairs if str(p) == str(t) or _same_number(p, t))
    return {"rows": len(pairs), "accuracy": hits / len(pairs) if pairs else None}


def _same_number(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return False
