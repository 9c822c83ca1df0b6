"""A variant's prediction summary: the 1-row shortcut agrees with the general path."""

from __future__ import annotations

import numpy as np
import pytest

from serving.policies import _Arm


def test_one_row_answers_summarize_like_whole_batches():
    values = np.random.default_rng(3).normal(5.0, 2.0, size=200)
    one_by_one, batched = _Arm(), _Arm()
    for value in values:
        one_by_one.observe(0.001, np.array([value]))  # the shortcut
    for chunk in np.array_split(values, 7):
        batched.observe(0.001, chunk)  # the general path
    a, b = one_by_one.view()["predictions"], batched.view()["predictions"]
    assert a["rows"] == b["rows"] == 200
    assert a["mean"] == pytest.approx(b["mean"], rel=1e-9)
    assert a["std"] == pytest.approx(b["std"], rel=1e-9)
    assert a["mean"] == pytest.approx(float(values.mean()), rel=1e-9)
    assert a["std"] == pytest.approx(float(values.std()), rel=1e-9)


def test_a_one_row_classifier_answer_still_counts_its_class():
    arm = _Arm()
    for label in (1, 1, 0):
        arm.observe(0.001, np.array([label]))
    assert arm.view()["predictions"]["classes"] == {"0": 1, "1": 2}
