"""A shadow copy reuses the primary's decoded batch when its version takes the same input,
and decodes the request again for its own plan otherwise."""

from __future__ import annotations

import numpy as np

from serving.dataplane import Batch, _reusing
from serving.inputs import InputPlan
from serving.loader import Servable


def _servable(n_features: int, names: tuple[str, ...] | None = None) -> Servable:
    plan = InputPlan(n_features, names, None, False, 100_000, frozenset({"predict"}))
    return Servable(plan, {}, None, "sklearn", "skops")


def test_the_same_plan_takes_the_primary_batch_without_decoding():
    primary = _servable(3)
    batch = Batch(np.ones((2, 3)), ("predict",), 2)
    decoded = []
    shadow_decode = _reusing(lambda s: decoded.append(s) or batch, primary.plan, batch)
    assert shadow_decode(_servable(3)) is batch  # an equal plan of another version
    assert decoded == []


def test_another_plan_decodes_the_request_for_it():
    primary = _servable(3)
    batch = Batch(np.ones((2, 3)), ("predict",), 2)
    other = _servable(3, ("a", "b", "c"))  # named columns: another decode
    again = Batch(np.zeros((2, 3)), ("predict",), 2)
    seen = []

    def decode(servable: Servable) -> Batch:
        seen.append(servable)
        return again

    assert _reusing(decode, primary.plan, batch)(other) is again
    assert seen == [other]
