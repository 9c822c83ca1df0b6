"""Whether a fitted scikit-learn model accepts missing values (NaN) in its input.

scikit-learn says so per estimator (`__sklearn_tags__().input_tags.allow_nan`, `_get_tags()`
before 1.6), but a pipeline's own tag does not follow its steps, so pipelines and column
transformers are walked: an imputer makes everything after it safe; a step that refuses NaN
makes the whole pipeline refuse it; a step that passes NaN through (a scaler) defers to the
next. Only True is an answer: anything unknown is left for the publisher to declare
(`signature.allow_missing`).
"""

from __future__ import annotations

from typing import Any

__all__ = ["accepts_missing"]

_REMOVES, _PASSES, _REFUSES = "removes", "passes", "refuses"


def accepts_missing(model: Any) -> bool:
    """True when `model` is known to predict on rows holding NaN."""
    return _behaviour(model) in (_REMOVES, _PASSES)


def _behaviour(step: Any) -> str:
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return _PASSES
    if isinstance(step, str):  # "drop": the columns are gone
        return _REMOVES
    kind = type(step)
    if kind.__module__.startswith("sklearn.impute") and kind.__name__.endswith("Imputer"):
        return _REMOVES
    steps = getattr(step, "steps", None)
    if kind.__name__ == "Pipeline" and isinstance(steps, list):
        for _, inner in steps:
            outcome = _behaviour(inner)
            if outcome != _PASSES:
                return outcome
        return _PASSES
    branches = getattr(step, "transformers_", None)
    if kind.__name__ == "ColumnTransformer" and isinstance(branches, list):
        outcomes = {_behaviour(inner) for _, inner, _ in branches}
        if _REFUSES in outcomes:
            return _REFUSES
        return _PASSES if _PASSES in outcomes else _REMOVES
    return _PASSES if _allow_nan_tag(step) else _REFUSES


def _allow_nan_tag(estimator: Any) -> bool:
    try:
        from sklearn.utils import get_tags  # scikit-learn >= 1.6

        return bool(get_tags(estimator).input_tags.allow_nan)
    except ImportError:
        pass
    except Exception:  # a third-party estimator with broken tags: unknown
        return False
    try:
        return bool(estimator._get_tags().get("allow_nan", False))
    except Exception:
        return False
