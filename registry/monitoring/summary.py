"""Window summaries as stored: plain JSON of additive counts, merged by addition.

A summary of one (version, variant, window) from one process since its last flush:

    {"rows": n,            every predicted row
     "binned": m,          rows folded into the distributions (<= n: large requests are
                           sampled systematically, see serving/monitoring/fold.py)
     "features": {name: numeric | categorical},
     "prediction": numeric | categorical | None,
     "refused": {field: count}}     inputs refused, per field
    numeric     {"counts": [...], "sums": [...], "missing": k, "below": k, "above": k}
    categorical {"counts": [...], "other": k, "missing": k, "new": {value: count}}

Counts are on the reference profile's bins and categories, so summaries of one version
always line up; sums per bin give the within-bin means Wasserstein needs.
"""

from __future__ import annotations

from typing import Any

MAX_NEW_CATEGORIES = 20  # distinct unseen values kept per feature and window


def empty() -> dict[str, Any]:
    return {"rows": 0, "binned": 0, "features": {}, "prediction": None, "refused": {}}


def merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Add `other` to `into` (in place) and return it."""
    into["rows"] = into.get("rows", 0) + other.get("rows", 0)
    into["binned"] = into.get("binned", 0) + other.get("binned", 0)
    features = into.setdefault("features", {})
    for name, part in (other.get("features") or {}).items():
        features[name] = _merge_part(features.get(name), part)
    if other.get("prediction") is not None:
        into["prediction"] = _merge_part(into.get("prediction"), other["prediction"])
    refused = into.setdefault("refused", {})
    for field, count in (other.get("refused") or {}).items():
        refused[field] = refused.get(field, 0) + count
    return into


def _merge_part(into: dict[str, Any] | None, part: dict[str, Any]) -> dict[str, Any]:
    if into is None:
        return _copy(part)
    if len(into.get("counts", [])) != len(part.get("counts", [])):
        return into  # written against another profile (replaced meanwhile): not comparable
    into["counts"] = [a + b for a, b in zip(into["counts"], part["counts"], strict=True)]
    if "sums" in part:
        into["sums"] = [a + b for a, b in zip(into["sums"], part["sums"], strict=True)]
    for key in ("missing", "below", "above", "other"):
        if key in part:
            into[key] = into.get(key, 0) + part[key]
    if "new" in part:
        new = into.setdefault("new", {})
        for value, count in part["new"].items():
            if value in new or len(new) < MAX_NEW_CATEGORIES:
                new[value] = new.get(value, 0) + count
    return into


def _copy(part: dict[str, Any]) -> dict[str, Any]:
    out = dict(part)
    for key in ("counts", "sums"):
        if key in out:
            out[key] = list(out[key])
    if "new" in out:
        out["new"] = dict(out["new"])
    return out
