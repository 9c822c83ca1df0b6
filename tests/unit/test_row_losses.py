"""Per-row losses of labelled rows: their mean is the window metric they stand for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from registry.monitoring.live_metrics import metrics, row_losses


def test_regression_rows_give_squared_errors_whose_mean_is_the_rmse_squared():
    rows = [("predict", [2.5], 2.0, None), ("predict", 1.0, 4.0, None), ("predict", 0.25, 0, None)]
    loss, values = row_losses(rows)
    assert loss == "squared_error"
    assert values == [0.25, 9.0, 0.0625]
    assert math.sqrt(np.mean(values)) == pytest.approx(metrics(rows)["rmse"], rel=1e-12)


def test_probabilities_give_log_losses_whose_mean_is_the_log_loss():
    rows = [
        ("predict_proba", [0.9, 0.1], "cat", ["cat", "dog"]),
        ("predict_proba", [0.2, 0.8], "cat", ["cat", "dog"]),
        ("predict_proba", [0.0, 1.0], "cat", ["cat", "dog"]),  # clipped, not infinite
    ]
    loss, values = row_losses(rows)
    assert loss == "log_loss"
    assert values[:2] == pytest.approx([-math.log(0.9), -math.log(0.2)], rel=1e-12)
    assert math.isfinite(values[2]) and values[2] > 30
    assert np.mean(values) == pytest.approx(metrics(rows)["log_loss"], rel=1e-12)


def test_class_labels_give_zero_one_errors_whose_mean_is_one_minus_accuracy():
    rows = [
        ("predict", "cat", "cat", None),
        ("predict", "dog", "cat", None),
        ("predict_proba", [0.3, 0.7], "dog", ["cat", "dog"]),  # mixed: its argmax is judged
        ("predict", 1, 1.0, None),
    ]
    loss, values = row_losses(rows)
    assert loss == "error_rate"
    assert values == [0.0, 1.0, 0.0, 0.0]
    assert 1 - np.mean(values) == pytest.approx(metrics(rows)["accuracy"])
