"""Fitted XGBoost and LightGBM models written in their libraries' own model formats, which
the client sends instead of skops: the server loads them without running any pickle."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["native_bytes", "native_format"]


def native_format(estimator: Any) -> str | None:
    """ "xgboost" or "lightgbm" for those libraries' boosters and scikit-learn wrappers."""
    root = type(estimator).__module__.split(".")[0]
    return root if root in ("xgboost", "lightgbm") else None


def native_bytes(estimator: Any, fmt: str) -> bytes:
    """The model file: XGBoost JSON, or LightGBM's text model."""
    if fmt == "xgboost":
        booster = estimator.get_booster() if hasattr(estimator, "get_booster") else estimator
        return bytes(booster.save_raw(raw_format="json"))
    booster = getattr(estimator, "booster_", estimator)
    classes = getattr(estimator, "classes_", None)
    if classes is not None and not np.array_equal(np.asarray(classes), np.arange(len(classes))):
        # LightGBM's model file keeps class indexes only: the labels would be lost.
        raise ValueError(
            f"this {type(estimator).__name__} was fitted on labels {list(classes)[:5]}...; "
            "LightGBM's model file keeps class indexes, not labels: fit it on 0..k-1 "
            "(e.g. with a LabelEncoder) and map the answers back"
        )
    return booster.model_to_string().encode("utf-8")
