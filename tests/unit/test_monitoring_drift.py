"""Drift judgement on synthetic data, through the same profile, fold and judge code the
server uses: the issue's must-show cases at the default thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from registry.monitoring.drift import Thresholds, holm, judge_window, psi
from registry.monitoring.profile import build_profile
from registry.monitoring.reference import ReferenceTable
from serving.monitoring.fold import Accumulator, compile_profile

NAMES = tuple(f"x{j}" for j in range(8))
WINDOW_ROWS = 1_000


def _reference(rng: np.random.Generator, rows: int = 5_000):
    X = rng.normal(size=(rows, len(NAMES)))
    table = ReferenceTable(NAMES, {n: X[:, j].tolist() for j, n in enumerate(NAMES)})
    profile, _, _ = build_profile(table, None)
    return profile


def _window(profile, X) -> dict:
    acc = Accumulator(compile_profile(profile, NAMES, len(NAMES)))
    acc.fold(X, None, len(X))
    return judge_window(profile, acc.to_summary(), Thresholds())


def _flagged(report) -> set[str]:
    return {n for n, f in report["features"].items() if f["status"] != "ok"}


def test_half_sigma_shift_in_one_of_eight_features_is_flagged_within_two_windows_alone():
    rng = np.random.default_rng(1)
    profile = _reference(rng)
    flagged_at = None
    for window in range(2):
        X = rng.normal(size=(WINDOW_ROWS, len(NAMES)))
        X[:, 3] += 0.5
        report = _window(profile, X)
        assert _flagged(report) <= {"x3"}, report["features"]
        if "x3" in _flagged(report) and flagged_at is None:
            flagged_at = window
    assert flagged_at is not None
    assert report["features"]["x3"]["psi"] >= Thresholds().psi_warn
    assert report["features"]["x3"]["wasserstein"] == pytest.approx(0.5, abs=0.15)


def test_two_hundred_unshifted_windows_flag_nothing_at_the_defaults():
    rng = np.random.default_rng(2)
    profile = _reference(rng)
    worst = 0.0
    for _ in range(200):
        report = _window(profile, rng.normal(size=(WINDOW_ROWS, len(NAMES))))
        assert _flagged(report) == set()
        assert report["reasons"] == []
        worst = max(worst, max(f["psi"] for f in report["features"].values()))
    assert worst < Thresholds().psi_warn


def test_a_feature_arriving_thirty_percent_null_is_a_data_quality_breach():
    rng = np.random.default_rng(3)
    profile = _reference(rng)
    X = rng.normal(size=(WINDOW_ROWS, len(NAMES)))
    X[rng.random(WINDOW_ROWS) < 0.3, 5] = np.nan
    report = _window(profile, X)
    assert report["features"]["x5"]["status"] == "breach"
    assert report["features"]["x5"]["missing_rate"] == pytest.approx(0.3, abs=0.05)
    assert _flagged(report) == {"x5"}
    assert [(r["feature"], r["status"]) for r in report["reasons"]] == [("x5", "breach")]


def test_windows_below_the_minimum_rows_are_not_judged():
    rng = np.random.default_rng(4)
    profile = _reference(rng)
    X = rng.normal(size=(50, len(NAMES))) + 3.0
    report = _window(profile, X)
    assert report["judged"] is False
    assert {f["status"] for f in report["features"].values()} == {"insufficient"}


def test_psi_of_identical_distributions_is_zero_and_grows_with_the_shift():
    ref = np.array([100] * 10)
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert psi(ref, np.array([50] * 5 + [150] * 5)) > psi(ref, np.array([90] * 5 + [110] * 5))


def test_holm_rejects_step_down():
    assert holm({"a": 0.001, "b": 0.03, "c": 0.04}, 0.05) == {"a"}
    assert holm({"a": 0.001, "b": 0.02, "c": 0.03}, 0.1) == {"a", "b", "c"}


def test_categorical_features_count_categories_new_values_and_js():
    import pandas as pd

    rng = np.random.default_rng(6)
    cities = rng.choice(["paris", "lyon", "nice"], size=3_000, p=[0.6, 0.3, 0.1]).tolist()
    sqft = rng.normal(size=3_000).tolist()
    profile, _, _ = build_profile(
        ReferenceTable(("city", "sqft"), {"city": cities, "sqft": sqft}), None
    )
    assert profile["features"][0]["type"] == "categorical"
    compiled = compile_profile(profile, ("city", "sqft"), 2)
    same = pd.DataFrame({"city": rng.choice(["paris", "lyon", "nice"], 1_000, p=[0.6, 0.3, 0.1]),
                         "sqft": rng.normal(size=1_000)})  # fmt: skip
    moved = same.assign(city=rng.choice(["paris", "brest"], 1_000, p=[0.5, 0.5]))
    reports = []
    for frame in (same, moved):
        acc = Accumulator(compiled)
        acc.fold(frame, None, len(frame))
        reports.append(judge_window(profile, acc.to_summary(), Thresholds()))
    assert reports[0]["features"]["city"]["status"] == "ok"
    city = reports[1]["features"]["city"]
    assert city["status"] == "alert" and city["js"] > Thresholds().js_alert
    assert set(city["new_categories"]) == {"brest"}
    assert reports[1]["features"]["sqft"]["status"] == "ok"
