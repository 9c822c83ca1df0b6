"""Drift of one window against the reference profile, feature by feature.

- PSI on the reference's quantile bins (with a small floor on empty bins), the industry's
  scale: < 0.1 stable, 0.1-0.25 shifting, > 0.25 shifted.
- Normalized Wasserstein (earth mover's) distance between the binned distributions, placed at
  their within-bin means, in units of the reference's standard deviation.
- Jensen-Shannon distance (base 2, in [0, 1]) for categorical features.
- A chi-square test of the window's bin counts against the reference proportions, with a
  Holm correction across the features of the window: a feature is flagged only when its
  PSI (or JS) passes the threshold AND the corrected test says the difference is not noise.
  At large n a p-value alone flags everything, which is why the effect size decides and the
  test only guards small windows. KS is not used: the live side keeps bins, not samples.
- No judgement below `min_rows` rows in a window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

PSI_FLOOR = 1e-4  # proportion used for an empty bin, so that PSI stays finite


@dataclass(frozen=True, slots=True)
class Thresholds:
    psi_warn: float = 0.1
    psi_alert: float = 0.25
    js_warn: float = 0.1
    js_alert: float = 0.2
    missing_increase: float = 0.1  # absolute rise of the missing rate over the reference
    out_of_range: float = 0.1  # share of rows outside the reference's [min, max]
    min_rows: int = 200
    alpha: float = 0.01  # family-wise, across the features of one window

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Thresholds:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in config.items() if k in fields})


def psi(ref_counts: np.ndarray, live_counts: np.ndarray) -> float:
    p = _proportions(ref_counts)
    q = _proportions(live_counts)
    return float(np.sum((q - p) * np.log(q / p)))


def _proportions(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return np.full(counts.size, 1.0 / max(counts.size, 1))
    p = np.maximum(counts / total, PSI_FLOOR)
    return p / p.sum()


def wasserstein(ref: dict[str, Any], live: dict[str, Any]) -> float | None:
    """W1 between the binned distributions over the reference std (None without spread)."""
    std = ref.get("std") or 0.0
    ref_counts = np.asarray(ref["counts"], dtype=np.float64)
    live_counts = np.asarray(live["counts"], dtype=np.float64)
    if std <= 0 or ref_counts.sum() == 0 or live_counts.sum() == 0:
        return None
    ref_pos = np.asarray([m if m is not None else 0.0 for m in ref["bin_means"]])
    sums = np.asarray(live["sums"], dtype=np.float64)
    live_pos = np.where(live_counts > 0, sums / np.maximum(live_counts, 1), 0.0)
    distance = stats.wasserstein_distance(ref_pos, live_pos, ref_counts, live_counts)
    return float(distance / std)


def chi_square_p(ref_counts: np.ndarray, live_counts: np.ndarray) -> float:
    live = np.asarray(live_counts, dtype=np.float64)
    n = live.sum()
    if n == 0:
        return 1.0
    expected = _proportions(ref_counts) * n
    statistic = float(np.sum((live - expected) ** 2 / expected))
    return float(stats.chi2.sf(statistic, max(live.size - 1, 1)))


def holm(p_values: dict[str, float], alpha: float) -> set[str]:
    """The names whose hypothesis the Holm step-down rejects at family-wise `alpha`."""
    ordered = sorted(p_values.items(), key=lambda item: item[1])
    m = len(ordered)
    rejected: set[str] = set()
    for i, (name, p) in enumerate(ordered):
        if p > alpha / (m - i):
            break
        rejected.add(name)
    return rejected


def level(value: float | None, warn: float, alert: float) -> str:
    if value is None or math.isnan(value):
        return "ok"
    if value >= alert:
        return "alert"
    if value >= warn:
        return "warn"
    return "ok"


def judge_window(
    profile: dict[str, Any], summary: dict[str, Any], thresholds: Thresholds
) -> dict[str, Any]:
    """Per feature: the statistics and a status (ok, warn, alert, breach); and the window's
    own: enough rows to judge, prediction drift, refused inputs, the reasons it is bad."""
    rows = int(summary.get("rows", 0))
    binned = int(summary.get("binned", 0))
    judged = binned >= thresholds.min_rows
    features: dict[str, Any] = {}
    p_values: dict[str, float] = {}
    for ref in profile.get("features", []):
        live = (summary.get("features") or {}).get(ref["name"])
        if live is None:
            continue
        report = _feature_report(ref, live)
        features[ref["name"]] = report
        if judged and "p_value" in report:
            p_values[ref["name"]] = report.pop("p_value")
        else:
            report.pop("p_value", None)
    significant = holm(p_values, thresholds.alpha)
    reasons: list[dict[str, Any]] = []
    for name, report in features.items():
        report["status"] = _status(report, name in significant, judged, thresholds)
        if report["status"] in ("alert", "breach"):
            reasons.append({"feature": name, "status": report["status"], **_headline(report)})
    prediction = None
    ref_pred = profile.get("prediction")
    live_pred = summary.get("prediction")
    if ref_pred and live_pred and ref_pred.get("type") in ("numeric", "categorical"):
        prediction = _feature_report(ref_pred, live_pred)
        p = prediction.pop("p_value", 1.0)
        prediction["status"] = _status(
            prediction, judged and p <= thresholds.alpha, judged, thresholds
        )
    return {
        "rows": rows,
        "binned": binned,
        "judged": judged,
        "features": features,
        "prediction": prediction,
        "refused": dict(summary.get("refused") or {}),
        "reasons": reasons if judged else [],
    }


def _feature_report(ref: dict[str, Any], live: dict[str, Any]) -> dict[str, Any]:
    present = sum(live["counts"]) + live.get("other", 0)
    seen = present + live.get("missing", 0)
    missing_rate = live.get("missing", 0) / seen if seen else 0.0
    report: dict[str, Any] = {
        "type": ref["type"],
        "rows": seen,
        "missing_rate": missing_rate,
        "missing_increase": missing_rate - float(ref.get("missing_rate") or 0.0),
    }
    if ref["type"] == "numeric":
        ref_counts = np.asarray(ref.get("counts") or [], dtype=np.float64)
        live_counts = np.asarray(live["counts"], dtype=np.float64)
        outside = live.get("below", 0) + live.get("above", 0)
        report["out_of_range_rate"] = outside / present if present else 0.0
        if ref_counts.size and ref_counts.size == live_counts.size and present:
            report["psi"] = psi(ref_counts, live_counts)
            report["wasserstein"] = wasserstein(ref, live)
            report["p_value"] = chi_square_p(ref_counts, live_counts)
    else:
        categories = ref.get("categories") or {}
        ref_counts = np.asarray([*categories.values(), ref.get("other", 0)], dtype=np.float64)
        live_counts = np.asarray([*live["counts"], live.get("other", 0)], dtype=np.float64)
        report["new_categories"] = dict(live.get("new") or {}) if not ref.get("other") else {}
        if ref_counts.size == live_counts.size and present and ref_counts.sum() > 0:
            p = ref_counts / ref_counts.sum()
            q = live_counts / live_counts.sum()
            report["js"] = float(jensenshannon(p, q, base=2))
            report["p_value"] = chi_square_p(ref_counts, live_counts)
    return report


def _status(report: dict[str, Any], significant: bool, judged: bool, t: Thresholds) -> str:
    if not judged:
        return "insufficient"
    if report["missing_increase"] >= t.missing_increase:
        return "breach"
    if report.get("out_of_range_rate", 0.0) >= t.out_of_range and significant:
        return "breach"
    if "psi" in report:
        drift = level(report["psi"], t.psi_warn, t.psi_alert)
    elif "js" in report:
        drift = level(report["js"], t.js_warn, t.js_alert)
    else:
        drift = "ok"
    return drift if significant else "ok"


def _headline(report: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("psi", "js", "missing_rate", "out_of_range_rate"):
        if key in report and report[key] is not None:
            out[key] = round(float(report[key]), 6)
    return out
